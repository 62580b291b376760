"""Hostile cost (issue 11 cases 6 and 7, and floods of each message kind): what one client
can make the server spend — loop time, memory — while honest clients keep playing.

Loop latency is measured by a *probe*: a raw client alone in a room of its own, pinging
every 10 ms, so its round trips are the server loop's delay and nothing of the attack's
traffic (the probe decodes no batches of the attacked room). The server runs in a child
process (its CPU is its own; its RSS is measured). Each test prints what it measured
(``pytest -s``)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from typing import Any

import pytest
from _hostile import SCHEMA, HPlayer, Net, Probe, Raw, ServerProc, converge, net, server_proc

from rtecs.protocol import (
    CREATE,
    PROTOCOL_VERSION,
    Error,
    Hello,
    Ping,
    Pong,
    Resume,
    Resync,
    Schema,
    Update,
    UpdateEntry,
    dynamic_model_id,
    encode,
)

__all__ = ["net"]  # the fixture

#: How far an attack may raise the probe's p99 round trip above its quiet p99 (issue 11's
#: acceptance: less than 50 ms for one abusive client at full budget; doubled for the noise
#: of a loaded 2-core machine).
P99_BUDGET = 0.1

_TOKENS = itertools.count(1)


def p99(rtts: list[float]) -> float:
    r = sorted(rtts)
    return r[min(len(r) - 1, int(len(r) * 0.99))]


def handled(attackers: Iterable[Raw], tick: Iterable[Any] = (), timeout: float = 40.0) -> None:
    """Wait (ticking ``tick``) until the server has handled everything the attackers sent:
    each pings last, and the answer (PONG, or ERROR not_joined from a peer with no
    session) comes after everything before it."""
    marks = []
    for a in attackers:
        token = -float(next(_TOKENS))
        marks.append((a, len(a.received), token))
        a.send(Ping(token))
    tick = list(tick)
    deadline = time.monotonic() + timeout
    for a, start, token in marks:
        while not any((isinstance(m, Pong) and m.client_time == token)
                      or (isinstance(m, Error) and m.code == "not_joined")
                      for m in a.received[start:]):
            assert time.monotonic() < deadline, "the attack was not handled in time"
            a.socket.poll(5)
            a.step()
            for rt in tick:
                rt.tick()


def heavy_run(changes: int, mode: str) -> list[Any]:
    """One run of ``changes`` writes to the room model: accepted ints, or (``reject``) every
    other one to a property the room does not have (refused, and listed as refused)."""
    run: list[Any] = [0]
    for i in range(changes):
        run += [2, 1000 + i % 60_000] if mode == "accept" else [9 if i % 2 else 2, 1000 + i]
    return run


class Scene:
    """A server process, a :class:`~_hostile.Probe` in a room of its own, an honest client
    with an owned avatar in the attacked room."""

    def __init__(self, net: Net, server: ServerProc) -> None:
        self.net, self.server = net, server
        self.honest = net.honest(server.endpoint)
        self.avatar = HPlayer(name="ann")
        self.honest.spawn(self.avatar, owned=True, destroy_when_owner_leaves=True)
        converge([self.honest], server.endpoint)
        self.probe = Probe(server.endpoint)
        net.closers.append(self.probe.kill)

    def attackers(self, n: int, room: str = "lobby") -> list[Raw]:
        out = [self.net.raw(self.server.endpoint) for _ in range(n)]
        for a in out:
            a.join(room)
        return out

    def attack(self) -> None:
        """A quiet window of 0.3 s, then what the probe measures is the attack."""
        self.probe.phase("quiet")
        end = time.monotonic() + 0.3
        while time.monotonic() < end:   # a measuring window, not a wait for an event
            self.honest.tick()
            self.honest.connection.wait(0.01)
        self.probe.phase("attack")

    def after(self, what: str) -> float:
        """Report; check the honest client kept its session and avatar and converges;
        the rise of the probe's p99 during the attack."""
        rtts = self.probe.stop()
        quiet, attack = p99(rtts["quiet"]), rtts.get("attack", [0.0])
        print(f"\n{what}: probe p99 {p99(attack) * 1e3:.1f} ms (quiet {quiet * 1e3:.1f} ms), "
              f"max {max(attack) * 1e3:.1f} ms over {len(attack)} pings")
        self.avatar.hp += 1
        want = converge([self.honest], self.server.endpoint)
        assert self.avatar.model_id in want, "the honest client's avatar was destroyed"
        assert self.honest.stats.sessions_lost == 0
        return p99(attack) - quiet


# ----------------------------------------------------------------------------- case 6

@pytest.mark.timeout(60)
def test_one_session_at_full_update_budget_keeps_the_loop_responsive(net: Net) -> None:
    """Case 6, one abusive session, sustained: an update of the most changes allowed
    (4,096) every 0.05 s for 1.5 s, twice what its budget pays for: the rest are refused
    inside the stream. (With 16,384 changes an update and 2 s bursts: 11 of 30 paid, the
    probe's p99 28-51 ms, each paid update ~35 ms of loop; before the update budget, 32
    updates of 60,000 changes stalled it 3.5 s.)"""
    with server_proc() as server:
        scene = Scene(net, server)
        [x] = scene.attackers(1)
        limit = x.welcomes[-1].limits.get("changes_per_update", 60_000)
        frames = [encode(Update(seq, [heavy_run(min(limit, 60_000), "accept")], 1))
                  for seq in range(1, 31)]
        scene.attack()
        cpu = server.cpu_seconds()
        start = time.monotonic()
        for i, frame in enumerate(frames):   # on a fixed schedule: 10 updates a second
            while time.monotonic() < start + i * 0.05:
                scene.honest.tick()
                scene.honest.connection.wait(0.005)
            x.send_raw(frame)
        x.seq = len(frames)
        handled([x], tick=[scene.honest])
        paid = [e for b in x.batches() for e in b.entries
                if isinstance(e, UpdateEntry) and e.sender == x.client_id and e.changes]
        rise = scene.after(f"30 updates of {limit} changes over 1.5 s from one session "
                           f"({len(paid)} paid), server CPU {server.cpu_seconds() - cpu:.2f} s")
        assert 0 < len(paid) < 30
        assert rise < P99_BUDGET, f"p99 rose {rise * 1e3:.0f} ms"


#: Not strict: with 4,096 changes an update and 0.5 s bursts this case sits at the bound (it
#: passed on some runs of the clean-clone CI and failed on others), so a pass is reported as
#: XPASS, not as a failure. The hole stays open until a budget per address (or fair turns per
#: loop pass) makes it pass every time; then make this strict again, or remove it.
_MANY_SESSIONS = pytest.mark.xfail(strict=False, reason=(
    "issue 11 case 6: the update budget is per session (sessions per address are capped, "
    "but not their budget): 8 sessions x 8 updates of the most changes allowed sent at once "
    "stall the loop past the bound on some runs (0.9-1.6 s with 16,384 changes and 2 s "
    "bursts)"))


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("sessions", "each", "mode"), [
    (1, 32, "accept"),  # passes since bursts are 0.5 s and updates 4,096 changes
    pytest.param(8, 8, "accept", marks=_MANY_SESSIONS),
    pytest.param(8, 8, "reject", marks=_MANY_SESSIONS)])
def test_updates_of_the_most_changes_allowed_keep_the_loop_responsive(
        net: Net, sessions: int, each: int, mode: str) -> None:
    with server_proc() as server:
        scene = Scene(net, server)
        attackers = scene.attackers(sessions)
        limit = attackers[0].welcomes[-1].limits.get("changes_per_update", 60_000)
        run = heavy_run(min(limit, 60_000), mode)
        frames = [encode(Update(seq, [run], 1)) for seq in range(1, each + 1)]
        assert len(frames[0]) <= 125 * 1024
        cpu = server.cpu_seconds()
        scene.attack()
        for a in attackers:
            for frame in frames:
                a.send_raw(frame)
            a.seq = each
        handled(attackers, tick=[scene.honest])
        rise = scene.after(f"{sessions} x {each} updates of {len(run) // 2} changes "
                           f"({len(frames[0])} B, {mode}), server CPU "
                           f"{server.cpu_seconds() - cpu:.2f} s")
        assert rise < P99_BUDGET, f"p99 rose {rise * 1e3:.0f} ms"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["ping", "resync", "garbage", "schema", "resume"])
def test_floods_of_cheap_messages_keep_the_loop_responsive(net: Net, kind: str) -> None:
    """Most of the rate limit's burst (300 of 400 frames at once) of each small kind: answered or
    dropped cheaply, one welcome for all the RESYNCs (their cooldown), the loop stays
    responsive and the flooder's session survives."""
    with server_proc() as server:
        scene = Scene(net, server)
        [x] = scene.attackers(1)
        frame = {"ping": encode(Ping(1.0)), "resync": encode(Resync()),
                 "garbage": b"\xc1\xc1\xc1",
                 "schema": encode(Schema({"HNode": {1: ("label", "str", True)}})),
                 "resume": encode(Resume("lobby", b"s" * 16, b"x" * 32, 1, 0, 0))}[kind]
        before = len(x.welcomes)
        scene.attack()
        for _ in range(300):
            x.send_raw(frame)
        handled([x], tick=[scene.honest])
        rise = scene.after(f"300 x {kind}")
        assert rise < P99_BUDGET, f"p99 rose {rise * 1e3:.0f} ms"
        if kind == "resync":
            assert len(x.welcomes) - before <= 2
        assert not any(e.fatal for e in x.errors)
        assert server.alive()


@pytest.mark.timeout(60)
@pytest.mark.xfail(strict=True, reason=(
    "issue 11 cases 6/8: frames other than UPDATE have no byte budget: 32 HELLOs or "
    "SCHEMAs of 950 KB (each refused by the schema bounds after 45-100 ms of decoding and "
    "checking) cost ~1.5 s of server CPU and raise the probe's p99 by ~1 s"))
@pytest.mark.parametrize("kind", ["hello", "schema"])
def test_floods_of_950_kb_schemas_keep_the_loop_responsive(net: Net, kind: str) -> None:
    from test_hostile_schema import wide_schema

    with server_proc() as server:
        scene = Scene(net, server)
        [x] = scene.attackers(1)
        big = wide_schema("f", 950_000)
        frame = encode(Hello(PROTOCOL_VERSION, "lobby", "HGame", big, None)
                       if kind == "hello" else Schema(big))
        scene.attack()
        cpu = server.cpu_seconds()
        for _ in range(32):
            x.send_raw(frame)
        handled([x], tick=[scene.honest])
        cpu = server.cpu_seconds() - cpu
        rise = scene.after(f"32 x {kind} of {len(frame)} B, server CPU {cpu:.2f} s")
        assert rise < P99_BUDGET and cpu < 0.5, f"p99 rose {rise * 1e3:.0f} ms, CPU {cpu:.2f} s"


def fill(net: Net, endpoint: str, models: int, label: int, per_writer: int) -> list[Raw]:
    """Add ``models`` HNode models with ``label``-character labels to the lobby, from as
    many writers as the per-session update budget needs (``per_writer`` models each)."""
    writers = []
    for w0 in range(0, models, per_writer):
        w = net.raw(endpoint)
        w.join()
        n = min(per_writer, models - w0)
        text = "L" * label
        chunk = max(1, min(2000, 100_000 // (label + 24)))
        for start in range(0, n, chunk):
            w.update(*[[dynamic_model_id(w.client_id, i + 1), CREATE, ["HNode", 0], 1, text]
                       for i in range(start, min(n, start + chunk))])
        writers.append(w)
    for w in writers:
        w.sync(30)
        assert not w.errors, w.errors[0]
    return writers


@pytest.mark.timeout(60)
@pytest.mark.xfail(strict=True, reason=(
    "issue 11 cases 6/7: a HELLO on a live connection has no cooldown (a RESYNC has 1 s): "
    "each re-join encodes and sends a full snapshot (~400 kB, ~50 ms of loop for a room of "
    "20,000 models): 20 HELLOs cost ~1 s of server CPU and stall the loop up to ~1 s"))
def test_repeated_hellos_on_a_big_room_keep_the_loop_responsive(net: Net) -> None:
    with server_proc() as server:
        scene = Scene(net, server)
        fill(net, server.endpoint, 20_000, 1, 4000)
        x = net.raw(server.endpoint)
        hello = encode(Hello(PROTOCOL_VERSION, "lobby", "HGame", {"HGame": {}}, None))
        scene.attack()
        cpu = server.cpu_seconds()
        for _ in range(20):
            x.send_raw(hello)
        handled([x], tick=[scene.honest])
        cpu = server.cpu_seconds() - cpu
        rise = scene.after(f"20 HELLOs on a room of {len(x.welcomes[-1].snapshot)} models "
                           f"({len(x.welcomes)} welcomes of {len(x.raw[0]) // 1000} kB), "
                           f"server CPU {cpu:.2f} s")
        assert rise < P99_BUDGET and cpu < 0.25, f"p99 rose {rise * 1e3:.0f} ms, CPU {cpu:.2f} s"


# ----------------------------------------------------------------------------- case 7

def big_room(net: Net, server: ServerProc) -> int:
    """A lobby of 24 x 120 kB labels (from 12 writers: the update budget, 256 KiB at once,
    is per session); its size in bytes."""
    fill(net, server.endpoint, 24, 120_000, 2)
    return 24 * 120_000


@pytest.mark.timeout(60)
def test_never_reading_clients_that_resync_pin_a_bounded_amount_of_memory(net: Net) -> None:
    """Case 7: each RESYNC of a client that never reads used to queue one more full snapshot
    (1 s cooldown; three such clients grew a 4.8 MB room's server from 38 to 180 MB in
    10 s). Now a ping names the epoch it has read: the cooldown doubles with each unread
    welcome and the session ends past MAX_UNREAD_RESYNCS of them, so a session pins at most
    that many snapshots (measured: +26 MB for 3 clients in 5 s on a 2.9 MB room, ~3 welcomes
    each). The bound is per session, not per connection: see the re-join test below."""
    from rtecs_server.fanout import MAX_UNREAD_RESYNCS

    with server_proc() as server:
        room = big_room(net, server)
        honest = net.honest(server.endpoint)
        base = peak = server.rss()
        xs = [net.raw(server.endpoint, rcvhwm=1, rcvbuf=4096) for _ in range(3)]
        for x in xs:
            x.hello()
        end = time.monotonic() + 5
        while time.monotonic() < end:   # the attack lasts 5 s
            for x in xs:
                x.send(Resync())
                x.ping()
            honest.tick()
            peak = max(peak, server.rss())
            honest.connection.wait(0.1)
        grown = peak - base
        bound = len(xs) * MAX_UNREAD_RESYNCS * room + 8e6
        print(f"\n3 never-reading clients resyncing for 5 s on a {room / 1e6:.1f} MB room: "
              f"RSS +{grown / 1e6:.0f} MB (bound {bound / 1e6:.0f} MB)")
        honest.room_model.score = 1  # type: ignore[attr-defined]
        converge([honest], server.endpoint)
        assert grown < bound, f"+{grown / 1e6:.0f} MB"


@pytest.mark.timeout(60)
@pytest.mark.xfail(strict=True, reason=(
    "issue 11 case 7: the unread-welcome bound is per session and a HELLO on a live "
    "connection opens a new one (no cooldown): each welcome is queued whatever the "
    "connection's backlog, so 24 HELLOs from one never-reading socket pin 24 snapshots of "
    "a 2.9 MB room (~65-70 MB)"))
def test_a_never_reading_client_that_rejoins_pins_a_bounded_amount_of_memory(
        net: Net) -> None:
    with server_proc() as server:
        room = big_room(net, server)
        base = peak = server.rss()
        x = net.raw(server.endpoint, rcvhwm=1, rcvbuf=4096)
        hello = encode(Hello(PROTOCOL_VERSION, "lobby", "HGame", {"HGame": {}}, None))
        for _ in range(24):
            x.send_raw(hello)
            peak = max(peak, server.rss())
        probe = net.raw(server.endpoint)
        probe.join("other")
        probe.sync(30)
        peak = max(peak, server.rss())
        grown = peak - base
        bound = 2 * room + 8e6
        print(f"\n24 HELLOs from a never-reading socket on a {room / 1e6:.1f} MB room: "
              f"RSS +{grown / 1e6:.0f} MB (bound {bound / 1e6:.0f} MB)")
        assert grown < bound, f"+{grown / 1e6:.0f} MB"


@pytest.mark.timeout(60)
def test_hundreds_of_sessions_from_one_address_cost_little_each(net: Net) -> None:
    """What 300 sessions from one address cost, with the per-address cap lifted (it is 64 by
    default: tests/test_server_sessions_per_address.py): join time, server CPU, RSS per
    session — and the honest client keeps playing."""
    import zmq

    with server_proc("--rate-limit", "0", "--max-sessions-per-address", "0") as server:
        honest = net.honest(server.endpoint)
        base, cpu = server.rss(), server.cpu_seconds()
        hello = encode(Hello(PROTOCOL_VERSION, "lobby", "HGame", {"HGame": {}}, None))
        start = time.perf_counter()
        for _ in range(300):
            s = net.dealer(server.endpoint)
            s.setsockopt(zmq.RCVHWM, 4)
            s.send(hello)
        deadline = time.monotonic() + 30
        while len(honest.clients) < 301:
            assert time.monotonic() < deadline, f"{len(honest.clients)} joined"
            honest.tick()
            honest.connection.wait(0.01)
        took = time.perf_counter() - start
        per = (server.rss() - base) / 300
        print(f"\n300 sessions: joined in {took:.2f} s, server CPU "
              f"{server.cpu_seconds() - cpu:.2f} s, RSS +{per / 1e3:.0f} kB a session")
        honest.room_model.title = "crowded"  # type: ignore[attr-defined]
        converge([honest], server.endpoint)
        assert per < 200e3


@pytest.mark.timeout(60)
@pytest.mark.xfail(strict=True, reason=(
    "issue 11 cases 7/8: nothing bounds the rooms a client opens, nor the server's total: a "
    "room left empty stays open --empty-room-timeout (30 s) with its schema and models; "
    "60 HELLOs from one socket, each opening a room with a ~230 kB schema, pin ~40 MB "
    "(0.7 MB a room, 3x the schema's estimate)"))
def test_rooms_one_client_opens_and_leaves_pin_a_bounded_amount_of_memory(net: Net) -> None:
    with server_proc() as server:
        honest = net.honest(server.endpoint)
        base = server.rss()
        x = net.raw(server.endpoint)
        for r in range(60):
            schema: dict[str, Any] = dict(SCHEMA)
            for i in range(200):
                schema[f"r{r}T{i:03d}"] = {p: (f"p{p}" + "n" * 100, "int", True)
                                           for p in range(1, 9)}
            x.join(f"room{r}", schema=schema)
        x.bye()
        x.ping()   # no session left: answered not_joined once everything before is handled
        x.expect_error("not_joined", 30)
        grown = server.rss() - base
        print(f"\n60 rooms opened and left by one socket: RSS +{grown / 1e6:.0f} MB")
        honest.room_model.score = 1  # type: ignore[attr-defined]
        converge([honest], server.endpoint)
        assert grown < 16e6, f"+{grown / 1e6:.0f} MB"
