"""RealtimeModel: the base class of synchronised models, its change records and streams, its
write path, the interface it reaches its datastore through, and the model types by name.

A model class declares its properties with :func:`~rtecs.model.prop` (:mod:`._prop`); its
values live in the slots of :class:`~rtecs.model._base.ModelBase`, and change Subjects are
created on the first ``observe()``. Property setters do no I/O: a write is type-checked and
size-checked (:mod:`._values`: refused before anything changes), short-circuits when the
value is equal, tells the datastore (dirty tracking, ownership check), stores the value and
emits if anybody listens; each model class gets its own ``__setattr__`` (:func:`_setter`,
the hot path of every write). Assigning an attribute that is not a declared property, a
class attribute or a ``_private`` name raises ``AttributeError`` (a typo never silently
creates an unsynchronised attribute). Subscribers that raise are isolated (:mod:`._streams`).

A model reaches its datastore through the model's part of the narrow interface (DESIGN §1),
:class:`_Owner`, and records its writes in the datastore's :class:`WriteLog` without a
call; the whole interface the datastore implements, and how it reaches a model, is
:mod:`._interface`.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, NamedTuple, Protocol

from reactivex import Observable
from reactivex.abc import ObserverBase
from reactivex.subject import Subject

from rtecs.errors import ModelDestroyedError, NotConnectedError, OwnershipError
from rtecs.model._base import (
    DESTROYED,
    ModelBase,
    set_ds,
    set_flags,
    set_id,
    set_parent,
    set_subs,
    set_v,
    set_wlog,
)
from rtecs.model._enums import ChangeSource, KidEvent
from rtecs.model._prop import Prop, declare
from rtecs.model._registry import ClassNames
from rtecs.model._streams import guarded, log_error
from rtecs.model._values import DEFAULT_MAX_VALUE_BYTES
from rtecs.protocol import OWNER, PREVENT_OWNERSHIP_TAKEOVER

__all__ = ["Change", "Emit", "KidReport", "RealtimeModel", "WriteLog", "find_model_type"]


class Change(NamedTuple):
    """One visible change of one property."""

    model: RealtimeModel  # the model whose property changed
    prop: str             # the property's name
    old: Any              # the value shown before
    new: Any              # the value shown now
    source: ChangeSource  # why it changed: local, remote, rollback, transformed, snapshot


#: ``(event, kid, key)``: key is the kid's collection key (None if unkeyed).
KidReport = tuple[KidEvent, "RealtimeModel", Any]


#: Where a local write is reported datastore-wide (``Datastore.changes``), as
#: :meth:`_Owner.mark_dirty` returns it: None while nobody listens.
Emit = Callable[["Change"], None]


class WriteLog:
    """Where the models of one datastore record their local writes: the datastore's dirty
    set (``(model, prop)`` → the value before the frame's first write, in the order of the
    last writes) and where a write is reported datastore-wide (``emit``, None while nobody
    listens). Part of the narrow interface (DESIGN §1): the datastore owns it and hands it to
    each model it binds, so a property write records itself without a call (the hot path)."""

    __slots__ = ("dirty", "emit")

    def __init__(self, dirty: dict[tuple[RealtimeModel, Prop], Any]) -> None:
        self.dirty = dirty
        """Written by property setters as ``dirty[key] = dirty.pop(key, old)`` before the
        value is stored, so a log that refuses (its ``pop`` raises: a closed datastore)
        refuses the write with the value unchanged."""
        self.emit: Emit | None = None


class _Owner(Protocol):
    """What a model needs from the datastore it is attached to: the model's part of the one
    narrow interface that the model layer defines and the datastore implements (DESIGN §1,
    :class:`~rtecs.model.ModelOwner`), never its tables. Besides these, :func:`bind` may
    hand the model the datastore's :class:`WriteLog`: its writes then record themselves
    there, and ``mark_dirty`` is not called."""

    client_id: int
    max_value_bytes: int
    """The largest str (UTF-8) or bytes value a property accepts (the server announces it)."""

    def mark_dirty(self, model: RealtimeModel, p: Prop, old: Any) -> Emit | None:
        """``model.p`` is about to change locally from ``old``: record it for the next
        update (keeping the frame-start value), for a model bound without a
        :class:`WriteLog`. Called before the value is stored, so a refusal (a closed
        datastore, a destroyed model) raises with the value unchanged. Returns where to
        report the change datastore-wide, or None if nobody listens."""

    def check_write(self, model: RealtimeModel) -> None:
        """Raise unless this client may write ``model`` (called when an owner is seen)."""

    def write_owner(self, model: RealtimeModel, owner: int) -> None:
        """Set ``model``'s owner locally (request or clear ownership) and send it."""

    def report_error(self, exc: BaseException) -> None:
        """A subscriber raised ``exc``: log it with its traceback and report it on the
        client's error stream. Must not raise."""


class _Subjects:
    __slots__ = ("changes", "props")

    def __init__(self) -> None:
        self.props: dict[int, Subject[Any]] = {}
        self.changes: Subject[Change] | None = None


class RealtimeModel(ModelBase):
    """Base class of synchronised models. Subclass it and declare properties with :func:`prop`.

    Keyword arguments set initial values: ``Player(name="ann")``. ``type_name`` (a class
    keyword, default the class name) is the model's name on the wire and in the schema.
    """

    __slots__ = ()  # the slots are ModelBase's
    if typing.TYPE_CHECKING:  # set in __init__; what the slots hold in a RealtimeModel
        _ds: _Owner | None
        _wlog: WriteLog | None
        _parent: RealtimeModel | None
        _subs: _Subjects | None

    type_name: ClassVar[str] = "RealtimeModel"  # its name on the wire (default: the class name)
    _follows_kids: ClassVar[bool] = False
    """True for model types that follow the dynamic models created under them (the
    collections): the datastore then calls :meth:`_check_kid` before such a create and
    :meth:`_kids_changed` with what happened to them. Internal; other models pay nothing."""
    _kid_types: ClassVar[tuple[type[RealtimeModel], ...]] = ()
    """Model types created under this one (a collection's element type): registering this
    type with a datastore registers them too."""
    _props: ClassVar[dict[int, Prop]] = {}
    _props_by_name: ClassVar[dict[str, Prop]] = {}
    _children: ClassVar[tuple[Prop, ...]] = ()
    _template: ClassVar[list[Any]] = [-1]

    def __init_subclass__(cls, type_name: str | None = None, abstract: bool = False,
                          **kwargs: Any) -> None:
        """``type_name``: the wire name (default the class name). ``abstract=True``: a base
        class that is never a model type of its own, so :func:`find_model_type` skips it."""
        super().__init_subclass__(**kwargs)
        cls.type_name = type_name or cls.__name__
        by_id, template = declare(cls, _RESERVED)
        cls._props = by_id
        cls._props_by_name = {p.name: p for p in by_id.values()}
        cls._children = tuple(p for p in by_id.values() if p.child_type is not None)
        cls._template = template
        # Each class its own __setattr__ (see _setter), unless one in between defines its own
        # (which reaches ours through super()).
        if getattr(cls.__setattr__, "__code__", None) is _SETTER_CODE:
            setattr(cls, "__setattr__", _setter(cls._props_by_name))  # noqa: B010 (unseen by mypy)
        if not abstract:
            _TYPES.add(cls.type_name, cls)

    def __init__(self, **values: Any) -> None:
        cls = type(self)
        # The slots, set past __setattr__ (which would only pass them on, slower).
        set_v(self, list(cls._template))
        set_ds(self, None)
        set_wlog(self, None)
        set_id(self, None)
        set_parent(self, None)
        set_subs(self, None)
        set_flags(self, 0)
        for p in cls._children:
            assert p.child_type is not None
            child = p.child_type()
            set_parent(child, self)
            self._v[p.slot] = child
        for name, value in values.items():
            target = cls._props_by_name.get(name)
            if target is None or target.id == OWNER:
                raise TypeError(f"{cls.__name__} has no property {name!r}")
            _write(self, name, value)

    def __repr__(self) -> str:
        cls = type(self)
        fields = ", ".join(f"{p.name}={self._v[p.slot]!r}" for p in cls._props.values()
                           if p.child_type is None and p.id != OWNER)
        return f"{type(self).__name__}(id={self.model_id!r}, {fields})"

    def _write_prop(self, name: str, value: Any) -> None:
        _write(self, name, value)  # object.__setattr__(model, name, v), through the Prop

    # ----------------------------------------------------------------- schema

    @classmethod
    def schema(cls) -> dict[int, tuple[str, str, bool]]:
        """This type's properties as sent in the hello: ``{id: (name, tag, reliable)}``."""
        return {p.id: (p.name, p.tag, p.reliable) for p in cls._props.values() if p.id != OWNER}

    # ----------------------------------------------------------------- identity

    @property
    def parent(self) -> RealtimeModel | None:
        """The model this one belongs to: the holder of a declared child or the collection
        of an element or the parent it was created under; None for the room model and for
        top-level models."""
        return self._parent

    # ----------------------------------------------------------------- ownership

    @property
    def owner_id(self) -> int:
        """The owning client id, or -1 when unowned (anyone may write)."""
        owner: int = self._v[0]
        return owner

    @property
    def is_unowned(self) -> bool:
        """True while nobody owns it (``owner_id`` -1): anyone may write it."""
        return bool(self._v[0] == -1)

    @property
    def is_owned_locally(self) -> bool:
        """True if this client owns it."""
        ds = self._ds
        return ds is not None and self._v[0] != -1 and bool(self._v[0] == ds.client_id)

    @property
    def is_owned_remotely(self) -> bool:
        """True if another client owns it: writing it raises :class:`OwnershipError`."""
        return self._v[0] != -1 and not self.is_owned_locally

    @property
    def prevents_ownership_takeover(self) -> bool:
        """True if it was created with the ``PREVENT_OWNERSHIP_TAKEOVER`` flag: while owned,
        nobody else may request its ownership."""
        return bool(self._flags & PREVENT_OWNERSHIP_TAKEOVER)

    def request_ownership(self) -> None:
        """Own this model (and so its children). Shows at once; rolled back, with every write
        that needed it, if the server refuses."""
        ds = self._ds
        if ds is None or ds.client_id < 1:
            raise NotConnectedError("request_ownership() needs a client id: connect first")
        ds.write_owner(self, ds.client_id)

    def clear_ownership(self) -> None:
        """Give up ownership: the model becomes writable by anyone."""
        if self._v[0] != -1 and not self.is_owned_locally:
            raise OwnershipError(f"{type(self).__name__} {self.model_id} is owned by client "
                                 f"{self._v[0]}; only the owner can clear ownership")
        if self._ds is None:
            self._v[0] = -1
        else:
            self._ds.write_owner(self, -1)

    # ----------------------------------------------------------------- streams

    def observe(self, name: str) -> Observable[Any]:
        """The property's value now, on subscribe, then every visible change of it.

        Emissions are synchronous, on the thread that ticks the client. A subscriber that
        raises stops neither the write or tick that emitted nor the other subscribers: the
        error goes to the datastore's ``report_error`` (``rt.errors``), or is logged
        (logger ``rtecs.model``) for a model in no datastore.
        """
        cls = type(self)
        found = cls._props_by_name.get(name)
        if found is None:
            raise AttributeError(f"{type(self).__name__} has no property {name!r}")
        p = found
        if self._ds is DESTROYED:
            raise ModelDestroyedError(f"{type(self).__name__} {self.model_id} was destroyed")
        subs = self._subs or self._make_subjects()
        subject = subs.props.get(p.id)
        if subject is None:
            subject = subs.props[p.id] = Subject()
        slot, values = p.slot, self._v

        def current(observer: ObserverBase[Any]) -> None:
            observer.on_next(values[slot])

        return guarded(subject, self._report_error, current)

    @property
    def changes(self) -> Observable[Change]:
        """Every visible change of any property of this model, as :class:`Change` records
        (subscribers are isolated as for :meth:`observe`)."""
        subs = self._subs or self._make_subjects()
        if subs.changes is None:
            subs.changes = Subject()
        return guarded(subs.changes, self._report_error)

    def _report_error(self, exc: BaseException) -> None:
        """A subscriber of one of this model's streams raised ``exc``: tell the datastore
        it is in now (which logs and reports it), or log it."""
        report = getattr(self._ds, "report_error", None)
        if report is None:
            log_error(exc)
        else:
            report(exc)

    # ----------------------------------------------------------------- kids (collections)

    def _check_kid(self, kid: RealtimeModel, key: Any, expected: Any) -> None:
        """Raise unless ``kid`` may be created under this model with ``key`` and ``expected``
        (see :meth:`Datastore.create <rtecs.datastore.Datastore.create>`)."""

    def _kids_changed(self, reports: Sequence[KidReport], local: bool,
                      ) -> Callable[[], None] | None:
        """Take ``reports`` (in stream order) into account and return a function that emits
        the resulting visible changes, or None. ``local``: they come from this client's own
        create or destroy call (the caller emits at once); otherwise from the server stream
        (emitted once the whole message is applied)."""
        return None

    def _abandon(self) -> None:
        """This model was destroyed while following its kids (a collection that went with
        the model holding it): settle what still waits for the server. Nothing by default."""

    def _make_subjects(self) -> _Subjects:
        self._subs = _Subjects()
        return self._subs

    def _notify(self, p: Prop, old: Any, new: Any, source: ChangeSource) -> None:
        subs = self._subs
        assert subs is not None
        subject = subs.props.get(p.id)
        if subject is not None:
            subject.on_next(new)
        if subs.changes is not None:
            subs.changes.on_next(Change(self, p.name, old, new, source))


def _setter(props_by_name: dict[str, Prop]) -> Callable[[RealtimeModel, str, Any], None]:
    """The ``__setattr__`` of a model class whose properties are ``props_by_name``.

    Every ``model.x = v`` comes here, and a property write is done right here — the hot path
    of every write: keep it to a few attribute reads and dict operations. It is type-checked
    and size-checked (refused before anything changes), short-circuits when equal, checks
    ownership, marks the property dirty, stores and emits. Each class gets its own (the
    dict lookup is a closure's, not an attribute walk); a name not in ``props_by_name`` is
    looked up in the instance's class too (a subclass reached through ``super()``). Other
    names: ``_private`` ones and class attributes are set as usual; anything else raises.
    """
    def __setattr__(self: RealtimeModel, name: str, value: Any) -> None:
        try:
            p = props_by_name[name]  # a subscript: cheaper than a call of .get
        except KeyError:
            cls = type(self)
            found = cls._props_by_name.get(name)
            if found is None:
                if name == "model_id":
                    raise AttributeError(f"{cls.__name__}.model_id is read-only: the "
                                         f"datastore sets it", name=name, obj=self) from None
                if name[0] == "_" or hasattr(cls, name):
                    object.__setattr__(self, name, value)
                    return
                raise AttributeError(_no_property(cls, name), name=name, obj=self) from None
            p = found
        pytype: Any = p.pytype  # Any: mypy must not narrow value to `type`
        ds = self._ds
        if type(value) is not pytype:
            value = p.coerce(self, value)
        elif pytype is int:
            if not -0x8000000000000000 <= value <= 0xFFFFFFFFFFFFFFFF:  # _INT_MIN, _INT_MAX
                p.refuse_int(self, value)
        elif pytype is str:
            # An ascii str has as many UTF-8 bytes as characters; others are measured.
            if not value.isascii() or len(value) > (
                    DEFAULT_MAX_VALUE_BYTES if ds is None else ds.max_value_bytes):
                value = p.coerce(self, value)
        elif pytype is bytes and len(value) > (
                DEFAULT_MAX_VALUE_BYTES if ds is None else ds.max_value_bytes):
            p.refuse_size(self, len(value))
        v = self._v
        slot = p.slot
        old = v[slot]
        if old == value and type(old) is type(value):
            return
        if ds is not None:
            owner = v[0]
            if owner != -1 and owner != ds.client_id:
                ds.check_write(self)  # owned by another client: raises
            parent = self._parent
            while parent is not None:  # the owner of any ancestor covers this model
                owner = parent._v[0]  # noqa: SLF001 (the model's own slots, on the write path)
                if owner != -1 and owner != ds.client_id:
                    ds.check_write(self)
                parent = parent._parent  # noqa: SLF001 (the same)
            log = self._wlog
            if log is not None:  # the datastore's write log (see bind): no call
                dirty = log.dirty
                key = (self, p)
                dirty[key] = dirty.pop(key, old)  # before the store: a refusal changes nothing
                emit = log.emit
            else:
                emit = ds.mark_dirty(self, p, old)  # the same, through the interface
            v[slot] = value
            if self._subs is not None:
                self._notify(p, old, value, ChangeSource.LOCAL)
            if emit is not None:
                emit(Change(self, p.name, old, value, ChangeSource.LOCAL))
            return
        v[slot] = value
        if self._subs is not None:
            self._notify(p, old, value, ChangeSource.LOCAL)

    return __setattr__


#: Names a property cannot have: RealtimeModel's public attributes.
_RESERVED = frozenset(name for cls in (RealtimeModel, ModelBase) for name in vars(cls)
                      if not name.startswith("_"))
_write = _setter({})  # for any model: finds the property through the instance's class
setattr(RealtimeModel, "__setattr__", _write)  # noqa: B010 (so mypy still flags typos)
_SETTER_CODE = _write.__code__


def _no_property(cls: type[RealtimeModel], name: str) -> str:
    names = [p.name for p in cls._props.values() if p.id != OWNER]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    listed = ", ".join(names) if names else "none"
    return (f"{cls.__name__} has no property {name!r}: {hint}its properties are {listed} "
            "(only declared properties, class attributes and _private names can be set)")


# ----------------------------------------------------------------- model types by name

_TYPES: ClassNames[type[RealtimeModel]] = ClassNames()  # every non-abstract model class


def find_model_type(type_name: str) -> type[RealtimeModel] | None:
    """The defined :class:`RealtimeModel` subclass whose ``type_name`` is ``type_name``, or
    None if there is none (DESIGN §4b). Classes that were garbage-collected do not count;
    neither do ``abstract=True`` bases. Raises :class:`~rtecs.errors.SchemaError` naming
    both if two live classes share the name: pass the one you mean in ``types=``."""
    return _TYPES.find(type_name)
