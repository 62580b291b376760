"""The server plugin of ``tests/test_random_convergence.py``: a referee that rejects some
writes and transforms others, loaded with ``rtecs-server --plugin random_plugin:referee``.

The rules depend only on the property's *name* and the value written, so the test can pick
values that hit each rule without knowing model ids:

- int properties (``n``, ``hp``, ``score``, ``v``, ``count``): a non-zero multiple of 13 is
  rejected; anything above 60 is clamped to 60.
- str properties (``name``, ``title``, ``label``, ``note``): a value starting with ``x`` is
  rejected; a value longer than 4 characters is cut to its first 4.
- float properties, all unreliable (``x``, ``pos``, ``y``): a value in [6, 7) is rejected;
  anything outside [-10, 10] is clamped into it.
- everything else (``barrier``, ``flag``, ``blob``, and any change kind this plugin does not
  know, such as collection operations if a future server routes them here) passes unchanged.

It only ever looks at ``change.prop_name`` and ``change.value`` and returns the value to
accept, so it keeps working whatever else a future ``Change`` carries.
"""

from __future__ import annotations

from typing import Any

from rtecs_server import Reject

INT_PROPS = frozenset({"n", "hp", "score", "v", "count"})
STR_PROPS = frozenset({"name", "title", "label", "note"})
FLOAT_PROPS = frozenset({"x", "pos", "y"})


def judge(prop_name: str, value: Any) -> Any:
    """The referee's verdict on one write: the value to accept, or :class:`Reject`. The test
    imports this too, to know which rules its writes hit (it never predicts outcomes with it:
    it compares the clients with each other and with a fresh joiner)."""
    if prop_name in INT_PROPS and type(value) is int:
        if value and value % 13 == 0:
            raise Reject(f"{prop_name}: multiples of 13 are unlucky")
        return min(value, 60)
    if prop_name in STR_PROPS and type(value) is str:
        if value.startswith("x"):
            raise Reject(f"{prop_name}: no x-words")
        return value[:4]
    if prop_name in FLOAT_PROPS and type(value) is float:
        if 6.0 <= value < 7.0:
            raise Reject(f"{prop_name}: six is out")
        return max(-10.0, min(10.0, value))
    return value


def referee(room: Any, sender: int, change: Any) -> Any:
    """``plugin(room, sender, change)``: see the module docs."""
    name = getattr(change, "prop_name", None)
    value = getattr(change, "value", None)
    if not isinstance(name, str):
        return value
    result = judge(name, value)
    return value if result == value and type(result) is type(value) else result
