"""Heartbeats: a client that goes silent (or is killed with SIGKILL) is removed after the
heartbeat timeout, and its destroy_when_owner_leaves models vanish for everyone else."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import pytest
from zmq_helpers import ROOT, RawClient, raw_clients, run_server, wait_until

from rtecs.protocol import (
    CREATE,
    DESTROY,
    DESTROY_WHEN_OWNER_LEAVES,
    OWNER,
    LeaveEntry,
    UpdateEntry,
    dynamic_model_id,
)

__all__ = ["raw_clients"]  # fixtures used here

pytestmark = pytest.mark.timeout(30)

MakeClient = Callable[..., RawClient]
TIMEOUT = 0.5


def create_owned_player(client: RawClient, name: str) -> int:
    mid = dynamic_model_id(client.client_id, 1)
    client.update([mid, CREATE, ("Player", DESTROY_WHEN_OWNER_LEAVES), OWNER,
                   client.client_id, 1, name])
    return mid


def test_a_silent_client_is_removed_and_its_owned_model_destroyed(
        raw_clients: MakeClient) -> None:
    with run_server("--heartbeat-timeout", str(TIMEOUT)) as server:
        owner, other = raw_clients(server.endpoint), raw_clients(server.endpoint)
        owner.join()
        other.join()
        mid = create_owned_player(owner, "ann")
        wait_until(lambda: mid in other.mirror.models, clients=[owner, other],
                   ping_every=0.1)
        silent_since = time.monotonic()          # the owner says nothing from here on
        wait_until(lambda: mid not in other.mirror.models, timeout=5, clients=[other],
                   ping_every=0.1, what="the owned model to be destroyed")
        elapsed = time.monotonic() - silent_since
        assert TIMEOUT * 0.8 < elapsed < TIMEOUT + 1.0
        batch = next(m for m in other.batches()
                     if any(isinstance(e, UpdateEntry) and e.sender == 0 for e in m.entries))
        assert LeaveEntry(owner.client_id) in batch.entries
        assert UpdateEntry(0, 0, ((mid, DESTROY, None),), ()) in batch.entries
        assert other.client_id in other.mirror.clients         # the pinging client stayed
        assert "timed out" in server.stderr


def test_a_client_that_keeps_pinging_stays(raw_clients: MakeClient) -> None:
    with run_server("--heartbeat-timeout", str(TIMEOUT)) as server:
        a, b = raw_clients(server.endpoint), raw_clients(server.endpoint)
        a.join()
        b.join()
        deadline = time.monotonic() + 4 * TIMEOUT
        wait_until(lambda: time.monotonic() > deadline, timeout=5, clients=[a, b],
                   ping_every=0.1, what="four heartbeat timeouts to pass")
        assert a.mirror.clients == b.mirror.clients == {1, 2}


CHILD = textwrap.dedent("""
    import sys, threading
    from zmq_helpers import RawClient, wait_until
    from test_server_heartbeat import create_owned_player
    client = RawClient(sys.argv[1])
    client.join()
    mid = create_owned_player(client, "doomed")
    wait_until(lambda: mid in client.mirror.models, clients=[client])
    print(mid, flush=True)
    threading.Event().wait()
""")


def test_kill_9_of_a_client_process_destroys_its_owned_model(raw_clients: MakeClient) -> None:
    with run_server("--heartbeat-timeout", str(TIMEOUT)) as server:
        watcher = raw_clients(server.endpoint)
        watcher.join()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), str(ROOT)]))
        child = subprocess.Popen([sys.executable, "-c", CHILD, server.endpoint],
                                 stdout=subprocess.PIPE, text=True, env=env)
        try:
            assert child.stdout is not None
            mid = int(child.stdout.readline())
            wait_until(lambda: mid in watcher.mirror.models, clients=[watcher],
                       ping_every=0.1)
            child.send_signal(signal.SIGKILL)
            child.wait(5)
            killed = time.monotonic()
            wait_until(lambda: mid not in watcher.mirror.models, timeout=5,
                       clients=[watcher], ping_every=0.1, what="the dead client's model to go")
            assert time.monotonic() - killed < TIMEOUT + 1.0
            assert len(watcher.mirror.clients) == 1
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(5)
