"""What a property value may be: the type tags, the 64-bit bounds of ints, the size limit of
str and bytes values, the start values, and the check of a declared default.

The tags are the wire's (:mod:`rtecs.protocol`): ``bool``, ``int``, ``float``, ``f32`` (a
float sent as 4 bytes), ``str``, ``bytes``, each with ``?`` when the value may be None, and
``model:<type name>`` for a declared child model. A value is refused at the write, before
anything changes (DESIGN §4b): a value of the wrong type raises ``TypeError``; an int outside
64 bits, or a str (UTF-8) or bytes value longer than the datastore's ``max_value_bytes`` (the
server announces it; :data:`DEFAULT_MAX_VALUE_BYTES` for a model in no datastore), raises
``ValueError``. The checks of a single write are :class:`~rtecs.model.Prop`'s (and the model
class's setter, which inlines the common cases); the rules they apply are here. Pure: this
module knows no model.
"""

from __future__ import annotations

from typing import Any

from rtecs.errors import SchemaError
from rtecs.protocol import DEFAULT_LIMITS, coerce_value

__all__ = ["DEFAULT_MAX_VALUE_BYTES", "INT_MAX", "INT_MIN", "PYTYPE", "UNSET", "ZERO",
           "default_value"]

#: The largest str (UTF-8) or bytes value a model in no datastore accepts: the default
#: update limit less room for the update's framing (``Limits.max_value_bytes``). A model in
#: a datastore uses the datastore's ``max_value_bytes`` (from the limits the server announced).
DEFAULT_MAX_VALUE_BYTES = DEFAULT_LIMITS.max_value_bytes

#: The bounds of an int value (64 bits, signed or unsigned). The model class's setter has
#: them as literals (one global lookup less on the hot path): keep them in step.
INT_MIN, INT_MAX = -(2**63), 2**64 - 1

#: The start value of a property declared without a default, by tag (optional ones: None).
ZERO: dict[str, object] = {"bool": False, "int": 0, "float": 0.0, "f32": 0.0, "str": "",
                           "bytes": b""}
#: The Python type of a value of each non-optional tag (its values are exactly that type).
PYTYPE: dict[str, type] = {"bool": bool, "int": int, "float": float, "str": str,
                           "bytes": bytes}
#: The default of a property declared without one.
UNSET: Any = object()


def default_value(tag: str, default: Any, where: str) -> Any:
    """The start value of a property of ``tag`` declared with ``default`` (:data:`UNSET`:
    none), as it is stored; raise :class:`~rtecs.errors.SchemaError` if the default is not a
    value of the tag or is over the size limit of a model in no datastore."""
    if default is UNSET:
        return None if tag.endswith("?") else ZERO[tag]
    try:
        value = coerce_value(tag, default)
    except TypeError as exc:
        raise SchemaError(f"{where}: bad default: {exc}") from None
    size = (len(value.encode("utf-8")) if type(value) is str
            else len(value) if type(value) is bytes else 0)
    if size > DEFAULT_MAX_VALUE_BYTES:
        raise SchemaError(f"{where}: bad default: {size} bytes, over the limit "
                          f"of {DEFAULT_MAX_VALUE_BYTES} bytes per value")
    return value
