"""The command line of ``rtecs-server``: the serving flags (:func:`build_parser`) and the
operator commands' arguments (:func:`build_command_parser`), with their help texts and value
checks. Running them is :mod:`rtecs_server.cli` (serving) and :mod:`rtecs_server.cli_commands`
(the operator commands).

Every flag's help names its default; ``docs/server.md`` has the same table for operators.
"""

from __future__ import annotations

import argparse

from rtecs.protocol import DEFAULT_LIMITS
from rtecs_server.directory import DEFAULT_MAX_EMPTY_ROOMS_PER_ADDRESS, DEFAULT_MAX_ROOMS
from rtecs_server.hosted import DEFAULT_HISTORY_BYTES, DEFAULT_SESSION_GRACE
from rtecs_server.persistence import DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_LEASE_TTL
from rtecs_server.ratelimit import RateLimit
from rtecs_server.server import DEFAULT_RATE_LIMIT, DEFAULT_TICK_INTERVAL
from rtecs_server.sessions import DEFAULT_MAX_SESSIONS_PER_ADDRESS

__all__ = ["COMMANDS", "DEFAULT_DATA_DIR", "build_command_parser", "build_parser"]

#: The operator commands (``rtecs-server COMMAND …``); anything else serves.
COMMANDS = ("rooms", "dump", "delete", "keygen")
DEFAULT_DATA_DIR = "./rtecs-data"

_EPILOG = """\
commands (on the same --storage and --data-dir; see rtecs-server COMMAND --help):
  rtecs-server rooms            list the stored rooms: models, size, last save
  rtecs-server dump ROOM        print a stored room's datastore as JSON
  rtecs-server delete ROOM      delete a stored room
  rtecs-server keygen DIR       write a CURVE key pair for --curve-secret-key-file

examples:
  rtecs-server --bind tcp://0.0.0.0:7777
  rtecs-server --bind tcp://127.0.0.1:0 --heartbeat-timeout 2 --max-clients-per-room 16 \\
      --plugin mygame.rules:clamp_scores --log-level debug
  rtecs-server --bind tcp://0.0.0.0:7777 --advertise tcp://10.0.0.7:7777 \\
      --storage redis://10.0.0.2:6379/0        # one of several instances on one Redis
  RTECS_AUTH_SECRET_FILE=/etc/rtecs/secret rtecs-server --bind tcp://0.0.0.0:7777 \\
      --curve-secret-key-file /etc/rtecs/keys/server.key_secret --supervise
                                               # tokens required, encrypted, restarted

A plugin is a callable plugin(room, sender, change) returning the value to accept or raising
rtecs_server.Reject (see rtecs_server.plugins), or a hook object with any of on_write,
on_create, on_destroy, on_owner, authenticate (rtecs_server.hooks); a class named this way is
instantiated with no arguments. Clients connect with rtecs.connect("tcp://HOST:PORT",
room="lobby", ...), with token= (rtecs.make_token) for --auth-secret-file and server_key= for
--curve-secret-key-file; docs/server.md "Security" says what a server without them risks.
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


def _update_budget(text: str) -> tuple[float, float]:
    bytes_text, _, changes_text = text.partition(":")
    try:
        budget = (float(bytes_text), float(changes_text or bytes_text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected BYTES:CHANGES per second (e.g. "
                                         f"524288:40000, or 0), got {text!r}") from None
    if min(budget) < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {text}")
    return budget


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


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {text}")
    return value


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
        help="show a client silent for this long (clients ping every second) as away in "
             "presence (default: %(default)s)")
    parser.add_argument(
        "--session-grace", type=_positive_float, default=DEFAULT_SESSION_GRACE,
        metavar="SECONDS",
        help="end the session of a client silent (or disconnected) for this long: its "
             "destroy-when-owner-leaves models are destroyed and it leaves the room; until "
             "then it may resume its session over a new connection and loses nothing "
             "(default: %(default)s)")
    parser.add_argument(
        "--empty-room-timeout", type=_non_negative_float, default=30.0, metavar="SECONDS",
        help="save and close a room this long after its last client left "
             "(default: %(default)s)")
    parser.add_argument(
        "--max-clients-per-room", type=_positive_int, default=None, metavar="N",
        help="refuse joins beyond N clients in one room with 'room_full' "
             "(default: no limit)")
    parser.add_argument(
        "--max-sessions-per-address", type=_non_negative_int,
        default=DEFAULT_MAX_SESSIONS_PER_ADDRESS, metavar="N",
        help="refuse a join that would give one network address (an IPv4 address, an IPv6 "
             "/64) more than N live sessions, with 'too_many_sessions'; loopback counts "
             "too, so raise it to test with many clients on one machine; 0 for no limit "
             "(default: %(default)s)")
    parser.add_argument(
        "--max-rooms", type=_non_negative_int, default=DEFAULT_MAX_ROOMS, metavar="N",
        help="rooms this server hosts at most: a join that would open another closes the "
             "room empty the longest, or with none empty is refused with 'unavailable' "
             "(clients retry); 0 for no limit (default: %(default)s)")
    parser.add_argument(
        "--max-empty-rooms-per-address", type=_non_negative_int,
        default=DEFAULT_MAX_EMPTY_ROOMS_PER_ADDRESS, metavar="N",
        help="empty rooms opened by one network address that stay open for "
             "--empty-room-timeout; beyond N the one empty the longest is saved and closed at "
             "once (so a client cannot pin memory by opening rooms and leaving them); 0 for "
             "no limit (default: %(default)s)")
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
    default_budget = RateLimit()
    parser.add_argument(
        "--update-budget", type=_update_budget,
        default=(default_budget.update_bytes, default_budget.update_changes),
        metavar="BYTES:CHANGES",
        help="what each client's updates may carry per second, in bytes and in changes, "
             "with bursts of 0.5 s worth; an update over it is refused (every change rolled "
             "back, a 'rate_limit' error) but never dropped; 0 for either turns that part "
             "off; needs --rate-limit (default: 524288:40000)")
    parser.add_argument(
        "--address-budgets", type=_non_negative_float, default=default_budget.address_budgets,
        metavar="N",
        help="how many clients' update budgets the sessions of one network address share "
             "(an IPv4 address, an IPv6 /64): every update pays its session's budget and "
             "its address's, so one machine opening many sockets gets no more; raise it for "
             "many players behind one NAT; 0 turns it off (default: %(default)g)")
    parser.add_argument(
        "--schema-budget", type=_non_negative_float, default=default_budget.schema_bytes,
        metavar="BYTES",
        help="bytes per second of HELLO, SCHEMA and other frames that are neither updates "
             "nor pings one network address may send, with bursts of 2 s worth, paid before "
             "a frame is decoded (decoding a 1 MB schema takes the loop ~40 ms); a frame over "
             "it is dropped with a 'rate_limit' error; 0 turns it off "
             "(default: %(default)g, 1 MiB)")
    limits = DEFAULT_LIMITS
    parser.add_argument(
        "--max-update-bytes", type=_positive_int, default=limits.max_update_bytes,
        metavar="BYTES",
        help="largest update a client may send (announced to clients, which split bigger "
             "frames; a bigger one is refused with 'over_limit') (default: %(default)s)")
    parser.add_argument(
        "--max-changes-per-update", type=_positive_int,
        default=limits.max_changes_per_update, metavar="N",
        help="most changes one update may carry: what one update costs the server is per "
             "change (announced; clients split) (default: %(default)s)")
    parser.add_argument(
        "--max-datastore-bytes", type=_positive_int, default=limits.max_datastore_bytes,
        metavar="BYTES",
        help="largest a room's state may grow, estimated from its values; writes and creates "
             "that would pass it are refused with 'over_limit' (default: %(default)s, 10 MiB)")
    parser.add_argument(
        "--max-depth", type=_positive_int, default=limits.max_depth, metavar="LEVELS",
        help="deepest models may nest, the room model being level 1 (default: %(default)s)")
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
        "--history-bytes", type=_non_negative_int, default=DEFAULT_HISTORY_BYTES,
        metavar="BYTES",
        help="keep each room's last relayed batches, up to this many bytes per room (oldest "
             "dropped first), to replay to a client that missed some; a room nobody is in "
             "keeps none; 0 keeps none at all (default: %(default)s, 1 MiB)")
    parser.add_argument(
        "--auth-secret-file", default=None, metavar="PATH",
        help="require from every client a join token signed with the secret in this file "
             "(at least 16 bytes; the app's backend makes tokens with rtecs.make_token): "
             "checked at the ZeroMQ handshake, so a peer without a valid token never reaches "
             "the server, and again in the hello (room, expiry, user id, claims); also "
             "$RTECS_AUTH_SECRET_FILE, or the secret itself in $RTECS_AUTH_SECRET - never on "
             "the command line (default: none: anyone who reaches the port may join)")
    parser.add_argument(
        "--curve-secret-key-file", default=None, metavar="PATH",
        help="encrypt all traffic with ZeroMQ CURVE using the server's secret key in this "
             "file (rtecs-server keygen DIR writes DIR/server.key_secret); clients pass the "
             "public key (DIR/server.key, or the key it prints) as rtecs.connect(..., "
             "server_key=...), and plaintext clients cannot connect (default: none: "
             "unencrypted)")
    parser.add_argument(
        "--supervise", action="store_true",
        help="run the server in a child process and start it again whenever it dies by a "
             "signal (a crash such as libzmq's abort, or kill -9), at most 10 times a "
             "minute; SIGTERM and SIGINT stop both; give --bind a fixed port "
             "(default: off)")
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
        "keygen": "Write a CURVE key pair for an encrypted server: DIR/server.key (the "
                  "public key, for clients: rtecs.connect(..., server_key=PATH or the key "
                  "printed)) and DIR/server.key_secret (the secret key, mode 600, for "
                  "--curve-secret-key-file). Prints the public key.",
    }[command]
    parser = argparse.ArgumentParser(prog=f"rtecs-server {command}", description=about)
    if command == "keygen":
        parser.add_argument("dir", metavar="DIR", help="directory to write the keys to "
                                                      "(created if missing)")
        parser.add_argument("--force", action="store_true",
                            help="replace a key pair already there")
        return parser
    if command in ("dump", "delete"):
        parser.add_argument("room", metavar="ROOM", help="the room's name")
    if command == "delete":
        parser.add_argument("--force", action="store_true",
                            help="delete even if an instance hosts the room right now")
    _storage_arguments(parser, serving=False)
    return parser
