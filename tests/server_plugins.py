"""Plugins the CLI tests load with ``rtecs-server --plugin server_plugins:NAME``."""

from __future__ import annotations

from rtecs.protocol import Value
from rtecs_server import Change, Reject, Room


def shout(room: Room, sender: int, change: Change) -> Value:
    """Upper-cases every string written; refuses the title 'forbidden'."""
    if change.value == "forbidden":
        raise Reject("not allowed")
    return change.value.upper() if isinstance(change.value, str) else change.value


class Doubler:
    """A class plugin (instantiated by the CLI): doubles every int written."""

    def __call__(self, room: Room, sender: int, change: Change) -> Value:
        return change.value * 2 if type(change.value) is int else change.value


NOT_CALLABLE = 42
