"""The demo's window: input, the game loop and drawing. See ``__main__.py`` for the CLI."""

from __future__ import annotations

import json
import os
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from examples.pygame_demo.models import BOARD_H, BOARD_W, TILE, Avatar, Gem, referee
from examples.pygame_demo.players import PALETTE, Bot, Input, Participant, describe

PANEL = 300                                  # overlay width, right of the board
HEADER = 48                                  # team name and counter, above the board
WIDTH, HEIGHT = BOARD_W * TILE + PANEL, BOARD_H * TILE + HEADER
AVATAR = 28                                  # avatar square size


@dataclass
class Options:
    connect: str | None = None
    room: str = "demo"
    name: str = "you"
    bots: int = 0
    headless: bool = False
    frames: int | None = None
    screenshot: str | None = None
    fps: int = 60
    script: str = ""
    report: str | None = None
    report_frame: int | None = None
    report_when: str | None = None
    data_dir: str = "./rtecs-data"


@dataclass
class Drawn:
    """Where avatars were drawn in the last frame: name → (centre x, centre y, colour)."""

    avatars: dict[str, tuple[int, int, int]] = field(default_factory=dict)


def rgb(color: int) -> tuple[int, int, int]:
    return (color >> 16) & 255, (color >> 8) & 255, color & 255


def parse_script(script: str) -> list[tuple[str, list[str]]]:
    """``"move 1 0 30; type Blue Team; wait 10"`` → steps (move DX DY FRAMES, type TEXT,
    claim, counter N, gem, wait FRAMES)."""
    steps = []
    for part in script.split(";"):
        words = part.split()
        if words:
            steps.append((words[0], words[1:]))
    return steps


class Scripted:
    """Feeds a participant the steps of a ``--script``, one frame at a time."""

    def __init__(self, script: str) -> None:
        self.steps = parse_script(script)
        self.left = 0

    @property
    def done(self) -> bool:
        return not self.steps

    def decide(self) -> Input | None:
        while self.steps:
            verb, args = self.steps[0]
            if verb in ("move", "wait"):
                frames = int(args[-1])
                if self.left == 0:
                    self.left = frames
                self.left -= 1
                if self.left == 0:
                    self.steps.pop(0)
                return Input(float(args[0]), float(args[1])) if verb == "move" else Input()
            self.steps.pop(0)
            if verb == "type":
                return Input(text=" ".join(args))
            if verb == "claim":
                return Input(claim=True)
            if verb == "counter":
                return Input(counter=int(args[0]))
            if verb == "gem":
                return Input(gem=True)
            raise ValueError(f"unknown script step {verb!r}")
        return None


@dataclass
class _Waiting:
    """State of ``--report-when``: settled yet, the FILE seen yet, the last view written."""

    settled: bool = False
    started: bool = False
    view: dict[str, Any] | None = None


def _report_when(path: str, report_path: str | None, me: Participant,
                 script: Scripted | None, waiting: _Waiting) -> bool:
    """``--report-when FILE`` (for tests of several demo processes): once the script is
    done and every write of this client is answered, print ``settled``; once ``FILE``
    exists (whoever runs the processes creates it when all of them said so), write the
    view to ``report_path`` whenever it changes (atomically: a reader never sees half a
    file), so the runner can wait until the views agree; once ``FILE`` is removed, stop.
    Returns whether to keep running."""
    rt = me.rt
    if not waiting.settled:
        if (me.avatar is not None and (script is None or script.done)
                and not rt.has_unsent_changes and rt.updates_in_flight == 0):
            waiting.settled = True
            print("settled", flush=True)
        return True
    if not os.path.exists(path):
        return not waiting.started
    waiting.started = True
    view = describe(me)
    if view != waiting.view and report_path is not None:
        waiting.view = view
        partial = f"{report_path}.partial"
        with open(partial, "w") as f:
            json.dump(view, f)
        os.replace(partial, report_path)
    return True


def run(options: Options) -> dict[str, Any]:
    """Run the demo; return the final report (also written to ``options.report``)."""
    if options.headless:
        os.environ["SDL_VIDEODRIVER"] = "dummy"
        os.environ["SDL_AUDIODRIVER"] = "dummy"
    import pygame

    server = None
    endpoint = options.connect
    if endpoint is None:
        from rtecs_server import RoomServer

        # SQLite under data_dir: the room (team name, tiles, counter, gems nobody holds)
        # persists across runs of the demo.
        server = RoomServer(bind="tcp://127.0.0.1:0", plugins=[referee], storage="sqlite:",
                            data_dir=options.data_dir, empty_room_timeout=0.0).start()
        endpoint = server.endpoint
        print(f"embedded room server on {endpoint}, rooms saved under {options.data_dir}")
    pygame.init()
    screen = pygame.display.set_mode((WIDTH, HEIGHT))
    pygame.display.set_caption(f"rtecs demo — room {options.room!r} as {options.name}")
    font = pygame.font.Font(None, 22)
    big = pygame.font.Font(None, 32)
    clock = pygame.time.Clock()

    colour = PALETTE[zlib.crc32(options.name.encode()) % len(PALETTE)]
    me = Participant(endpoint, options.room, options.name, colour)
    others = [c for c in PALETTE if c != colour]
    bots = [Bot(Participant(endpoint, options.room, f"bot{i + 1}", others[i % len(others)]), i)
            for i in range(options.bots)]
    script = Scripted(options.script) if options.script else None
    shown: dict[int, tuple[float, float]] = {}   # interpolated positions of remote avatars
    drawn = Drawn()
    typing: str | None = None
    report: dict[str, Any] = {}
    frame, running = 0, True
    waiting = _Waiting()
    last_bytes, bytes_rate, rate_at = 0, 0.0, time.monotonic()
    try:
        while running:
            dt = clock.tick(options.fps) / 1000.0
            action = Input()
            for event in pygame.event.get():
                if event.type == pygame.QUIT:
                    running = False
                elif event.type == pygame.KEYDOWN:
                    typing, action = _key(event, typing, action, pygame)
            keys = pygame.key.get_pressed()
            if typing is None:
                action.dx = (keys[pygame.K_RIGHT] or keys[pygame.K_d]) - (
                    keys[pygame.K_LEFT] or keys[pygame.K_a])
                action.dy = (keys[pygame.K_DOWN] or keys[pygame.K_s]) - (
                    keys[pygame.K_UP] or keys[pygame.K_w])
            if script is not None and me.avatar is not None:  # the script starts once in
                action = script.decide() or action              # the room, avatar spawned
            me.step(dt, action)
            for bot in bots:
                bot.p.step(dt, bot.decide(dt))
            now = time.monotonic()
            if now - rate_at >= 1.0:
                total = me.rt.bytes_sent + me.rt.bytes_received
                bytes_rate, last_bytes, rate_at = (total - last_bytes) / (now - rate_at), total, now
            _draw(screen, font, big, me, shown, drawn, dt, typing, bytes_rate)
            pygame.display.flip()
            frame += 1
            if options.report_frame is not None and frame == options.report_frame:
                report = describe(me)
            if options.report_when is not None:
                running = _report_when(options.report_when, options.report, me, script,
                                       waiting) and running
            if options.frames is not None and frame >= options.frames:
                running = False
        if options.screenshot:
            pygame.image.save(screen, options.screenshot)
        if not report:
            report = describe(me)
        report["drawn"] = drawn.avatars
        report["frames"] = frame
        if options.report:
            with open(options.report, "w") as f:
                json.dump(report, f)
        return report
    finally:
        for bot in bots:
            bot.p.close()
        me.close()
        pygame.quit()
        if server is not None:
            server.stop()


def _key(event: Any, typing: str | None, action: Input, pygame: Any) -> tuple[str | None, Input]:
    if typing is not None:
        if event.key == pygame.K_RETURN:
            return None, action
        if event.key == pygame.K_BACKSPACE:
            typing = typing[:-1]
        elif event.unicode and event.unicode.isprintable():
            typing += event.unicode
        action.text = typing
        return typing, action
    if event.key == pygame.K_RETURN:
        return "", action
    if event.key == pygame.K_SPACE:
        action.claim = True
    elif event.key == pygame.K_x:
        action.release = True
    elif event.key in (pygame.K_PLUS, pygame.K_EQUALS, pygame.K_KP_PLUS):
        action.counter = 1
    elif event.key in (pygame.K_MINUS, pygame.K_KP_MINUS):
        action.counter = -1
    elif event.key == pygame.K_g:
        action.gem = True
    return typing, action


def _draw(screen: Any, font: Any, big: Any, me: Participant, shown: dict[int, tuple[float, float]],
          drawn: Drawn, dt: float, typing: str | None, bytes_rate: float) -> None:
    import esper
    import pygame

    import rtecs

    screen.fill((24, 24, 32))
    with rtecs.ecs.in_world(me.world_name):
        avatars = esper.get_component(Avatar)
        gems = esper.get_component(Gem)
    owners: dict[int, int] = {}
    for entity, avatar in avatars:
        record = me.rt.entity_model(entity)
        if record is not None and record.owner_id > 0:
            owners[record.owner_id] = avatar.color
    tiles = me.world.tiles  # type: ignore[attr-defined]
    for i in range(BOARD_W * BOARD_H):
        rect = pygame.Rect((i % BOARD_W) * TILE, HEADER + (i // BOARD_W) * TILE, TILE, TILE)
        holder = getattr(tiles, f"t{i}")
        base = rgb(owners.get(holder, 0x555555)) if holder else (40, 40, 52)
        fill = tuple(c // 3 for c in base) if holder else base
        pygame.draw.rect(screen, fill, rect)
        pygame.draw.rect(screen, (60, 60, 76), rect, 1)
    for _, gem in gems:
        centre = (int(gem.x), HEADER + int(gem.y))
        pygame.draw.circle(screen, rgb(gem.color), centre, 8)
        pygame.draw.circle(screen, (255, 255, 255), centre, 8, 2)
    drawn.avatars.clear()
    for entity, avatar in avatars:
        if avatar is me.avatar:
            x, y = avatar.x, avatar.y
        else:  # interpolate towards the latest received position: no 20 Hz jumps
            sx, sy = shown.get(entity, (avatar.x, avatar.y))
            k = min(1.0, dt * 12.0)
            x, y = sx + (avatar.x - sx) * k, sy + (avatar.y - sy) * k
            shown[entity] = (x, y)
        rect = pygame.Rect(0, 0, AVATAR, AVATAR)
        rect.center = (int(x), HEADER + int(y))
        pygame.draw.rect(screen, rgb(avatar.color), rect)
        label = font.render(avatar.name, True, (235, 235, 235))
        screen.blit(label, (rect.centerx - label.get_width() // 2, rect.top - 16))
        drawn.avatars[avatar.name] = (rect.centerx, rect.centery, avatar.color)
    team = typing if typing is not None else me.world.team_name  # type: ignore[attr-defined]
    caption = f"team: {team}" + ("_" if typing is not None else "")
    screen.blit(big.render(caption, True, (255, 230, 120)), (10, 12))
    counter = me.world.counter  # type: ignore[attr-defined]
    screen.blit(big.render(f"counter {counter}", True, (160, 220, 255)),
                (BOARD_W * TILE - 170, 12))
    _overlay(screen, font, me, bytes_rate)


def _overlay(screen: Any, font: Any, me: Participant, bytes_rate: float) -> None:
    x0 = BOARD_W * TILE + 10
    rt = me.rt
    lines = [
        f"client {rt.client_id}  {rt.state.value}",
        f"ping {rt.ping:.1f} ms" if rt.ping is not None else "ping -",
        f"{bytes_rate / 1024:.1f} KB/s   in flight {me.in_flight}",
        f"clients in room: {len(rt.clients)}",
        "",
        "arrows/WASD  move",
        "SPACE / X  claim / release a tile",
        "+ / -  counter (server clamps 0..99)",
        "G  drop a gem (walk over one: take it)",
        "ENTER  type the team name",
        "",
        *me.events,
    ]
    for i, line in enumerate(lines):
        screen.blit(font.render(line, True, (200, 200, 210)), (x0, 10 + i * 20))
