"""The demo's realtime models and its server plugin."""

from __future__ import annotations

from typing import Any

import rtecs

BOARD_W, BOARD_H = 8, 5          # tiles
TILE = 64                        # pixels per tile
COUNTER_MAX = 99


class Avatar(rtecs.RealtimeModel):
    """A player's square: owned by its player, moved with unreliable positions."""

    name: str = rtecs.prop(1, default="")
    color: int = rtecs.prop(2)                      # 0xRRGGBB
    x: float = rtecs.prop(3, reliable=False, float32=True)   # 4-byte floats on the wire
    y: float = rtecs.prop(4, reliable=False, float32=True)


class Gem(rtecs.RealtimeModel):
    """A collectible: anyone may pick it up (ownership transfer); it follows its holder."""

    x: float = rtecs.prop(1, reliable=False, float32=True)
    y: float = rtecs.prop(2, reliable=False, float32=True)
    color: int = rtecs.prop(3)


# The tile board: one int property per tile, holding the claiming client id (0 = free).
Tiles: type[rtecs.RealtimeModel] = type("Tiles", (rtecs.RealtimeModel,), {
    "__annotations__": {f"t{i}": int for i in range(BOARD_W * BOARD_H)},
    **{f"t{i}": rtecs.prop(i + 1) for i in range(BOARD_W * BOARD_H)},
    "__module__": __name__,
})


class World(rtecs.RealtimeModel):
    """The room model: a shared team name, a clamped counter and the tile board."""

    team_name: str = rtecs.prop(1, default="")
    counter: int = rtecs.prop(2)
    tiles: Tiles = rtecs.prop(3)  # type: ignore[valid-type]


MODEL_TYPES = (Avatar, Gem)


def referee(room: Any, sender: int, change: Any) -> Any:
    """The demo's server plugin: tiles can only be claimed when free and released by their
    claimer; the counter is clamped to 0..99 (a visible transformation)."""
    if change.type_name == "Tiles":
        previous = change.previous or 0
        if change.value == sender and previous in (0, sender):
            return change.value
        if change.value == 0 and previous == sender:
            return 0
        raise rtecs_server_reject(f"tile {change.prop_name} is held by client {previous}")
    if change.type_name == "World" and change.prop_name == "counter":
        return max(0, min(COUNTER_MAX, change.value))
    return change.value


def rtecs_server_reject(reason: str) -> Exception:
    from rtecs_server import Reject

    return Reject(reason)
