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
    count_changes,
    dynamic_model_id,
    encode,
)
from rtecs_server.ratelimit import BUDGET_SECONDS, RateLimit

__all__ = ["net"]  # the fixture

#: The most CPU the server loop may spend in one pass during an attack: how long it works
#: without reading its socket, so how long an honest client's ping can wait behind it. It is
#: the loop thread's CPU time (``ServerProc.busiest_pass``), so a busy machine does not
#: inflate it, as it does the probe's round trips: those are printed, and issue 11's
#: acceptance on them (one abusive client at full budget raises an honest client's p99 by
#: less than 50 ms) is measured by ``python -m bench.abuse``, not asserted here.
PASS_BUDGET = 0.05

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
        self.marker = net.raw(server.endpoint)   # its pings mark "every pass before is over"
        self.marker.join("marker")

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
        self.server.busiest_pass()   # counting starts now
        self.probe.phase("attack")

    def after(self, what: str) -> float:
        """Report; check the honest client kept its session and avatar and converges;
        the CPU seconds of the server loop's busiest pass during the attack."""
        # A pass still running at the first report counts in the second: the marker's
        # PONG comes from a pass that began after it ended.
        busiest = self.server.busiest_pass()
        handled([self.marker])
        busiest = max(busiest, self.server.busiest_pass())
        rtts = self.probe.stop()
        quiet, attack = p99(rtts["quiet"]), rtts.get("attack", [0.0])
        print(f"\n{what}: busiest loop pass {busiest * 1e3:.1f} ms of CPU; probe p99 "
              f"{p99(attack) * 1e3:.1f} ms (quiet {quiet * 1e3:.1f} ms), max "
              f"{max(attack) * 1e3:.1f} ms over {len(attack)} pings")
        self.avatar.hp += 1
        want = converge([self.honest], self.server.endpoint)
        assert self.avatar.model_id in want, "the honest client's avatar was destroyed"
        assert self.honest.stats.sessions_lost == 0
        return busiest


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
        busiest = scene.after(f"30 updates of {limit} changes over 1.5 s from one session "
                           f"({len(paid)} paid), server CPU {server.cpu_seconds() - cpu:.2f} s")
        assert 0 < len(paid) < 30
        assert busiest < PASS_BUDGET, f"a loop pass took {busiest * 1e3:.0f} ms of CPU"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("sessions", "each", "mode"), [
    (1, 32, "accept"), (8, 8, "accept"), (8, 8, "reject")])
def test_updates_of_the_most_changes_allowed_keep_the_loop_responsive(
        net: Net, sessions: int, each: int, mode: str) -> None:
    """Everything sent at once: the loop reads and handles a slice at a time, so no pass
    works longer than the slice and one update (fair turns, ``rtecs_server.server``).
    Before: every frame waiting was read in one pass — 93 ms of CPU for 1 x 32, 260-300 ms
    for 8 x 8."""
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
        busiest = scene.after(f"{sessions} x {each} updates of {len(run) // 2} changes "
                              f"({len(frames[0])} B, {mode}), server CPU "
                              f"{server.cpu_seconds() - cpu:.2f} s")
        assert busiest < PASS_BUDGET, f"a loop pass took {busiest * 1e3:.0f} ms of CPU"


@pytest.mark.timeout(60)
def test_sessions_of_one_address_share_one_update_budget(net: Net) -> None:
    """8 sessions from one address, 8 updates of the most changes allowed each, at once:
    together they are paid what one session's budget pays (a burst of ``BUDGET_SECONDS``
    plus the rate for the time it took), the rest refused inside the stream. (Before the
    address's shared budget, ``--address-budgets``: 8 budgets, 262,144 changes in 1.2 s.)"""
    with server_proc() as server:
        attackers = [net.raw(server.endpoint) for _ in range(8)]
        for a in attackers:
            a.join("lobby")
        limits = attackers[0].welcomes[-1].limits
        run = heavy_run(limits.get("changes_per_update", 4096), "accept")
        frames = [encode(Update(seq, [run], 1)) for seq in range(1, 9)]
        start = time.monotonic()
        for a in attackers:
            for frame in frames:
                a.send_raw(frame)
            a.seq = len(frames)
        handled(attackers)
        took = time.monotonic() - start
        ids = {a.client_id for a in attackers}
        paid = sum(count_changes(e.changes) for b in attackers[0].batches() for e in b.entries
                   if isinstance(e, UpdateEntry) and e.sender in ids)   # the room's stream
        rate = RateLimit().update_changes
        allowed = rate * (BUDGET_SECONDS + took)
        print(f"\n8 sessions x 8 updates of {len(run) // 2} changes in {took:.2f} s: "
              f"{paid} changes paid, one budget pays {allowed:.0f}")
        assert paid <= allowed


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
        busiest = scene.after(f"300 x {kind}")
        assert busiest < PASS_BUDGET, f"a loop pass took {busiest * 1e3:.0f} ms of CPU"
        if kind == "resync":
            assert len(x.welcomes) - before <= 2
        assert not any(e.fatal for e in x.errors)
        assert server.alive()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", [
    "hello",   # on a joined connection: the re-join cooldown refuses all but the first
    "schema",  # on a joined connection: the address's schema budget, before decoding
    "fresh"])  # from 32 fresh connections of one address: the same
def test_floods_of_950_kb_schemas_keep_the_loop_responsive(net: Net, kind: str) -> None:
    """32 frames of 950 KB of schema. A hello on a joined connection is a re-join, held to
    the resync cooldown (before it: 1.3 s of CPU for 32, each schema checked and refused);
    SCHEMAs, and HELLOs from fresh connections, pay the address's schema budget before they
    are decoded (``--schema-budget``; before it: 1.1-1.5 s of CPU, 35-100 ms a frame)."""
    from test_hostile_schema import wide_schema

    with server_proc() as server:
        scene = Scene(net, server)
        senders = ([net.raw(server.endpoint) for _ in range(32)] if kind == "fresh"
                   else scene.attackers(1) * 32)
        big = wide_schema("f", 950_000)
        frame = encode(Hello(PROTOCOL_VERSION, "lobby", "HGame", big, None)
                       if kind != "schema" else Schema(big))
        scene.attack()
        cpu = server.cpu_seconds()
        for x in senders:
            x.send_raw(frame)
        handled(set(senders), tick=[scene.honest])
        cpu = server.cpu_seconds() - cpu
        busiest = scene.after(f"32 x {kind} of {len(frame)} B, server CPU {cpu:.2f} s")
        assert busiest < PASS_BUDGET and cpu < 0.5, (
            f"a loop pass took {busiest * 1e3:.0f} ms of CPU; all took {cpu:.2f} s")


def fill(net: Net, endpoint: str, models: int, label: int, per_writer: int) -> list[Raw]:
    """Add ``models`` HNode models with ``label``-character labels to the lobby, from as
    many writers as the update budget needs (``per_writer`` models each), each from an
    address of its own (the budget is shared by an address's sessions)."""
    writers = []
    for w0 in range(0, models, per_writer):   # each from an address of its own (budgets)
        w = net.raw(endpoint, source=f"127.0.1.{len(writers) + 1}")
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
def test_repeated_hellos_on_a_big_room_keep_the_loop_responsive(net: Net) -> None:
    """Cases 6/7: a HELLO on a joined connection is held to the resync cooldown, so 20 at
    once cost one welcome. (Before: each re-join encoded and sent a full snapshot, ~400 kB
    and ~50 ms of loop for a room of 20,000 models; 20 cost ~1 s of server CPU.)"""
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
        busiest = scene.after(f"20 HELLOs on a room of {len(x.welcomes[-1].snapshot)} models "
                           f"({len(x.welcomes)} welcomes of {len(x.raw[0]) // 1000} kB), "
                           f"server CPU {cpu:.2f} s")
        assert busiest < PASS_BUDGET and cpu < 0.25, (
            f"a loop pass took {busiest * 1e3:.0f} ms of CPU; all took {cpu:.2f} s")


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
def test_a_never_reading_client_that_rejoins_pins_a_bounded_amount_of_memory(
        net: Net) -> None:
    """Case 7: a re-join waits the resync cooldown and inherits the connection's unread
    welcomes, so a socket that sends HELLOs and never reads pins what one that sends
    RESYNCs does. (Before: 24 HELLOs pinned 24 snapshots of a 2.9 MB room, ~65-70 MB.)"""
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
def test_rooms_one_client_opens_and_leaves_pin_a_bounded_amount_of_memory(net: Net) -> None:
    """Cases 7/8: a room left empty stays open ``--empty-room-timeout`` (30 s) with its
    schema and models; past ``--max-empty-rooms-per-address`` (8) of them, an address's room
    empty the longest closes at once. 120 fresh connections of one address each open a room
    with a ~230 kB schema and leave: the second 60 rooms add (almost) nothing. (Before: every
    room stayed open, ~0.7 MB each: 60 pinned ~40 MB.) The schema budget is lifted here: it
    slows such an attack (1 MiB/s), it does not bound what the rooms keep."""
    with server_proc("--schema-budget", "0", count=["closed early"]) as server:
        honest = net.honest(server.endpoint)
        base = server.rss()
        rss = []
        for r in range(120):
            schema: dict[str, Any] = dict(SCHEMA)
            for i in range(200):
                schema[f"r{r}T{i:03d}"] = {p: (f"p{p}" + "n" * 100, "int", True)
                                           for p in range(1, 9)}
            x = net.raw(server.endpoint)
            x.join(f"room{r}", schema=schema)
            x.bye()
            x.ping()   # no session left: answered not_joined once the bye is handled
            x.expect_error("not_joined", 30)
            x.close()
            if r % 60 == 59:
                rss.append(server.rss() - base)
        early = server.counted["closed early"]
        print(f"\n120 rooms opened and left from one address: RSS +{rss[0] / 1e6:.0f} MB "
              f"after 60, +{rss[1] / 1e6:.0f} MB after 120; {early} closed early")
        assert early == 120 - 8
        again = net.raw(server.endpoint)   # a room closed early opens again for a joiner
        assert again.join("room0").client_id >= 1
        honest.room_model.score = 1  # type: ignore[attr-defined]
        converge([honest], server.endpoint)
        # 8 rooms of ~0.7 MB, and what the allocator keeps of the freed ones (measured
        # +17-30 MB after 60: RSS plateaus); growing on (~0.7 MB a room) fails this
        assert rss[1] < 40e6 and rss[1] - rss[0] < 8e6, rss
