"""The operator commands of ``rtecs-server`` — ``rooms``, ``dump ROOM``, ``delete ROOM`` — on
the same ``--storage`` and ``--data-dir`` as serving. Each exits 0 on success, 1 if the room
is missing or unreadable, 2 on a usage error; an operator command never creates a database.
``dump`` prints :func:`dump_json`'s shape (see ``rtecs-server dump --help``).

``keygen DIR`` writes a CURVE key pair (:func:`~rtecs_server.zmq_transport.write_key_pair`)
and prints the public key; it exits 1 if a secret key is there already (``--force``
replaces it) or the files cannot be written.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from typing import Any

from rtecs_server.cli_flags import build_command_parser
from rtecs_server.storage import SavedRoom, Storage, StorageError, open_storage, sqlite_file

__all__ = ["dump_json", "run_command"]


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


def run_command(command: str, argv: Sequence[str]) -> int:
    """Run operator command ``command`` (one of
    :data:`~rtecs_server.cli_flags.COMMANDS`) with its arguments; returns the exit status."""
    parser = build_command_parser(command)
    args = parser.parse_args(argv)
    logging.basicConfig(level="WARNING", stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if command == "keygen":
        return _keygen(args.dir, args.force)
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
                return _rooms(storage)
            if command == "dump":
                return _dump(storage, args.room)
            return _delete(storage, args.room, args.force)
        except StorageError as exc:
            print(f"rtecs-server {command}: {exc}", file=sys.stderr)
            return 1


def _rooms(storage: Storage) -> int:
    rooms = storage.list_rooms()
    if not rooms:
        print(f"no stored rooms in {storage.location}")
        return 0
    width = max(4, *(len(r.name) for r in rooms))
    print(f"{'ROOM':<{width}}  {'MODELS':>8}  {'SIZE':>9}  {'VERSION':>7}  LAST SAVE")
    for r in rooms:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.saved_at))
        print(f"{r.name:<{width}}  {r.models:>8}  {_size(r.size_bytes):>9}  "
              f"{r.version:>7}  {when}")
    print(f"{len(rooms)} room{'s' if len(rooms) > 1 else ''} in {storage.location}")
    return 0


def _dump(storage: Storage, room: str) -> int:
    saved = storage.load(room)
    if saved is None:
        print(f"rtecs-server dump: no stored room {room!r} in {storage.location}",
              file=sys.stderr)
        return 1
    json.dump(dump_json(saved), sys.stdout, indent=2, ensure_ascii=False, allow_nan=False)
    print()
    return 0


def _delete(storage: Storage, room: str, force: bool) -> int:
    owner = storage.owner(room)
    if owner is not None and not force:
        print(f"rtecs-server delete: room {room!r} is hosted right now by the instance at "
              f"{owner.endpoint}, which would save it again; let it close first (its clients "
              f"leave), or use --force", file=sys.stderr)
        return 1
    if not storage.delete(room):
        print(f"rtecs-server delete: no stored room {room!r} in {storage.location}",
              file=sys.stderr)
        return 1
    print(f"deleted room {room!r} from {storage.location}")
    return 0


def _keygen(directory: str, force: bool) -> int:
    from rtecs_server.zmq_transport import write_key_pair

    try:
        keys = write_key_pair(directory, overwrite=force)
    except (OSError, ValueError) as exc:
        print(f"rtecs-server keygen: {exc}", file=sys.stderr)
        return 1
    print(f"public key {keys.public_key}")
    print(f"wrote {keys.public_file} (public: give it, or the key above, to clients as "
          f"server_key=)")
    print(f"wrote {keys.secret_file} (secret, mode 600: rtecs-server --curve-secret-key-file "
          f"{keys.secret_file})")
    return 0
