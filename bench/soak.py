"""Soak: many clients for many minutes with writes, spawns, collection operations and link
cuts, against one real ``rtecs-server`` (issue 12 item 6; not in CI).

Run from the project root (10 minutes by default; ``--quick``: about 40 s)::

    .venv/bin/python -m bench.soak [--minutes 10] [--clients 100] [--rooms 10]

Setup: one ``rtecs-server`` (default flags but no per-address limits: every client is on
loopback) pinned to core 0; this process, on core 1, runs ``--clients`` ``rtecs.connect``
clients spread over ``--rooms`` rooms, each room's clients behind a link conditioner of
their own (:class:`rtecs.conditioner.LinkConditioner`), plus one *ledger* client per room on
a direct link. Every client ticks at 20 Hz and, at random:

- adds a numbered mark to the room's set (``n = client * 1,000,000 + k``, k = 0, 1, 2…) about
  once a second, and removes its own mark from ``--window`` (20) adds back, so the room
  holds a bounded number of marks: the state does not grow, and server memory can be
  watched for leaks;
- writes the room's title (a reliable property, last writer wins);
- destroys its avatar (an owned ``destroy_when_owner_leaves`` entity) and spawns a new one,
  about every 20 s.

Every ``--cut-every`` seconds (15) one room's link goes away for 0.5-5 s (half the time the
connections are also closed): its clients resume. The ledger clients never lose their link;
each records every mark it saw added and removed (the ``added``/``removed`` streams of the
set), so a lost add shows as a mark never added, an add applied twice as a mark added twice.

Printed: server RSS (``/proc/<pid>/status``) every ``--sample`` seconds (30), and at the
end the RSS growth per minute after ``--warmup`` minutes (2), reliable updates sent and
applied (each client's adds: sent, seen once by the ledger, seen twice, never seen),
sessions lost, resumes, and convergence: once the writes stop and every link is back,
every client of a room holds the same marks and title as its ledger, and each client's last
``--window`` marks. Exit status 1 if an add was lost or applied twice, or a room did not
converge.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field

import esper

import rtecs
from bench._harness import (
    GEN_CORE,
    exit_on_sigterm,
    need_cores,
    pin_self,
    server_cmd,
    start_server,
    stop_all,
)
from rtecs.conditioner import LinkConditioner
from rtecs.entities import in_world

_WORLDS = itertools.count(1)


class SoakMark(rtecs.RealtimeModel):
    n: int = rtecs.prop(1)


class SoakRoom(rtecs.RealtimeModel):
    title: str = rtecs.prop(1, default="")
    marks: rtecs.RealtimeSet[SoakMark] = rtecs.prop(2)


class SoakAvatar(rtecs.RealtimeModel):
    name: str = rtecs.prop(1, default="")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


@dataclass
class Player:
    """One soak client and what it sent."""

    rt: rtecs.Realtime
    key: int
    room: int
    sent: list[int] = field(default_factory=list)   # the numbers of its marks, in order
    mine: dict[int, SoakMark] = field(default_factory=dict)
    avatar: int | None = None
    next_add: float = 0.0
    next_spawn: float = 0.0

    @property
    def marks(self) -> rtecs.RealtimeSet[SoakMark]:
        model = self.rt.room_model
        assert isinstance(model, SoakRoom)
        return model.marks


@dataclass
class Ledger:
    """A client on a direct link that records every mark added to and removed from its room."""

    rt: rtecs.Realtime
    added: Counter[int] = field(default_factory=Counter)
    removed: Counter[int] = field(default_factory=Counter)


def connect(endpoint: str, room: str) -> rtecs.Realtime:
    return rtecs.connect(endpoint, room, SoakRoom(), world=f"soak-{next(_WORLDS)}",
                         types=[SoakMark, SoakAvatar], reconnect_tries=40)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--cut-every", type=float, default=15.0)
    parser.add_argument("--sample", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="40 s, 20 clients, 4 rooms")
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.clients, args.rooms, args.sample, args.warmup = 0.6, 20, 4, 5, 0.2
        args.cut_every = 6.0
    need_cores(2)
    exit_on_sigterm()
    rng = random.Random(args.seed)
    data = tempfile.mkdtemp(prefix="rtecs-soak-")
    proc, endpoint = start_server(server_cmd(data_dir=data))
    pin_self(GEN_CORE)
    links = [LinkConditioner(endpoint, seed=args.seed + r).start() for r in range(args.rooms)]
    try:
        return run(args, rng, proc.pid, endpoint, links)
    finally:
        for link in links:
            link.close()
        stop_all()


def run(args: argparse.Namespace, rng: random.Random, pid: int, endpoint: str,
        links: list[LinkConditioner]) -> int:
    ledgers = [Ledger(connect(endpoint, f"soak-{r}")) for r in range(args.rooms)]
    players = [Player(connect(links[i % args.rooms].endpoint, f"soak-{i % args.rooms}"),
                      i + 1, i % args.rooms) for i in range(args.clients)]
    everyone = [p.rt for p in players] + [led.rt for led in ledgers]
    for led in ledgers:
        model = led.rt.room_model
        assert isinstance(model, SoakRoom)
        model.marks.added.subscribe(lambda c, led=led: led.added.update([c.element.n]))
        model.marks.removed.subscribe(lambda c, led=led: led.removed.update([c.element.n]))
    deadline = time.monotonic() + 60
    while not all(rt.connected for rt in everyone):
        if time.monotonic() > deadline:
            print("not every client got in within 60 s", file=sys.stderr)
            return 1
        tick(everyone)
    start = time.monotonic()
    end = start + args.minutes * 60
    print(f"soak: {args.clients} clients in {args.rooms} rooms (+1 ledger each), "
          f"{args.minutes:g} min; server pid {pid}")
    print(f"{'t (s)':>7} {'server RSS (MiB)':>17} {'adds sent':>10} {'cuts':>5}")
    samples: list[tuple[float, int]] = []
    next_sample = start
    next_cut = start + args.cut_every
    cut: tuple[int, float] | None = None   # (room, restore at)
    cuts = 0
    for p in players:
        p.next_add = start + rng.uniform(0, 1)
        p.next_spawn = start + rng.uniform(0, 20)
    now = start
    while now < end:
        now = time.monotonic()
        for p in players:
            if p.rt.connected:
                act(p, rng, now, args.window)
        tick(everyone)
        if cut is None and now >= next_cut:
            room = rng.randrange(args.rooms)
            links[room].cut()
            if rng.random() < 0.5:
                links[room].drop()
            cut = (room, now + rng.uniform(0.5, 5.0))
            cuts += 1
        elif cut is not None and now >= cut[1]:
            links[cut[0]].restore()
            cut = None
            next_cut = now + args.cut_every
        if now >= next_sample:
            rss = rss_kib(pid)
            samples.append((now - start, rss))
            print(f"{now - start:7.0f} {rss / 1024:17.1f} {sum(len(p.sent) for p in players):10d}"
                  f" {cuts:5d}", flush=True)
            next_sample += args.sample
    if cut is not None:
        links[cut[0]].restore()
    return report(args, players, ledgers, everyone, samples, pid, start)


def act(p: Player, rng: random.Random, now: float, window: int) -> None:
    if now >= p.next_add:
        p.next_add = now + rng.uniform(0.5, 1.5)
        n = p.key * 1_000_000 + len(p.sent)
        mark = SoakMark(n=n)
        p.marks.add(mark)
        p.sent.append(n)
        p.mine[n] = mark
        if len(p.sent) > window:
            old = p.sent[-window - 1]
            gone = p.mine.pop(old, None)
            if gone is not None and gone in p.marks:
                p.marks.remove(gone)
        if rng.random() < 0.2:
            model = p.rt.room_model
            assert isinstance(model, SoakRoom)
            model.title = f"client {p.key} at {len(p.sent)}"
    if now >= p.next_spawn:
        p.next_spawn = now + rng.uniform(10, 30)
        if p.avatar is not None:
            with in_world(p.rt.world):
                alive = esper.entity_exists(p.avatar)
            if alive:
                p.rt.destroy(p.avatar)
        p.avatar = p.rt.spawn(SoakAvatar(name=f"client {p.key}"), owned=True,
                              destroy_when_owner_leaves=True)


def tick(clients: list[rtecs.Realtime]) -> None:
    for rt in clients:
        rt.tick()
    clients[0].connection.wait(0.002)


def marks_of(rt: rtecs.Realtime) -> set[int]:
    model = rt.room_model
    assert isinstance(model, SoakRoom)
    return {m.n for m in model.marks}


def agrees(p: Player, ledger: Ledger) -> bool:
    """``p`` holds what its room's ledger holds: the same marks and title."""
    mine, theirs = p.rt.room_model, ledger.rt.room_model
    assert isinstance(mine, SoakRoom) and isinstance(theirs, SoakRoom)
    return marks_of(p.rt) == marks_of(ledger.rt) and mine.title == theirs.title


def report(args: argparse.Namespace, players: list[Player], ledgers: list[Ledger],
           everyone: list[rtecs.Realtime], samples: list[tuple[float, int]], pid: int,
           start: float) -> int:
    # settle: every write answered, every room's clients agree with its ledger
    deadline = time.monotonic() + 120
    converged = False
    while time.monotonic() < deadline:
        tick(everyone)
        if all(rt.connected and rt.updates_in_flight == 0 and not rt.has_unsent_changes
               for rt in everyone) and all(agrees(p, ledgers[p.room]) for p in players):
            converged = True
            break
    settled = time.monotonic() - start
    rss = rss_kib(pid)
    samples.append((settled, rss))
    print(f"{settled:7.0f} {rss / 1024:17.1f}   (settled)")
    after = [(t, r) for t, r in samples if t >= args.warmup * 60]
    growth = ((after[-1][1] - after[0][1]) / 1024 / ((after[-1][0] - after[0][0]) / 60)
              if len(after) >= 2 and after[-1][0] > after[0][0] else float("nan"))
    sent = sum(len(p.sent) for p in players)
    once = twice = lost = 0
    for p in players:
        added = ledgers[p.room].added
        for n in p.sent:
            seen = added[n]
            once += seen == 1
            twice += seen > 1
            lost += seen == 0
    tail_ok = all(set(p.sent[-args.window:]) <= marks_of(ledgers[p.room].rt) for p in players)
    stats = [p.rt.stats for p in players]
    ledger_resyncs = sum(led.rt.stats.welcomes - 1 for led in ledgers)
    print()
    print(f"server RSS growth after the {args.warmup:g}-minute warm-up: {growth:+.2f} MiB/min "
          f"(target: < 1 MB/min)")
    print(f"reliable updates (mark adds): {sent} sent, {once} applied once, {twice} applied "
          f"twice, {lost} lost")
    print(f"sessions lost: {sum(s.sessions_lost for s in stats)}; resumes: "
          f"{sum(s.resumes for s in stats)}; reconnect attempts: "
          f"{sum(s.reconnect_attempts for s in stats)}; updates resent: "
          f"{sum(s.updates_resent for s in stats)}; ledger resyncs: {ledger_resyncs}")
    print(f"converged at the end: {'yes' if converged and tail_ok else 'NO'} "
          f"(every client's last {args.window} marks present: {'yes' if tail_ok else 'NO'})")
    for rt in everyone:
        rt.close(timeout=0.2)
    return 0 if converged and tail_ok and twice == 0 and lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
