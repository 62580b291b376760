"""``rtecs-server``: run a room server from the command line (also ``python -m rtecs_server``).

``rtecs-server [FLAGS]`` serves. At startup it prints ``rtecs-server listening on
<endpoint>`` (the endpoint actually bound, so ``--bind tcp://127.0.0.1:0`` shows the port the
OS chose) to stdout and flushes it. SIGINT and SIGTERM stop it cleanly: every room is saved,
clients are told (``ERROR shutdown``), the sockets close, it logs "stopped" and exits 0. Usage
errors (a bad flag value, a plugin that cannot be loaded, an address that cannot be bound, a
storage that cannot be opened) exit 2 with a message.

Rooms persist in ``--storage`` (default: SQLite under ``--data-dir``; ``--storage none`` keeps
them in memory only). Operator commands work on the same storage, and exit 0 on success, 1
if the room is missing or unreadable, 2 on a usage error::

    rtecs-server rooms [--storage URL] [--data-dir DIR]        list the stored rooms
    rtecs-server dump ROOM [--storage URL] [--data-dir DIR]    a room's datastore as JSON
    rtecs-server delete ROOM [--force] [--storage URL] [--data-dir DIR]

The parts: :mod:`rtecs_server.cli_flags` (the parsers: every flag, its help and default),
:mod:`rtecs_server.cli_commands` (``rooms``, ``dump``, ``delete``) and this module (serving:
plugins, the server, signals).
"""

from __future__ import annotations

import importlib
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from rtecs_server.cli_commands import run_command
from rtecs_server.cli_flags import COMMANDS, build_parser
from rtecs_server.plugins import Plugin
from rtecs_server.server import RoomServer
from rtecs_server.storage import StorageError

__all__ = ["load_plugin", "main"]

log = logging.getLogger("rtecs_server")


def load_plugin(spec: str) -> Plugin:
    """Import ``module:object`` (the object may be a dotted path) and return the plugin;
    a class is instantiated with no arguments. Raises ``ValueError`` with a readable message."""
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
    if not callable(obj):
        raise ValueError(f"plugin {spec!r}: {type(obj).__name__} object is not callable; a "
                         f"plugin is called as plugin(room, sender, change)")
    return obj


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
        server = RoomServer(args.bind, plugins=plugins,
                            heartbeat_timeout=args.heartbeat_timeout,
                            empty_room_timeout=args.empty_room_timeout,
                            max_clients_per_room=args.max_clients_per_room,
                            tick_interval=args.tick_ms / 1000, rate_limit=args.rate_limit,
                            storage=storage, data_dir=args.data_dir,
                            advertise=args.advertise,
                            checkpoint_interval=args.checkpoint_interval,
                            lease_ttl=args.lease_ttl, history_bytes=args.history_bytes)
    except (OSError, ValueError, StorageError) as exc:
        parser.error(str(exc))

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        server.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f"rtecs-server listening on {server.endpoint}", flush=True)
        log.info("listening on %s (plugins: %s)", server.endpoint,
                 ", ".join(args.plugin) or "none")
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
