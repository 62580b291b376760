"""Heartbeats: a client that goes silent (or is killed with SIGKILL) is removed when its
session's grace runs out, and its destroy_when_owner_leaves models vanish for everyone else.

The server runs in this process on a :class:`~rtecs.clock.ManualClock` (real sockets, real
loop): the tests step its time past the timeout instead of waiting real seconds, so a loaded
machine — a child process slow to start, a client not scheduled for a while — changes how
long a test takes, never what it sees. Each step waits for the server to have acted on it
(:meth:`RawClient.barrier`), and the clients kept alive ping at every step.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest
from zmq_helpers import (
    PATIENCE,
    ROOT,
    RawClient,
    advance,
    clocked_server,
    raw_clients,
    wait_until,
)

from rtecs.clock import ManualClock
from rtecs.protocol import (
    CREATE,
    DESTROY,
    DESTROY_WHEN_OWNER_LEAVES,
    OWNER,
    Batch,
    LeaveEntry,
    UpdateEntry,
    dynamic_model_id,
)
from rtecs_server import RoomServer

__all__ = ["clocked_server", "raw_clients"]  # fixtures used here

pytestmark = pytest.mark.timeout(60)

MakeClient = Callable[..., RawClient]
MakeServer = Callable[..., tuple[RoomServer, ManualClock]]
TIMEOUT = 1.0   # the session grace, in seconds of the manual clock
STEP = 0.125    # clock steps: exact binary fractions, longer than the housekeeping interval


def create_owned_player(client: RawClient, name: str) -> int:
    mid = dynamic_model_id(client.client_id, 1)
    client.update([mid, CREATE, ("Player", DESTROY_WHEN_OWNER_LEAVES), OWNER,
                   client.client_id, 1, name])
    return mid


def destroy_batch(client: RawClient, mid: int) -> Batch:
    """The batch in which the server (sender 0) destroyed ``mid``."""
    return next(m for m in client.batches() if any(
        isinstance(e, UpdateEntry) and e.sender == 0 and (mid, DESTROY, None) in e.changes
        for e in m.entries))


def outlive_the_timeout(server: RoomServer, silent: int, watcher: RawClient, mid: int,
                        silent_since: float) -> Batch:
    """Step the clock to exactly ``TIMEOUT`` after ``silent_since`` (the silent client is
    still a member: the timeout is strict), then one step past it; wait for the destroy of
    ``mid`` to reach ``watcher`` (kept alive throughout) and return its batch."""
    advance(server, TIMEOUT, keep_alive=[watcher], step=STEP)
    assert server.now() - silent_since == TIMEOUT
    assert {s.client_id for s in server.host.sessions.values()} == {silent, watcher.client_id}
    assert mid in watcher.mirror.models
    advance(server, STEP, keep_alive=[watcher], step=STEP)
    wait_until(lambda: mid not in watcher.mirror.models, timeout=PATIENCE, clients=[watcher],
               what="the silent client's model to be destroyed")
    batch = destroy_batch(watcher, mid)
    assert batch.server_time - silent_since == TIMEOUT + STEP  # at the first look past it
    return batch


def test_a_silent_client_is_removed_and_its_owned_model_destroyed(
        clocked_server: MakeServer, raw_clients: MakeClient,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="rtecs_server")
    server, _ = clocked_server(heartbeat_timeout=TIMEOUT / 2, session_grace=TIMEOUT)
    owner, other = raw_clients(server.endpoint), raw_clients(server.endpoint)
    owner.join()
    other.join()
    mid = create_owned_player(owner, "ann")
    wait_until(lambda: mid in other.mirror.models, timeout=PATIENCE, clients=[owner, other])
    owner.barrier()
    silent_since = server.now()          # the owner's last frame; it says nothing from here on
    batch = outlive_the_timeout(server, owner.client_id, other, mid, silent_since)
    assert LeaveEntry(owner.client_id) in batch.entries
    assert UpdateEntry(0, 0, ((mid, DESTROY, None),), ()) in batch.entries
    assert other.client_id in other.mirror.clients         # the pinging client stayed
    assert owner.client_id not in other.mirror.clients
    assert "grace ran out" in caplog.text


def test_a_client_that_keeps_pinging_stays(clocked_server: MakeServer,
                                           raw_clients: MakeClient) -> None:
    server, _ = clocked_server(heartbeat_timeout=TIMEOUT / 2, session_grace=TIMEOUT)
    a, b = raw_clients(server.endpoint), raw_clients(server.endpoint)
    a.join()
    b.join()
    advance(server, 4 * TIMEOUT, keep_alive=[a, b], step=STEP)  # four graces
    wait_until(lambda: a.mirror.clients == b.mirror.clients == {1, 2}, timeout=PATIENCE,
               clients=[a, b])
    assert len(server.host.sessions) == 2


CHILD = textwrap.dedent("""
    import sys, threading
    from zmq_helpers import RawClient, wait_until
    from test_server_heartbeat import create_owned_player
    client = RawClient(sys.argv[1])
    client.join(timeout=60)
    mid = create_owned_player(client, "doomed")
    wait_until(lambda: mid in client.mirror.models, timeout=60, clients=[client])
    print(mid, flush=True)
    threading.Event().wait()
""")


def test_kill_9_of_a_client_process_destroys_its_owned_model(
        clocked_server: MakeServer, raw_clients: MakeClient) -> None:
    server, _ = clocked_server(heartbeat_timeout=TIMEOUT / 2, session_grace=TIMEOUT)
    watcher = raw_clients(server.endpoint)
    watcher.join()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    # however long the child takes to start, the server's clock stands still meanwhile
    child = subprocess.Popen([sys.executable, "-c", CHILD, server.endpoint],
                             stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout is not None
        mid = int(child.stdout.readline())
        wait_until(lambda: mid in watcher.mirror.models, timeout=PATIENCE, clients=[watcher])
        [dead] = [s.client_id for s in server.host.sessions.values()
                  if s.client_id != watcher.client_id]
        child.send_signal(signal.SIGKILL)
        assert child.wait(PATIENCE) == -signal.SIGKILL
        watcher.barrier()
        killed = server.now()            # its last frame came before this
        batch = outlive_the_timeout(server, dead, watcher, mid, killed)
        assert LeaveEntry(dead) in batch.entries
        assert watcher.mirror.clients == {watcher.client_id}
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)
