"""RoomHost's rooms and storage: opening rooms (from storage, or by redirect), checkpoints,
leases, and closing rooms. Functions over the host's state, kept apart from message handling
so each module stays readable; :class:`~rtecs_server.host.RoomHost` delegates to them."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from rtecs.protocol import Error, ErrorCode, Redirect, encode
from rtecs_server.errors import CorruptRoomError, FencedOut, StorageError
from rtecs_server.host import _HostedRoom
from rtecs_server.persistence import Elsewhere
from rtecs_server.room import Room

if TYPE_CHECKING:
    from rtecs_server.host import RoomHost

log = logging.getLogger("rtecs_server.host")


def _open_room(host: RoomHost, peer: bytes, name: str, now: float) -> _HostedRoom | None:
    """A room for a joiner, new or loaded; None if the joiner was answered instead
    (redirect or error)."""
    p = host.persistence
    if p is None:
        return _HostedRoom(Room(name, host.plugins, host.limits, host.max_clients_per_room))
    try:
        room, keeping = p.open(name, host.plugins, host.limits, host.max_clients_per_room,
                               now=now)
    except Elsewhere as exc:
        log.info("a client of room %r redirected to %s (instance %s)", name,
                 exc.owner.endpoint, exc.owner.instance_id)
        host.transport.send(peer, encode(Redirect(exc.owner.endpoint, name)))
        return None
    except CorruptRoomError as exc:
        log.error("%s; its joiners are refused until an operator repairs or deletes it "
                  "(rtecs-server delete %s)", exc, name)
        host._error(peer, ErrorCode.ROOM_CORRUPT,
                    f"{exc}. Nobody can join it until the server's operator repairs or "
                    f"deletes it", fatal=True, now=now, quiet=True)
        return None
    except StorageError as exc:
        log.warning("room %r cannot be opened now: %s", name, exc)
        host._error(peer, ErrorCode.UNAVAILABLE,
                    f"room {name!r} cannot be opened now ({exc}); try again", fatal=True,
                    now=now, quiet=True)
        return None
    return _HostedRoom(room, keeping=keeping)

def maintain(host: RoomHost, now: float) -> None:
    """Persistence housekeeping: renew the leases that are due, checkpoint the rooms whose
    persistent state changed (see :mod:`rtecs_server.persistence`), retry failed lease
    releases. Nothing without persistence."""
    p = host.persistence
    if p is None:
        return
    due: list[tuple[float, str, _HostedRoom]] = []
    for name, hosted in list(host.rooms.items()):
        keeping = hosted.keeping
        if keeping is None:
            continue
        if p.renew_due(keeping):
            ok = p.renew(keeping)
            if ok is False:
                _lose_room(host, name, hosted, now, "its lease was lost")
                continue
            if ok is None and keeping.lease.time_left() <= 0:
                _lose_room(host, name, hosted, now, "its lease ran out while the storage "
                                                   "was unreachable")
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
            p.save(hosted.room, hosted.keeping, now)
        except FencedOut as exc:
            _lose_room(host, name, hosted, now, str(exc))
        except StorageError as exc:
            log.debug("room %r: checkpoint failed, retrying: %s", name, exc)
    p.retry_releases()
    _update_lease_deadline(host)

def check_leases(host: RoomHost, now: float) -> None:
    """Stop hosting rooms whose lease ran out and cannot be renewed. O(1) while no lease
    is near its end: call it before handling frames, so a loop that was stalled past a
    lease (a paused process) never applies updates to a room another instance may host
    by now. The leases count on the persistence's clock (``host._lease_deadline`` is a
    reading of its ``monotonic()``), the server's."""
    p = host.persistence
    if p is None or p.clock.monotonic() < host._lease_deadline:
        return
    for name, hosted in list(host.rooms.items()):
        keeping = hosted.keeping
        if keeping is None or keeping.lease.time_left() > 0:
            continue
        if p.renew(keeping):
            log.warning("room %r: lease renewed %.1f s after it ran out locally (was the "
                        "server stalled?)", name, -keeping.lease.time_left())
            continue
        _lose_room(host, name, hosted, now, "its lease ran out")
    _update_lease_deadline(host)

def _track_lease(host: RoomHost, hosted: _HostedRoom) -> None:
    if hosted.keeping is not None:
        host._lease_deadline = min(host._lease_deadline, hosted.keeping.lease.expires_at)

def _update_lease_deadline(host: RoomHost) -> None:
    host._lease_deadline = min((h.keeping.lease.expires_at for h in host.rooms.values()
                                if h.keeping is not None), default=math.inf)

def _close_room(host: RoomHost, name: str, hosted: _HostedRoom, now: float) -> None:
    """Unload a room that stayed empty: save it and release its lease; if the save fails
    the room stays in memory and is tried again after a checkpoint interval."""
    empty = now - (hosted.empty_since or now)
    p = host.persistence
    keeping = hosted.keeping
    if p is not None and keeping is not None and not keeping.lost and p.needs_save(
            hosted.room, keeping):
        try:
            p.save(hosted.room, keeping, now)
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
    del host.rooms[name]
    host._dirty.pop(name, None)
    _update_lease_deadline(host)

def _save_and_release(host: RoomHost, name: str, hosted: _HostedRoom, now: float, when: str) -> int:
    """Save (if changed) and release one room; 1 if it was saved. Errors are logged."""
    p = host.persistence
    keeping = hosted.keeping
    if p is None or keeping is None:
        return 0
    saved = 0
    if not keeping.lost and p.needs_save(hosted.room, keeping):
        try:
            p.save(hosted.room, keeping, now)
            saved = 1
        except FencedOut as exc:
            log.warning("room %r not saved %s: %s", name, when, exc)
        except StorageError as exc:
            log.error("room %r could not be saved %s: %s; its changes since the last "
                      "checkpoint are lost", name, when, exc)
    p.release(keeping.lease)
    return saved

def _lose_room(host: RoomHost, name: str, hosted: _HostedRoom, now: float, why: str) -> None:
    """Stop hosting a room whose lease is gone: one last fenced save (refused if another
    instance claimed the room since; it lets a room whose lease merely lapsed keep its
    latest changes), then drop its members with ``ERROR unavailable`` so they reconnect
    and are redirected to whoever hosts it now."""
    saved = _save_and_release(host, name, hosted, now, "after its lease was lost")
    for session in list(hosted.members.values()):
        host.transport.send(session.peer, encode(Error(
            ErrorCode.UNAVAILABLE.value, f"room {name!r} is no longer hosted by this "
            f"server instance: reconnect", True)))
        if host.sessions.get(session.peer) is session:
            del host.sessions[session.peer]
    log.warning("stopped hosting room %r: %s (%s; %d clients told to reconnect)", name,
                why, "its latest state was saved" if saved else "not saved",
                len(hosted.members))
    hosted.members.clear()
    host.rooms.pop(name, None)
    host._dirty.pop(name, None)
