"""The room core: one room's members, sequencer and stream. Pure and deterministic.

No sockets, threads or clocks: the host (the socket loop) decodes frames, calls these methods
and passes the time in; the room answers with :class:`~rtecs.protocol.Welcome` records and
encoded ``BATCH`` frames to send. The models themselves live in the room's
:class:`~rtecs_server.store.ModelStore` (authority, validation, plugins, lifetime).

Host loop, per server tick::

    welcome = room.join(hello, now)            # on HELLO (flush() first if has_pending_changes)
    out = room.apply_update(client_id, update) # on UPDATE, in arrival order
    if out.status is UpdateStatus.GAP:         # send ERROR sequence, flush, then resync()
    (UpdateStatus.DUPLICATE and STALE: nothing to send; the answer is in the stream)
    for p in out.problems:                     # send ERROR p.code to the sender (not fatal)
    room.leave(client_id, now)                 # on BYE or heartbeat timeout
    frame = room.flush(now)                    # once per tick: the same bytes to every member

Sequencing (DESIGN §5): each member numbers its updates 1, 2, 3… within a session *epoch*;
the join opens epoch 1 and every :meth:`Room.resync` the next one. The room applies an update
only if it names the current epoch and the next seq; an older epoch's update is STALE (sent
before the client saw its new welcome, which names the last update applied, so the client
renumbers and resends what was not), a seq already applied is a DUPLICATE (its entry is in
the stream already), a seq beyond the next one is a GAP. Nothing is answered outside the
ordered stream and no answers are kept per client.

Decisions where the design is silent are in the method docs: the snapshot/flush order of
:meth:`Room.join` and the entry order of :meth:`Room.leave`.

Persistence: :meth:`Room.export` is the room's checkpoint (a
:class:`~rtecs_server.records.SavedRoom` of its persistent models), :meth:`Room.restore`
rebuilds a room from one; ``room_seq`` starts again at 0 after a restore (every client of
the new session joins with a snapshot).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol, TypeAlias

from rtecs.errors import RtecsError, SchemaError
from rtecs.protocol import (
    DEFAULT_LIMITS,
    PROTOCOL_VERSION,
    Batch,
    ErrorCode,
    Hello,
    JoinEntry,
    LeaveEntry,
    Limits,
    ModelId,
    Update,
    UpdateEntry,
    Value,
    Welcome,
    encode,
)
from rtecs_server.hooks import Hooks
from rtecs_server.records import Change, SavedRoom, SavedSession, SnapshotRecord, persistent_models
from rtecs_server.store import ModelStore, Problem

__all__ = ["BadUpdate", "JoinRefused", "Plugin", "Room", "UpdateOutcome", "UpdateStatus",
           "WritePlugin"]

log = logging.getLogger("rtecs_server.room")


class WritePlugin(Protocol):
    """A plain plugin function (or an object with ``__call__``): the ``on_write`` of
    property writes (see :mod:`rtecs_server.hooks`)."""

    def __call__(self, room: Room, sender: int, change: Change, /) -> Value:
        """Return the value to accept (``change.value`` or a transformed one), or raise
        :class:`~rtecs_server.plugins.Reject`."""
        ...


#: A server plugin (:mod:`rtecs_server.hooks`): a hook object with any of ``on_write``,
#: ``on_create``, ``on_destroy``, ``on_owner`` and ``authenticate``, or a plain callable,
#: which is its ``on_write`` for property writes.
Plugin: TypeAlias = "WritePlugin | Hooks"


class JoinRefused(RtecsError):
    """A hello the room refuses; send ``ERROR code message`` (fatal) to the client."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        """The ``ERROR`` code to send (an :class:`~rtecs.protocol.ErrorCode`)."""
        self.message = message
        """The ``ERROR`` message to send: what was wrong, for the client's developer."""


class BadUpdate(RtecsError):
    """Protocol-level misuse of :meth:`Room.apply_update` (an update from a non-member, an
    epoch never opened) or a refused :meth:`Room.extend_schema`; send ``ERROR code message``
    (not fatal)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        """The ``ERROR`` code to send (an :class:`~rtecs.protocol.ErrorCode`)."""
        self.message = message
        """The ``ERROR`` message to send: what was wrong, for the client's developer."""


class UpdateStatus(enum.Enum):
    """What :meth:`Room.apply_update` did with an update."""

    APPLIED = "applied"      # sequenced; its entry is queued for the next flush
    DUPLICATE = "duplicate"  # seq ≤ last: already applied; dropped (its answer is in the stream)
    STALE = "stale"          # an older epoch's update: dropped (the welcome told the client)
    GAP = "gap"              # seq > last + 1: nothing applied; the client must resync


class UpdateOutcome(NamedTuple):
    """What :meth:`Room.apply_update` did with one update."""

    #: What became of it (see :class:`UpdateStatus`).
    status: UpdateStatus
    #: APPLIED: the queued entry; otherwise None.
    entry: UpdateEntry | None
    #: At most a few problems (bad input, over limit); empty for a well-behaved client.
    problems: tuple[Problem, ...] = ()


class _Client:
    __slots__ = ("epoch", "last_seq")

    def __init__(self, epoch: int = 1, last_seq: int = 0) -> None:
        self.epoch = epoch
        self.last_seq = last_seq


class Room:
    """One room: its members, the sequencer of their updates and the stream of entries.

    ``plugins`` are asked about every change a client makes (:mod:`rtecs_server.hooks`); ``limits``
    caps the datastore size; ``max_clients`` (None: no cap) refuses joins with room_full;
    ``next_client_id`` restores the id counter of a persisted room.
    """

    def __init__(self, name: str, plugins: Iterable[Plugin] = (),
                 limits: Limits = DEFAULT_LIMITS, max_clients: int | None = None, *,
                 next_client_id: int = 1) -> None:
        self.name = name
        """The room's name (from the hellos)."""
        self.limits = limits
        """Size limits of the room's datastore and updates (announced in every welcome)."""
        self.max_clients = max_clients
        """Members at most (None: no cap); a joiner beyond it is refused ``room_full``."""
        #: The id the next joiner gets. Only grows; persist it with the room.
        self.next_client_id = next_client_id
        #: Sequence number of the last flushed batch (0 before the first).
        self.room_seq = 0
        #: The room's models (authority checks, plugins, lifetime, size).
        self.store = ModelStore(self, name, limits, tuple(plugins))
        self._clients: dict[int, _Client] = {}
        self._pending: list[UpdateEntry | JoinEntry | LeaveEntry] = []
        self._pending_changes = False

    @classmethod
    def restore(cls, saved: SavedRoom, plugins: Iterable[Plugin] = (),
                limits: Limits = DEFAULT_LIMITS, max_clients: int | None = None) -> Room:
        """The room a checkpoint holds (see :meth:`ModelStore.restore
        <rtecs_server.store.ModelStore.restore>`): with no members, or — a live checkpoint —
        with the members its sessions name, each in the epoch it was in and with its
        ownerships. Its next joiner gets a client id above every id the saved room ever
        gave. Raises :class:`~rtecs_server.errors.CorruptRoomError` for a checkpoint that
        contradicts itself."""
        members = [s.client_id for s in saved.sessions]
        next_id = max(saved.next_client_id, max(saved.created, default=0) + 1,
                      max(members, default=0) + 1)
        room = cls(saved.name, plugins, limits, max_clients, next_client_id=next_id)
        room.store.restore(saved, set(members))
        room.next_client_id = max(next_id, max(room.store.created, default=0) + 1)
        for s in saved.sessions:
            room._clients[s.client_id] = _Client(s.epoch, s.last_applied)
        return room

    def export(self, sessions: Sequence[SavedSession] = ()) -> SavedRoom:
        """The room's checkpoint: its schema, client-id counter, created counters and models.
        Without ``sessions``, as it would stand once every client had left: its persistent
        models (:func:`~rtecs_server.records.persistent_models`: unowned, without models
        flagged destroy_when_last_client_leaves or owned destroy_when_owner_leaves models,
        and their subtrees). With the ``sessions`` of its members (hosting's: a live
        checkpoint, DESIGN §8), every model as it stands, owners and all, and each session's
        epoch and last applied update as this room's sequencer holds them. The records
        share the room's live ``props`` dicts: encode (save) the result at once, on the
        room's thread, before the room changes."""
        store = self.store
        root_type = store.schema.root_type
        if root_type is None:
            raise RuntimeError(f"room {self.name!r} has never had a member: nothing to save")
        if not sessions:
            return SavedRoom(self.name, root_type, store.schema.as_dict(),
                             self.next_client_id, store.created,
                             persistent_models(store.records()))
        clients = self._clients
        live = [s._replace(epoch=clients[s.client_id].epoch,
                           last_applied=clients[s.client_id].last_seq)
                for s in sessions if s.client_id in clients]
        return SavedRoom(self.name, root_type, store.schema.as_dict(), self.next_client_id,
                         store.created, list(store.records()), sessions=live)

    # ------------------------------------------------------------------ inspection

    @property
    def root_type(self) -> str | None:
        """Type name of the room model; set by the first join."""
        return self.store.schema.root_type

    @property
    def schema(self) -> dict[str, dict[int, tuple[str, str, bool]]]:
        """The union of the members' schemas, in the hello's shape (a fresh copy)."""
        return self.store.schema.as_dict()

    @property
    def members(self) -> tuple[int, ...]:
        """Client ids present, in join order."""
        return tuple(self._clients)

    @property
    def has_pending_changes(self) -> bool:
        """True if an update entry waits for :meth:`flush` (then :meth:`join` must wait)."""
        return self._pending_changes

    @property
    def size(self) -> int:
        """Estimated datastore size in bytes (see :func:`rtecs_server.store.value_size`)."""
        return self.store.size

    def record(self, model_id: ModelId) -> SnapshotRecord | None:
        """``(model_id, type_name, owner, flags, props)`` of one model, or None. ``props``
        is the live dict: read it, don't keep or change it."""
        return self.store.record(model_id)

    def snapshot(self) -> list[SnapshotRecord]:
        """Every model as ``(model_id, type_name, owner, flags, props)``, parents before
        children; ``props`` are shallow copies; properties never written are absent."""
        return self.store.snapshot()

    # ------------------------------------------------------------------ membership

    def join(self, hello: Hello, now: float) -> Welcome:
        """Admit a client: allocate its id, queue a JoinEntry, return its Welcome.

        The welcome's snapshot is the current state and its ``room_seq`` the last flushed
        batch, so the host must :meth:`flush` (and send) pending update entries first:
        raises ``RuntimeError`` if :attr:`has_pending_changes`. ``clients`` includes the
        joiner, and members whose own JoinEntry is still pending (a client treats a JoinEntry
        for a known id as a no-op). Raises :class:`JoinRefused` (version, room full, root type
        or schema conflict); a refused hello changes nothing.
        """
        if self._pending_changes:
            raise RuntimeError("flush() the pending update entries before join()")
        if hello.version != PROTOCOL_VERSION:
            raise JoinRefused(ErrorCode.VERSION, f"protocol version {hello.version} is not "
                                                 f"supported (server speaks {PROTOCOL_VERSION})")
        if self.max_clients is not None and len(self._clients) >= self.max_clients:
            raise JoinRefused(ErrorCode.ROOM_FULL,
                              f"room {self.name!r} is full ({self.max_clients} clients)")
        try:
            self.store.merge_schema(hello.schema, hello.root_type)
        except SchemaError as exc:
            raise JoinRefused(ErrorCode.SCHEMA, str(exc)) from None
        cid = self.next_client_id
        self.next_client_id = cid + 1
        client = self._clients[cid] = _Client()
        self._pending.append(JoinEntry(cid))
        return Welcome(cid, self.room_seq, now, self.snapshot(), list(self._clients),
                       client.epoch, 0, self.limits.announced())

    def resync(self, client_id: int, now: float) -> Welcome:
        """A fresh Welcome for a member (after a GAP, a RESYNC or a send queue overflow): a
        new epoch, in which the client numbers its updates from 1 again, and the last update
        applied in the old one. Same precondition as :meth:`join`. Raises ``KeyError`` for a
        non-member."""
        if self._pending_changes:
            raise RuntimeError("flush() the pending update entries before resync()")
        client = self._clients[client_id]
        last_applied = client.last_seq
        client.epoch += 1
        client.last_seq = 0
        return Welcome(client_id, self.room_seq, now, self.snapshot(), list(self._clients),
                       client.epoch, last_applied, self.limits.announced())

    def extend_schema(self, client_id: int, schema: Mapping[str, Mapping[int, tuple[str, str,
                                                                                   bool]]],
                      ) -> None:
        """Merge model types a member first uses after joining (``SCHEMA``), all or nothing.
        Raises :class:`BadUpdate` (``not_joined``) for a non-member and ``schema`` for a
        contradiction (nothing merged)."""
        if client_id not in self._clients:
            raise BadUpdate(ErrorCode.NOT_JOINED, f"client {client_id} is not in room "
                                                  f"{self.name!r}")
        root_type = self.store.schema.root_type
        assert root_type is not None  # set by the first join
        try:
            self.store.merge_schema(schema, root_type)
        except SchemaError as exc:
            raise BadUpdate(ErrorCode.SCHEMA, f"schema refused: {exc}") from None

    def leave(self, client_id: int, now: float) -> bool:
        """Remove a member (BYE or timeout); False if it was not one.

        Queues a LeaveEntry, then — if anything changed — one server entry (sender 0,
        seq 0) with the lifetime changes, in this order: destroys of the leaver's models
        flagged destroy_when_owner_leaves; owner -1 for the rest of its models (children
        included); and when the room is left empty, destroys of every top-level model flagged
        destroy_when_last_client_leaves.
        """
        if self._clients.pop(client_id, None) is None:
            return False
        self._pending.append(LeaveEntry(client_id))
        changes = self.store.release(client_id, room_empty=not self._clients)
        if changes:
            self._pending.append(UpdateEntry(0, 0, changes, ()))
            self._pending_changes = True
        return True

    # ------------------------------------------------------------------ the stream

    def flush(self, now: float) -> bytes | None:
        """Encode everything ordered since the last flush as one BATCH (``room_seq`` + 1,
        server time ``now``), once; send the same bytes to every member. None if empty."""
        if not self._pending:
            return None
        self.room_seq += 1
        frame = encode(Batch(self.room_seq, now, self._pending))
        self._pending = []
        self._pending_changes = False
        return frame

    def apply_update(self, client_id: int, update: Update, *, user_id: str | None = None,
                     claims: Mapping[str, Any] | None = None,
                     refuse: Problem | None = None) -> UpdateOutcome:
        """Sequence and apply one client update; queue its entry for the next flush.

        ``update`` must come from :func:`rtecs.protocol.decode_client_message` (structure
        checked, ids hashable). Each change is checked where it falls and applied at once, so
        later changes see it; refused ones are listed in the entry's ``rejected``. The
        plugins see ``user_id`` and ``claims`` (the sender's session) in their context.
        Raises :class:`BadUpdate` (``not_joined``) if ``client_id`` is not a member.

        An *internal error* (an exception in the room's own code while applying; a plugin's
        exceptions are refusals) undoes the whole update, is logged with its traceback, and
        the update is still APPLIED: its entry accepts nothing and rejects every change, so
        the stream's sequence stays contiguous and every client rolls it back.

        ``refuse`` (the host's verdict, e.g. the sender is over its budget) sequences the
        update the same way but applies none of it: its entry rejects every change, and
        ``refuse`` is its one problem. Refused inside the stream, never dropped, so the
        sender's sequence has no gap.
        """
        client = self._clients.get(client_id)
        if client is None:
            raise BadUpdate(ErrorCode.NOT_JOINED, f"client {client_id} is not in room "
                                                  f"{self.name!r}")
        if update.epoch != client.epoch:
            if update.epoch < client.epoch:
                return UpdateOutcome(UpdateStatus.STALE, None)
            raise BadUpdate(ErrorCode.SEQUENCE, f"update epoch {update.epoch} was never "
                                                f"opened (the session is at {client.epoch})")
        seq = update.seq
        if seq <= client.last_seq:
            return UpdateOutcome(UpdateStatus.DUPLICATE, None)
        if seq != client.last_seq + 1:
            return UpdateOutcome(UpdateStatus.GAP, None)
        client.last_seq = seq
        problems: list[Problem] = []
        rejected: list[tuple[ModelId, int]] = []
        if refuse is not None:
            entry = UpdateEntry(client_id, seq, [], _every_change(update))
            self._pending.append(entry)
            self._pending_changes = True
            return UpdateOutcome(UpdateStatus.APPLIED, entry, (refuse,))
        try:
            changes = self.store.apply_changes(client_id, update.changes, rejected, problems,
                                               user_id=user_id, claims=claims)
        except Exception:
            log.exception("room %r: internal error applying update %d of client %d; the "
                          "update is undone and every change in it rejected", self.name, seq,
                          client_id)
            changes = []
            rejected = _every_change(update)
        entry = UpdateEntry(client_id, seq, changes, rejected)
        self._pending.append(entry)
        self._pending_changes = True
        return UpdateOutcome(UpdateStatus.APPLIED, entry, tuple(problems))


def _every_change(update: Update) -> list[tuple[ModelId, int]]:
    """Every change of ``update`` as (model id, key): its entry when nothing is accepted."""
    return [(run[0], run[i]) for run in update.changes for i in range(1, len(run), 2)]
