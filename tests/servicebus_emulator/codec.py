"""AMQP 1.0 type system: encode Python values to wire bytes and decode them back, losslessly.

Decoding keeps every AMQP type apart (a `symbol` is a `Symbol`, a `uint` a `UInt`, a
`string` a `str`, `binary` is `bytes`), so a value that is decoded and encoded again keeps
its type. That is what lets the emulator rewrite one section of a message (its header or
annotations) without turning the sender's strings into binary, as the SDK's own decoder
would.

Python → AMQP when no wrapper says otherwise: `None` null, `bool` boolean, `int` long,
`float` double, `str` string, `bytes` binary, `uuid.UUID` uuid, `list`/`tuple` list,
`dict` map. Wrappers pick the other types: `UByte`, `UShort`, `UInt`, `ULong`, `Byte`,
`Short`, `Int`, `Long`, `Float` (32-bit), `Char`, `Timestamp` (ms since the epoch),
`Symbol`, `Array` and `Described`. The decimal types are not implemented.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


class AMQPDecodeError(ValueError):
    """The bytes are not a valid AMQP encoding (or use a type this codec lacks)."""


class Symbol(str):
    """An AMQP symbol: an ASCII name (annotation keys, error conditions, capabilities)."""

    __slots__ = ()


class Char(str):
    """An AMQP char: one Unicode code point, sent as UTF-32."""

    __slots__ = ()


class UByte(int):
    __slots__ = ()


class UShort(int):
    __slots__ = ()


class UInt(int):
    __slots__ = ()


class ULong(int):
    __slots__ = ()


class Byte(int):
    __slots__ = ()


class Short(int):
    __slots__ = ()


class Int(int):
    __slots__ = ()


class Long(int):
    __slots__ = ()


class Timestamp(int):
    """Milliseconds since the Unix epoch, UTC."""

    __slots__ = ()


class Float(float):
    """An AMQP 32-bit float (plain Python floats are encoded as 64-bit doubles)."""

    __slots__ = ()


@dataclass(frozen=True)
class Described:
    """A described type: a descriptor (usually a `ULong` code or a `Symbol`) and its value."""

    descriptor: Any
    value: Any


@dataclass(frozen=True)
class Array:
    """An AMQP array: items of one type, encoded with a single shared constructor.

    `element` names that type (a wrapper class such as `Symbol`, or `uuid.UUID`, `str`...);
    it is inferred from the first item when omitted and is only needed for an empty array.
    """

    items: tuple[Any, ...]
    element: type | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", tuple(self.items))


# --------------------------------------------------------------------------- encoding


def encode(value: Any) -> bytes:
    """The AMQP encoding of one value."""
    out = bytearray()
    encode_into(out, value)
    return bytes(out)


def encode_into(out: bytearray, value: Any) -> None:
    """Append the AMQP encoding of `value` to `out`, choosing the most compact form."""
    encoder = _ENCODERS.get(type(value))
    if encoder is None:
        encoder = _encoder_for_subclass(value)
    encoder(out, value)


def _encoder_for_subclass(value: Any) -> Callable[[bytearray, Any], None]:
    for cls, encoder in _ENCODERS.items():
        if isinstance(value, cls) and cls not in (bool, int, str, float):
            return encoder
    for cls in (bool, int, str, float):
        if isinstance(value, cls):
            return _ENCODERS[cls]
    if isinstance(value, Mapping):
        return _encode_map
    if isinstance(value, Iterable) and not isinstance(value, bytes | bytearray | memoryview):
        return _encode_list
    if isinstance(value, bytes | bytearray | memoryview):
        return _encode_binary
    raise TypeError(f"cannot encode {type(value).__name__} as AMQP")


def _encode_null(out: bytearray, _: Any) -> None:
    out.append(0x40)


def _encode_bool(out: bytearray, value: bool) -> None:
    out.append(0x41 if value else 0x42)


def _encode_ubyte(out: bytearray, value: int) -> None:
    out += struct.pack(">BB", 0x50, value)


def _encode_ushort(out: bytearray, value: int) -> None:
    out += struct.pack(">BH", 0x60, value)


def _encode_uint(out: bytearray, value: int) -> None:
    if value == 0:
        out.append(0x43)
    elif value < 256:
        out += struct.pack(">BB", 0x52, value)
    else:
        out += struct.pack(">BI", 0x70, value)


def _encode_ulong(out: bytearray, value: int) -> None:
    if value == 0:
        out.append(0x44)
    elif value < 256:
        out += struct.pack(">BB", 0x53, value)
    else:
        out += struct.pack(">BQ", 0x80, value)


def _encode_byte(out: bytearray, value: int) -> None:
    out += struct.pack(">Bb", 0x51, value)


def _encode_short(out: bytearray, value: int) -> None:
    out += struct.pack(">Bh", 0x61, value)


def _encode_int(out: bytearray, value: int) -> None:
    if -128 <= value <= 127:
        out += struct.pack(">Bb", 0x54, value)
    else:
        out += struct.pack(">Bi", 0x71, value)


def _encode_long(out: bytearray, value: int) -> None:
    if -128 <= value <= 127:
        out += struct.pack(">Bb", 0x55, value)
    else:
        out += struct.pack(">Bq", 0x81, value)


def _encode_float(out: bytearray, value: float) -> None:
    out += struct.pack(">Bf", 0x72, value)


def _encode_double(out: bytearray, value: float) -> None:
    out += struct.pack(">Bd", 0x82, value)


def _encode_char(out: bytearray, value: str) -> None:
    out += struct.pack(">BI", 0x73, ord(value))


def _encode_timestamp(out: bytearray, value: int) -> None:
    out += struct.pack(">Bq", 0x83, value)


def _encode_uuid(out: bytearray, value: uuid.UUID) -> None:
    out.append(0x98)
    out += value.bytes


def _encode_variable(out: bytearray, data: bytes, small: int, large: int) -> None:
    if len(data) < 256:
        out += struct.pack(">BB", small, len(data))
    else:
        out += struct.pack(">BI", large, len(data))
    out += data


def _encode_binary(out: bytearray, value: bytes | bytearray | memoryview) -> None:
    _encode_variable(out, bytes(value), 0xA0, 0xB0)


def _encode_string(out: bytearray, value: str) -> None:
    _encode_variable(out, value.encode("utf-8"), 0xA1, 0xB1)


def _encode_symbol(out: bytearray, value: str) -> None:
    _encode_variable(out, value.encode("ascii"), 0xA3, 0xB3)


def _encode_compound(out: bytearray, count: int, body: bytes, small: int, large: int) -> None:
    if len(body) + 1 < 256 and count < 256:
        out += struct.pack(">BBB", small, len(body) + 1, count)
    else:
        out += struct.pack(">BII", large, len(body) + 4, count)
    out += body


def _encode_list(out: bytearray, value: Iterable[Any]) -> None:
    items = list(value)
    if not items:
        out.append(0x45)
        return
    body = bytearray()
    for item in items:
        encode_into(body, item)
    _encode_compound(out, len(items), bytes(body), 0xC0, 0xD0)


def _encode_map(out: bytearray, value: Mapping[Any, Any]) -> None:
    body = bytearray()
    for key, item in value.items():
        encode_into(body, key)
        encode_into(body, item)
    _encode_compound(out, 2 * len(value), bytes(body), 0xC1, 0xD1)


def _encode_described(out: bytearray, value: Described) -> None:
    out.append(0x00)
    encode_into(out, value.descriptor)
    encode_into(out, value.value)


# Array elements all share one constructor, so each type needs its "wide" form.
_ARRAY_ELEMENTS: dict[type, tuple[int, Callable[[Any], bytes]]] = {
    bool: (0x56, lambda v: b"\x01" if v else b"\x00"),
    UByte: (0x50, lambda v: struct.pack(">B", v)),
    UShort: (0x60, lambda v: struct.pack(">H", v)),
    UInt: (0x70, lambda v: struct.pack(">I", v)),
    ULong: (0x80, lambda v: struct.pack(">Q", v)),
    Byte: (0x51, lambda v: struct.pack(">b", v)),
    Short: (0x61, lambda v: struct.pack(">h", v)),
    Int: (0x71, lambda v: struct.pack(">i", v)),
    Long: (0x81, lambda v: struct.pack(">q", v)),
    int: (0x81, lambda v: struct.pack(">q", v)),
    Float: (0x72, lambda v: struct.pack(">f", v)),
    float: (0x82, lambda v: struct.pack(">d", v)),
    Char: (0x73, lambda v: struct.pack(">I", ord(v))),
    Timestamp: (0x83, lambda v: struct.pack(">q", v)),
    uuid.UUID: (0x98, lambda v: v.bytes),
    bytes: (0xB0, lambda v: struct.pack(">I", len(v)) + v),
    str: (0xB1, lambda v: struct.pack(">I", len(v.encode())) + v.encode()),
    Symbol: (0xB3, lambda v: struct.pack(">I", len(v)) + v.encode("ascii")),
}


def _encode_array(out: bytearray, value: Array) -> None:
    element = value.element or (type(value.items[0]) if value.items else None)
    if element is None:
        out += struct.pack(">BBBB", 0xE0, 2, 0, 0x40)
        return
    body = bytearray()
    items: tuple[Any, ...] = value.items
    if element is Described:
        descriptors = {item.descriptor for item in items}
        if len(descriptors) != 1:
            raise TypeError("an AMQP array of described values needs one shared descriptor")
        body.append(0x00)
        encode_into(body, descriptors.pop())
        items = tuple(item.value for item in items)
        element = type(items[0])
    if element not in _ARRAY_ELEMENTS:
        raise TypeError(f"cannot encode an AMQP array of {element.__name__}")
    constructor, encode_item = _ARRAY_ELEMENTS[element]
    body.append(constructor)
    for item in items:
        body += encode_item(item)
    _encode_compound(out, len(value.items), bytes(body), 0xE0, 0xF0)


_ENCODERS: dict[type, Callable[[bytearray, Any], None]] = {
    type(None): _encode_null,
    bool: _encode_bool,
    UByte: _encode_ubyte,
    UShort: _encode_ushort,
    UInt: _encode_uint,
    ULong: _encode_ulong,
    Byte: _encode_byte,
    Short: _encode_short,
    Int: _encode_int,
    Long: _encode_long,
    int: _encode_long,
    Timestamp: _encode_timestamp,
    Float: _encode_float,
    float: _encode_double,
    Char: _encode_char,
    Symbol: _encode_symbol,
    str: _encode_string,
    bytes: _encode_binary,
    bytearray: _encode_binary,
    memoryview: _encode_binary,
    uuid.UUID: _encode_uuid,
    list: _encode_list,
    tuple: _encode_list,
    dict: _encode_map,
    Described: _encode_described,
    Array: _encode_array,
}


# --------------------------------------------------------------------------- decoding


def decode(data: bytes) -> Any:
    """Decode exactly one value that fills `data`."""
    value, end = decode_value(data, 0)
    if end != len(data):
        raise AMQPDecodeError(f"{len(data) - end} trailing bytes after the value")
    return value


def decode_value(data: bytes, offset: int) -> tuple[Any, int]:
    """Decode the value starting at `offset`; return it and the offset just past it."""
    try:
        constructor = data[offset]
        if constructor == 0x00:
            descriptor, offset = decode_value(data, offset + 1)
            value, offset = decode_value(data, offset)
            return Described(descriptor, value), offset
        return _decode_primitive(constructor, data, offset + 1)
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise AMQPDecodeError(f"truncated or invalid AMQP data at offset {offset}") from exc


def _decode_primitive(constructor: int, data: bytes, offset: int) -> tuple[Any, int]:
    fixed = _FIXED.get(constructor)
    if fixed is not None:
        width, convert = fixed
        if offset + width > len(data):
            raise AMQPDecodeError(f"truncated value of constructor {constructor:#04x}")
        return convert(data[offset : offset + width]), offset + width
    variable = _VARIABLE.get(constructor)
    if variable is not None:
        size_width, convert = variable
        size = int.from_bytes(data[offset : offset + size_width], "big")
        start = offset + size_width
        if start + size > len(data):
            raise AMQPDecodeError(f"truncated value of constructor {constructor:#04x}")
        return convert(data[start : start + size]), start + size
    compound = _COMPOUND.get(constructor)
    if compound is not None:
        size_width, decode_body = compound
        size = int.from_bytes(data[offset : offset + size_width], "big")
        count = int.from_bytes(data[offset + size_width : offset + 2 * size_width], "big")
        end = offset + size_width + size
        if end > len(data):
            raise AMQPDecodeError(f"truncated compound of constructor {constructor:#04x}")
        value, stop = decode_body(data, offset + 2 * size_width, count)
        if stop != end:
            raise AMQPDecodeError(f"compound size mismatch at constructor {constructor:#04x}")
        return value, end
    raise AMQPDecodeError(f"unsupported AMQP constructor {constructor:#04x}")


def _decode_list_items(data: bytes, offset: int, count: int) -> tuple[list[Any], int]:
    items = []
    for _ in range(count):
        item, offset = decode_value(data, offset)
        items.append(item)
    return items, offset


def _decode_map_items(data: bytes, offset: int, count: int) -> tuple[dict[Any, Any], int]:
    if count % 2:
        raise AMQPDecodeError("a map needs an even number of items")
    items, offset = _decode_list_items(data, offset, count)
    return dict(zip(items[::2], items[1::2], strict=True)), offset


def _decode_array_items(data: bytes, offset: int, count: int) -> tuple[Array, int]:
    constructor = data[offset]
    offset += 1
    descriptor = None
    if constructor == 0x00:
        descriptor, offset = decode_value(data, offset)
        constructor = data[offset]
        offset += 1
    items = []
    for _ in range(count):
        item, offset = _decode_primitive(constructor, data, offset)
        items.append(item if descriptor is None else Described(descriptor, item))
    element = Described if descriptor is not None else _ELEMENT_TYPES.get(constructor)
    return Array(tuple(items), element=element), offset


def _unpack(fmt: str, wrap: Callable[[Any], Any]) -> tuple[int, Callable[[bytes], Any]]:
    packer = struct.Struct(fmt)
    return packer.size, lambda raw: wrap(packer.unpack(raw)[0])


def _const(value: Any) -> tuple[int, Callable[[bytes], Any]]:
    return 0, lambda _: value


_FIXED: dict[int, tuple[int, Callable[[bytes], Any]]] = {
    0x40: _const(None),
    0x41: _const(True),
    0x42: _const(False),
    0x43: _const(UInt(0)),
    0x44: _const(ULong(0)),
    0x45: (0, lambda _: []),  # a fresh list each time, never one shared object
    0x56: (1, lambda raw: raw != b"\x00"),
    0x50: _unpack(">B", UByte),
    0x60: _unpack(">H", UShort),
    0x52: _unpack(">B", UInt),
    0x70: _unpack(">I", UInt),
    0x53: _unpack(">B", ULong),
    0x80: _unpack(">Q", ULong),
    0x51: _unpack(">b", Byte),
    0x61: _unpack(">h", Short),
    0x54: _unpack(">b", Int),
    0x71: _unpack(">i", Int),
    0x55: _unpack(">b", Long),
    0x81: _unpack(">q", Long),
    0x72: _unpack(">f", Float),
    0x82: _unpack(">d", float),
    0x73: _unpack(">I", lambda code: Char(chr(code))),
    0x83: _unpack(">q", Timestamp),
    0x98: (16, lambda raw: uuid.UUID(bytes=bytes(raw))),
}

_VARIABLE: dict[int, tuple[int, Callable[[bytes], Any]]] = {
    0xA0: (1, bytes),
    0xB0: (4, bytes),
    0xA1: (1, lambda raw: bytes(raw).decode("utf-8")),
    0xB1: (4, lambda raw: bytes(raw).decode("utf-8")),
    0xA3: (1, lambda raw: Symbol(bytes(raw).decode("ascii"))),
    0xB3: (4, lambda raw: Symbol(bytes(raw).decode("ascii"))),
}

_COMPOUND: dict[int, tuple[int, Callable[[bytes, int, int], tuple[Any, int]]]] = {
    0xC0: (1, _decode_list_items),
    0xD0: (4, _decode_list_items),
    0xC1: (1, _decode_map_items),
    0xD1: (4, _decode_map_items),
    0xE0: (1, _decode_array_items),
    0xF0: (4, _decode_array_items),
}

_ELEMENT_TYPES: dict[int, type] = {
    0x56: bool,
    0x41: bool,
    0x42: bool,
    0x50: UByte,
    0x60: UShort,
    0x52: UInt,
    0x70: UInt,
    0x43: UInt,
    0x53: ULong,
    0x80: ULong,
    0x44: ULong,
    0x51: Byte,
    0x61: Short,
    0x54: Int,
    0x71: Int,
    0x55: Long,
    0x81: Long,
    0x72: Float,
    0x82: float,
    0x73: Char,
    0x83: Timestamp,
    0x98: uuid.UUID,
    0xA0: bytes,
    0xB0: bytes,
    0xA1: str,
    0xB1: str,
    0xA3: Symbol,
    0xB3: Symbol,
}
