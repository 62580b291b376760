"""Property values on the wire: the type tags of the schema, checking and converting values
to them, and :class:`F32`, the float that travels as 4 bytes. Re-exported by
:mod:`rtecs.protocol`."""

from __future__ import annotations

import struct
from typing import TypeAlias

import msgspec

from rtecs.errors import ProtocolError

Value: TypeAlias = "bool | int | float | str | bytes | None"

_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


class F32(float):
    """A float that goes on the wire as a MessagePack float32: 5 bytes instead of 9.

    Values of ``f32`` properties (``prop(..., float32=True)``) are wrapped in it where they
    are encoded; they decode as plain floats, already rounded to float32 precision."""

    __slots__ = ()


_F32_WIRE = struct.Struct(">Bf")
_F32_ROUND = struct.Struct("<f")


def enc_hook(obj: object) -> object:
    """msgspec encoder hook: :class:`F32` as a raw float32 (msgspec sees float subclasses
    here); anything else is not sendable."""
    if type(obj) is F32:
        return msgspec.Raw(_F32_WIRE.pack(0xCA, obj))
    raise TypeError(f"Encoding objects of type {type(obj).__name__} is unsupported")


SCALAR_TAGS = ("bool", "int", "float", "f32", "str", "bytes")


def check_tag(tag: str) -> None:
    """Raise :class:`ProtocolError` unless ``tag`` is a known property type tag.

    Tags: ``bool int float f32 str bytes`` (``f32``: a float sent as float32),
    ``model:<TypeName>`` for a declared child model, and a ``?`` suffix on a scalar tag when
    nil is allowed (``str?``).
    """
    base = tag[:-1] if tag.endswith("?") else tag
    if base in SCALAR_TAGS or (tag.startswith("model:") and len(tag) > 6 and tag == base):
        return
    raise ProtocolError(f"unknown property type tag {tag!r}")


def coerce_value(tag: str, value: object) -> Value:
    """Return ``value`` as a value of the type ``tag`` names, or raise :class:`TypeError`.

    An int is accepted for a float (and becomes one); bool is never accepted as a number;
    ints must fit in 64 bits. Child-model tags accept no value at all.
    """
    if value is None:
        if tag.endswith("?"):
            return None
        raise TypeError(f"None is not a valid {tag} (declare the property Optional to allow it)")
    base = tag[:-1] if tag.endswith("?") else tag
    t = type(value)
    if base == "float":
        if isinstance(value, float) and t is float:
            return value
        if isinstance(value, int) and t is int and _INT64_MIN <= value <= _UINT64_MAX:
            return float(value)
    elif base == "f32":
        if (isinstance(value, float) and t is float) or (
                isinstance(value, int) and t is int and _INT64_MIN <= value <= _UINT64_MAX):
            try:
                rounded: float = _F32_ROUND.unpack(_F32_ROUND.pack(value))[0]
            except OverflowError:
                raise TypeError(f"{value!r} does not fit in a float32") from None
            return rounded
    elif base == "int":
        if isinstance(value, int) and t is int:
            if _INT64_MIN <= value <= _UINT64_MAX:
                return value
            raise TypeError(f"{value} does not fit in 64 bits")
    elif base == "str":
        if isinstance(value, str) and t is str:
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    raise TypeError(f"{value!r} cannot be sent: it is not valid Unicode "
                                    "(a lone surrogate?)") from None
            return value
    elif base == "bool":
        if isinstance(value, bool):
            return value
    elif base == "bytes":
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value)
    elif base.startswith("model:"):
        raise TypeError("a child model property cannot be assigned; set its properties instead")
    raise TypeError(f"expected {tag}, got {t.__name__} {value!r}")
