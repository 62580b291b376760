"""Encryption (issue 11, DESIGN §8): ZeroMQ CURVE turned on by a server key file
(``rtecs-server keygen``, ``--curve-secret-key-file``), clients given the server's public key
(``rtecs.connect(..., server_key=...)``). An encrypted join works and its bytes on the wire are
ciphertext (a TCP relay between client and server records them); a plaintext client never
gets a welcome and fails with a clear error; CURVE and join tokens together check the token at
the hello."""

from __future__ import annotations

import itertools
import os
import selectors
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from test_auth import SECRET, PlainDealer, refusal, token
from zmq_helpers import PATIENCE, SERVER_SCRIPT, ServerProcess, settle

import rtecs
from rtecs.errors import NotConnectedError
from rtecs.realtime import Realtime
from rtecs.transport.zmq import load_server_key
from rtecs_server import RoomServer
from rtecs_server.cli import main
from rtecs_server.zmq_transport import KeyFiles, load_secret_key, write_key_pair

pytestmark = pytest.mark.timeout(60)


class Note(rtecs.RealtimeModel):
    text: str = rtecs.prop(1, default="")


_WORLDS = itertools.count(1)
MARKER = "plaintext-marker-7f3a9c"


def connect(endpoint: str, room: str = "lobby", **kw: Any) -> Realtime:
    kw.setdefault("connect_timeout", 3.0)
    kw.setdefault("reconnect_tries", 1)
    return rtecs.connect(endpoint, room, Note(), frame_duration=0.0,
                         world=f"curve-{next(_WORLDS)}", **kw)


@pytest.fixture
def keys(tmp_path: Path) -> KeyFiles:
    return write_key_pair(tmp_path / "keys")


@pytest.fixture
def encrypted(keys: KeyFiles) -> Iterator[RoomServer]:
    with RoomServer(curve_secret_key=load_secret_key(keys.secret_file)) as server:
        yield server


class Relay:
    """A TCP relay from a local port to ``target`` that keeps every byte it moves."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("tcp://").rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.seen = bytearray()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ)
        pairs: dict[socket.socket, socket.socket] = {}
        while not self._stop:
            for key, _ in sel.select(0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self.listener:
                    inner, _ = self.listener.accept()
                    outer = socket.create_connection(self.target)
                    pairs[inner], pairs[outer] = outer, inner
                    sel.register(inner, selectors.EVENT_READ)
                    sel.register(outer, selectors.EVENT_READ)
                    continue
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                other = pairs.get(sock)
                if not data or other is None:
                    for s in (sock, other):
                        if s is not None and s in pairs:
                            sel.unregister(s)
                            pairs.pop(s)
                            s.close()
                    continue
                self.seen += data
                other.sendall(data)
        for s in pairs:
            s.close()
        self.listener.close()

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)


def _exchange(endpoint: str, **kw: Any) -> None:
    """Two clients through ``endpoint``: one writes the marker, the other sees it."""
    writer, reader = connect(endpoint, **kw), connect(endpoint, **kw)
    writer.wait_connected(PATIENCE)
    reader.wait_connected(PATIENCE)
    writer.room_model.text = MARKER  # type: ignore[attr-defined]
    settle(lambda: reader.room_model.text == MARKER, writer, reader)  # type: ignore[attr-defined]
    writer.close()
    reader.close()


def test_an_encrypted_join_works_and_the_wire_carries_only_ciphertext(
        encrypted: RoomServer, keys: KeyFiles) -> None:
    relay = Relay(encrypted.endpoint)
    try:
        _exchange(relay.endpoint, server_key=keys.public_key)
    finally:
        relay.close()
    assert len(relay.seen) > 1000
    assert MARKER.encode() not in relay.seen and b"lobby" not in relay.seen
    assert b"CURVE" in relay.seen  # the ZMTP greeting names the mechanism
    # the same exchange with an unencrypted server shows the relay sees plaintext
    with RoomServer() as plain:
        relay = Relay(plain.endpoint)
        try:
            _exchange(relay.endpoint)
        finally:
            relay.close()
    assert MARKER.encode() in relay.seen and b"lobby" in relay.seen


def test_a_plaintext_client_cannot_join_an_encrypted_server(encrypted: RoomServer) -> None:
    rt = connect(encrypted.endpoint, connect_timeout=2.0)
    start = time.monotonic()
    message = refusal(rt)
    assert time.monotonic() - start < 2.0 + 1.0  # clear, and within connect_timeout
    assert "security mechanisms differ" in message and "server_key=" in message
    raw = PlainDealer(encrypted.endpoint, None)  # a raw plaintext peer: nothing at all
    try:
        raw.hello(None)
        assert raw.nothing_within(0.5)
    finally:
        raw.close()
    assert not encrypted.host.sessions


def test_a_wrong_server_key_never_gets_a_welcome(encrypted: RoomServer) -> None:
    rt = connect(encrypted.endpoint, server_key=zmq.curve_keypair()[0], connect_timeout=1.0)
    with pytest.raises(NotConnectedError, match=r"timeout|hung up") as exc:
        rt.wait_connected(PATIENCE)
    if "hung up" in str(exc.value):   # the server hung up on its handshakes: it says why
        assert "may not be this server's public key" in str(exc.value)
    assert rt.stats.welcomes == 0
    rt.close()


def test_an_encrypted_client_cannot_join_a_plaintext_server(keys: KeyFiles) -> None:
    with RoomServer() as plain:
        message = refusal(connect(plain.endpoint, server_key=keys.public_key))
    assert "the server is not" in message


def test_curve_with_tokens_checks_the_token_at_the_hello(keys: KeyFiles) -> None:
    with RoomServer(curve_secret_key=load_secret_key(keys.secret_file),
                    auth_secret=SECRET) as server:
        assert server.curve_public_key == keys.public_key
        ann = connect(server.endpoint, server_key=keys.public_file, token=token(user="ann"))
        ann.wait_connected(PATIENCE)
        assert "missing" in refusal(connect(server.endpoint, server_key=keys.public_key))
        assert "wrong_room" in refusal(connect(server.endpoint, server_key=keys.public_key,
                                               token=token(room="other")))
        assert "expired" in refusal(connect(server.endpoint, server_key=keys.public_key,
                                            token=token(ttl=1, now=time.time() - 10)))
        assert [s.user_id for s in list(server.host.sessions.values())] == ["ann"]
        ann.close()


def test_server_key_forms(keys: KeyFiles) -> None:
    expected = keys.public_key.encode()
    assert load_server_key(keys.public_key) == expected
    assert load_server_key(expected) == expected
    assert load_server_key(zmq.utils.z85.decode(expected)) == expected  # 32 raw bytes
    assert load_server_key(keys.public_file) == expected
    assert load_server_key(str(keys.public_file)) == expected
    with pytest.raises(ValueError, match="neither a CURVE public key"):
        rtecs.connect("tcp://127.0.0.1:1", "lobby", Note(), server_key="not a key")


def test_keygen_writes_usable_files(tmp_path: Path) -> None:
    directory = tmp_path / "server-keys"
    run = subprocess.run([str(SERVER_SCRIPT), "keygen", str(directory)], capture_output=True,
                         text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    public_file, secret_file = directory / "server.key", directory / "server.key_secret"
    public = run.stdout.splitlines()[0].removeprefix("public key ")
    assert load_server_key(public_file).decode() == public
    assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600
    assert "secret-key" not in public_file.read_text()
    assert zmq.curve_public(load_secret_key(secret_file)).decode() == public
    again = subprocess.run([str(SERVER_SCRIPT), "keygen", str(directory)], capture_output=True,
                           text=True, timeout=30)
    assert again.returncode == 1 and "exists already" in again.stderr
    assert load_server_key(public_file).decode() == public  # untouched

    server = ServerProcess("--curve-secret-key-file", str(secret_file))
    try:
        _exchange(server.endpoint, server_key=public_file)
        _exchange(server.endpoint, server_key=public)
        assert "security mechanisms differ" in refusal(connect(server.endpoint))
    finally:
        server.signal(signal.SIGTERM)
        assert server.wait(PATIENCE) == 0
    assert f"encrypted (CURVE, public key {public})" in server.stderr

    forced = subprocess.run([str(SERVER_SCRIPT), "keygen", str(directory), "--force"],
                            capture_output=True, text=True, timeout=30)
    assert forced.returncode == 0
    assert forced.stdout.splitlines()[0].removeprefix("public key ") != public


@pytest.mark.parametrize(("which", "message"), [
    ("public", "holds no secret key"),
    ("missing", "cannot read the CURVE key file"),
])
def test_a_bad_key_file_is_a_usage_error(keys: KeyFiles, which: str, message: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = keys.public_file if which == "public" else keys.public_file.with_name("nope")
    with pytest.raises(SystemExit) as exc:
        main(["--curve-secret-key-file", str(path), "--storage", "none"])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
