"""The model tree of a datastore: models by network id, parents and dynamic kids, keyed
collections' server structure, and id allocation.

- Model ids: the room model is 0; declared children extend their parent's id with the
  property id (:func:`child_id`); dynamic models get :func:`rtecs.protocol.dynamic_model_id`
  of (client id, counter), allocated here without a round trip (:meth:`ModelTree.new_id`).
- Dynamic kids: every dynamic model created under a parent is kept in order (the order
  they came here; after a snapshot, the room's order of creation).
- Keyed collections: the *server's* element at each key, and every keyed kid's key (a
  keyed create replaces the element at its key, for everyone, at its place in the stream).

The tree binds and unbinds models (:func:`rtecs.model.bind`); it knows nothing of dirty
tracking or emissions. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rtecs.errors import OwnershipError
from rtecs.model import (
    ModelOwner,
    RealtimeModel,
    WriteLog,
    bind,
    children_of,
    flags_of,
    id_of,
    unbind,
    values_of,
)
from rtecs.protocol import PREVENT_OWNERSHIP_TAKEOVER, ModelId, dynamic_model_id

__all__ = ["Detached", "ModelTree", "child_id"]

#: What :meth:`ModelTree.detach` took away, parents first: each model, its id and its
#: collection key (None if it had none).
Detached = list[tuple[RealtimeModel, ModelId, Any]]


def child_id(parent: ModelId, prop_id: int) -> ModelId:
    """The id of the declared child at ``prop_id`` of the model ``parent``."""
    return (parent, prop_id) if type(parent) is int else (*parent, prop_id)  # type: ignore[misc]


class ModelTree:
    """Every model of one datastore (``owner``: what the models are bound to; ``log``: the
    datastore's write log, handed to them too)."""

    def __init__(self, owner: ModelOwner, log: WriteLog | None = None) -> None:
        self._owner = owner
        self._log = log  # handed to every model bound (its writes record themselves there)
        self.models: dict[ModelId, RealtimeModel] = {}
        """Every model by network id (a live view: change it only through the tree)."""
        self._kids: dict[RealtimeModel, dict[RealtimeModel, None]] = {}  # ordered sets
        self._keyed: dict[RealtimeModel, dict[Any, RealtimeModel]] = {}
        self._key_of: dict[RealtimeModel, Any] = {}
        self._counter = 0

    # ----------------------------------------------------------------- ids

    def new_id(self, client_id: int) -> ModelId:
        """A fresh dynamic model id of this client."""
        self._counter += 1
        return dynamic_model_id(client_id, self._counter)

    def restart_ids(self) -> None:
        """A new client id: its dynamic ids count from 1 again."""
        self._counter = 0

    # ----------------------------------------------------------------- reading

    def get(self, model_id: ModelId) -> RealtimeModel | None:
        return self.models.get(model_id)

    def walk(self, model: RealtimeModel) -> Iterator[RealtimeModel]:
        """The model, its declared children and the dynamic models under it, parents first."""
        yield model
        values = values_of(model)
        for p in children_of(type(model)):
            yield from self.walk(values[p.slot])
        for kid in self._kids.get(model, ()):
            yield from self.walk(kid)

    def kids(self, model: RealtimeModel) -> list[RealtimeModel]:
        """The dynamic models created under ``model`` (a copy), in order."""
        return list(self._kids.get(model, ()))

    def parents(self) -> list[RealtimeModel]:
        """The models that have dynamic kids."""
        return list(self._kids)

    def keyed_kids(self, parent: RealtimeModel) -> dict[Any, RealtimeModel]:
        """The server's element at each key of a keyed collection (a live view: do not
        mutate)."""
        return self._keyed.get(parent) or {}

    def key_of(self, model: RealtimeModel) -> Any:
        """The key of a keyed collection's element (None if it has none)."""
        return self._key_of.get(model)

    def check_owner(self, model: RealtimeModel, me: int, own: int,
                    requesting: bool = False) -> None:
        """Raise :class:`~rtecs.errors.OwnershipError` unless client ``me`` may write
        ``model`` as far as it knows: ``own`` (the model's owner, as checked) and every
        ancestor's owner unowned or ``me``. ``requesting``: ``me`` asks to own ``model``
        (refused if another owner prevents ownership takeover)."""
        if own != -1 and own != me:
            raise OwnershipError(f"{type(model).__name__} {id_of(model)} is owned by client "
                                 f"{own}; request ownership first")
        if requesting:
            owner = model.owner_id
            if owner != -1 and owner != me and flags_of(model) & PREVENT_OWNERSHIP_TAKEOVER:
                raise OwnershipError(f"{type(model).__name__} {id_of(model)} is owned by "
                                     f"client {owner} and prevents ownership takeover")
        p = model.parent
        while p is not None:
            owner = p.owner_id
            if owner != -1 and owner != me:
                raise OwnershipError(f"{type(model).__name__} {id_of(model)} belongs to "
                                     f"{type(p).__name__} {id_of(p)}, owned by client {owner}")
            p = p.parent

    # ----------------------------------------------------------------- changing

    def attach(self, model: RealtimeModel, model_id: ModelId,
               parent: RealtimeModel | None) -> None:
        """Bind ``model`` and its declared children under ``model_id``."""
        bind(model, self._owner, model_id, parent, self._log)
        self.models[model_id] = model
        values = values_of(model)
        for p in children_of(type(model)):
            self.attach(values[p.slot], child_id(model_id, p.id), model)

    def attach_under(self, model: RealtimeModel, model_id: ModelId,
                     parent: RealtimeModel | None, key: Any = None) -> None:
        """Attach a dynamic model, as a top-level model or a kid of ``parent`` (with its
        collection ``key``, if keyed)."""
        self.attach(model, model_id, parent)
        if parent is not None:
            siblings = self._kids.get(parent)
            if siblings is None:
                siblings = self._kids[parent] = {}
            siblings[model] = None
        if key is not None:
            self._key_of[model] = key

    def set_key(self, model: RealtimeModel, key: Any) -> None:
        self._key_of[model] = key

    def place(self, parent: RealtimeModel, key: Any,
              model: RealtimeModel) -> RealtimeModel | None:
        """The stream put ``model`` at ``key`` of ``parent``; returns the element that was
        there, which the caller removes (None if there was none)."""
        truth = self._keyed.get(parent)
        if truth is None:
            truth = self._keyed[parent] = {}
        previous = truth.get(key)
        truth[key] = model
        return previous if previous is not model else None

    def forget_keys(self) -> None:
        """Drop the keyed collections' server structure (a snapshot rebuilds it)."""
        self._keyed.clear()

    def detach(self, model: RealtimeModel) -> Detached:
        """Unbind ``model`` and everything under it (writes to them raise from now on);
        returns what went, parents first."""
        order = list(self.walk(model))
        parent = model.parent
        if parent is not None and parent in self._kids:
            self._kids[parent].pop(model, None)
        gone: Detached = []
        for m in order:
            mid: ModelId = m.model_id  # type: ignore[assignment]
            self.models.pop(mid, None)
            self._kids.pop(m, None)
            unbind(m)
            key = self._key_of.pop(m, None)
            if key is not None:
                truth = self._keyed.get(m.parent)  # type: ignore[arg-type]
                if truth is not None and truth.get(key) is m:
                    del truth[key]
            self._keyed.pop(m, None)
            gone.append((m, mid, key))
        return gone

    def reorder(self, position: dict[ModelId, int]) -> None:
        """Sort every parent's kids by ``position`` (the snapshot's order of creation;
        kids it lacks go last)."""
        last = len(position)
        for parent, kids in self._kids.items():
            order = sorted(kids, key=lambda kid: position.get(kid.model_id, last))  # type: ignore[arg-type]
            self._kids[parent] = dict.fromkeys(order)
