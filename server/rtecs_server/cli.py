"""``rtecs-server``: run a room server from the command line (also ``python -m rtecs_server``).

``rtecs-server [FLAGS]`` serves. At startup it prints ``rtecs-server listening on
<endpoint>`` (the endpoint actually bound, so ``--bind tcp://127.0.0.1:0`` shows the port the
OS chose) to stdout and flushes it. SIGINT and SIGTERM stop it cleanly: every room is saved,
clients are told (``ERROR shutdown``), the sockets close, it logs "stopped" and exits 0.
SIGUSR1 logs how busy the loop was since the last SIGUSR1 (:class:`~rtecs_server.server.LoopStats`:
passes, CPU, the busiest pass) and starts counting again. Usage
errors (a bad flag value, a plugin that cannot be loaded, an address that cannot be bound, a
storage that cannot be opened) exit 2 with a message.

Rooms persist in ``--storage`` (default: SQLite under ``--data-dir``; ``--storage none`` keeps
them in memory only). Operator commands work on the same storage, and exit 0 on success, 1
if the room is missing or unreadable, 2 on a usage error::

    rtecs-server rooms [--storage URL] [--data-dir DIR]        list the stored rooms
    rtecs-server dump ROOM [--storage URL] [--data-dir DIR]    a room's datastore as JSON
    rtecs-server delete ROOM [--force] [--storage URL] [--data-dir DIR]
    rtecs-server keygen DIR [--force]                          a CURVE key pair

Security (``docs/server.md``): ``--auth-secret-file`` (or ``$RTECS_AUTH_SECRET_FILE``, or
``$RTECS_AUTH_SECRET``) requires join tokens, ``--curve-secret-key-file`` encrypts.

``--supervise`` (:func:`supervise`): this process starts the server as a child process
(``python -m rtecs_server`` with the same arguments and ``RTECS_SUPERVISED=1`` in its
environment, which makes it serve) and starts it again whenever it dies by a signal — a
crash such as libzmq's ``Assertion failed`` abort (SIGABRT), or SIGKILL — after
:data:`RESTART_DELAY`, at most :data:`MAX_RESTARTS` times in :data:`RESTART_WINDOW` seconds
(then it gives up and exits 1). A child that exits by itself (0 after a clean stop, 2 on a
usage error) ends the supervisor with that status; SIGTERM and SIGINT are passed on to the
child, which stops cleanly, and then the supervisor exits; SIGUSR1 is passed on. Each start
prints the child's ``listening on`` line again, and logs ``server child started (pid N)``.

The parts: :mod:`rtecs_server.cli_flags` (the parsers: every flag, its help and default),
:mod:`rtecs_server.cli_commands` (``rooms``, ``dump``, ``delete``) and this module (serving:
plugins, the server, signals).
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Final

from rtecs.protocol import Limits
from rtecs_server.auth import secret_from_environment
from rtecs_server.cli_commands import run_command
from rtecs_server.cli_flags import COMMANDS, build_parser
from rtecs_server.hooks import is_plugin
from rtecs_server.plugins import Plugin
from rtecs_server.server import RoomServer
from rtecs_server.storage import StorageError

__all__ = ["MAX_RESTARTS", "RESTART_DELAY", "RESTART_WINDOW", "load_plugin", "main",
           "supervise"]

log = logging.getLogger("rtecs_server")

#: ``--supervise``: seconds between a crash and the next start.
RESTART_DELAY: Final = 0.5
#: ``--supervise``: starts after crashes allowed within :data:`RESTART_WINDOW` seconds.
MAX_RESTARTS: Final = 10
RESTART_WINDOW: Final = 60.0
#: Set in the supervised child's environment.
SUPERVISED_ENV: Final = "RTECS_SUPERVISED"


def load_plugin(spec: str) -> Plugin:
    """Import ``module:object`` (the object may be a dotted path) and return the plugin — a
    callable (an ``on_write``) or a hook object (:mod:`rtecs_server.hooks`); a class is
    instantiated with no arguments. Raises ``ValueError`` with a readable message."""
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise ValueError(f"plugin {spec!r}: expected MODULE:OBJECT, e.g. mygame.rules:clamp")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"plugin {spec!r}: cannot import module {module_name!r}: {exc}"
                         ) from None
    except Exception as exc:
        raise ValueError(f"plugin {spec!r}: importing module {module_name!r} failed: "
                         f"{type(exc).__name__}: {exc}") from None
    for name in attr_path.split("."):
        try:
            obj = getattr(obj, name)
        except AttributeError:
            raise ValueError(f"plugin {spec!r}: {module_name!r} has no attribute "
                             f"{attr_path!r}") from None
    if isinstance(obj, type):
        try:
            obj = obj()
        except Exception as exc:
            raise ValueError(f"plugin {spec!r}: cannot instantiate {attr_path}() with no "
                             f"arguments: {type(exc).__name__}: {exc}") from None
    if not is_plugin(obj):
        raise ValueError(f"plugin {spec!r}: {type(obj).__name__} object is not callable and "
                         f"has no hook method (on_write, on_create, on_destroy, on_owner, "
                         f"authenticate); a plain plugin is called as plugin(room, sender, "
                         f"change)")
    return obj  # type: ignore[return-value]


def main(argv: Sequence[str] | None = None) -> int:
    """``rtecs-server [COMMAND] ARGS…``: serve, or run an operator command; returns the exit
    status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        return run_command(argv[0], argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.supervise and not os.environ.get(SUPERVISED_ENV):
        return supervise(argv)
    try:
        auth_secret = secret_from_environment(args.auth_secret_file)
        curve_key = None
        if args.curve_secret_key_file is not None:
            from rtecs_server.zmq_transport import load_secret_key
            curve_key = load_secret_key(args.curve_secret_key_file)
    except ValueError as exc:
        parser.error(str(exc))
    plugins: list[Plugin] = []
    for spec in args.plugin:
        try:
            plugins.append(load_plugin(spec))
        except ValueError as exc:
            parser.error(str(exc))
    storage = args.storage
    if storage is None:
        storage = "sqlite:"
    elif storage.lower() == "none":
        storage = None
    try:
        rate_limit = args.rate_limit
        if rate_limit is not None:
            rate_limit = dataclasses.replace(rate_limit, update_bytes=args.update_budget[0],
                                             update_changes=args.update_budget[1],
                                             address_budgets=args.address_budgets,
                                             schema_bytes=args.schema_budget)
        limits = Limits(max_update_bytes=args.max_update_bytes,
                        max_datastore_bytes=args.max_datastore_bytes,
                        max_changes_per_update=args.max_changes_per_update,
                        max_depth=args.max_depth)
        server = RoomServer(args.bind, plugins=plugins, limits=limits,
                            heartbeat_timeout=args.heartbeat_timeout,
                            session_grace=args.session_grace,
                            empty_room_timeout=args.empty_room_timeout,
                            max_clients_per_room=args.max_clients_per_room,
                            tick_interval=args.tick_ms / 1000, rate_limit=rate_limit,
                            storage=storage, data_dir=args.data_dir,
                            advertise=args.advertise,
                            checkpoint_interval=args.checkpoint_interval,
                            lease_ttl=args.lease_ttl, history_bytes=args.history_bytes,
                            auth_secret=auth_secret, curve_secret_key=curve_key,
                            max_sessions_per_address=args.max_sessions_per_address,
                            max_rooms=args.max_rooms,
                            max_empty_rooms_per_address=args.max_empty_rooms_per_address)
    except (OSError, ValueError, StorageError) as exc:
        parser.error(str(exc))

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        server.stop()

    def on_report(signum: int, frame: FrameType | None) -> None:
        stats = server.take_loop_stats()
        log.info("loop: %d passes since the last report, %.1f ms of CPU; the busiest pass "
                 "took %.1f ms of CPU (%.1f ms of real time)", stats.passes, stats.cpu * 1e3,
                 stats.busiest_cpu * 1e3, stats.busiest_wall * 1e3)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    if hasattr(signal, "SIGUSR1"):  # not on Windows
        previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, on_report)
    try:
        print(f"rtecs-server listening on {server.endpoint}", flush=True)
        log.info("listening on %s (plugins: %s)", server.endpoint,
                 ", ".join(args.plugin) or "none")
        log.info("joins: %s; traffic: %s", "join tokens required (checked at the handshake"
                 + (")" if curve_key is None else " in the hello)") if auth_secret is not None
                 else "anyone who reaches the port may join (no --auth-secret-file)",
                 f"encrypted (CURVE, public key {server.curve_public_key})"
                 if curve_key is not None else "not encrypted")
        p = server.persistence
        if p is None:
            log.info("no storage: rooms live in memory only and are lost when they close")
        else:
            log.info("rooms saved to %s (checkpoints every %g s, leases of %g s); instance %s, "
                     "advertised as %s", p.location, p.checkpoint_interval, p.lease_ttl,
                     p.instance_id, p.advertise)
        server.serve_forever()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def supervise(argv: Sequence[str]) -> int:
    """``rtecs-server --supervise ARGS``: run the server in a child process, started again
    when it dies by a signal (see the module docs); returns the exit status."""
    command = [sys.executable, "-m", "rtecs_server", *argv]
    env = dict(os.environ, **{SUPERVISED_ENV: "1"})
    stop = threading.Event()
    child: subprocess.Popen[bytes] | None = None

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    def pass_on(signum: int, frame: FrameType | None) -> None:
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    if hasattr(signal, "SIGUSR1"):
        previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, pass_on)
    crashes: collections.deque[float] = collections.deque()
    try:
        while True:
            child = subprocess.Popen(command, env=env)
            log.info("server child started (pid %d)", child.pid)
            code = child.wait()
            if code >= 0 or stop.is_set():
                return code if code >= 0 else 0
            log.error("the server child (pid %d) died by %s: starting it again", child.pid,
                      signal.Signals(-code).name)
            now = time.monotonic()
            crashes.append(now)
            while crashes and crashes[0] < now - RESTART_WINDOW:
                crashes.popleft()
            if len(crashes) > MAX_RESTARTS:
                log.error("the server died %d times within %g s: giving up", len(crashes),
                          RESTART_WINDOW)
                return 1
            if stop.wait(RESTART_DELAY):
                return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
