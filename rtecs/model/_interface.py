"""The narrow interface between the model layer and the datastore (DESIGN §1), both sides.

- What the datastore implements, :class:`ModelOwner`: what a model asks of it (the model's
  part, ``_Owner`` in :mod:`._model`: mark dirty, check a write, write the owner, report an
  error) and what a collection asks (create and destroy its elements, the server's structure
  of them). A model reaches its datastore as ``store_of(model)``; a destroyed one's is
  :data:`DESTROYED`, which refuses everything.
- How the datastore reaches a model: the functions below (``bind``, ``values_of``,
  ``notify``, …), never a model's attributes. The slot readers are C calls
  (``operator.attrgetter``), the cheapest calls there are.

Models write through the datastore's :class:`~rtecs.model.WriteLog` without a call; emitting
what the datastore applied is :class:`~rtecs.model.Notifier`'s (:mod:`._notify`).
"""

from __future__ import annotations

import operator
import typing
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from rtecs.model._base import (
    DESTROYED,
    get_subs,
    get_v,
    set_ds,
    set_id,
    set_parent,
    set_wlog,
)
from rtecs.model._base import set_flags as _set_flags
from rtecs.model._enums import UNCHECKED, ChangeSource, Unchecked
from rtecs.model._model import Change, KidReport, RealtimeModel, WriteLog, _Owner, _Subjects
from rtecs.model._prop import Prop
from rtecs.protocol import ModelId

__all__ = ["ModelOwner", "abandon", "bind", "check_kid", "children_of", "defaults_of",
           "flags_of", "follows_kids", "id_of", "kid_types_of", "kids_changed", "notify",
           "props_of", "set_flags", "store_of", "unbind", "values_of", "watched"]


class ModelOwner(_Owner, Protocol):
    """The interface a datastore implements for its models and collections (DESIGN §1):
    what a model asks (``_Owner``: ``client_id``, ``max_value_bytes``, ``mark_dirty``,
    ``check_write``, ``write_owner``, ``report_error``), and what a collection
    (:mod:`rtecs.collections`) asks: its elements are dynamic models created under it, the
    datastore keeps the server's structure of them and reports what happens to them
    (:class:`~rtecs.model.KidEvent`)."""

    def create(self, model: RealtimeModel, *, parent: RealtimeModel | None = None,
               key: int | str | None = None,
               expected: ModelId | Unchecked | None = UNCHECKED) -> ModelId:
        """Create ``model`` under ``parent`` (at ``key`` of a keyed collection, checking that
        ``expected`` is the id of the element there, None for none, unless
        :data:`~rtecs.model.UNCHECKED`): it exists locally at once and the collection hears
        of it (``KidEvent.CREATED``)."""

    def destroy(self, model: RealtimeModel) -> None:
        """Ask to destroy the element ``model``: it stays until the server answers (the
        collection hears ``KidEvent.DESTROYING`` at once). Asking again does nothing."""

    def kids(self, model: RealtimeModel) -> list[RealtimeModel]:
        """The dynamic models created under ``model`` (a copy), in the order they came here
        (after a snapshot: the room's order of creation)."""

    def keyed_kids(self, parent: RealtimeModel) -> dict[Any, RealtimeModel]:
        """The server's element at each key of the keyed collection ``parent`` (a live
        view: do not mutate); this client's unanswered creates are not in it."""


if typing.TYPE_CHECKING:
    _refuses_everything: ModelOwner = DESTROYED  # the stand-in implements the interface


values_of: Callable[[RealtimeModel], list[Any]] = get_v
"""A model's values by :attr:`Prop.slot` (slot 0 is the owner id): the list the datastore
reads when it collects and writes when it shows what the server says."""
store_of: Callable[[RealtimeModel], ModelOwner | None] = operator.attrgetter("_ds")
"""The datastore a model belongs to (None: none yet; :data:`DESTROYED` once destroyed)."""
id_of: Callable[[RealtimeModel], ModelId | None] = operator.attrgetter("model_id")
"""A model's network id, :attr:`RealtimeModel.model_id`, as a function (hot loops read the
attribute itself)."""
flags_of: Callable[[RealtimeModel], int] = operator.attrgetter("_flags")
"""A model's lifetime flags (``rtecs.protocol`` flag bits)."""
set_flags: Callable[[RealtimeModel, int], None] = _set_flags
"""Set a model's lifetime flags (its create, or the server's record of it, says them)."""


def bind(model: RealtimeModel, owner: ModelOwner, model_id: ModelId,
         parent: RealtimeModel | None, log: WriteLog | None = None) -> None:
    """Attach ``model`` to the datastore ``owner`` under ``model_id``; raise ``ValueError``
    if it already belongs to one. ``log``: the datastore's :class:`WriteLog`, where the
    model's writes record themselves from now on (without it, they call ``mark_dirty``)."""
    if store_of(model) is not None:
        raise ValueError(f"{model!r} already belongs to a datastore")
    set_ds(model, owner)
    set_wlog(model, log)
    set_id(model, model_id)
    set_parent(model, parent)


def unbind(model: RealtimeModel) -> None:
    """``model`` was destroyed: from now on every write to it raises."""
    set_ds(model, DESTROYED)
    set_wlog(model, None)


def watched(model: RealtimeModel) -> bool:
    """True if anybody subscribed to one of ``model``'s own streams."""
    return get_subs(model) is not None


def notify(model: RealtimeModel, p: Prop, old: Any, new: Any, source: ChangeSource) -> None:
    """Emit a visible change on ``model``'s own streams (if anybody subscribed)."""
    subs: _Subjects | None = get_subs(model)
    if subs is None:
        return
    subject = subs.props.get(p.id)
    if subject is not None:
        subject.on_next(new)
    if subs.changes is not None:
        subs.changes.on_next(Change(model, p.name, old, new, source))


def props_of(cls: type[RealtimeModel]) -> dict[int, Prop]:
    """A model type's properties by id (owner_id included: id 0)."""
    return cls._props


def children_of(cls: type[RealtimeModel]) -> tuple[Prop, ...]:
    """A model type's declared child model properties."""
    return cls._children


def defaults_of(cls: type[RealtimeModel]) -> list[Any]:
    """A model type's default values by slot (what a new instance starts with)."""
    return cls._template


def follows_kids(cls: type[RealtimeModel]) -> bool:
    """True for the collections: types that follow the dynamic models created under them
    (the datastore calls :func:`check_kid` and :func:`kids_changed` for them)."""
    return cls._follows_kids


def kid_types_of(cls: type[RealtimeModel]) -> tuple[type[RealtimeModel], ...]:
    """The model types created under ``cls`` (a collection's element type)."""
    return cls._kid_types


def check_kid(parent: RealtimeModel, kid: RealtimeModel, key: Any, expected: Any) -> None:
    """Raise unless ``kid`` may be created under the collection ``parent`` (see
    :meth:`RealtimeModel._check_kid`)."""
    cls = type(parent)
    cls._check_kid(parent, kid, key, expected)


def kids_changed(parent: RealtimeModel, reports: Sequence[KidReport], local: bool,
                 ) -> Callable[[], None] | None:
    """Tell the collection ``parent`` what happened to its kids; returns the function that
    emits the resulting visible changes, or None (see :meth:`RealtimeModel._kids_changed`)."""
    cls = type(parent)
    return cls._kids_changed(parent, reports, local)


def abandon(model: RealtimeModel) -> None:
    """Tell a destroyed collection that its pending operations can no longer take effect
    (see :meth:`RealtimeModel._abandon`)."""
    cls = type(model)
    cls._abandon(model)
