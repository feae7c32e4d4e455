"""Cayenne Low Power Payload (LPP) v1, the generic format of many DIY and multi-sensor nodes.

Source: the Cayenne LPP documentation (myDevices, "Cayenne Low Power Payload") and the LPP decoder
of The Things Stack (``pkg/messageprocessors/cayennelpp``); docs/payload-formats.md#cayenne-lpp.
Repeated ``[channel u8][type u8][value, big-endian]``:

| type | size | value | name |
|---|---|---|---|
| 0 digital input, 1 digital output | 1 | u8 | ``digital_in``, ``digital_out`` |
| 2 analog input, 3 analog output | 2 | signed /100 | ``analog_in``, ``analog_out`` |
| 101 illuminance | 2 | u16 lux | ``luminosity`` |
| 102 presence | 1 | u8 | ``presence`` |
| 103 temperature | 2 | signed /10 °C | ``temperature`` |
| 104 humidity | 1 | u8 /2 % | ``relative_humidity`` |
| 113 accelerometer | 6 | 3 x signed /1000 G | ``accelerometer`` (x, y, z) |
| 115 barometer | 2 | u16 /10 hPa | ``barometric_pressure`` |
| 134 gyrometer | 6 | 3 x signed /100 °/s | ``gyrometer`` (x, y, z) |
| 136 GPS | 9 | lat, lon signed 3 B /10000 °; alt signed 3 B /100 m | ``gps`` |

Names: a value is ``<name>_<channel>`` exactly as The Things Stack names it (``temperature_3``);
where The Things Stack nests an object, its key path is flattened with ``_`` (``accelerometer_6_x``,
``gps_1_latitude``, ``gps_1_longitude``, ``gps_1_altitude``), so a registry written against a TTS
decoded payload maps the same names. ``profile.channel_map`` renames them to canonical quantities
(``analog_in_3 → laeq_db``, ``temperature_1 → temperature_c``); an unmapped value keeps its LPP name
(it has no unit suffix: nothing in the format says what it measures). Kind: ``noise`` when any
resulting name is an acoustic level of docs/architecture.md#quantity-names (``l`` + weighting a/c/z
…, ending ``_db``), else ``air``.

Position: the first GPS entry of the stream is also the measurement's ``position`` (WGS84 latitude
and longitude; LPP has no accuracy field), unless it is exactly 0, 0: GNSS trackers send zeros
while they have no fix, and that point is in the Gulf of Guinea, not in a city. Its values stay
under their LPP names too, as The Things Stack gives them.

Parsing: an unknown type ends the stream (its length is unknown): ``UnknownChannelError`` if it
is the first entry, otherwise the values before it with ``partial``. Extended, non-standard types
(voltage, current, …) are unknown here since libraries disagree on their sizes. Two entries giving
the same name are rejected. LPP rides on any application fPort (1..223); the encoder uses fPort 1.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final

from decoders._model import (
    Decoded,
    DeviceProfile,
    InvalidPayloadError,
    Kind,
    Position,
    UnknownChannelError,
    UnknownFPortError,
)
from decoders._reader import ByteReader
from decoders._registry import Codec, register
from decoders.codecs._fields import decoded

__all__ = ["CODEC", "decode", "encode"]

NAME: Final = "cayenne-lpp"
ENCODE_FPORT = 1
_GPS: Final = 136
_ACOUSTIC = re.compile(r"l[acz][a-z0-9_]*_db")


@dataclass(frozen=True, slots=True)
class _Field:
    """One component of an LPP value: its name suffix, byte width, signedness and divisor."""

    suffix: str
    size: int
    signed: bool
    divisor: int


@dataclass(frozen=True, slots=True)
class _Type:
    code: int
    name: str
    fields: tuple[_Field, ...]


def _scalar(size: int, signed: bool, divisor: int) -> tuple[_Field, ...]:
    return (_Field("", size, signed, divisor),)


def _xyz(divisor: int) -> tuple[_Field, ...]:
    return tuple(_Field(f"_{axis}", 2, True, divisor) for axis in "xyz")


_TYPES: Final[dict[int, _Type]] = {
    t.code: t
    for t in (
        _Type(0, "digital_in", _scalar(1, False, 1)),
        _Type(1, "digital_out", _scalar(1, False, 1)),
        _Type(2, "analog_in", _scalar(2, True, 100)),
        _Type(3, "analog_out", _scalar(2, True, 100)),
        _Type(101, "luminosity", _scalar(2, False, 1)),
        _Type(102, "presence", _scalar(1, False, 1)),
        _Type(103, "temperature", _scalar(2, True, 10)),
        _Type(104, "relative_humidity", _scalar(1, False, 2)),
        _Type(113, "accelerometer", _xyz(1000)),
        _Type(115, "barometric_pressure", _scalar(2, False, 10)),
        _Type(134, "gyrometer", _xyz(100)),
        _Type(
            136,
            "gps",
            (
                _Field("_latitude", 3, True, 10000),
                _Field("_longitude", 3, True, 10000),
                _Field("_altitude", 3, True, 100),
            ),
        ),
    )
}
_TYPES_BY_NAME = {t.name: t for t in _TYPES.values()}
_LPP_NAME = re.compile(
    r"(?P<type>[a-z_]+?)_(?P<channel>\d{1,3})(?P<suffix>_x|_y|_z|_latitude|_longitude|_altitude)?"
)


#: Per name, whether it is an acoustic level: the regex ran per value and message before.
_ACOUSTIC_NAMES: Final[dict[str, bool]] = {}
#: LPP value names by ``code << 8 | channel``, one per field of the type: formatted once.
_LPP_NAMES: Final[dict[int, tuple[str, ...]]] = {}


def _is_acoustic(name: str) -> bool:
    known = _ACOUSTIC_NAMES.get(name)
    if known is None:
        if len(_ACOUSTIC_NAMES) > 10_000:  # names come from registries: bounded in practice
            _ACOUSTIC_NAMES.clear()
        known = _ACOUSTIC.fullmatch(name) is not None
        _ACOUSTIC_NAMES[name] = known
    return known


def _kind(names: list[str]) -> Kind:
    for name in names:
        if _is_acoustic(name):
            return "noise"
    return "air"


def _lpp_names(lpp_type: _Type, channel: int) -> tuple[str, ...]:
    """``<type>_<channel><suffix>`` for each field of ``lpp_type`` (at most 12 x 256 entries)."""
    key = lpp_type.code << 8 | channel
    names = _LPP_NAMES.get(key)
    if names is None:
        names = tuple(f"{lpp_type.name}_{channel}{fld.suffix}" for fld in lpp_type.fields)
        _LPP_NAMES[key] = names
    return names


def _read(reader: ByteReader, fld: _Field, what: str) -> int:
    """One big-endian field; the common widths without slicing the payload."""
    if fld.size == 1 and not fld.signed:
        return reader.u8(what)
    if fld.size == 2:
        return reader.s16be(what) if fld.signed else reader.u16be(what)
    if fld.size == 3 and fld.signed:
        return reader.s24be(what)
    return int.from_bytes(reader.take(fld.size, what), "big", signed=fld.signed)


def decode(payload: bytes, fport: int | None, profile: DeviceProfile) -> Decoded:
    """Decode an LPP stream; names follow The Things Stack unless the profile maps them."""
    if fport is not None and not 1 <= fport <= 223:
        raise UnknownFPortError(NAME, None, f"fPort {fport} is not an application port")
    reader = ByteReader(NAME, payload)
    reader.need(2, "first channel and type")
    values: dict[str, float] = {}
    partial = False
    position: Position | None = None
    seen_gps = False
    channel_map = profile.channel_map
    while not reader.at_end():
        start = reader.offset
        channel = reader.u8("channel")
        code = reader.u8("type")
        lpp_type = _TYPES.get(code)
        if lpp_type is None:
            if start == 0:
                raise UnknownChannelError(NAME, start, f"unknown LPP type {code}")
            partial = True
            break
        lpp_names = _lpp_names(lpp_type, channel)
        fields = lpp_type.fields
        for index in range(len(fields)):
            fld = fields[index]
            raw = _read(reader, fld, lpp_type.name)
            lpp_name = lpp_names[index]
            name = channel_map.get(lpp_name, lpp_name)
            if name in values:
                raise InvalidPayloadError(NAME, start, f"{name} given twice")
            values[name] = raw / fld.divisor
        if code == _GPS and not seen_gps:
            seen_gps = True
            lat = values[channel_map.get(lpp_names[0], lpp_names[0])]
            lon = values[channel_map.get(lpp_names[1], lpp_names[1])]
            if lat != 0.0 or lon != 0.0:
                position = Position(lat, lon, None)
    out = decoded(NAME, _kind(list(values)))
    out.values = values
    out.partial = partial
    out.position = position
    return out


def _raw(value: float, fld: _Field, what: str) -> bytes:
    bits = fld.size * 8
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if fld.signed else (0, (1 << bits) - 1)
    if not math.isfinite(value) or not low <= (raw := round(value * fld.divisor)) <= high:
        raise ValueError(f"{NAME}: {what} {value!r} does not fit {fld.size} bytes")
    return raw.to_bytes(fld.size, "big", signed=fld.signed)


def encode(decoded: Decoded, profile: DeviceProfile) -> tuple[int, bytes]:
    """Build the LPP stream for ``decoded``; canonical names are mapped back via the profile."""
    if decoded.counts or decoded.regions:
        raise ValueError(f"{NAME} carries no counts or regions")
    if not decoded.values:
        raise ValueError(f"{NAME} cannot send an empty payload")
    to_lpp = {canonical: lpp for lpp, canonical in profile.channel_map.items()}
    entries: dict[tuple[int, str], dict[str, float]] = {}
    for name, value in decoded.values.items():
        lpp_name = to_lpp.get(name, name)
        match = _LPP_NAME.fullmatch(lpp_name)
        lpp_type = _TYPES_BY_NAME.get(match["type"]) if match else None
        if match is None or lpp_type is None or int(match["channel"]) > 255:
            raise ValueError(f"{NAME}: {name!r} is not an LPP value name")
        suffix = match["suffix"] or ""
        if suffix not in {fld.suffix for fld in lpp_type.fields}:
            raise ValueError(f"{NAME}: {lpp_type.name} has no component {suffix!r}")
        entries.setdefault((int(match["channel"]), lpp_type.name), {})[suffix] = value
    out = bytearray()
    for (channel, type_name), components in entries.items():
        lpp_type = _TYPES_BY_NAME[type_name]
        out += bytes([channel, lpp_type.code])
        for fld in lpp_type.fields:
            what = f"{type_name}_{channel}{fld.suffix}"
            if fld.suffix not in components:
                raise ValueError(f"{NAME}: {what} missing")
            out += _raw(components[fld.suffix], fld, what)
    return ENCODE_FPORT, bytes(out)


CODEC = register(
    Codec(
        name=NAME,
        kinds=("air", "noise"),
        fports=(),
        decode_fn=decode,
        encode_fn=encode,
        description="Cayenne LPP v1 (The Things Stack naming, registry channel map)",
    )
)
