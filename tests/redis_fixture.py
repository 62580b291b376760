"""A real ``redis-server`` for the tests: one process per test session, on a free loopback
port, without persistence. Use it by importing the fixture into a test module (or a
conftest)::

    from redis_fixture import redis_server   # noqa: F401  (a pytest fixture)

    def test_x(redis_server: RedisServer) -> None:
        storage = RedisStorage(redis_server.url)

The binary must be installed (``.ci/run`` installs it with apt-get if missing); without it
the fixture fails with a message saying so — Redis tests are never skipped.
"""

from __future__ import annotations

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

_START_DEADLINE = 10.0
_DBS = itertools.count(1)


@dataclass
class RedisServer:
    """A running ``redis-server``: ``url`` for database 0, :meth:`fresh_url` for a new,
    empty numbered database (16 exist; numbers are reused after flushing)."""

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


def start_redis() -> RedisServer:
    """Start ``redis-server`` on a free port and wait (with a deadline) until it answers."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: the Redis tests need a real server. "
                    "`.ci/run` installs it (apt-get install -y redis-server); on a "
                    "development machine run `apt-get update && apt-get install -y "
                    "redis-server`.", pytrace=False)
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
        while time.monotonic() < deadline and proc.poll() is None:
            if _ping(port):
                return RedisServer(port, proc, workdir)
            time.sleep(0.02)
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
            pytest.fail(f"redis-server did not answer PING on port {port} within "
                        f"{_START_DEADLINE} s:\n{out}", pytrace=False)
    pytest.fail("redis-server could not bind a free port in 5 tries", pytrace=False)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis()
    try:
        yield server
    finally:
        server.process.kill()
        server.process.wait(timeout=10)
        shutil.rmtree(server.workdir, ignore_errors=True)
