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
"""

from __future__ import annotations

import argparse
import base64
import importlib
import json
import logging
import math
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

from rtecs_server.persistence import DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_LEASE_TTL
from rtecs_server.plugins import Plugin
from rtecs_server.ratelimit import RateLimit
from rtecs_server.server import DEFAULT_RATE_LIMIT, DEFAULT_TICK_INTERVAL, RoomServer
from rtecs_server.storage import (
    SavedRoom,
    Storage,
    StorageError,
    open_storage,
    sqlite_file,
)

__all__ = ["COMMANDS", "build_command_parser", "build_parser", "dump_json", "load_plugin",
           "main"]

#: The operator commands (``rtecs-server COMMAND …``); anything else serves.
COMMANDS = ("rooms", "dump", "delete")
DEFAULT_DATA_DIR = "./rtecs-data"

log = logging.getLogger("rtecs_server")

_EPILOG = """\
commands (on the same --storage and --data-dir; see rtecs-server COMMAND --help):
  rtecs-server rooms            list the stored rooms: models, size, last save
  rtecs-server dump ROOM        print a stored room's datastore as JSON
  rtecs-server delete ROOM      delete a stored room

examples:
  rtecs-server --bind tcp://0.0.0.0:7777
  rtecs-server --bind tcp://127.0.0.1:0 --heartbeat-timeout 2 --max-clients-per-room 16 \\
      --plugin mygame.rules:clamp_scores --log-level debug
  rtecs-server --bind tcp://0.0.0.0:7777 --advertise tcp://10.0.0.7:7777 \\
      --storage redis://10.0.0.2:6379/0        # one of several instances on one Redis

A plugin is a callable plugin(room, sender, change) returning the value to accept or raising
rtecs_server.Reject (see rtecs_server.plugins); a class named this way is instantiated with no
arguments. Clients connect with rtecs.connect("tcp://HOST:PORT", room="lobby", ...).
"""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {text}")
    return value


def _rate_limit(text: str) -> RateLimit | None:
    try:
        return RateLimit.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _storage_arguments(parser: argparse.ArgumentParser, serving: bool) -> None:
    parser.add_argument(
        "--storage", default=None, metavar="URL",
        help="where rooms are saved: sqlite:///abs/path.db, sqlite:rel/path.db, "
             "redis://[user:password@]host:port/db (several instances share one Redis: "
             "leases and redirects)" + (", or none to keep rooms in memory only" if serving
                                         else "") +
             " (default: SQLite, rooms.sqlite3 under --data-dir)")
    parser.add_argument(
        "--data-dir", default=DEFAULT_DATA_DIR, metavar="DIR",
        help="directory of the default SQLite storage, created if missing "
             "(default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``rtecs-server [FLAGS]`` (serving)."""
    parser = argparse.ArgumentParser(
        prog="rtecs-server",
        description="The rtecs room server: clients join rooms over ZeroMQ; the server orders, "
                    "validates and relays their writes. A room is created or loaded on first "
                    "join, checkpointed while it changes, and saved and unloaded after it "
                    "stays empty.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--bind", default="tcp://127.0.0.1:7777", metavar="ENDPOINT",
        help="ZeroMQ endpoint to listen on; port 0 picks a free port, printed at startup "
             "(default: %(default)s; use tcp://0.0.0.0:7777 for every interface)")
    parser.add_argument(
        "--heartbeat-timeout", type=_positive_float, default=5.0, metavar="SECONDS",
        help="remove a client silent for this long (clients ping every second); its "
             "destroy-when-owner-leaves models are destroyed (default: %(default)s)")
    parser.add_argument(
        "--empty-room-timeout", type=_non_negative_float, default=30.0, metavar="SECONDS",
        help="save and close a room this long after its last client left "
             "(default: %(default)s)")
    parser.add_argument(
        "--max-clients-per-room", type=_positive_int, default=None, metavar="N",
        help="refuse joins beyond N clients in one room with 'room_full' "
             "(default: no limit)")
    parser.add_argument(
        "--plugin", action="append", default=[], metavar="MODULE:OBJECT",
        help="load a server plugin that validates or transforms writes; repeatable, run in "
             "the order given (default: none)")
    parser.add_argument(
        "--tick-ms", type=_non_negative_float, default=DEFAULT_TICK_INTERVAL * 1000,
        metavar="MS",
        help="minimum milliseconds between two relayed batches of a room: an update is relayed "
             "at once when the server was idle, else with the next tick; 0 relays after "
             "every receive (default: %(default)g)")
    parser.add_argument(
        "--rate-limit", type=_rate_limit, default=DEFAULT_RATE_LIMIT, metavar="RATE[:BURST]",
        help="messages per second each client may send, with bursts up to BURST (default "
             "burst: twice the rate); over it messages are dropped with a 'rate_limit' error, "
             "and a client over it for 2 s is disconnected; 0 disables the limit "
             "(default: 200:400)")
    _storage_arguments(parser, serving=True)
    parser.add_argument(
        "--checkpoint-interval", type=_positive_float, default=DEFAULT_CHECKPOINT_INTERVAL,
        metavar="SECONDS",
        help="save a changing room this often, so that a crash (kill -9, power loss) loses at "
             "most about this much; a room is saved only if a persistent model changed, and "
             "checkpoints take at most 10%% of the server's time, so very big or very many "
             "busy rooms are saved less often (default: %(default)s)")
    parser.add_argument(
        "--advertise", default=None, metavar="ENDPOINT",
        help="the endpoint clients reach this instance at, given to them by other instances "
             "sharing its Redis storage when they redirect (default: the bound endpoint, a "
             "0.0.0.0 host replaced by this machine's name)")
    parser.add_argument(
        "--lease-ttl", type=_positive_float, default=DEFAULT_LEASE_TTL, metavar="SECONDS",
        help="how long this instance's claim on a room lasts unless renewed (every third of "
             "it); after a crash its rooms can move to another instance this much later "
             "(default: %(default)s)")
    parser.add_argument(
        "--log-level", default="info", type=str.lower,
        choices=["debug", "info", "warning", "error", "critical"],
        help="log verbosity, to stderr (default: %(default)s)")
    return parser


def build_command_parser(command: str) -> argparse.ArgumentParser:
    """The parser of an operator command (one of :data:`COMMANDS`)."""
    about = {
        "rooms": "List the rooms stored in the storage: name, models, size, checkpoint "
                 "version and when it was saved.",
        "dump": "Print a stored room's persisted datastore as JSON: its schema, client-id "
                "counter and every model with its property values by name. Bytes values "
                "are {\"base64\": \"...\"}; non-finite floats are the strings \"NaN\", "
                "\"Infinity\", \"-Infinity\".",
        "delete": "Delete a stored room. A room currently hosted by a live instance "
                  "(Redis) is refused without --force: its host would save it again.",
    }[command]
    parser = argparse.ArgumentParser(prog=f"rtecs-server {command}", description=about)
    if command in ("dump", "delete"):
        parser.add_argument("room", metavar="ROOM", help="the room's name")
    if command == "delete":
        parser.add_argument("--force", action="store_true",
                            help="delete even if an instance hosts the room right now")
    _storage_arguments(parser, serving=False)
    return parser


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


def dump_json(saved: SavedRoom) -> dict[str, Any]:
    """A stored room as plain JSON data (see ``rtecs-server dump --help``)."""

    def value(v: object) -> object:
        if isinstance(v, bytes):
            return {"base64": base64.b64encode(v).decode("ascii")}
        if isinstance(v, float) and not math.isfinite(v):
            return "NaN" if math.isnan(v) else "Infinity" if v > 0 else "-Infinity"
        return v

    def mid(m: object) -> object:
        return list(m) if isinstance(m, tuple) else m

    models = []
    for rec in saved.models:
        names = saved.schema.get(rec.type_name, {})
        entry: dict[str, Any] = {"id": mid(rec.model_id), "type": rec.type_name,
                                 "flags": rec.flags}
        if rec.parent is not None:
            entry["parent"] = mid(rec.parent)
        if rec.key is not None:
            entry["key"] = rec.key
        entry["props"] = {names[pid][0] if pid in names else str(pid): value(v)
                          for pid, v in sorted(rec.props.items())}
        models.append(entry)
    return {
        "room": saved.name,
        "format": saved.format,
        "version": saved.version,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(saved.saved_at)),
        "root_type": saved.root_type,
        "next_client_id": saved.next_client_id,
        "created": {str(c): n for c, n in sorted(saved.created.items())},
        "schema": {t: {str(pid): {"name": n, "tag": tag, "reliable": rel}
                       for pid, (n, tag, rel) in sorted(props.items())}
                   for t, props in sorted(saved.schema.items())},
        "models": models,
    }


def _size(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    return f"{n / 1000:.1f} kB" if n < 1_000_000 else f"{n / 1_000_000:.1f} MB"


def _run_command(command: str, argv: Sequence[str]) -> int:
    parser = build_command_parser(command)
    args = parser.parse_args(argv)
    logging.basicConfig(level="WARNING", stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        db = sqlite_file(args.storage, args.data_dir)
    except StorageError as exc:
        parser.error(str(exc))
    if db is not None and not db.exists():  # an operator command creates no database
        print(f"no stored rooms: {db} does not exist", file=sys.stderr if command != "rooms"
              else sys.stdout)
        return 0 if command == "rooms" else 1
    try:
        storage: Storage = open_storage(args.storage, args.data_dir)
    except StorageError as exc:
        parser.error(str(exc))
    with storage:
        try:
            if command == "rooms":
                rooms = storage.list_rooms()
                if not rooms:
                    print(f"no stored rooms in {storage.location}")
                    return 0
                width = max(4, *(len(r.name) for r in rooms))
                print(f"{'ROOM':<{width}}  {'MODELS':>8}  {'SIZE':>9}  {'VERSION':>7}  "
                      f"LAST SAVE")
                for r in rooms:
                    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.saved_at))
                    print(f"{r.name:<{width}}  {r.models:>8}  {_size(r.size_bytes):>9}  "
                          f"{r.version:>7}  {when}")
                print(f"{len(rooms)} room{'s' if len(rooms) > 1 else ''} in "
                      f"{storage.location}")
                return 0
            if command == "dump":
                saved = storage.load(args.room)
                if saved is None:
                    print(f"rtecs-server dump: no stored room {args.room!r} in "
                          f"{storage.location}", file=sys.stderr)
                    return 1
                json.dump(dump_json(saved), sys.stdout, indent=2, ensure_ascii=False,
                          allow_nan=False)
                print()
                return 0
            owner = storage.owner(args.room)
            if owner is not None and not args.force:
                print(f"rtecs-server delete: room {args.room!r} is hosted right now by the "
                      f"instance at {owner.endpoint}, which would save it again; let it "
                      f"close first (its clients leave), or use --force", file=sys.stderr)
                return 1
            if not storage.delete(args.room):
                print(f"rtecs-server delete: no stored room {args.room!r} in "
                      f"{storage.location}", file=sys.stderr)
                return 1
            print(f"deleted room {args.room!r} from {storage.location}")
            return 0
        except StorageError as exc:
            print(f"rtecs-server {command}: {exc}", file=sys.stderr)
            return 1


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        return _run_command(argv[0], argv[1:])
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
                            lease_ttl=args.lease_ttl)
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
