"""The room stream going out: each room's batch encoded once, kept in its history and handed
to one :class:`Publisher`; the members that cannot take it are stalled and caught up later.

:class:`Publisher` is the fan-out interface: ``publish(room, peers, frame)`` queues one frame
for every peer of a room and returns the peers that could not take it. Today's is
:class:`RouterPublisher`, over the ROUTER connection every client message travels on
(:meth:`ServerTransport.broadcast <rtecs.transport.ServerTransport.broadcast>`, which shares
one :class:`zmq.Frame` among the sends); a later one may publish on an XPUB socket (DESIGN
§5). The host never loops over members itself.

:class:`Fanout` owns what happens to a member's stream (DESIGN §5):

- :meth:`Fanout.flush` — the room's pending entries become one ``BATCH`` (``Room.flush``),
  appended to the room's :class:`~rtecs_server.hosted.BatchHistory` and published to every
  member that is not stalled;
- a member whose send failed (its queue at the high-water mark) is *stalled*
  (:meth:`Fanout.stall`): it gets no more batches until its next ping — never skipped
  silently — and then the ones it missed from the room's history (:meth:`Fanout.catch_up`),
  or, if they are gone, a resync;
- :meth:`Fanout.resume` answers a ``RESUME`` that found its session: ``RESUMED``, then the
  batches the client names as missed, from the history;
- :meth:`Fanout.request_resync` — a fresh ``WELCOME`` (a new epoch, the full snapshot) at
  most once per :func:`resync_cooldown` per member, so a client cannot make the server
  send snapshots in a loop; a resync that has to wait happens at that client's next ping
  (the host calls :meth:`Fanout.request_resync` again there). A resync welcome names the
  session and the room's incarnation and carries no new secret (see
  :mod:`rtecs_server.sessions`).

A snapshot is the largest thing the server sends, and libzmq bounds a peer's send queue in
frames, not bytes: a client that asks for resyncs and never reads would pin a snapshot in
server memory per welcome. So a session counts the resync welcomes it has not shown it read
(``Session.unread_resyncs``; a ``PING`` or an applied ``UPDATE`` naming the new epoch shows
it: :meth:`Fanout.read_welcome`). The cooldown doubles with each one after the first, up to
:data:`MAX_RESYNC_COOLDOWN`; past :data:`MAX_UNREAD_RESYNCS` the session is ended
(:meth:`Fanout.resync` returns False). An honest client pings every second with its epoch,
so it never gets near either.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Final, Protocol

from rtecs.protocol import NO_SESSION, Resumed, Welcome, encode
from rtecs.transport import ServerTransport
from rtecs_server.hosted import HostedRoom, Session

__all__ = ["MAX_RESYNC_COOLDOWN", "MAX_UNREAD_RESYNCS", "RESYNC_COOLDOWN", "Fanout",
           "Publisher", "RouterPublisher", "resync_cooldown"]

log = logging.getLogger("rtecs_server.host")

#: Minimum seconds between two resyncs of one client.
RESYNC_COOLDOWN: Final = 1.0
#: The longest the cooldown grows to while resync welcomes go unread.
MAX_RESYNC_COOLDOWN: Final = 30.0
#: Resync welcomes a session may leave unread before it is ended.
MAX_UNREAD_RESYNCS: Final = 6


def resync_cooldown(session: Session) -> float:
    """Seconds ``session`` must wait between two resyncs: :data:`RESYNC_COOLDOWN`, doubled
    for each unread resync welcome after the first, at most :data:`MAX_RESYNC_COOLDOWN`."""
    unread = session.unread_resyncs
    if unread <= 1:
        return RESYNC_COOLDOWN
    return min(MAX_RESYNC_COOLDOWN, RESYNC_COOLDOWN * 2.0 ** (unread - 1))


class Publisher(Protocol):
    """Where a room's encoded batches go (see the module docs)."""

    def publish(self, room: str, peers: Collection[bytes], frame: bytes) -> list[bytes]:
        """Queue ``frame`` (a ``BATCH`` of room ``room``) for every one of ``peers``, the
        room's members that are not stalled; return the peers that could not take it
        (nothing was queued for them)."""
        ...


class RouterPublisher:
    """A :class:`Publisher` over the server transport's peer connections (the ROUTER)."""

    __slots__ = ("transport",)

    def __init__(self, transport: ServerTransport) -> None:
        self.transport = transport

    def publish(self, room: str, peers: Collection[bytes], frame: bytes) -> list[bytes]:
        return self.transport.broadcast(peers, frame)


class Fanout:
    """Flushes rooms through ``publisher``; sends welcomes over ``transport`` (module docs)."""

    __slots__ = ("publisher", "transport")

    def __init__(self, transport: ServerTransport, publisher: Publisher) -> None:
        self.transport = transport
        self.publisher = publisher

    def flush(self, hosted: HostedRoom, now: float) -> bytes | None:
        """Encode the room's pending entries as one batch, keep it in the room's history and
        publish it to every member that is not stalled; stall those that cannot take it.
        Returns the frame (None: nothing was pending)."""
        room = hosted.room
        frame = room.flush(now)
        if frame is None:
            return None
        hosted.history.append(room.room_seq, frame)
        live = {s.peer: s for s in hosted.members.values() if not s.stalled}
        for peer in self.publisher.publish(room.name, live.keys(), frame):
            self.stall(live[peer], room.room_seq - 1)
        return frame

    def send_welcome(self, session: Session, welcome: Welcome, secret: bytes) -> None:
        """Send the ``WELCOME`` that opened ``session`` (with its id, resume ``secret`` and
        the room's incarnation); if its queue cannot take it, it is resynced at its next
        ping (or resume)."""
        full = welcome._replace(session_id=session.session_id, session_secret=secret,
                                incarnation=session.hosted.incarnation)
        if not self.transport.send(session.peer, encode(full)):
            self.stall(session, None)

    def stall(self, session: Session, last_sent: int | None) -> None:
        """No more batches for ``session`` until it catches up: it got every batch up to
        ``last_sent`` and no later one, so at its next ping it is sent the rest from the
        room's history (:meth:`catch_up`). ``last_sent`` None: it missed a welcome, so it
        needs a fresh one (a resync) instead."""
        if not session.stalled:
            log.warning("client %d of room %r cannot keep up (send queue full): no batches "
                        "until it catches up at its next ping", session.client_id,
                        session.room.name)
        session.stalled = True
        if last_sent is None:
            session.needs_resync = True
        elif session.missed_after < 0:
            session.missed_after = last_sent

    def catch_up(self, session: Session, now: float) -> bool:
        """Send a stalled ``session`` the batches it missed from the room's history, so it
        carries on without a snapshot; if they are gone (or it needs a welcome), resync it
        instead (:meth:`request_resync`). False: the session must end (see
        :meth:`resync`). A send that fails again leaves it stalled where it got to."""
        frames = (None if session.needs_resync or session.missed_after < 0
                  else session.hosted.history_since(session.missed_after))
        if frames is None:
            session.missed_after = -1
            return self.request_resync(session, now)
        if self._replay(session, session.missed_after, frames):
            log.debug("client %d of room %r caught up (%d batches from the history)",
                      session.client_id, session.room.name, len(frames))
        return True

    def resume(self, session: Session, room_seq: int, frames: list[bytes], secret: bytes,
               now: float) -> None:
        """Answer a ``RESUME`` that found ``session`` (now on its fresh peer) and whose
        batches after ``room_seq`` are all in the history (``frames``): ``RESUMED`` with the
        new resume ``secret``, then those batches. The room was flushed first."""
        hosted = session.hosted
        room = hosted.room
        session.stalled = False
        session.missed_after = -1
        answer = encode(Resumed(session.client_id, session.epoch, session.last_applied,
                                room.room_seq, now, hosted.incarnation, secret,
                                room.limits.announced()))
        if not self.transport.send(session.peer, answer):
            self.stall(session, None)
            return
        self._replay(session, room_seq, frames)

    def _replay(self, session: Session, after: int, frames: list[bytes]) -> bool:
        """Send ``frames`` (the batches after ``after``) to ``session``; True if all went
        (it is live again), else it stays stalled after the last one that did."""
        send, peer, cost = self.transport.send, session.peer, session.cost
        for i, frame in enumerate(frames):
            if not send(peer, frame):
                session.stalled = True
                session.missed_after = after + i
                return False
            cost.replayed_bytes += len(frame)
        session.stalled = False
        session.missed_after = -1
        return True

    def request_resync(self, session: Session, now: float) -> bool:
        """Resync ``session`` now if its cooldown allows, else at its next ping. False if
        the session must end instead: it left :data:`MAX_UNREAD_RESYNCS` welcomes unread."""
        session.needs_resync = True
        if now - session.last_resync >= resync_cooldown(session):
            return self.resync(session, now)
        return True

    @staticmethod
    def read_welcome(session: Session, epoch: int) -> None:
        """``session`` showed it applied the welcome of ``epoch`` (a ping or an update naming
        it): its unread resyncs are read."""
        if epoch == session.epoch:
            session.unread_resyncs = 0

    def resync(self, session: Session, now: float, *, secret: bytes = NO_SESSION,
               epoch: int | None = None) -> bool:
        """Send ``session`` a fresh ``WELCOME`` (a new epoch) after flushing its room; False
        (nothing sent) if it already left :data:`MAX_UNREAD_RESYNCS` unread: end it.
        ``secret``: a new resume secret to hand over (a resume's; empty: keep the one the
        client holds). ``epoch``: the epoch the client numbers its unanswered updates in, if
        not the session's (a resume after a resync welcome that never arrived): the welcome
        then names the last update applied in that one."""
        if session.unread_resyncs >= MAX_UNREAD_RESYNCS:
            return False
        hosted = session.hosted
        self.flush(hosted, now)
        before = (session.epoch, session.last_applied)
        welcome = hosted.room.resync(session.client_id, now)
        if epoch is not None and epoch != before[0]:
            prior = session.prior
            if prior is not None and prior[0] == epoch and before[1] == 0:
                welcome = welcome._replace(last_applied=prior[1])
            elif epoch > before[0]:   # an epoch the (restored) session never saw: none of
                welcome = welcome._replace(last_applied=0)   # its updates were applied
        session.prior = before
        session.epoch = welcome.epoch
        session.last_applied = 0
        session.last_resync = now
        session.missed_after = -1
        frame = encode(welcome._replace(session_id=session.session_id,
                                        session_secret=secret,
                                        incarnation=hosted.incarnation))
        session.unread_resyncs += 1
        session.cost.snapshot_bytes += len(frame)
        if self.transport.send(session.peer, frame):
            session.needs_resync = False
            session.stalled = False
            log.debug("client %d of room %r resynced (%d models)", session.client_id,
                     hosted.room.name, len(welcome.snapshot))
        else:
            session.stalled = True
        return True
