"""RoomHost: the server's message handling over any transport, with no sockets and no clock.

The socket loop (or a test over :mod:`rtecs.transport.memory`) gives it frames with
:meth:`RoomHost.handle` / :meth:`RoomHost.pump` and calls :meth:`RoomHost.tick` once per
server tick with the current time. It keeps one session per peer, creates rooms on first
join, answers pings, fans each room's batch out (the same bytes to every member), removes
clients that went silent past the heartbeat timeout, and drops rooms that stayed empty.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from rtecs.errors import ProtocolError
from rtecs.protocol import (
    DEFAULT_LIMITS,
    Bye,
    Error,
    ErrorCode,
    Hello,
    Limits,
    Ping,
    Pong,
    Update,
    decode_client_message,
    encode,
)
from rtecs.transport import ServerTransport
from rtecs_server.plugins import Plugin
from rtecs_server.room import BadUpdate, JoinRefused, Room, UpdateStatus

__all__ = ["RoomHost"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Session:
    peer: bytes
    room: Room
    client_id: int
    last_seen: float
    awaiting_restart: bool = False   # resynced: drop old-numbered updates until seq 1
    needs_resync: bool = False       # a send failed (queue full): resync once it drains


@dataclass(eq=False)
class _HostedRoom:
    room: Room
    peers: dict[int, bytes] = field(default_factory=dict)  # client id → peer
    empty_since: float | None = None


class RoomHost:
    """Sessions and rooms of one server instance, driven by frames and ticks."""

    def __init__(self, transport: ServerTransport, *, plugins: Iterable[Plugin] = (),
                 limits: Limits = DEFAULT_LIMITS, heartbeat_timeout: float = 5.0,
                 empty_room_timeout: float = 30.0,
                 max_clients_per_room: int | None = None) -> None:
        self.transport = transport
        self.plugins = tuple(plugins)
        self.limits = limits
        self.heartbeat_timeout = heartbeat_timeout
        self.empty_room_timeout = empty_room_timeout
        self.max_clients_per_room = max_clients_per_room
        self.rooms: dict[str, _HostedRoom] = {}
        self.sessions: dict[bytes, _Session] = {}

    # ----------------------------------------------------------------- input

    def pump(self, now: float) -> int:
        """Handle every frame the transport has, then tick. Returns the frames handled."""
        frames = self.transport.receive()
        for peer, frame in frames:
            self.handle(peer, frame, now)
        self.tick(now)
        return len(frames)

    def handle(self, peer: bytes, frame: bytes, now: float) -> None:
        """Handle one frame from ``peer``. Bad input is answered with an error, never raised."""
        try:
            message = decode_client_message(frame, self.limits)
        except ProtocolError as exc:
            log.warning("peer %s sent a bad frame: %s", peer.hex(), exc)
            code = ErrorCode.OVER_LIMIT if "over the limit" in str(exc) else ErrorCode.PROTOCOL
            self._error(peer, code, str(exc), fatal=False)
            return
        session = self.sessions.get(peer)
        if session is not None:
            session.last_seen = now
        if isinstance(message, Update):
            self.handle_update(peer, session, message, now)
        elif isinstance(message, Ping):
            self.handle_ping(peer, session, message, now)
        elif isinstance(message, Hello):
            self.handle_hello(peer, session, message, now)
        elif isinstance(message, Bye):
            self.handle_bye(peer, session, now)

    def handle_hello(self, peer: bytes, session: _Session | None, hello: Hello,
                     now: float) -> None:
        if session is not None:
            self._end_session(session, now)
        hosted = self.rooms.get(hello.room)
        if hosted is None:
            room = Room(hello.room, self.plugins, self.limits, self.max_clients_per_room)
            hosted = self.rooms[hello.room] = _HostedRoom(room)
            log.info("room %r created", hello.room)
        self._fan_out(hosted, now)  # join() needs the room's pending entries sent first
        try:
            welcome = hosted.room.join(hello, now)
        except JoinRefused as exc:
            log.warning("peer %s refused from room %r: %s", peer.hex(), hello.room, exc.message)
            self._error(peer, exc.code, exc.message, fatal=True)
            return
        hosted.peers[welcome.client_id] = peer
        hosted.empty_since = None
        self.sessions[peer] = _Session(peer, hosted.room, welcome.client_id, now)
        log.info("client %d joined room %r", welcome.client_id, hello.room)
        if not self.transport.send(peer, encode(welcome)):
            self.sessions[peer].needs_resync = True

    def handle_update(self, peer: bytes, session: _Session | None, update: Update,
                      now: float) -> None:
        if session is None:
            self._error(peer, ErrorCode.NOT_JOINED, "send a hello before updates", fatal=False)
            return
        if session.awaiting_restart:
            if update.seq != 1:
                return  # sent before the client saw its resync; it rolled these back
            session.awaiting_restart = False
        room = session.room
        try:
            outcome = room.apply_update(session.client_id, update)
        except BadUpdate as exc:
            self._error(peer, exc.code, exc.message, fatal=False)
            return
        if outcome.status is UpdateStatus.DUPLICATE:
            again = room.answer_again(session.client_id, update.seq, now)
            if again is not None:
                self.transport.send(peer, again)
        elif outcome.status is UpdateStatus.GAP:
            log.warning("client %d of room %r skipped to update %d: resync", session.client_id,
                        room.name, update.seq)
            self._resync(session, now)
        for problem in outcome.problems:
            log.warning("client %d of room %r: %s", session.client_id, room.name,
                        problem.message)
            self._error(peer, problem.code, problem.message, fatal=False)

    def handle_ping(self, peer: bytes, session: _Session | None, ping: Ping,
                    now: float) -> None:
        if session is not None and session.needs_resync:
            self._resync(session, now)
        self.transport.send(peer, encode(Pong(ping.client_time, now)), False)

    def handle_bye(self, peer: bytes, session: _Session | None, now: float) -> None:
        if session is not None:
            self._end_session(session, now)

    # ----------------------------------------------------------------- output

    def tick(self, now: float) -> None:
        """Fan out every room's batch, expire silent clients and empty rooms."""
        for session in [s for s in self.sessions.values()
                        if now - s.last_seen > self.heartbeat_timeout]:
            log.warning("client %d of room %r timed out (silent for %.1f s)", session.client_id,
                        session.room.name, now - session.last_seen)
            self._end_session(session, now)
        for name, hosted in list(self.rooms.items()):
            self._fan_out(hosted, now)
            if hosted.empty_since is not None and (
                    now - hosted.empty_since >= self.empty_room_timeout):
                log.info("room %r closed after %.1f s empty", name, now - hosted.empty_since)
                del self.rooms[name]

    def _fan_out(self, hosted: _HostedRoom, now: float) -> None:
        frame = hosted.room.flush(now)
        if frame is None:
            return
        send = self.transport.send
        for client_id, peer in hosted.peers.items():
            if not send(peer, frame):
                session = self.sessions.get(peer)
                if session is not None and not session.needs_resync:
                    log.warning("client %d of room %r cannot keep up: resync when it drains",
                                client_id, hosted.room.name)
                    session.needs_resync = True

    def _resync(self, session: _Session, now: float) -> None:
        hosted = self.rooms[session.room.name]
        self._fan_out(hosted, now)
        welcome = session.room.resync(session.client_id, now)
        if self.transport.send(session.peer, encode(welcome)):
            session.needs_resync = False
            session.awaiting_restart = True

    def _end_session(self, session: _Session, now: float) -> None:
        self.sessions.pop(session.peer, None)
        hosted = self.rooms.get(session.room.name)
        if hosted is None:
            return
        hosted.peers.pop(session.client_id, None)
        session.room.leave(session.client_id, now)
        log.info("client %d left room %r", session.client_id, session.room.name)
        if not hosted.peers:
            hosted.empty_since = now

    def _error(self, peer: bytes, code: ErrorCode, message: str, *, fatal: bool,
               now: float = 0.0) -> None:
        self.transport.send(peer, encode(Error(code.value, message, fatal)))
        session = self.sessions.get(peer)
        if fatal and session is not None:
            self._end_session(session, now)
