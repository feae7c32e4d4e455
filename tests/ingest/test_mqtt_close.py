"""The listener's last act: its final bytes reach the broker and the connection ends with a FIN.

A real loopback TCP connection stands in for the broker. The "broker" keeps sending (as
Mosquitto keeps sending PUBLISH packets after intake paused) and the client never reads them.
"""

from __future__ import annotations

import asyncio
import socket

from ingest._mqtt import _close_gracefully

#: More than the client's receive buffer can hold unread, so data is pending at the close.
FLOOD = b"p" * (1 << 20)
LAST_WORDS = b"puback" * 1000 + b"disconnect"


async def _broker_reads(close: str) -> tuple[bytes, BaseException | None]:
    """What the broker side read, and the error its reading ended with (None: a clean EOF)."""
    loop = asyncio.get_running_loop()
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    client = socket.create_connection(server.getsockname())
    client.setblocking(False)
    broker, _ = await loop.sock_accept(server)
    broker.setblocking(False)
    # Fill the client's receive buffer (it never reads), as a busy broker does.
    broker.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    sending = asyncio.ensure_future(loop.sock_sendall(broker, FLOOD))
    await asyncio.sleep(0.2)
    await loop.sock_sendall(client, LAST_WORDS)
    if close == "graceful":
        closing = asyncio.ensure_future(_close_gracefully(client, 2.0))
    else:
        client.close()
        closing = None
    received = bytearray()
    error: BaseException | None = None
    try:
        while chunk := await asyncio.wait_for(loop.sock_recv(broker, 65536), 5):
            received += chunk
    except OSError as exc:
        error = exc
    # The broker, having read the client's goodbye, closes its side (MQTT 5.0, 3.14).
    sending.cancel()
    broker.close()
    server.close()
    if closing is not None:
        await closing
    return bytes(received), error


async def test_graceful_close_delivers_the_last_bytes_then_a_fin() -> None:
    received, error = await _broker_reads("graceful")
    assert error is None
    assert received == LAST_WORDS


async def test_a_plain_close_with_unread_data_resets_the_connection() -> None:
    """Why the graceful close exists: the kernel answers a close with unread data by a reset."""
    _received, error = await _broker_reads("plain")
    assert isinstance(error, ConnectionResetError)
