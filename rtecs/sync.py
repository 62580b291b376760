"""RoomSync: where the session and the room's state meet on a client.

:class:`~rtecs.connection.Connection` keeps the client in the room and hands on what arrived in
stream order; :class:`~rtecs.datastore.Datastore` holds the state. RoomSync joins them, in the
two phases of a tick:

- **send** (:meth:`RoomSync.flush`): announce new model types (``SCHEMA``), collect the
  datastore's delta into updates that fit the announced update limit, encode them and hand
  them to the connection, which keeps each frame until the stream answers it;
- **apply** (:meth:`RoomSync.receive`): a welcome that opens a new session loads its snapshot
  (unanswered writes roll back); a welcome inside the session re-bases on it (what the server
  applied is settled, the rest is renumbered into the new epoch and sent again); a batch's
  entries are applied whole, then the streams emit, then presence and update outcomes are
  reported. An internal error while applying asks for a fresh snapshot: the client never
  carries on from a half-applied state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from reactivex.subject import Subject

from rtecs.connection import Connection
from rtecs.datastore import Datastore
from rtecs.protocol import (
    Batch,
    JoinEntry,
    LeaveEntry,
    Schema,
    Update,
    UpdateEntry,
    Welcome,
    count_changes,
    encode,
)
from rtecs.session import Presence, UpdateOutcome, UpdateStatus

__all__ = ["RoomSync"]

log = logging.getLogger("rtecs.realtime")


def _count(update: Update | UpdateEntry) -> int:
    """Changes carried by an update (or accepted by its entry)."""
    return count_changes(update.changes)


class RoomSync:
    """Sends what ``datastore`` collects through ``connection`` and applies what arrives."""

    def __init__(self, connection: Connection, datastore: Datastore, room: str,
                 clock: Callable[[], float], frame_duration: float) -> None:
        self.connection = connection
        self.datastore = datastore
        self.room = room
        self.frame_duration = frame_duration
        """Seconds between two updates sent."""
        self.next_frame = 0.0
        """Clock time at which the next frame's delta is due."""
        self._clock = clock
        self.outcomes: Subject[UpdateOutcome] = Subject()
        self.presence: Subject[Presence] = Subject()
        self.clients: set[int] = set()
        """The client ids in the room as of the last applied message."""
        self._sent_sizes: dict[int, int] = {}

    @property
    def unanswered(self) -> int:
        """Updates sent whose answer has not come back."""
        return len(self._sent_sizes)

    # ----------------------------------------------------------------- send

    def frame_due(self, now: float) -> bool:
        """Whether a frame's delta is due at ``now`` (then the frame timer moves on)."""
        if not self.connection.connected or now < self.next_frame:
            return False
        self.next_frame = max(self.next_frame + self.frame_duration, now)
        return True

    def flush(self) -> Update | None:
        """Send the pending delta now; return the (last) update sent. A delta larger than the
        update size limit, or with more changes than an update may carry, goes out as
        several updates."""
        conn = self.connection
        if not conn.connected:
            return None
        ds = self.datastore
        new_types = ds.take_new_types()
        if new_types:
            conn.send(encode(Schema(new_types)))  # before the update that uses them
        limit = conn.limits.max_update_bytes
        max_changes = conn.limits.max_changes_per_update
        budget = limit * 3 // 4  # the estimate errs high; keep margin
        update = ds.collect(budget, max_changes)
        last = None
        while update is not None:
            try:
                frame: bytes | None = encode(update)
                why = ""
            except TypeError as exc:
                frame, why = None, str(exc)
            changes = _count(update)
            if frame is None or len(frame) > limit or changes > max_changes:
                # Never sent: the server would refuse it (or libzmq drop the link).
                log.error("update %d not sent: %s; its writes roll back", update.seq,
                          why or (f"{len(frame or b'')} bytes, over the {limit}-byte limit"
                                  if frame is None or len(frame) > limit else
                                  f"{changes} changes, over the limit of {max_changes}"))
                ds.discard(update)
                ds.flush_emissions()
                self.outcomes.on_next(UpdateOutcome(update.seq, UpdateStatus.REJECTED, 0))
            else:
                self._send(update, frame)
                last = update
            update = ds.collect(budget, max_changes) if ds.has_unsent_changes else None
        return last

    def _send(self, update: Update, frame: bytes, *, resent: bool = False) -> None:
        self.connection.send_update(update.seq, frame, resent=resent)
        count = _count(update)
        self._sent_sizes[update.seq] = count
        self.outcomes.on_next(UpdateOutcome(update.seq, UpdateStatus.SENT, count))

    # ----------------------------------------------------------------- apply

    def receive(self) -> int:
        """Apply every message that has arrived; return how many were applied."""
        conn = self.connection
        applied = 0
        for message in conn.receive():
            try:
                if isinstance(message, Welcome):
                    self._apply_welcome(message, conn.new_session)
                else:
                    self._apply_batch(message)
            except Exception:  # an internal error: never carry on from a half-applied state
                log.exception("internal error while applying a %s", type(message).__name__)
                conn.ask_resync("an internal error")
            applied += 1
        return applied

    def _apply_welcome(self, welcome: Welcome, new_session: bool) -> None:
        ds = self.datastore
        conn = self.connection
        resend: list[Update] = []
        if new_session or welcome.client_id != ds.client_id:
            ds.load_snapshot(welcome)  # a new session: unanswered writes roll back
        else:
            resend = ds.rebase(welcome)  # a new epoch of this session: nothing is lost
        self._sent_sizes.clear()  # what is resent is counted again below
        first = not conn.connected
        conn.welcomed(welcome)
        ds.max_value_bytes = conn.limits.max_value_bytes
        ds.max_depth = conn.limits.max_depth
        self.clients = set(welcome.clients)
        log.info("%s room %r as client %d (%d models%s)", "joined" if first else "resynced",
                 self.room, welcome.client_id, len(welcome.snapshot),
                 f", {len(resend)} update(s) sent again" if resend else "")
        if first:
            self.next_frame = self._clock()  # the frame timer starts with the session
        for update in resend:  # renumbered into the new epoch: the server applies them now
            self.connection.send_update(update.seq, encode(update), resent=True)
            self._sent_sizes[update.seq] = _count(update)
        ds.flush_emissions()

    def _apply_batch(self, batch: Batch) -> None:
        ds = self.datastore
        me = ds.client_id
        outcomes: list[UpdateOutcome] = []
        presence: list[Presence] = []
        for entry in batch.entries:
            if isinstance(entry, UpdateEntry):
                ds.apply_entry(entry)
                if entry.sender == me and entry.seq > 0:
                    outcomes.append(self._outcome_of(entry))
            elif isinstance(entry, JoinEntry):
                self.clients.add(entry.client_id)
                presence.append(Presence(entry.client_id, True))
            elif isinstance(entry, LeaveEntry):
                self.clients.discard(entry.client_id)
                presence.append(Presence(entry.client_id, False))
        ds.flush_emissions()
        if ds.resync_wanted:
            ds.resync_wanted = False
            self.connection.ask_resync(
                "the server refused a destroy this client already applied",
                logging.INFO)  # a normal race (see Datastore._bury)
        for p in presence:
            self.presence.on_next(p)
        for o in outcomes:
            self.outcomes.on_next(o)

    def _outcome_of(self, entry: UpdateEntry) -> UpdateOutcome:
        accepted = _count(entry)
        sent = self._sent_sizes.pop(entry.seq, accepted)
        if entry.rejected:
            status = UpdateStatus.REJECTED
        elif accepted != sent:
            status = UpdateStatus.TRANSFORMED
        else:
            status = UpdateStatus.CONFIRMED
        return UpdateOutcome(entry.seq, status, accepted, tuple(entry.rejected))
