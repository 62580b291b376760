"""A server instance's rooms against a :class:`~rtecs_server.storage.Storage`: claiming and
loading them, checkpoints, lease renewals, saving and releasing them.

:class:`Persistence` is what :class:`~rtecs_server.host.RoomHost` calls; it holds no room
state of its own beyond one :class:`Keeping` per hosted room (its lease and when it was last
saved). Every call blocks on the storage and runs on the server loop's thread, like the room
core it reads (a checkpoint must see the room between two messages).

Opening a room (:meth:`Persistence.open`)
    Claim the room's lease (granted at once by SQLite; on Redis only if no live instance
    holds it). If another instance holds it, :class:`Elsewhere` names it so the host can
    redirect the client; if the holder advertises *this* instance's endpoint (an earlier
    process at this address that died without releasing it) or the lease vanished between
    the calls, :class:`~rtecs_server.storage.StorageUnavailable` says to retry later. Then
    load the checkpoint, if any, and rebuild the room (:meth:`Room.restore
    <rtecs_server.room.Room.restore>`); a stored room that cannot be read raises
    :class:`~rtecs_server.storage.CorruptRoomError` and the lease is released again.

Checkpoints (:meth:`Persistence.save`)
    A room is *due* ``checkpoint_interval`` after its last save if something persistent
    changed since (:attr:`ModelStore.persistent_changes
    <rtecs_server.store.ModelStore.persistent_changes>`). Due rooms are saved oldest first
    while the *checkpoint budget* allows (:meth:`Persistence.may_checkpoint`): a token bucket
    that refills at :data:`CHECKPOINT_BUDGET` seconds per second, holds at most
    :data:`CHECKPOINT_BURST` seconds and is charged each save's duration, so checkpoints take
    at most about 10 % of the loop's time however many or big the rooms are. A room of
    100,000 models (a 60 ms save) is still saved every second; one of 300,000 (225 ms) about
    every 2.3 s; when saves fall behind, a warning says by how much (the crash window grows).
    Every save carries the lease's fencing token: :class:`~rtecs_server.storage.FencedOut`
    means another instance claimed the room since, and this one must stop hosting it.

Leases
    Renewed when a third of the TTL has passed (:meth:`Persistence.renew_due`). A host whose
    lease ran out (locally estimated, conservatively) tries one renewal; if that fails it
    makes a last fenced save (refused if a successor claimed the room) and stops hosting.

Time
    Everything here reads one :class:`~rtecs.clock.Clock` (``clock=``, the server's): the
    checkpoint budget refills on its ``monotonic()`` reading and is charged each save's
    duration *on that clock*, the storage-health and "behind" logs are paced by it, and the
    leases count on it too — the storage must have the same clock object
    (:attr:`Storage.clock <rtecs_server.storage.Storage.clock>`; :class:`Persistence`
    refuses another). With a :class:`~rtecs.clock.ManualClock` a save costs whatever the
    clock advanced during it (nothing, unless a test storage advances it), so tests step
    checkpoints, the budget and lease expiry deterministically. Due times of checkpoints
    (``now`` arguments) are the server's clock readings, which come from the same clock.
"""

from __future__ import annotations

import logging
import math
import socket
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from rtecs.clock import SYSTEM_CLOCK, Clock
from rtecs.errors import RtecsError
from rtecs.gcpause import paused_gc
from rtecs.protocol import DEFAULT_LIMITS, Limits
from rtecs_server.errors import FencedOut, StorageError, StorageUnavailable
from rtecs_server.plugins import Plugin
from rtecs_server.records import SavedRoom, SavedSession
from rtecs_server.room import Room
from rtecs_server.storage_base import Lease, Owner, Storage

__all__ = ["CHECKPOINT_BUDGET", "CHECKPOINT_BURST", "DEFAULT_CHECKPOINT_INTERVAL",
           "DEFAULT_LEASE_TTL", "Elsewhere", "Keeping", "Persistence", "default_advertise"]

log = logging.getLogger("rtecs_server.persistence")

#: Seconds between two checkpoints of a room that keeps changing (the most a crash loses).
DEFAULT_CHECKPOINT_INTERVAL: Final = 1.0
#: Seconds a room's lease lasts unless renewed (how long a dead host's rooms stay blocked).
DEFAULT_LEASE_TTL: Final = 10.0
#: Seconds of checkpointing allowed per second of the loop (see the module docs).
CHECKPOINT_BUDGET: Final = 0.1
#: Seconds of checkpointing the budget can save up while idle.
CHECKPOINT_BURST: Final = 0.1
#: Least seconds between two "checkpoints are behind" warnings.
_BEHIND_LOG_EVERY: Final = 30.0
#: Claims tried when the lease vanishes between a refused claim and the owner lookup.
_CLAIM_TRIES: Final = 3


class Elsewhere(RtecsError):
    """The room is hosted by another instance: redirect the client to ``owner.endpoint``."""

    def __init__(self, room: str, owner: Owner) -> None:
        super().__init__(f"room {room!r} is hosted at {owner.endpoint}")
        self.room = room
        self.owner = owner


@dataclass(eq=False)
class Keeping:
    """What the persistence layer knows of one hosted room."""

    lease: Lease
    #: ``store.persistent_changes`` at the last save; -1 if never saved by this instance.
    saved_changes: int
    #: ``room.next_client_id`` at the last save (or load).
    saved_clients: int
    #: When the next checkpoint may run (server clock).
    next_checkpoint: float = 0.0
    #: Duration of the last save, in seconds.
    last_save: float = 0.0
    #: A save was refused (FencedOut): another instance claimed the room since; never save
    #: with this lease again.
    lost: bool = False
    #: ``room.room_seq`` at the last save, and whether it was a live checkpoint (with
    #: sessions): a room with members is saved again when its stream moved on.
    saved_seq: int = 0
    saved_live: bool = False
    #: The sessions the loaded checkpoint held, for the host to take over (then cleared).
    restored: list[SavedSession] = field(default_factory=list)


def default_advertise(endpoint: str) -> str:
    """How clients reach an instance bound at ``endpoint`` when ``--advertise`` is not given:
    the endpoint itself, with a wildcard host (``0.0.0.0``, ``*``, ``[::]``) replaced by this
    machine's fully qualified name."""
    scheme, sep, rest = endpoint.partition("://")
    host, colon, port = rest.rpartition(":")
    if sep and colon and host in ("0.0.0.0", "*", "[::]", "::"):
        return f"{scheme}://{socket.getfqdn()}:{port}"
    return endpoint


class Persistence:
    """Rooms of one server instance in ``storage`` (see the module docs).

    ``instance_id`` names this process in the room directory (a fresh UUID by default);
    ``advertise`` is the endpoint other instances redirect clients to. ``owns_storage``:
    :meth:`close` closes the storage too. ``clock``: where the budget, the logs' pacing and
    (through the storage, which must hold the same clock object) the leases read time; see
    the module docs.
    """

    def __init__(self, storage: Storage, *, advertise: str, instance_id: str | None = None,
                 checkpoint_interval: float = DEFAULT_CHECKPOINT_INTERVAL,
                 lease_ttl: float = DEFAULT_LEASE_TTL, owns_storage: bool = False,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        if storage.clock is not clock:
            raise ValueError(f"the storage {storage.location} reads another clock than this "
                             f"server ({storage.clock!r} vs {clock!r}): its leases would "
                             f"expire on the wrong clock; open it with clock=")
        if not checkpoint_interval > 0:
            raise ValueError(f"checkpoint_interval must be > 0 s, got {checkpoint_interval}")
        if not lease_ttl > 0:
            raise ValueError(f"lease_ttl must be > 0 s, got {lease_ttl}")
        self.storage = storage
        self.clock = clock
        self.advertise = advertise
        self.instance_id = instance_id or uuid.uuid4().hex
        self.checkpoint_interval = checkpoint_interval
        self.lease_ttl = lease_ttl
        self._owns_storage = owns_storage
        self._orphans: dict[str, Lease] = {}   # leases whose release failed: retried
        self._down_since: float | None = None  # the storage has been failing since (clock)
        self._down_logged = 0.0
        self._closed = False
        self._tokens = CHECKPOINT_BURST      # the checkpoint budget, in seconds
        self._tokens_at = clock.monotonic()
        self._behind_logged = -math.inf

    @property
    def location(self) -> str:
        return self.storage.location

    # ----------------------------------------------------------------- opening

    def open(self, name: str, plugins: Iterable[Plugin] = (), limits: Limits = DEFAULT_LIMITS,
             max_clients: int | None = None, *, now: float, create: bool = True
             ) -> tuple[Room, Keeping] | None:
        """Claim and load room ``name`` (see the module docs); a room never saved is created,
        unless ``create`` is False (then None: nothing stored, nothing claimed). A live
        checkpoint's sessions are in ``keeping.restored``. Raises :class:`Elsewhere`,
        :class:`~rtecs_server.storage.CorruptRoomError` or
        :class:`~rtecs_server.storage.StorageError`."""
        lease = self._claim(name)
        try:
            started = self.clock.monotonic()
            saved = self.storage.load(name)
            if saved is None:
                if not create:
                    self.release(lease)
                    return None
                room = Room(name, plugins, limits, max_clients)
                keeping = Keeping(lease, -1, room.next_client_id)
            else:
                room = Room.restore(saved, plugins, limits, max_clients)
                keeping = Keeping(lease, room.store.persistent_changes, room.next_client_id,
                                  saved_live=bool(saved.sessions),
                                  restored=list(saved.sessions))
                log.info("room %r loaded from %s: %d models, %d sessions, checkpoint %d "
                         "saved %s, in %.0f ms", name, self.location, len(saved.models),
                         len(saved.sessions), saved.version,
                         time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(saved.saved_at)),
                         (self.clock.monotonic() - started) * 1000)
        except BaseException:
            self.release(lease)
            raise
        self._ok()
        keeping.next_checkpoint = now + self.checkpoint_interval
        return room, keeping

    def _claim(self, name: str) -> Lease:
        storage = self.storage
        orphan = self._orphans.pop(name, None)
        if orphan is not None and storage.renew(orphan):
            return orphan  # our own lease, whose release had failed: still the newest claim
        for _ in range(_CLAIM_TRIES):
            lease = storage.claim(name, self.instance_id, self.advertise, self.lease_ttl)
            if lease is not None:
                return lease
            owner = storage.owner(name)
            if owner is None:
                continue  # it expired or was released in between: claim again
            if owner.instance_id == self.instance_id or owner.endpoint == self.advertise:
                raise StorageUnavailable(
                    f"room {name!r} is still leased to {owner.endpoint} by an earlier server "
                    f"process at this address; the lease expires within its TTL")
            raise Elsewhere(name, owner)
        raise StorageUnavailable(f"room {name!r} is changing hosts; try again")

    # ----------------------------------------------------------------- saving

    def needs_save(self, room: Room, keeping: Keeping) -> bool:
        """True if the room changed since its last save in a way a checkpoint would keep (on
        unload the client-id counter counts too: ids only grow)."""
        return (self._changed(room, keeping)
                or keeping.saved_clients != room.next_client_id)

    def checkpoint_due(self, room: Room, keeping: Keeping, now: float) -> bool:
        return (now >= keeping.next_checkpoint and not keeping.lost
                and self._changed(room, keeping))

    @staticmethod
    def _changed(room: Room, keeping: Keeping) -> bool:
        """What the last save holds is not what a save now would: a persistent change; or,
        with members (a live checkpoint, whose sessions and live models change with the
        stream), a batch since; or members came or all went since."""
        live = bool(room.members)
        return (keeping.saved_changes != room.store.persistent_changes
                or live != keeping.saved_live
                or (live and keeping.saved_seq != room.room_seq))

    def may_checkpoint(self) -> bool:
        """True if the checkpoint budget allows a save now (see the module docs)."""
        mono = self.clock.monotonic()
        self._tokens = min(CHECKPOINT_BURST,
                           self._tokens + (mono - self._tokens_at) * CHECKPOINT_BUDGET)
        self._tokens_at = mono
        return self._tokens > 0

    def behind(self, waiting: int, late: float) -> None:
        """Report that ``waiting`` due rooms wait for the budget, the oldest ``late`` s past
        its due time (logged at most every 30 s when over a checkpoint interval)."""
        mono = self.clock.monotonic()
        if late > self.checkpoint_interval and mono - self._behind_logged >= _BEHIND_LOG_EVERY:
            self._behind_logged = mono
            log.warning("checkpoints are %.1f s behind (%d rooms waiting): saving them would "
                        "take more than %d%% of the loop, so a crash now loses up to %.1f s "
                        "of changes; see docs/server.md", late, waiting,
                        round(CHECKPOINT_BUDGET * 100), late + self.checkpoint_interval)

    def save(self, room: Room, keeping: Keeping, now: float,
             sessions: Sequence[SavedSession] = ()) -> None:
        """Save ``room`` now, fenced by its lease, with its members' ``sessions`` (a live
        checkpoint: see :meth:`Room.export <rtecs_server.room.Room.export>`). Raises
        :class:`~rtecs_server.storage.FencedOut` (then ``keeping.lost`` is set) or
        :class:`~rtecs_server.storage.StorageError`; on any error the room stays due."""
        changes = room.store.persistent_changes
        clients = room.next_client_id
        started = self.clock.monotonic()
        # The cyclic GC would walk every model of a big room a few times while the records
        # are built and checked (measured: 100 ms vs 60 ms for 100,000 models); nothing made
        # here is cyclic.
        try:
            with paused_gc():
                saved: SavedRoom = room.export(sessions)
                version = self.storage.save(saved, fence=keeping.lease.token)
        except FencedOut:
            keeping.lost = True
            raise
        except StorageError as exc:
            self._failed(exc)
            keeping.next_checkpoint = now + self.checkpoint_interval
            raise
        took = self.clock.monotonic() - started
        self._ok()
        self._tokens -= took
        keeping.saved_changes = changes
        keeping.saved_clients = clients
        keeping.saved_seq = room.room_seq
        keeping.saved_live = bool(saved.sessions)
        keeping.last_save = took
        keeping.next_checkpoint = now + self.checkpoint_interval
        log.debug("room %r saved: checkpoint %d, %d models, %.1f ms", room.name, version,
                  len(saved.models), took * 1000)

    # ----------------------------------------------------------------- leases

    def renew_due(self, keeping: Keeping) -> bool:
        """True if the lease should be renewed now (a third of its TTL has passed)."""
        return keeping.lease.time_left() < keeping.lease.ttl * 2 / 3

    def renew(self, keeping: Keeping) -> bool | None:
        """Renew the lease: True if still ours, False if lost (stop hosting), None if the
        storage could not be reached (try again; stop hosting once it has run out)."""
        try:
            ok = self.storage.renew(keeping.lease)
        except StorageError as exc:
            self._failed(exc)
            return None
        self._ok()
        return ok

    def release(self, lease: Lease) -> None:
        """Give the lease up (best effort: a failure is retried by :meth:`retry_releases`,
        and the lease expires anyway)."""
        try:
            self.storage.release(lease)
        except StorageError as exc:
            self._failed(exc)
            self._orphans[lease.room] = lease

    def retry_releases(self) -> None:
        for name, lease in list(self._orphans.items()):
            if lease.time_left() <= 0:
                del self._orphans[name]
                continue
            try:
                self.storage.release(lease)
            except StorageError:
                continue
            del self._orphans[name]

    def close(self) -> None:
        """Release the leases still pending and close the storage if this object owns it.
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.retry_releases()
        if self._owns_storage:
            self.storage.close()

    # ----------------------------------------------------------------- storage health

    def _failed(self, exc: StorageError) -> None:
        now = self.clock.monotonic()
        if self._down_since is None:
            self._down_since = now
            self._down_logged = now
            log.warning("storage %s failing: %s", self.location, exc)
        elif now - self._down_logged >= 10.0:
            self._down_logged = now
            log.warning("storage %s still failing after %.0f s: %s", self.location,
                        now - self._down_since, exc)
        else:
            log.debug("storage %s: %s", self.location, exc)

    def _ok(self) -> None:
        if self._down_since is not None:
            log.warning("storage %s is back after %.1f s", self.location,
                        self.clock.monotonic() - self._down_since)
            self._down_since = None
