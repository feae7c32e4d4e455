"""Every use of paho-mqtt's private names, in one place, checked against paho's version.

The MQTT fast paths (docs/runtime.md#fast-paths) skip paho costs that its public API cannot:
ingest's ``mqtt-read`` serves paho's ``_sock_recv`` from one large ``recv`` and decodes QoS 1
PUBLISH packets without an ``MQTTMessage`` (reading ``_in_packet``, shadowing
``_handle_publish``); the simulator's ``mqtt-publish`` packs user properties once
(:class:`PackedProperties`) and completes PUBACKs without paho's per-packet objects (shadowing
``_handle_pubackcomp``). These names are not paho's contract: they changed between paho 2.1 and
2.2. So they are used only here, and only when the installed paho is in
:data:`SUPPORTED_VERSIONS`, the range these functions were written and tested against. Outside
it :func:`supported` logs one warning and answers False, and the callers keep paho's public path
(``on_message``, ``Properties``, paho's own PUBACK handling): slower, still correct.
"""

from __future__ import annotations

import logging
import time
import types
from collections.abc import Callable
from typing import Literal

import paho.mqtt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties, VariableByteIntegers, writeUTF
from paho.mqtt.reasoncodes import ReasonCode

__all__ = [
    "SUPPORTED_VERSIONS",
    "PackedProperties",
    "install_lean_puback",
    "install_read_hooks",
    "manual_ack_v5",
    "mark_received",
    "packet_in_progress",
    "publish_packet",
    "supported",
]

log = logging.getLogger("citysense.paho")

#: paho-mqtt releases whose private names are used here: from the first, up to (not including)
#: the second. Widen only after reading the new release's ``client.py`` for every name below.
SUPPORTED_VERSIONS: tuple[tuple[int, int, int], tuple[int, int, int]] = ((2, 2, 0), (2, 3, 0))

#: paho's clock for ``_last_bytes_received`` (``time.monotonic`` on every current platform).
_paho_time: Callable[[], float] = getattr(mqtt, "time_func", time.monotonic)

_checked: bool | None = None


def _parse(version: str) -> tuple[int, int, int] | None:
    parts = version.split(".")[:3]
    if len(parts) < 3 or not all(part.isdigit() for part in parts):
        return None
    return int(parts[0]), int(parts[1]), int(parts[2])


def version_supported(version: str) -> bool:
    """Whether paho ``version`` is in :data:`SUPPORTED_VERSIONS`."""
    parsed = _parse(version)
    low, high = SUPPORTED_VERSIONS
    return parsed is not None and low <= parsed < high


def supported(version: str | None = None) -> bool:
    """Whether the installed paho (or ``version``, for tests) is one the fast paths know; the
    first answer for the installed paho is kept, and a False one is logged once as a warning."""
    global _checked
    if version is not None:
        return version_supported(version)
    if _checked is None:
        installed = str(getattr(paho.mqtt, "__version__", "unknown"))
        _checked = version_supported(installed)
        if not _checked:
            low, high = (".".join(map(str, v)) for v in SUPPORTED_VERSIONS)
            log.warning(
                "paho-mqtt %s is outside the range the MQTT fast paths support (>=%s, <%s): "
                "they are off, paho's public paths are used",
                installed,
                low,
                high,
            )
    return _checked


def _reset_for_tests(value: bool | None = None) -> None:
    """Forget (or force) the version check's answer; tests only."""
    global _checked
    _checked = value


# --- ingest: reading --------------------------------------------------------------------------


def install_read_hooks(
    client: mqtt.Client,
    recv: Callable[[Callable[[mqtt.Client, int], bytes], int], bytes],
    publish: Callable[[], bool],
) -> Callable[[mqtt.Client, int], bytes]:
    """Shadow ``client``'s ``_sock_recv`` with ``recv(paho_recv, size)`` and its
    ``_handle_publish`` with ``publish()`` (True: the packet was taken; False: paho decodes it);
    returns paho's own ``_sock_recv`` (which maps TLS "want read" to ``BlockingIOError``)."""
    paho_recv = type(client)._sock_recv
    paho_publish = type(client)._handle_publish

    def handle_publish() -> MQTTErrorCode:
        if publish():
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return paho_publish(client)

    # Instance attributes shadow paho's methods for this client only; paho calls them as
    # ``self._sock_recv(n)`` and ``self._handle_publish()``.
    setattr(client, "_sock_recv", lambda size: recv(paho_recv, size))  # noqa: B010
    setattr(client, "_handle_publish", handle_publish)  # noqa: B010
    return paho_recv


def manual_ack_v5(client: mqtt.Client) -> bool:
    """Whether ``client`` speaks MQTT v5 with manual acks (what the lean decoder handles)."""
    return bool(client._protocol == mqtt.MQTTv5 and client._manual_ack)


def packet_in_progress(client: mqtt.Client) -> bool:
    """Whether paho has read part of a packet (its next bytes are paho's to read)."""
    return bool(client._in_packet["command"] != 0)


def publish_packet(client: mqtt.Client) -> bytearray | None:
    """The variable header and payload of the QoS 1 PUBLISH paho has just read, when the client
    is v5 with manual acks; None for anything else (paho decodes it)."""
    in_packet = client._in_packet
    if in_packet["command"] & 0x06 == 0x02 and manual_ack_v5(client):
        packet: bytearray = in_packet["packet"]
        return packet
    return None


def publish_redelivered(client: mqtt.Client) -> bool:
    """The DUP flag of the PUBLISH paho has just read (bit 3 of the fixed header, MQTT v5
    §3.3.1.1): the broker sends it again, an earlier attempt may have been received."""
    command: int = client._in_packet["command"]
    return command & 0x08 != 0


def mark_received(client: mqtt.Client) -> None:
    """Tell paho's keepalive that bytes arrived (it watches the broker's silence with this)."""
    client._last_bytes_received = _paho_time()


# --- the simulator: publishing ----------------------------------------------------------------

#: MQTT v5 §2.2.2.2: identifier 0x26 (38), User Property, a UTF-8 string pair.
_USER_PROPERTY = b"\x26"


class PackedProperties(Properties):
    """PUBLISH properties encoded once; paho only calls ``pack()`` on them (when sending and when
    resending after a reconnect).

    ``Properties.__init__`` builds its name and type tables on every instance and ``pack()``
    walks them all; this skips both. The encoding is paho's own (``writeUTF``,
    ``VariableByteIntegers``), as MQTT v5 §2.2.2 lays out a property list.
    """

    def __init__(self, user_properties: tuple[tuple[str, str], ...]) -> None:
        # Not Properties.__init__ (the cost avoided); its __setattr__ accepts only property names.
        body = b"".join(
            _USER_PROPERTY + writeUTF(name) + writeUTF(value)  # type: ignore[no-untyped-call]
            for name, value in user_properties
        )
        packed: bytes = VariableByteIntegers.encode(len(body)) + body  # type: ignore[no-untyped-call]
        object.__setattr__(self, "packetType", PacketTypes.PUBLISH)
        object.__setattr__(self, "_packed", packed)
        object.__setattr__(self, "_user_properties", user_properties)

    def pack(self) -> bytes:
        packed: bytes = self.__dict__["_packed"]
        return packed

    def __str__(self) -> str:  # paho formats properties into its debug log when one is set
        return f"[UserProperty : {list(self.__dict__['_user_properties'])}]"

    __repr__ = __str__


#: One ``ReasonCode`` per PUBACK reason value, shared: paho builds a new one for every PUBACK.
_PUBACK_REASONS: dict[int, ReasonCode] = {}
_NO_PROPERTIES = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]


def _lean_puback(client: mqtt.Client, cmd: Literal["PUBACK", "PUBCOMP"]) -> MQTTErrorCode:
    """paho's ``_handle_pubackcomp`` for a PUBACK without properties, without new objects.

    A v5 PUBACK (MQTT v5 §3.4.2) is the packet id, then optionally a reason code, then
    optionally a property length: 2, 3 or 4 bytes when it carries no properties.
    """
    packet = client._in_packet["packet"]
    size = len(packet)
    if cmd == "PUBACK" and (size <= 3 or (size == 4 and packet[3] == 0)) and size >= 2:
        code = packet[2] if size > 2 else 0
        reason = _PUBACK_REASONS.get(code)
        if reason is None:
            try:
                reason = ReasonCode(PacketTypes.PUBACK, identifier=code)
            except (KeyError, ValueError):  # a code paho does not know: let it decide
                return type(client)._handle_pubackcomp(client, cmd)
            _PUBACK_REASONS[code] = reason
        mid = packet[0] << 8 | packet[1]
        with client._out_message_mutex:
            if mid in client._out_messages:
                return client._do_on_publish(mid, reason, _NO_PROPERTIES)
        return MQTTErrorCode.MQTT_ERR_SUCCESS
    return type(client)._handle_pubackcomp(client, cmd)


def install_lean_puback(client: mqtt.Client) -> None:
    """Complete ``client``'s PUBACKs with :func:`_lean_puback`."""
    # An instance attribute shadows the method for this client only; paho calls it as
    # ``self._handle_pubackcomp("PUBACK")``.
    setattr(client, "_handle_pubackcomp", types.MethodType(_lean_puback, client))  # noqa: B010
