"""A demo participant (a human or a bot): one rtecs client in an esper world of its own."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Any

import esper

import rtecs
from examples.pygame_demo.models import BOARD_H, BOARD_W, MODEL_TYPES, TILE, Avatar, Gem, World

SPEED = 180.0          # pixels per second
PALETTE = [0xE6194B, 0x3CB44B, 0x4363D8, 0xF58231, 0x911EB4, 0x42D4F4, 0xF032E6, 0xBFEF45,
           0xFABED4, 0x469990, 0xDCBEFF, 0x9A6324]
WORDS = ["Red Team", "Blue Team", "Tigers", "Owls", "Comets", "Otters", "Rockets", "Foxes"]
_WORLDS = itertools.count(1)


@dataclass
class Input:
    """What a participant does this frame."""

    dx: float = 0.0
    dy: float = 0.0
    claim: bool = False
    release: bool = False
    counter: int = 0
    gem: bool = False
    text: str | None = None  # a new team name to write


@dataclass
class Participant:
    """One client of the room: connects, spawns its avatar once welcomed, applies input."""

    endpoint: str
    room: str
    name: str
    color: int
    world_name: str = field(default_factory=lambda: f"demo-{next(_WORLDS)}")
    avatar: Avatar | None = None
    events: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.world = World()
        self.rt = rtecs.connect(self.endpoint, self.room, self.world, world=self.world_name,
                                types=MODEL_TYPES)
        with rtecs.ecs.in_world(self.world_name):
            esper.add_processor(rtecs.SyncSystem(self.rt), priority=100)
        self.rt.outcomes.subscribe(self._on_outcome)
        self.rt.changes.subscribe(self._on_change)
        self.in_flight = 0

    # ----------------------------------------------------------------- diagnostics

    def _log(self, text: str) -> None:
        self.events.append(text)
        del self.events[:-8]

    def _on_outcome(self, outcome: rtecs.UpdateOutcome) -> None:
        if outcome.status is rtecs.UpdateStatus.SENT:
            self.in_flight += 1
            return
        self.in_flight = max(0, self.in_flight - 1)
        if outcome.status is rtecs.UpdateStatus.REJECTED:
            self._log(f"update #{outcome.seq}: {len(outcome.rejected)} change(s) rejected")

    def _on_change(self, change: rtecs.Change) -> None:
        if change.source in (rtecs.ChangeSource.ROLLBACK, rtecs.ChangeSource.TRANSFORMED):
            self._log(f"{change.source.value}: {type(change.model).__name__}.{change.prop} "
                      f"{change.old!r} -> {change.new!r}")

    # ----------------------------------------------------------------- per frame

    def step(self, dt: float, action: Input) -> None:
        """Apply this frame's input, then run the esper world (its SyncSystem ticks)."""
        rt = self.rt
        if rt.connected:
            if self.avatar is None or rt.entity_of(self.avatar) is None:
                x = random.uniform(TILE, BOARD_W * TILE - TILE)
                y = random.uniform(TILE, BOARD_H * TILE - TILE)
                self.avatar = Avatar(name=self.name, color=self.color, x=x, y=y)
                rt.spawn(self.avatar)
            self._act(dt, action)
        with rtecs.ecs.in_world(self.world_name):
            esper.process()

    def _act(self, dt: float, action: Input) -> None:
        avatar = self.avatar
        assert avatar is not None
        if action.dx or action.dy:
            norm = math.hypot(action.dx, action.dy)
            half = 16.0  # keep the whole square on the board
            avatar.x = min(max(avatar.x + action.dx / norm * SPEED * dt, half),
                           BOARD_W * TILE - half)
            avatar.y = min(max(avatar.y + action.dy / norm * SPEED * dt, half),
                           BOARD_H * TILE - half)
        tile = self.tile_under()
        if action.claim:
            setattr(self.world.tiles, f"t{tile}", self.rt.client_id)
        if action.release:
            setattr(self.world.tiles, f"t{tile}", 0)
        if action.counter:
            self.world.counter += action.counter  # type: ignore[attr-defined]
        if action.text is not None:
            self.world.team_name = action.text  # type: ignore[attr-defined]
        if action.gem:
            self.rt.spawn(Gem(x=avatar.x, y=avatar.y, color=self.color), owned=False)
        self._carry_gems()

    def tile_under(self) -> int:
        assert self.avatar is not None
        col = min(int(self.avatar.x // TILE), BOARD_W - 1)
        row = min(int(self.avatar.y // TILE), BOARD_H - 1)
        return row * BOARD_W + col

    def _carry_gems(self) -> None:
        """Touching a gem picks it up (an ownership request); held gems follow their holder."""
        avatar = self.avatar
        assert avatar is not None
        with rtecs.ecs.in_world(self.world_name):
            gems = esper.get_component(Gem)
        for entity, gem in gems:
            record = self.rt.entity_model(entity)
            if record is None:
                continue
            if record.is_owned_locally:
                gem.x, gem.y = avatar.x + 18, avatar.y - 18
            elif math.hypot(gem.x - avatar.x, gem.y - avatar.y) < 20:
                holder = record.owner_id
                record.request_ownership()
                self._log("picked up a gem" + (f" from client {holder}" if holder > 0 else ""))

    def close(self) -> None:
        self.rt.close(timeout=0.2)
        with rtecs.ecs.in_world(self.world_name):
            esper.remove_processor(rtecs.SyncSystem)


class Bot:
    """A simulated player that wanders, claims tiles, bumps the counter and types names."""

    def __init__(self, participant: Participant, seed: int) -> None:
        self.p = participant
        self.rng = random.Random(seed)
        self.heading = (0.0, 0.0)
        self.turn_in = 0.0

    def decide(self, dt: float) -> Input:
        rng = self.rng
        self.turn_in -= dt
        if self.turn_in <= 0:
            angle = rng.uniform(0, 2 * math.pi)
            self.heading = (math.cos(angle), math.sin(angle))
            self.turn_in = rng.uniform(0.5, 1.5)
        action = Input(*self.heading)
        roll = rng.random()
        if roll < 0.02:
            action.claim = True
        elif roll < 0.025:
            action.counter = 5
        elif roll < 0.028:
            action.text = rng.choice(WORDS)
        elif roll < 0.029:
            action.gem = True
        return action


def describe(p: Participant) -> dict[str, Any]:
    """What this participant sees: its connection state, avatars by name, the team name,
    the counter."""
    with rtecs.ecs.in_world(p.world_name):
        avatars = {a.name: [round(a.x, 3), round(a.y, 3)] for _, a in esper.get_component(Avatar)}
    return {"name": p.name, "client_id": p.rt.client_id, "state": p.rt.state.value,
            "avatars": avatars, "team_name": p.world.team_name, "counter": p.world.counter}  # type: ignore[attr-defined]
