"""``rtecs-server``: run a room server from the command line (also ``python -m rtecs_server``).

At startup it prints ``rtecs-server listening on <endpoint>`` (the endpoint actually bound,
so ``--bind tcp://127.0.0.1:0`` shows the port the OS chose) to stdout and flushes it. SIGINT
and SIGTERM stop it cleanly: clients are told (``ERROR shutdown``), the sockets close, it logs
"stopped" and exits 0. Usage errors (a bad flag value, a plugin that cannot be loaded, an
address that cannot be bound) exit 2 with a message.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from rtecs_server.plugins import Plugin
from rtecs_server.ratelimit import RateLimit
from rtecs_server.server import DEFAULT_RATE_LIMIT, DEFAULT_TICK_INTERVAL, RoomServer

__all__ = ["build_parser", "load_plugin", "main"]

log = logging.getLogger("rtecs_server")

_EPILOG = """\
examples:
  rtecs-server --bind tcp://0.0.0.0:7777
  rtecs-server --bind tcp://127.0.0.1:0 --heartbeat-timeout 2 --max-clients-per-room 16 \\
      --plugin mygame.rules:clamp_scores --log-level debug

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtecs-server",
        description="The rtecs room server: clients join rooms over ZeroMQ; the server orders, "
                    "validates and relays their writes. Rooms are created on first join.",
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
        help="close a room this long after its last client left (default: %(default)s)")
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
    parser.add_argument(
        "--log-level", default="info", type=str.lower,
        choices=["debug", "info", "warning", "error", "critical"],
        help="log verbosity, to stderr (default: %(default)s)")
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


def main(argv: Sequence[str] | None = None) -> int:
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
    try:
        server = RoomServer(args.bind, plugins=plugins,
                            heartbeat_timeout=args.heartbeat_timeout,
                            empty_room_timeout=args.empty_room_timeout,
                            max_clients_per_room=args.max_clients_per_room,
                            tick_interval=args.tick_ms / 1000, rate_limit=args.rate_limit)
    except (OSError, ValueError) as exc:
        parser.error(str(exc))

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        server.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f"rtecs-server listening on {server.endpoint}", flush=True)
        log.info("listening on %s (plugins: %s)", server.endpoint,
                 ", ".join(args.plugin) or "none")
        server.serve_forever()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
