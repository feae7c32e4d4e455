"""An MQTT v5 subscriber driven by the asyncio event loop, with PUBACK after Kafka's ack.

paho's ``loop_start`` thread costs a thread switch per packet (a QoS 1 subscriber received ~630
msg/s that way here, against ~41,000 msg/s in ``loop_forever``), so the client's socket is
registered with the event loop (``add_reader``/``add_writer``, paho's external-loop callbacks)
and each wake-up reads every packet available. ``manual_ack`` withholds the PUBACK until the
caller releases it; releases may come out of order (one Kafka partition acknowledges before
another), so PUBACKs are sent in the order the PUBLISH packets arrived, as MQTT 3.1.1 section
4.6 asks. The session is persistent (fixed client id, clean start off, session expiry) and the
Receive Maximum bounds unacknowledged deliveries, so the broker keeps what we cannot take.

The ``mqtt-read`` fast path (docs/runtime.md#fast-paths) avoids two paho costs per message with
paho's private names, all kept in :mod:`citysense._paho_private` (checked against paho's version
at import; paho's own code is kept for anything unusual):

- reading: paho reads a packet with one ``recv`` for its first byte, one per length byte and
  one for the rest; here one large ``recv`` serves them, and whole QoS 1 PUBLISH packets at the
  head of the buffer are framed and decoded in one compiled call (:mod:`ingest._wire`);
- a QoS 1 v5 PUBLISH whose properties are only user properties (or none) is decoded here, with
  no ``MQTTMessage`` nor ``Properties`` object (a ``Properties`` costs its name tables, its
  ``clear()`` and its ``unpack()``, about a third of paho's work per message); anything else
  (QoS 0/2, topic alias, other properties, a topic that is not UTF-8) goes through paho.

With the switch off (``CITYSENSE_LEAN=0``) or an unsupported paho, messages come through paho's
public ``on_message`` callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from citysense import _paho_private
from citysense.clients import mqtt_client
from citysense.errors import StartupError
from citysense.runtime import Lifecycle
from citysense.settings import MqttSettings, mask_url
from ingest._acks import AckQueue
from ingest._metrics import METRICS
from ingest._router import Incoming
from ingest._wire import decode_qos1_publish, take_publishes

__all__ = ["MqttListener"]

log = logging.getLogger("citysense.ingest.mqtt")

#: ``handler(incoming, release)``: ``release()`` sends the PUBACK (in arrival order).
Handler = Callable[[Incoming, Callable[[], None]], None]
_NO_PROPERTIES: dict[str, str] = {}
#: Packets read per wake-up: at ~100 µs each, about 6 ms before other tasks get the loop.
READ_BUDGET = 64
#: One ``recv`` for many packets: paho asks for one byte at a time for each packet's header.
_RECV_SIZE = 65536
#: CONNACK reason codes that say "later", not "never" (MQTT 5.0 section 3.2.2.2): Server
#: unavailable, Server busy, Quota exceeded, Connection rate exceeded.
_TRANSIENT_REFUSALS = frozenset({0x88, 0x89, 0x97, 0x9F})


class MqttListener:
    """One broker connection: subscribes, hands each message to ``handler``, acks on release."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        client_id: str,
        subscriptions: list[str],
        receive_maximum: int,
        handler: Handler,
        lifecycle: Lifecycle,
        backoff_max_s: float = 5.0,
        name: str = "mqtt",
        on_read: Callable[[], None] | None = None,
        fast: bool = True,
    ) -> None:
        self.name = name
        #: The ``mqtt-read`` fast path (``Settings.fast``); used only with a supported paho.
        self._fast = fast
        #: Called after each read of the socket, once the messages it delivered were handled.
        self._on_read = on_read
        self._settings = settings
        self._client_id = client_id
        self._subscriptions = subscriptions
        self._receive_maximum = receive_maximum
        self._handler = handler
        #: The stage's lifecycle: the keepalive and reconnect tasks fail the stage if they die.
        self._lifecycle = lifecycle
        self._backoff_max_s = backoff_max_s
        self._client: mqtt.Client | None = None
        self._acks = AckQueue(self._resume_if_drained)
        #: Reading paused because the broker overran our Receive Maximum (Mosquitto 2.0.11
        #: does under load, eclipse-mosquitto issue 2301): memory stays bounded regardless.
        self._throttled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._misc_task: asyncio.Task[None] | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None
        self._reading = True
        self._stopping = False
        self._connected = asyncio.Event()
        self._subscribed = asyncio.Event()
        #: Set when the broker answered a connection: subscribed, or refused (``_refusal``).
        self._answered = asyncio.Event()
        self._refusal: str | None = None
        #: The broker is busy or unavailable (retried at start too), not refusing us.
        self._refusal_transient = False
        #: During ``start`` the connection is retried by ``start`` itself, not a reconnect task.
        self._starting = False
        self._received = 0
        #: Bytes read from the socket and not yet handed to paho (see ``_buffered_recv``).
        self._inbuf = bytearray()
        #: Set when the socket had nothing more to read (``recv`` would block).
        self._drained = False
        #: paho's own ``_sock_recv`` when the lean paths are installed.
        self._paho_recv: Callable[[mqtt.Client, int], bytes] | None = None
        #: When the last ``recv`` returned: the receive time of the messages it completed (a
        #: read's messages arrived together; one clock read per read, not per message).
        self._received_at = datetime.now(UTC)

    # --- lifecycle -------------------------------------------------------------------------

    def ready(self) -> bool:
        return self._connected.is_set() and self._subscribed.is_set()

    @property
    def unacknowledged(self) -> int:
        return len(self._acks)

    async def start(self, connect_timeout: float = 15.0) -> None:
        self._loop = asyncio.get_running_loop()
        client, host, port = mqtt_client(self._settings, self._client_id, manual_ack=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        if self._fast and _paho_private.supported():
            self._paho_recv = _paho_private.install_read_hooks(
                client,
                lambda paho_recv, size: self._buffered_recv(client, paho_recv, size),
                lambda: self._lean_publish(client),
            )
        self._client = client
        self._host, self._port = host, port
        self._misc_task = self._lifecycle.spawn(self._misc(), name=f"{self.name}-misc")
        self._starting = True
        try:
            await self._connect_with_retry(deadline=connect_timeout)
        except BaseException:
            await self.stop()
            raise
        finally:
            self._starting = False

    def _connect_properties(self) -> Properties:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self._settings.session_expiry_s
        properties.ReceiveMaximum = self._receive_maximum
        return properties

    async def _connect_with_retry(self, deadline: float | None = None) -> None:
        assert self._client is not None
        assert self._loop is not None
        backoff = 0.2
        started = self._loop.time()
        broker = f"{self._host}:{self._port}"
        while not self._stopping:
            self._answered.clear()
            self._refusal = None
            self._refusal_transient = False
            try:
                self._acks.reset(self._client)
                # A blocking TCP connect (paho's ``connect_timeout``, 5 s, bounds it): on
                # loopback or a LAN broker it takes microseconds.
                self._client.connect(
                    self._host,
                    self._port,
                    keepalive=self._settings.keepalive_s,
                    clean_start=False,
                    properties=self._connect_properties(),
                )
            except OSError as exc:
                if deadline is not None and self._loop.time() - started > deadline:
                    raise StartupError(
                        f"MQTT broker {broker} is unreachable ({exc}); check {self._url_setting()}"
                    ) from exc
                log.warning(
                    "mqtt connect failed; retrying", extra={"broker": broker, "error": repr(exc)}
                )
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, self._backoff_max_s)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._answered.wait(), 10)
            if self._subscribed.is_set():
                return
            if self._refusal is not None:
                elapsed = self._loop.time() - started
                if deadline is not None and (not self._refusal_transient or elapsed > deadline):
                    # Wrong credentials or ACL: retrying cannot help, the user must change them.
                    raise StartupError(
                        f"MQTT broker {broker} {self._refusal}; check the user and password in "
                        f"{self._url_setting()}, and the broker's ACL"
                    )
                self._client.disconnect()
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, self._backoff_max_s)
                continue
            if deadline is not None and self._loop.time() - started > deadline:
                raise StartupError(
                    f"MQTT broker {broker} did not accept the session within {deadline:.0f} s; "
                    f"check {self._url_setting()}"
                )

    def _url_setting(self) -> str:
        """The settings that name this broker, for error messages (URL masked)."""
        url = mask_url(self._settings.url.get_secret_value())
        return f"CITYSENSE_MQTT_URL or mqtt.url (now {url})"

    def pause(self) -> None:
        """Stop reading new messages (SIGTERM: stop intake first)."""
        self._reading = False
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock)

    async def wait_acknowledged(self, deadline_s: float) -> bool:
        """Wait until every message received was released and its PUBACK queued."""
        assert self._loop is not None
        end = self._loop.time() + deadline_s
        while len(self._acks) and self._loop.time() < end:  # noqa: ASYNC110  (polls a deque)
            await asyncio.sleep(0.01)
        return not len(self._acks)

    async def stop(self) -> None:
        """Disconnect; the persistent session keeps anything unacknowledged for redelivery."""
        self._stopping = True
        client = self._client
        # Our own handle on the connection, so that paho's close after DISCONNECT does not end
        # it: see _close_gracefully.
        held: socket.socket | None = None
        if self._sock is not None:
            # A TLS socket cannot be duplicated: it is closed as paho closes it.
            with contextlib.suppress(OSError, NotImplementedError, AttributeError):
                held = self._sock.dup()
        if client is not None:
            # Flush the PUBACKs queued by the last releases before saying goodbye.
            with contextlib.suppress(Exception):
                self._acks.flush()
                client.loop_write()
            client.disconnect()
            with contextlib.suppress(Exception):
                client.loop_write()
        if held is not None:
            await _close_gracefully(held, _CLOSE_WAIT_S)
        for task in (self._misc_task, self._reconnect_task):
            await self._lifecycle.cancel(task)
        self._misc_task = self._reconnect_task = None
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock)
            self._loop.remove_writer(self._sock)
            self._sock = None
        self._client = None

    # --- paho callbacks (run inside loop_read / loop_write on the event loop) --------------

    def _on_connect(
        self, client: mqtt.Client, _u: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if reason.is_failure:
            log.error("mqtt connection refused", extra={"reason": str(reason)})
            self._refusal = f"refused the connection ({reason})"
            self._refusal_transient = reason.value in _TRANSIENT_REFUSALS
            self._answered.set()
            return
        self._connected.set()
        METRICS.mqtt_connected.inc()
        client.subscribe([(topic, 1) for topic in self._subscriptions])
        log.info(
            "mqtt connected",
            extra={"broker": f"{self._host}:{self._port}", "client_id": self._client_id},
        )

    def _on_subscribe(
        self, _client: mqtt.Client, _u: Any, _mid: int, reasons: Any, _p: Any
    ) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            log.error("mqtt subscription refused", extra={"reasons": failed})
            self._refusal = f"refused the subscriptions ({', '.join(sorted(set(failed)))})"
            self._answered.set()
            return
        self._subscribed.set()
        self._answered.set()

    def _on_disconnect(
        self, _client: mqtt.Client, _u: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if self._connected.is_set():
            METRICS.mqtt_connected.dec()
        self._connected.clear()
        self._subscribed.clear()
        if self._stopping or self._starting or self._loop is None:
            return
        log.warning("mqtt disconnected; reconnecting", extra={"reason": str(reason)})
        METRICS.mqtt_reconnects.inc()
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = self._lifecycle.spawn(
                self._connect_with_retry(), name=f"{self.name}-reconnect", finite=True
            )

    def _on_message(self, _client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        properties = _NO_PROPERTIES
        msg_properties = getattr(msg, "properties", None)
        user = getattr(msg_properties, "UserProperty", None) if msg_properties else None
        if user:
            properties = dict(user)
        self._deliver(msg.topic, bytes(msg.payload), properties, msg.mid, msg.qos, bool(msg.dup))

    def _lean_publish(self, client: mqtt.Client) -> bool:
        """paho's ``_handle_publish`` for a v5 QoS 1 PUBLISH with manual acks, without objects;
        False leaves the packet to paho."""
        packet = _paho_private.publish_packet(client)
        if packet is None:
            return False
        decoded = decode_qos1_publish(packet)
        if decoded is None:
            return False
        topic, payload, properties, mid = decoded
        self._deliver(topic, payload, properties, mid, 1, _paho_private.publish_redelivered(client))
        return True

    def _buffered_recv(
        self, client: mqtt.Client, paho_recv: Callable[[mqtt.Client, int], bytes], size: int
    ) -> bytes:
        """paho's ``_sock_recv``, served from one large read (paho's error mapping kept)."""
        buf = self._inbuf
        if not buf:
            try:
                data = paho_recv(client, _RECV_SIZE)
            except BlockingIOError:
                self._drained = True
                raise
            self._received_at = datetime.now(UTC)
            if len(data) <= size:
                return data
            buf += data
        chunk = bytes(buf[:size])
        del buf[:size]
        return chunk

    def _deliver(
        self,
        topic: str,
        payload: bytes,
        properties: dict[str, str],
        mid: int,
        qos: int,
        dup: bool = False,
    ) -> None:
        self._received += 1
        incoming = Incoming(topic, payload, datetime.now(UTC), properties, dup)
        acks = self._acks
        release = acks.track(mid) if qos == 1 else _nothing
        self._handler(incoming, release)
        if not self._throttled and len(acks.slots) >= self._receive_maximum:
            self._throttle()

    def _throttle(self) -> None:
        """Stop reading: Receive Maximum messages are unacknowledged."""
        self._throttled = True
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock)

    def _resume_if_drained(self) -> None:
        if self._throttled and len(self._acks) <= self._receive_maximum // 2:
            self._throttled = False
            if self._reading and self._sock is not None and self._loop is not None:
                self._loop.add_reader(self._sock, self._read)
                if self._inbuf:  # already read from the socket: the selector will not tell
                    self._loop.call_soon(self._read)

    # --- socket integration ----------------------------------------------------------------

    def _on_socket_open(self, client: mqtt.Client, _u: Any, sock: Any) -> None:
        assert self._loop is not None
        self._sock = sock
        self._inbuf.clear()
        self._throttled = False
        if self._reading:
            self._loop.add_reader(sock, self._read)

    def _on_socket_close(self, _client: mqtt.Client, _u: Any, sock: Any) -> None:
        assert self._loop is not None
        self._loop.remove_reader(sock)
        self._loop.remove_writer(sock)
        if sock is self._sock:
            self._sock = None
            self._inbuf.clear()

    def _on_socket_register_write(self, client: mqtt.Client, _u: Any, sock: Any) -> None:
        assert self._loop is not None
        self._loop.add_writer(sock, client.loop_write)

    def _on_socket_unregister_write(self, _client: mqtt.Client, _u: Any, sock: Any) -> None:
        assert self._loop is not None
        self._loop.remove_writer(sock)

    def _read(self) -> None:
        """Read the packets the socket has, up to a budget: paho's loop_read reads one per call,
        and a wake-up that reads too many starves the Kafka client sharing the event loop
        (2,000 per wake-up made Kafka acknowledgements take 160 ms on average here, 64 took 76 ms
        at full load)."""
        client = self._client
        # A read scheduled with ``call_soon`` may run after throttling: it must not read.
        if client is None or not self._reading or self._throttled:
            return
        lean = self._paho_recv is not None
        taken = 0  # packets read, lean or paho's
        lean_taken = 0
        try:
            while taken < READ_BUDGET:
                if lean:
                    count = self._take_publishes(client, READ_BUDGET - taken)
                    if count:
                        taken += count
                        lean_taken += count
                        if self._throttled:
                            return
                        continue
                if self._drained:
                    return
                self._drained = False
                taken += 1
                before = self._received
                rc = client.loop_read()
                if rc != mqtt.MQTT_ERR_SUCCESS or not self._reading or self._throttled:
                    return
                if self._drained or (self._received == before and not self._inbuf):
                    return
            # Budget spent: what is buffered would not wake the selector, come back for it.
            if self._inbuf and self._loop is not None:
                self._loop.call_soon(self._read)
        finally:
            if lean_taken:  # paho's keepalive watches the broker's silence with this
                _paho_private.mark_received(client)
            if self._on_read is not None:
                self._on_read()

    def _take_publishes(self, client: mqtt.Client, budget: int) -> int:
        """Deliver the buffer's leading whole QoS 1 PUBLISH packets the lean decoder takes (at
        most ``budget``, and no more than the Receive Maximum allows), without paho's
        byte-by-byte framing; 0 leaves the next packet to paho (``loop_read``), which also reads
        from the buffer. Fills an empty buffer with one ``recv`` (``_drained`` when none)."""
        self._drained = False
        buf = self._inbuf
        if not buf:
            if _paho_private.packet_in_progress(client):
                return 0  # paho is inside a packet: let it finish
            assert self._paho_recv is not None
            try:
                data = self._paho_recv(client, _RECV_SIZE)
            except BlockingIOError:
                self._drained = True
                return 0
            except OSError:
                return 0  # paho's loop_read meets the error again and reports it
            if not data:
                return 0  # end of stream: the same, paho reports the lost connection
            self._received_at = datetime.now(UTC)
            buf += data
        if _paho_private.packet_in_progress(client) or not _paho_private.manual_ack_v5(client):
            return 0
        acks = self._acks
        limit = min(budget, self._receive_maximum - len(acks.slots))
        mids: list[int] = []
        incomings, consumed = take_publishes(buf, limit, self._received_at, mids)
        if not consumed:
            return 0
        del buf[:consumed]
        count = len(incomings)
        self._received += count
        handler = self._handler
        for incoming, release in zip(incomings, acks.track_all(mids), strict=True):
            handler(incoming, release)
        if not self._throttled and len(acks.slots) >= self._receive_maximum:
            self._throttle()
        return count

    async def _misc(self) -> None:
        """Keepalive pings and timeouts (paho's loop_misc), once a second."""
        while True:
            await asyncio.sleep(1)
            if self._client is not None:
                self._client.loop_misc()


def _nothing() -> None:
    return None


#: How long a stopping listener waits for the broker to close the connection after DISCONNECT.
_CLOSE_WAIT_S = 2.0


async def _close_gracefully(sock: socket.socket, wait_s: float) -> None:
    """End the connection with a FIN, never a reset, so the broker reads our last PUBACKs.

    Intake was paused before the stop, so the broker's newer PUBLISH packets sit unread in our
    receive buffer; closing a socket with unread data makes the kernel answer with a reset
    (RFC 2525, section 2.17), and a reset can make the broker's side drop what it had not read
    yet: the last PUBACKs, whose messages it would then redeliver (a valid record twice, which
    the natural key absorbs, or a malformed one dead-lettered twice). Paho closes its socket as
    soon as DISCONNECT is written; ``sock`` is a duplicate of it, so the connection outlives that
    close. Here the write side is shut (FIN after everything written), and what the broker still
    sends is read and discarded until it closes its side (MQTT 5.0, 3.14: the server closes the
    connection after DISCONNECT) or ``wait_s`` passes. The discarded PUBLISHes were never
    acknowledged: the persistent session redelivers them.
    """
    loop = asyncio.get_running_loop()
    try:
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        end = loop.time() + wait_s
        while (left := end - loop.time()) > 0:
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 65536), left)
            except (TimeoutError, OSError):
                break
            if not data:
                break
    finally:
        sock.close()
