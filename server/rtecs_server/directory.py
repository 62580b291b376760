"""The rooms one server instance hosts: :class:`RoomDirectory` opens them (new, loaded from
storage, or answered with a redirect; each opening is a new
:class:`~rtecs_server.hosted.HostedRoom`, with a new incarnation and an empty history),
keeps their leases and checkpoints (through
:class:`~rtecs_server.persistence.Persistence`), tracks which have entries waiting for a
flush, and closes them. :class:`~rtecs_server.host.RoomHost` owns the sessions and the
messages; it asks the directory for rooms and tells their members what the directory
decided (a :class:`LostRoom` is a room whose members must reconnect).

With persistence (a :class:`~rtecs_server.persistence.Persistence`), a hello for a room this
instance does not hold claims and loads it (:meth:`Persistence.open
<rtecs_server.persistence.Persistence.open>`); the joiner then gets:

==============================================  =============================================
the room is hosted by another instance          ``REDIRECT endpoint room`` (no session)
the storage is unreachable, the room is moving  ``ERROR unavailable`` (fatal; clients retry)
the stored room cannot be loaded                ``ERROR room_corrupt`` (fatal), logged as an
                                                error; other rooms are unaffected
==============================================  =============================================

A room whose lease is lost (taken over after it expired, or a save refused by its fencing
token) is dropped: its members get ``ERROR unavailable`` and reconnect, to be redirected to
the new host (:meth:`Membership.drop_lost <rtecs_server.sessions.Membership.drop_lost>`).
An empty room is saved and its lease released
when it closes; if the save fails the room stays in memory and the save is retried.

**Bounded** (DESIGN §8: what a client makes the server keep is charged to it). A room stays
open ``--empty-room-timeout`` seconds after its last member left, with its schema and models,
and a client that opens rooms and leaves them would otherwise pin any number. A room is
charged to the network address whose hello opened it; when an address has more than
``max_empty_per_address`` (:data:`DEFAULT_MAX_EMPTY_ROOMS_PER_ADDRESS`) of its rooms empty,
the one empty the longest is closed at once (saved, like any closing room). And one instance
hosts at most ``max_rooms`` (:data:`DEFAULT_MAX_ROOMS`): a hello for another room closes the
room empty the longest, or, with none empty, is answered ``ERROR unavailable`` (fatal; the
client retries later, as for a room that is moving). None (or 0): no bound.

Every method takes the server clock's reading ``now``; the leases count on the
persistence's clock (the same clock, see :mod:`rtecs_server.persistence`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Final, NamedTuple

from rtecs.protocol import Error, ErrorCode, Limits, Redirect
from rtecs_server.errors import CorruptRoomError, FencedOut, StorageError
from rtecs_server.hosted import DEFAULT_HISTORY_BYTES, BatchHistory, HostedRoom
from rtecs_server.persistence import Elsewhere, Persistence
from rtecs_server.room import Plugin, Room

__all__ = ["DEFAULT_MAX_EMPTY_ROOMS_PER_ADDRESS", "DEFAULT_MAX_ROOMS", "LostRoom",
           "RoomDirectory"]

#: Rooms one instance hosts at most (``--max-rooms``).
DEFAULT_MAX_ROOMS: Final = 10_000
#: Empty rooms opened by one network address that stay open until their timeout
#: (``--max-empty-rooms-per-address``); more are closed early, the oldest first.
DEFAULT_MAX_EMPTY_ROOMS_PER_ADDRESS: Final = 8

log = logging.getLogger("rtecs_server.host")


class LostRoom(NamedTuple):
    """A room the directory stopped hosting because its lease is gone: its members must be
    told to reconnect (``ERROR unavailable``) and their sessions ended."""

    name: str
    hosted: HostedRoom
    why: str      # why the lease is gone, for the log
    saved: bool   # its latest state was saved before it was dropped


class RoomDirectory:
    """The open rooms of one instance (see the module docs). ``persistence`` None keeps
    rooms in memory only; ``history_bytes`` is the byte budget of each room's batch history
    (:class:`~rtecs_server.hosted.BatchHistory`); ``max_rooms`` and
    ``max_empty_per_address`` bound the rooms it keeps open (module docs; None or 0: no
    bound)."""

    def __init__(self, persistence: Persistence | None, *,
                 history_bytes: int = DEFAULT_HISTORY_BYTES,
                 max_rooms: int | None = DEFAULT_MAX_ROOMS,
                 max_empty_per_address: int | None = DEFAULT_MAX_EMPTY_ROOMS_PER_ADDRESS
                 ) -> None:
        if history_bytes < 0:
            raise ValueError(f"history_bytes must be ≥ 0, got {history_bytes}")
        for name, value in (("max_rooms", max_rooms),
                            ("max_empty_per_address", max_empty_per_address)):
            if value is not None and value < 0:
                raise ValueError(f"{name} must be ≥ 0 (0: no bound), got {value}")
        self.persistence = persistence
        self.history_bytes = history_bytes
        """The byte budget of each room's batch history."""
        self.max_rooms = max_rooms or None
        """Rooms this instance hosts at most (None: no bound)."""
        self.max_empty_per_address = max_empty_per_address or None
        """Empty rooms opened by one address kept until their timeout (None: no bound)."""
        self._empty_of: dict[str, dict[str, None]] = {}  # address → its empty rooms, oldest 1st
        self.rooms: dict[str, HostedRoom] = {}
        """Open rooms by name."""
        self._dirty: dict[str, HostedRoom] = {}   # rooms with entries waiting for a flush
        self._lease_deadline = math.inf  # persistence clock: when the first lease runs out

    # ----------------------------------------------------------------- pending entries

    @property
    def has_dirty(self) -> bool:
        """True if some room has entries waiting for a flush."""
        return bool(self._dirty)

    def mark_dirty(self, hosted: HostedRoom) -> None:
        """Note that ``hosted`` has entries waiting for a flush."""
        self._dirty[hosted.room.name] = hosted

    def take_dirty(self) -> list[HostedRoom]:
        """The rooms with entries waiting, in the order they were marked; forgets them."""
        dirty, self._dirty = self._dirty, {}
        return list(dirty.values())

    # ----------------------------------------------------------------- opening

    def open(self, name: str, plugins: Iterable[Plugin], limits: Limits,
             max_clients: int | None, *, now: float, create: bool = True
             ) -> HostedRoom | Redirect | Error | None:
        """A room for a joiner, new or loaded, made with ``plugins``, ``limits`` and
        ``max_clients`` (not yet added: see :meth:`add`); or the message that answers the
        joiner instead: a ``REDIRECT`` to the instance hosting it, or a fatal ``ERROR`` (the
        stored room is corrupt, the storage is unavailable). ``create`` False (a resume's
        look for a stored room): None if the room is not stored, or there is no storage."""
        if (self.max_rooms is not None and len(self.rooms) >= self.max_rooms
                and not self._close_oldest_empty(now)):
            log.warning("refused to open room %r: this instance hosts %d rooms, its limit, "
                        "and none is empty", name, len(self.rooms))
            return Error(ErrorCode.UNAVAILABLE.value,
                         f"room {name!r} cannot be opened now: this server hosts its most "
                         f"rooms ({self.max_rooms}); try again later", True)
        p = self.persistence
        if p is None:
            if not create:
                return None
            return HostedRoom(Room(name, plugins, limits, max_clients),
                              history=BatchHistory(self.history_bytes))
        try:
            opened = p.open(name, plugins, limits, max_clients, now=now, create=create)
        except Elsewhere as exc:
            log.info("a client of room %r redirected to %s (instance %s)", name,
                     exc.owner.endpoint, exc.owner.instance_id)
            return Redirect(exc.owner.endpoint, name)
        except CorruptRoomError as exc:
            log.error("%s; its joiners are refused until an operator repairs or deletes it "
                      "(rtecs-server delete %s)", exc, name)
            return Error(ErrorCode.ROOM_CORRUPT.value,
                         f"{exc}. Nobody can join it until the server's operator repairs or "
                         f"deletes it", True)
        except StorageError as exc:
            log.warning("room %r cannot be opened now: %s", name, exc)
            return Error(ErrorCode.UNAVAILABLE.value,
                         f"room {name!r} cannot be opened now ({exc}); try again", True)
        if opened is None:
            return None
        room, keeping = opened
        return HostedRoom(room, keeping=keeping, history=BatchHistory(self.history_bytes))

    def add(self, hosted: HostedRoom) -> None:
        """Host a room :meth:`open` returned."""
        self.rooms[hosted.room.name] = hosted
        if hosted.keeping is not None:
            self._lease_deadline = min(self._lease_deadline, hosted.keeping.lease.expires_at)

    def occupied(self, hosted: HostedRoom) -> None:
        """``hosted`` has a member again (it no longer counts as empty)."""
        if hosted.opened_by is not None:
            names = self._empty_of.get(hosted.opened_by)
            if names is not None:
                names.pop(hosted.room.name, None)
                if not names:
                    del self._empty_of[hosted.opened_by]

    def left_empty(self, hosted: HostedRoom, now: float) -> None:
        """``hosted`` lost its last member: it counts against the address that opened it,
        and that address's rooms empty the longest past ``max_empty_per_address`` close now
        (module docs)."""
        address, limit = hosted.opened_by, self.max_empty_per_address
        if address is None or limit is None:
            return
        names = self._empty_of.setdefault(address, {})
        names[hosted.room.name] = None
        while len(names) > limit:
            oldest = next(iter(names))
            del names[oldest]
            room = self.rooms.get(oldest)
            if room is not None and not room.members:
                log.info("room %r closed early: %s opened more than %d rooms now empty",
                         oldest, address, limit)
                self.close(oldest, room, now)

    def _close_oldest_empty(self, now: float) -> bool:
        """Close the room empty the longest (to make room for another); False: none is."""
        empty = [(h.empty_since, n) for n, h in self.rooms.items()
                 if h.empty_since is not None and not h.members]
        if not empty:
            return False
        _, name = min(empty)
        log.info("room %r closed early: this instance hosts its most rooms (%s)", name,
                 self.max_rooms)
        self.close(name, self.rooms[name], now)
        return name not in self.rooms   # a failed save keeps it

    def discard(self, hosted: HostedRoom) -> None:
        """Forget a room just added whose first joiner was refused: unchanged, so not saved;
        its lease is released."""
        del self.rooms[hosted.room.name]
        if hosted.keeping is not None and self.persistence is not None:
            self.persistence.release(hosted.keeping.lease)

    # ----------------------------------------------------------------- housekeeping

    def maintain(self, now: float) -> list[LostRoom]:
        """Persistence housekeeping: renew the leases that are due, checkpoint the rooms whose
        persistent state changed (see :mod:`rtecs_server.persistence`), retry failed lease
        releases. Returns the rooms dropped because their lease was lost. Nothing without
        persistence."""
        p = self.persistence
        if p is None:
            return []
        lost: list[LostRoom] = []
        due: list[tuple[float, str, HostedRoom]] = []
        for name, hosted in list(self.rooms.items()):
            keeping = hosted.keeping
            if keeping is None:
                continue
            if p.renew_due(keeping):
                ok = p.renew(keeping)
                if ok is False:
                    lost.append(self._lose(name, hosted, now, "its lease was lost"))
                    continue
                if ok is None and keeping.lease.time_left() <= 0:
                    lost.append(self._lose(name, hosted, now, "its lease ran out while the "
                                                              "storage was unreachable"))
                    continue
            if p.checkpoint_due(hosted.room, keeping, now):
                due.append((keeping.next_checkpoint, name, hosted))
        due.sort(key=lambda d: d[0])  # the longest-waiting first
        for i, (since, name, hosted) in enumerate(due):
            if not p.may_checkpoint():
                p.behind(len(due) - i, now - since)
                break
            assert hosted.keeping is not None
            try:
                p.save(hosted.room, hosted.keeping, now, hosted.saved_sessions())
            except FencedOut as exc:
                lost.append(self._lose(name, hosted, now, str(exc)))
            except StorageError as exc:
                log.debug("room %r: checkpoint failed, retrying: %s", name, exc)
        p.retry_releases()
        self._update_lease_deadline()
        return lost

    def check_leases(self, now: float) -> list[LostRoom]:
        """Stop hosting rooms whose lease ran out and cannot be renewed; returns them. O(1)
        while no lease is near its end: call it before handling frames, so a loop that was
        stalled past a lease (a paused process) never applies updates to a room another
        instance may host by now."""
        p = self.persistence
        if p is None or p.clock.monotonic() < self._lease_deadline:
            return []
        lost: list[LostRoom] = []
        for name, hosted in list(self.rooms.items()):
            keeping = hosted.keeping
            if keeping is None or keeping.lease.time_left() > 0:
                continue
            if p.renew(keeping):
                log.warning("room %r: lease renewed %.1f s after it ran out locally (was the "
                            "server stalled?)", name, -keeping.lease.time_left())
                continue
            lost.append(self._lose(name, hosted, now, "its lease ran out"))
        self._update_lease_deadline()
        return lost

    def close_empty(self, now: float, timeout: float) -> None:
        """Close the rooms that stayed empty for ``timeout`` seconds (see :meth:`close`)."""
        for name, hosted in list(self.rooms.items()):
            if (hosted.empty_since is not None and not hosted.members
                    and now - hosted.empty_since >= timeout and now >= hosted.close_after):
                self.close(name, hosted, now)

    def close(self, name: str, hosted: HostedRoom, now: float) -> None:
        """Unload a room that stayed empty: save it and release its lease; if the save fails
        the room stays in memory and is tried again after a checkpoint interval."""
        empty = now - (hosted.empty_since or now)
        p = self.persistence
        keeping = hosted.keeping
        if p is not None and keeping is not None and not keeping.lost and p.needs_save(
                hosted.room, keeping):
            try:
                p.save(hosted.room, keeping, now, hosted.saved_sessions())
            except FencedOut as exc:
                log.warning("room %r: %s; closing it unsaved", name, exc)
            except StorageError as exc:
                first = hosted.close_after == -math.inf
                hosted.close_after = now + p.checkpoint_interval
                (log.warning if first else log.debug)(
                    "room %r could not be saved to close it (%s): kept in memory, trying "
                    "again every %.1f s", name, exc, p.checkpoint_interval)
                return
            else:
                log.info("room %r closed after %.1f s empty, saved", name, empty)
        elif keeping is not None:
            log.info("room %r closed after %.1f s empty, its last checkpoint being current",
                     name, empty)
        else:
            log.info("room %r closed after %.1f s empty", name, empty)
        if p is not None and keeping is not None:
            p.release(keeping.lease)
        del self.rooms[name]
        self._dirty.pop(name, None)
        self.occupied(hosted)   # no longer counts as anybody's empty room
        self._update_lease_deadline()

    def shut_down(self, now: float) -> None:
        """Save every room (if changed) and release its lease, then close the persistence
        and forget every room. Nothing without persistence."""
        p = self.persistence
        if p is not None:
            saved = 0
            for name, hosted in list(self.rooms.items()):
                saved += self._save_and_release(name, hosted, now, "at shutdown")
            if saved:
                log.info("saved %d room(s) to %s", saved, p.location)
            self.rooms.clear()
            p.close()

    # ----------------------------------------------------------------- internals

    def _update_lease_deadline(self) -> None:
        self._lease_deadline = min((h.keeping.lease.expires_at for h in self.rooms.values()
                                    if h.keeping is not None), default=math.inf)

    def _save_and_release(self, name: str, hosted: HostedRoom, now: float, when: str) -> int:
        """Save (if changed) and release one room; 1 if it was saved. Errors are logged."""
        p = self.persistence
        keeping = hosted.keeping
        if p is None or keeping is None:
            return 0
        saved = 0
        if not keeping.lost and p.needs_save(hosted.room, keeping):
            try:
                p.save(hosted.room, keeping, now, hosted.saved_sessions())
                saved = 1
            except FencedOut as exc:
                log.warning("room %r not saved %s: %s", name, when, exc)
            except StorageError as exc:
                log.error("room %r could not be saved %s: %s; its changes since the last "
                          "checkpoint are lost", name, when, exc)
        p.release(keeping.lease)
        return saved

    def _lose(self, name: str, hosted: HostedRoom, now: float, why: str) -> LostRoom:
        """Stop hosting a room whose lease is gone: one last fenced save (refused if another
        instance claimed the room since; it lets a room whose lease merely lapsed keep its
        latest changes), then forget it; the host tells its members."""
        saved = self._save_and_release(name, hosted, now, "after its lease was lost")
        self.rooms.pop(name, None)
        self._dirty.pop(name, None)
        return LostRoom(name, hosted, why, bool(saved))
