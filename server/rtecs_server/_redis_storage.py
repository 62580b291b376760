"""Redis storage and room directory: atomic staged saves checked against fencing tokens by
Lua scripts, expiring leases (see :mod:`rtecs_server.storage`)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, cast

from rtecs.clock import SYSTEM_CLOCK, Clock
from rtecs_server.errors import CorruptRoomError, FencedOut, StorageError, StorageUnavailable
from rtecs_server.storage_base import Lease, Owner, RoomInfo, Storage, ttl_ms

if TYPE_CHECKING:
    import redis

# ----------------------------------------------------------------------------- Redis

# Scripts run with a shebang, so Redis refuses them before they start when it is out of
# memory rather than failing a write half way (it does not roll a script back); every check
# precedes the first write.

# The blob is staged under a key of its own (SET, in the same round trip) and moved into place
# by RENAME: passing megabytes through a script's ARGV costs four times the plain write.
_SAVE_LUA: Final = """#!lua
-- KEYS: stage, room, meta, fence, index; ARGV: name, saved_at, models, fence or ''
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {-1, 0}
end
if ARGV[4] ~= '' then
  local current = tonumber(redis.call('GET', KEYS[4]) or '0')
  if tonumber(ARGV[4]) < current then
    redis.call('DEL', KEYS[1])
    return {0, current}
  end
end
local version = tonumber(redis.call('HGET', KEYS[3], 'version') or '0') + 1
redis.call('SADD', KEYS[5], ARGV[1])
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('PERSIST', KEYS[2])
redis.call('HSET', KEYS[3], 'version', version, 'saved_at', ARGV[2], 'models', ARGV[3])
return {1, version}
"""

_DELETE_LUA: Final = """#!lua
-- KEYS: room, meta, index; ARGV: name
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[2])
return redis.call('DEL', KEYS[1])
"""

_CLAIM_LUA: Final = """#!lua
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local token = redis.call('INCR', KEYS[2])
local value = cjson.encode({token, ARGV[1], ARGV[2]})
redis.call('SET', KEYS[1], value, 'NX', 'PX', ARGV[3])
return {token, value}
"""

_RENEW_LUA: Final = """#!lua
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE_LUA: Final = """#!lua
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


#: Taken off a lease's local expiry estimate: Redis counts expiry in whole milliseconds.
_CLOCK_MARGIN: Final = 0.005
#: How long a staged blob lives if its save never completes (the client died in between).
_STAGE_TTL_MS: Final = 60_000


class RedisStorage(Storage):
    """Checkpoints and the room directory in Redis (see the module docs for the keys).

    ``url`` is a redis-py URL (``redis://host:port/db``); ``prefix`` namespaces every key.
    Opening pings the server, so a wrong URL fails at once with :class:`StorageUnavailable`.
    ``clock``: where the local lease estimates and save times read time (see
    :mod:`rtecs_server.storage`; Redis expires the leases themselves in real time).
    """

    def __init__(self, url: str, *, prefix: str = "rtecs:", socket_timeout: float = 10.0,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        try:
            import redis as redis_mod  # only a Redis deployment needs the package
        except ImportError:
            raise StorageError("Redis storage needs the redis package: pip install "
                               "'redis>=5'") from None

        self._down: tuple[type[Exception], ...] = (
            redis_mod.ConnectionError, redis_mod.TimeoutError, OSError)
        self._errors: tuple[type[Exception], ...] = (redis_mod.RedisError,)
        self._prefix = prefix
        self.location = _redact(url)
        try:
            self._r: redis.Redis = redis_mod.Redis.from_url(
                url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout)
            self._r.ping()
        except (redis_mod.RedisError, OSError, ValueError) as exc:
            raise StorageUnavailable(f"cannot reach {self.location}: {exc}") from None
        self._save = self._r.register_script(_SAVE_LUA)
        self._delete = self._r.register_script(_DELETE_LUA)
        self._claim = self._r.register_script(_CLAIM_LUA)
        self._renew = self._r.register_script(_RENEW_LUA)
        self._release = self._r.register_script(_RELEASE_LUA)
        self._index = prefix + "rooms"

    def _key(self, kind: str, name: str) -> str:
        return f"{self._prefix}{kind}:{name}"

    @contextmanager
    def _calls(self, what: str) -> Iterator[None]:
        try:
            yield
        except self._down as exc:
            raise StorageUnavailable(f"{what} on {self.location}: {exc}") from None
        except self._errors as exc:
            raise StorageError(f"{what} on {self.location}: {exc}") from None

    def _write(self, name: str, blob: bytes, models: int, saved_at: float,
               fence: int | None) -> int:
        stage = self._key("stage", f"{name}:{uuid.uuid4().hex}")
        with self._calls(f"saving room {name!r}"):
            pipe = self._r.pipeline(transaction=False)
            pipe.set(stage, blob, px=_STAGE_TTL_MS)
            self._save(keys=[stage, self._key("room", name), self._key("meta", name),
                             self._key("fence", name), self._index],
                       args=[name, repr(saved_at), models, "" if fence is None else fence],
                       client=pipe)
            ok, value = pipe.execute()[1]
        if ok == 0:
            assert fence is not None
            raise FencedOut(name, fence, int(value))
        if ok != 1:
            raise StorageError(f"saving room {name!r} on {self.location}: the staged blob "
                               f"vanished before it was moved into place")
        return int(value)

    def _read(self, name: str) -> tuple[bytes, int, float] | None:
        with self._calls(f"loading room {name!r}"):
            pipe = self._r.pipeline(transaction=True)  # blob and metadata of one save
            pipe.get(self._key("room", name))
            pipe.hmget(self._key("meta", name), ["version", "saved_at"])
            data, (version, saved_at) = pipe.execute()
        if data is None:
            return None
        try:
            return data, int(version or 0), float(saved_at or 0)
        except ValueError:
            raise CorruptRoomError(name, "malformed version or saved_at fields") from None

    def delete(self, name: str) -> bool:
        with self._calls(f"deleting room {name!r}"):
            return bool(self._delete(keys=[self._key("room", name), self._key("meta", name),
                                           self._index], args=[name]))

    def list_rooms(self) -> list[RoomInfo]:
        with self._calls("listing rooms"):
            names = sorted(n.decode("utf-8", "replace") for n in
                           cast(set[bytes], self._r.smembers(self._index)))
            pipe = self._r.pipeline(transaction=False)
            for n in names:
                pipe.strlen(self._key("room", n))
                pipe.hmget(self._key("meta", n), ["saved_at", "models", "version"])
            replies = pipe.execute()
        rooms = []
        for i, n in enumerate(names):
            size = int(replies[2 * i])
            saved_at, models, version = replies[2 * i + 1]
            if size:  # a name left in the index by an interrupted delete is skipped
                rooms.append(RoomInfo(n, size, float(saved_at or 0), int(models or 0),
                                      int(version or 0)))
        return rooms

    def close(self) -> None:
        self._r.close()

    # -- directory

    def claim(self, room: str, instance_id: str, endpoint: str, ttl: float) -> Lease | None:
        ms = ttl_ms(ttl)
        start = self.clock.monotonic()
        with self._calls(f"claiming room {room!r}"):
            reply = self._claim(keys=[self._key("lease", room), self._key("fence", room)],
                                args=[instance_id, endpoint, ms])
        if reply is None:
            return None
        token, value = cast(list[Any], reply)
        return Lease(room, instance_id, endpoint, int(token), ttl,
                     start + ms / 1000 - _CLOCK_MARGIN, value.decode(), clock=self.clock)

    def renew(self, lease: Lease) -> bool:
        ms = ttl_ms(lease.ttl)
        start = self.clock.monotonic()
        with self._calls(f"renewing the lease of room {lease.room!r}"):
            ok = self._renew(keys=[self._key("lease", lease.room)], args=[lease.stored, ms])
        if ok:
            lease.expires_at = start + ms / 1000 - _CLOCK_MARGIN
        return bool(ok)

    def release(self, lease: Lease) -> bool:
        with self._calls(f"releasing the lease of room {lease.room!r}"):
            return bool(self._release(keys=[self._key("lease", lease.room)],
                                      args=[lease.stored]))

    def owner(self, room: str) -> Owner | None:
        with self._calls(f"looking up the host of room {room!r}"):
            value = cast(bytes | None, self._r.get(self._key("lease", room)))
        if value is None:
            return None
        try:
            _, instance_id, endpoint = json.loads(value)
        except ValueError:
            raise StorageError(f"room {room!r}: malformed lease {value!r:.100}") from None
        return Owner(str(instance_id), str(endpoint))


def _redact(url: str) -> str:
    """``url`` without a password, for logs."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        creds, _, host = rest.partition("@")
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user + ':***@' if user else '***@'}{host}"
    return url
