"""The records of hosting: a :class:`Session`, the :class:`Cost` it is charged, and a
:class:`HostedRoom` (a room core with its members' sessions, its lease, and its
:class:`BatchHistory`).

A session is hosting's, a member is the room core's (DESIGN §8). The room core knows its
members by client id only; the host gives each member a :class:`Session`, which belongs to a
secret, not to a socket: its ``peer`` (the ZeroMQ routing id the session's frames travel on
right now) is a transport address that may change — a resumed session moves to the fresh
connection's peer — and is never a credential. What authenticates a session is
its resume secret, of which the session keeps only the SHA-256 hash
(:mod:`rtecs_server.sessions` makes, rotates and checks secrets).

The session's ``epoch`` and ``last_applied`` mirror what the room's sequencer answered it (the
welcome's epoch, the seq of its last applied update): what a ``RESUMED`` names. ``user_id``
and ``claims`` are what its join token (or a plugin) vouched for; None and empty when joins
are not authenticated.

:class:`Cost` is one session's account of what it made the server spend; the host charges it
in :meth:`RoomHost.handle <rtecs_server.host.RoomHost.handle>`. The rate limit
(:mod:`rtecs_server.ratelimit`) sits beside it: its token bucket is the *rate* of a routing id,
joined or not; the cost is the *total* of a session, and the rate limit's drops are charged
to it as ``rate_limited`` (nothing is counted twice).

**Batch history** (DESIGN §5: there is no per-session answer ring; the only history is one
per room, bounded in bytes). Every encoded ``BATCH`` frame a room flushes is kept as
``(room_seq, frame)`` — the very bytes object sent to the members, so keeping it copies
nothing — until the history holds more than its byte budget; then the oldest frames are
dropped first. :meth:`BatchHistory.since` gives a client that missed batches (a resumed
session, or one whose send queue overflowed) the frames after the last one it applied, or
None if some of them are gone (it then needs a fresh snapshot: a new epoch).

Accounting: each kept frame costs ``len(frame)`` plus :data:`ENTRY_OVERHEAD`, an upper bound
of what CPython spends on the bytes object's header, the ``(room_seq, frame)`` tuple, the int
and the deque slot; :attr:`BatchHistory.bytes` is that sum and never exceeds the budget after
:meth:`BatchHistory.append` returns. A single frame over the whole budget is not kept (the
history is then empty and everything before the next frame is gone). A budget of 0 keeps
nothing: every :meth:`~BatchHistory.since` before the newest batch is None.

The budget is ``--history-bytes`` (:data:`DEFAULT_HISTORY_BYTES`, 1 MiB, per room): at 20
updates/s from each of 20 members, with batches of a few hundred bytes, that is about 20 s of
stream (DESIGN §8's default session grace). A room that every session left clears its history
(nobody can resume into it), so an idle room keeps none.
"""

from __future__ import annotations

import math
import secrets
import sys
import types
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Final

from rtecs_server.persistence import Keeping
from rtecs_server.ratelimit import Allowance
from rtecs_server.records import SavedSession
from rtecs_server.room import Room

__all__ = ["DEFAULT_HISTORY_BYTES", "DEFAULT_SESSION_GRACE", "ENTRY_OVERHEAD", "NO_CLAIMS",
           "BatchHistory", "Cost", "HostedRoom", "Session"]

#: The default byte budget of one room's history (``--history-bytes``).
DEFAULT_HISTORY_BYTES: Final = 1 << 20
#: Bytes charged per kept frame besides its length (an upper bound of CPython's overhead:
#: the bytes header, the pair, the int and the deque's slot).
ENTRY_OVERHEAD: Final = (sys.getsizeof(b"") + sys.getsizeof((0, b"")) + sys.getsizeof(1 << 62)
                         + 8)


class BatchHistory:
    """The frames of one room's stream, newest last, within ``max_bytes`` (module docs)."""

    __slots__ = ("_frames", "bytes", "last_seq", "max_bytes")

    def __init__(self, max_bytes: int = DEFAULT_HISTORY_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"a history budget must be ≥ 0 bytes, got {max_bytes}")
        self.max_bytes = max_bytes
        """The byte budget (see the module docs)."""
        self.bytes = 0
        """Bytes accounted for the kept frames (see the module docs)."""
        self.last_seq = 0
        """``room_seq`` of the newest frame appended (kept or not); 0 before the first."""
        self._frames: deque[tuple[int, bytes]] = deque()

    def __len__(self) -> int:
        return len(self._frames)

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        """``(room_seq, frame)`` of every kept frame, oldest first."""
        return iter(self._frames)

    @property
    def first_seq(self) -> int:
        """``room_seq`` of the oldest kept frame (``last_seq + 1`` when none is kept)."""
        return self._frames[0][0] if self._frames else self.last_seq + 1

    def append(self, room_seq: int, frame: bytes) -> None:
        """Keep the room's next batch, dropping the oldest frames beyond the budget.
        ``room_seq`` must follow the last one (``ValueError`` otherwise: a hole in the
        history would hand a client a stream with a gap)."""
        if self.last_seq and room_seq != self.last_seq + 1:
            raise ValueError(f"batch {room_seq} does not follow batch {self.last_seq}")
        self.last_seq = room_seq
        cost = len(frame) + ENTRY_OVERHEAD
        if cost > self.max_bytes:
            self.clear()
            return
        frames = self._frames
        frames.append((room_seq, frame))
        self.bytes += cost
        while self.bytes > self.max_bytes:
            _, old = frames.popleft()
            self.bytes -= len(old) + ENTRY_OVERHEAD

    def since(self, room_seq: int) -> list[bytes] | None:
        """The frames after batch ``room_seq``, oldest first (empty if it is the newest);
        None if some of them are no longer kept, or ``room_seq`` is not of this stream (it
        is ahead of it, or negative)."""
        if room_seq < 0 or room_seq > self.last_seq:
            return None
        if room_seq + 1 < self.first_seq:
            return None
        skip = room_seq + 1 - self.first_seq
        return [frame for _, frame in islice(self._frames, skip, None)]

    def clear(self) -> None:
        """Forget every kept frame (``last_seq`` stays: the stream goes on)."""
        self._frames.clear()
        self.bytes = 0


#: Seconds a silent or disconnected session may be resumed before it ends
#: (``--session-grace``, DESIGN §8).
DEFAULT_SESSION_GRACE: Final = 20.0

#: The claims of a session no token vouched for.
NO_CLAIMS: Mapping[str, object] = types.MappingProxyType({})


@dataclass(slots=True)
class Cost:
    """What one session made the server spend (the rate limit and, later, metrics read it).

    Charged in :meth:`RoomHost.handle <rtecs_server.host.RoomHost.handle>` for every frame
    the session's peer sent while it held the session, the ``HELLO`` that opened it included.
    """

    messages: int = 0           # frames handled (decoded or not)
    bytes: int = 0              # their sizes
    updates: int = 0            # UPDATEs the room applied (duplicates, stale, gaps: not)
    changes_accepted: int = 0   # changes of those updates the room accepted
    changes_rejected: int = 0   # and those it rejected (authority, plugins, bad input)
    errors: int = 0             # ERRORs sent to it (bad input, refusals)
    snapshot_bytes: int = 0     # bytes of the resync welcomes sent to it
    replayed_bytes: int = 0     # bytes of history batches sent again (resumes, catch-ups)
    resumes: int = 0            # RESUMEs that took the session up on a fresh connection
    rate_limited: int = 0       # frames the rate limit dropped unread
    seconds: float = 0.0        # server time spent handling its frames (the host's timer)


@dataclass(slots=True, eq=False)
class Session:
    """One joined client (see the module docs). Made by
    :meth:`SessionTable.open <rtecs_server.sessions.SessionTable.open>`."""

    session_id: bytes               # 16 random bytes: names the session in a RESUME
    secret_hash: bytes              # SHA-256 of the resume secret (the secret is not kept)
    peer: bytes                     # the routing id its frames travel on now (may change)
    hosted: HostedRoom
    client_id: int                  # the room core's member
    last_seen: float
    epoch: int = 1                  # the room's sequencer: the epoch of its updates
    last_applied: int = 0           # ... and the seq of its last applied update in it
    user_id: str | None = None      # from its join token (none until joins authenticate)
    claims: Mapping[str, object] = field(default_factory=lambda: NO_CLAIMS)
    needs_resync: bool = False      # resync when the cooldown allows (at the latest: a ping)
    stalled: bool = False           # a send failed (queue full): no batches until it
                                    # catches up from the history (or is resynced)
    missed_after: int = -1          # stalled by a batch: the room_seq of the last one it got
    prior: tuple[int, int] | None = None  # (epoch, last applied) before its last resync
    last_resync: float = -math.inf
    unread_resyncs: int = 0         # resync welcomes sent that it has not shown it read
    opened: float = -math.inf       # when its welcome went out (a re-join's cooldown)
    connection: object = None       # the transport connection that joined (None: unknown)
    detached: bool = False          # its routing id came over another connection
    cost: Cost = field(default_factory=Cost)
    allowance: Allowance | None = None  # its update budget, made at its first update

    @property
    def room(self) -> Room:
        return self.hosted.room


def _new_incarnation() -> int:
    return secrets.randbelow((1 << 63) - 1) + 1


@dataclass(eq=False)
class HostedRoom:
    """One open room: the room core, its members' sessions, its stream history, its
    incarnation, and its lease and saves.

    ``incarnation`` names the room's stream (in every ``WELCOME`` and ``RESUMED``): a random
    63-bit number ≥ 1, drawn whenever the room is opened — created, or loaded from storage by
    this or another instance — so a client that resumes into a room loaded again finds a
    different one and is given a snapshot (its ``room_seq`` counts another stream). Random
    rather than a stored counter: instances need not agree on anything, and two draws
    collide with probability 2⁻⁶³.
    """

    room: Room
    members: dict[int, Session] = field(default_factory=dict)  # client id → session
    empty_since: float | None = None
    keeping: Keeping | None = None   # its lease and last save, with persistence
    close_after: float = -math.inf   # an unload whose save failed is retried from then
    history: BatchHistory = field(default_factory=lambda: BatchHistory(DEFAULT_HISTORY_BYTES))
    incarnation: int = field(default_factory=_new_incarnation)
    opened_by: str | None = None   # the address (key) of the hello that opened it

    def saved_sessions(self) -> list[SavedSession]:
        """The members' sessions as a live checkpoint keeps them (see
        :meth:`Room.export <rtecs_server.room.Room.export>`, which fills in each one's epoch
        and last applied update from the room's sequencer)."""
        out = []
        for cid, s in self.members.items():
            prior_epoch, prior_applied = s.prior or (0, 0)
            out.append(SavedSession(s.session_id, s.secret_hash, cid, s.epoch,
                                    s.last_applied, prior_epoch, prior_applied, s.user_id,
                                    dict(s.claims)))
        return out

    def history_since(self, room_seq: int) -> list[bytes] | None:
        """The batch frames after ``room_seq`` (see :meth:`BatchHistory.since
        <rtecs_server.hosted.BatchHistory.since>`); None if they are gone."""
        return self.history.since(room_seq)
