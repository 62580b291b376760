"""Snapshots: replacing a datastore's state with the server's (a new session), or re-basing
it on the server's (a new epoch of the same session, DESIGN §5 and §8).

- :meth:`Snapshots.load`: a new session. Unanswered writes roll back (source
  ``rollback``); everything else that differs shows with source ``snapshot``. Writes made
  before the first welcome are simply overwritten. Dynamic models the snapshot lacks go.
- :meth:`Snapshots.rebase`: the snapshot holds every update up to ``welcome.last_applied``
  and none after. Those are settled from it (creates confirmed or refused, destroys done or
  not, writes showing what the server holds); the snapshot shows like a stream of the missed
  changes (source ``snapshot``) under any newer local write; the unapplied updates are
  renumbered into the new epoch and returned, to be sent again in order.

Both go through the :class:`~rtecs.datastore._apply.Applier`, so the visible changes are
gathered the same way as the stream's.
"""

from __future__ import annotations

from collections.abc import Hashable

from rtecs.datastore._apply import Applier
from rtecs.datastore._delta import DeltaTracker
from rtecs.datastore._opaque import OpaqueModel
from rtecs.datastore._tree import ModelTree
from rtecs.model import (
    ChangeSource,
    KidEvent,
    ModelOwner,
    RealtimeModel,
    defaults_of,
    follows_kids,
    props_of,
    set_flags,
    store_of,
    values_of,
)
from rtecs.protocol import CREATE, DESTROY, OWNER, ModelId, Update, Welcome

__all__ = ["Snapshots"]


class Snapshots:
    """Loads welcomes' snapshots into one datastore (see module docs)."""

    def __init__(self, owner: ModelOwner, tree: ModelTree, delta: DeltaTracker,
                 applier: Applier) -> None:
        self._owner = owner
        self._tree = tree
        self._delta = delta
        self._applier = applier

    def load(self, welcome: Welcome, rollback: bool) -> None:
        """A new session's snapshot (``rollback``: unanswered writes roll back, else —
        before the first welcome — they are simply overwritten)."""
        rolled = self._delta.restart(welcome.epoch, rollback)
        self._applier.resync_wanted = False
        self._tree.forget_keys()  # rebuilt from the records' keys
        self._apply_records(welcome, rolled, set(), set())
        for model in self._tree.models.values():
            if follows_kids(type(model)):
                self._applier.report(model, KidEvent.RESET, model, None)

    def rebase(self, welcome: Welcome) -> list[Update]:
        """A new epoch of this session: returns the updates to send again, in order."""
        last = welcome.last_applied
        delta, applier = self._delta, self._applier
        applier.resync_wanted = False
        in_snapshot = {rec.model_id for rec in welcome.snapshot}
        confirm: set[RealtimeModel] = set()  # own creates the server applied: in order
        for mid, pid in delta.take_applied(last):
            if pid == DESTROY:
                if delta.deferred(mid):
                    applier.destroyed(mid, mid not in in_snapshot)
                else:  # already gone here: the snapshot brings it back if it was refused
                    delta.drop_destroy(mid)
            elif (created := self._tree.get(mid)) is not None:
                if mid in in_snapshot:
                    confirm.add(created)
                else:
                    applier.created(created, False)
        delta.renumber(last, welcome.epoch)
        keep = delta.unanswered_creates()
        self._apply_records(welcome, {}, keep, confirm, rebase=True)
        return delta.resend(self._tree.models)

    def _apply_records(self, welcome: Welcome, rolled: dict[Hashable, object],
                       keep: set[ModelId], confirm: set[RealtimeModel], *,
                       rebase: bool = False) -> None:
        """Show the snapshot's records; remove dynamic models it lacks (except ``keep``).

        ``rolled``: keys whose unanswered writes a new session rolls back (source
        ``rollback``). With ``rebase``, keys with newer local writes keep showing them and
        take the snapshot as their server value; ``confirm`` are own creates the server
        applied."""
        tree, delta, applier = self._tree, self._delta, self._applier
        seen: dict[ModelId, int] = {}
        for position, record in enumerate(welcome.snapshot):
            model_id, type_name, owner, flags, props, parent, place = record
            model = tree.get(model_id)
            if model is None:
                if type(model_id) is not int:
                    # A child of a model we could not create, or of an opaque one.
                    model = applier.opaque_child(model_id, type_name)
                    if model is None:
                        continue
                elif delta.destroying(model_id):
                    continue  # this client's destroy of it is on its way again
                else:
                    create = ((type_name, flags) if parent is None else
                              (type_name, flags, parent) if place is None else
                              (type_name, flags, parent, place))
                    model = applier.apply_lifecycle(model_id, CREATE, create, None)
                    if model is None:
                        continue
            elif model in confirm:
                applier.created(model, True)
            elif place is not None and model.parent is not None:
                tree.set_key(model, place)
                applier.place(model.parent, place, model)
            seen[model_id] = position
            set_flags(model, flags)
            if type(model) is OpaqueModel:
                values_of(model)[0] = owner
                model.values.clear()
                model.values.update(props)
                continue
            defaults = defaults_of(type(model))
            for p in props_of(type(model)).values():
                if p.child_type is not None:
                    continue
                value = owner if p.id == OWNER else props.get(p.id, defaults[p.slot])
                key = (model, p)
                if rebase:
                    if delta.rebased_value(key, p.reliable, value):
                        continue  # a newer local write keeps showing
                    source = ChangeSource.SNAPSHOT
                else:
                    source = ChangeSource.ROLLBACK if key in rolled else ChangeSource.SNAPSHOT
                applier.show(model, p, value, source)
        owner_ds = self._owner
        for model_id, model in list(tree.models.items()):
            if (model_id not in seen and type(model_id) is int and model_id != 0
                    and store_of(model) is owner_ds and model_id not in keep):
                applier.remove(model)
        tree.reorder(seen)  # the room's order of creation
