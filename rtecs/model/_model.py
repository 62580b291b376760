"""RealtimeModel, prop() and change streams.

A model class declares its synchronised properties with :func:`prop` and a type annotation::

    class Player(RealtimeModel):
        name: str = prop(1, default="")
        x: float = prop(2, reliable=False)
        pos: Position = prop(3)          # a declared child model, created with its parent

Values live in one list per instance (``_v``; slot 0 is the owner id) so a model costs a few
hundred bytes and nothing more until somebody subscribes: change Subjects are created on the
first ``observe()``. Property setters do no I/O: a write is type-checked, short-circuits when
the value is equal, tells the datastore (dirty tracking, ownership check), stores the value and
emits if anybody listens.

Values are refused at the write, before anything changes (DESIGN §4b): a value of the wrong
type raises ``TypeError``; an int outside 64 bits, or a str (UTF-8) or bytes value longer than
the datastore's ``max_value_bytes`` (the server announces it; :data:`DEFAULT_MAX_VALUE_BYTES`
for a model in no datastore), raises ``ValueError``. Assigning an attribute that is not a
declared property, a class attribute or a ``_private`` name raises ``AttributeError`` (a
typo never silently creates an unsynchronised attribute). Subscribers that raise are isolated
(see :mod:`rtecs.model._streams`). Model types are found by name with
:func:`find_model_type`.
"""

from __future__ import annotations

import difflib
import enum
import gc
import operator
import types
import typing
import weakref
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, NamedTuple, Protocol, Union

from reactivex import Observable
from reactivex.abc import ObserverBase
from reactivex.subject import Subject

from rtecs.errors import ModelDestroyedError, NotConnectedError, OwnershipError, SchemaError
from rtecs.model._streams import guarded, log_error
from rtecs.protocol import (
    CREATE,
    DEFAULT_LIMITS,
    DESTROY,
    OWNER,
    PREVENT_OWNERSHIP_TAKEOVER,
    ModelId,
    coerce_value,
)

__all__ = ["DEFAULT_MAX_VALUE_BYTES", "Change", "ChangeSource", "KidEvent", "Prop",
           "RealtimeModel", "WriteLog", "find_model_type", "prop"]

#: The largest str (UTF-8) or bytes value a model in no datastore accepts: the default
#: update limit less room for the update's framing (``Limits.max_value_bytes``). A model in
#: a datastore uses the datastore's ``max_value_bytes`` (from the limits the server announced).
DEFAULT_MAX_VALUE_BYTES = DEFAULT_LIMITS.max_value_bytes

_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # literals in Prop.__set__: keep them in step


class ChangeSource(enum.Enum):
    """Why a visible value changed."""

    LOCAL = "local"              # this client wrote it
    REMOTE = "remote"            # another client's write, ordered by the server
    ROLLBACK = "rollback"        # the server refused this client's write; the server value shows
    TRANSFORMED = "transformed"  # the server accepted this client's write with another value
    SNAPSHOT = "snapshot"        # a (re)join loaded the server's state


class Change(NamedTuple):
    """One visible change of one property."""

    model: RealtimeModel
    prop: str
    old: Any
    new: Any
    source: ChangeSource


class KidEvent(enum.IntEnum):
    """What happened to a dynamic model under a parent that follows its kids (a collection:
    see :attr:`RealtimeModel._follows_kids`). The datastore reports these in stream order."""

    CREATED = 0     # this client created it (reported at once)
    DESTROYING = 1  # this client asked to destroy it; it stays until answered (at once)
    ADDED = 2       # the stream created it: another client, or a snapshot
    GONE = 3        # the stream destroyed it: another client, the server, a keyed replace,
    #                 a snapshot without it
    CONFIRMED = 4   # the server accepted this client's create
    REFUSED = 5     # the server refused this client's create; the model is gone
    DESTROYED = 6   # the server accepted this client's destroy; the model is gone
    KEPT = 7        # this client's destroy did not happen (refused, or the model went first);
    #                 the model stays unless it is gone
    RESET = 8       # a snapshot replaced the state (the kid is the parent itself)


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
    """What a model needs from the datastore it is attached to: one narrow interface that
    the model layer defines and the datastore implements (DESIGN §1), never its tables.
    Besides these, :func:`bind` may hand the model the datastore's :class:`WriteLog`: its
    writes then record themselves there, and ``mark_dirty`` is not called."""

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


class _Destroyed:
    """Stands in for the datastore of a destroyed model: every write raises."""

    client_id = -1
    max_value_bytes = DEFAULT_MAX_VALUE_BYTES

    def report_error(self, exc: BaseException) -> None:
        log_error(exc)

    def mark_dirty(self, model: RealtimeModel, p: Prop, old: Any) -> Emit | None:
        raise ModelDestroyedError(
            f"{type(model).__name__} {model.model_id} was destroyed; drop references to it")

    def check_write(self, model: RealtimeModel) -> None:
        self.mark_dirty(model, OWNER_PROP, None)

    def write_owner(self, model: RealtimeModel, owner: int) -> None:
        self.mark_dirty(model, OWNER_PROP, None)


ModelOwner = _Owner
"""The interface a datastore implements for its models (the model layer's ``_Owner``)."""

DESTROYED: _Owner = _Destroyed()

_ZERO: dict[str, object] = {"bool": False, "int": 0, "float": 0.0, "f32": 0.0, "str": "",
                            "bytes": b""}
_PYTYPE: dict[str, type] = {"bool": bool, "int": int, "float": float, "str": str, "bytes": bytes}
_UNSET: Any = object()


class Prop:
    """A synchronised property of a :class:`RealtimeModel` (made by :func:`prop`)."""

    __slots__ = ("child_type", "default", "f32", "id", "name", "pytype", "reliable", "slot",
                 "tag")

    def __init__(self, prop_id: int, default: Any = _UNSET, reliable: bool = True,
                 float32: bool = False) -> None:
        self.id = prop_id
        self.default = default
        self.reliable = reliable
        self.f32 = float32
        self.name = ""
        self.tag = ""
        self.slot = -1
        self.pytype: type | None = None
        self.child_type: type[RealtimeModel] | None = None

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<prop {self.id} {self.name}: {self.tag}{'' if self.reliable else ' unreliable'}>"

    @typing.overload
    def __get__(self, obj: None, objtype: type | None = None) -> Prop: ...
    @typing.overload
    def __get__(self, obj: RealtimeModel, objtype: type | None = None) -> Any: ...

    def __get__(self, obj: RealtimeModel | None, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return obj._v[self.slot]  # noqa: SLF001 (the hottest read: the values' own descriptor)

    def __set__(self, obj: RealtimeModel, value: Any) -> None:
        # Writes through ``model.x = v`` never come here: the model class's __setattr__ does
        # them (see _setter: one call less on the hot path). This is for object.__setattr__.
        _write(obj, self.name, value)

    def coerce(self, obj: RealtimeModel, value: object) -> Any:
        """``value`` as this property stores it, or raise (``TypeError`` for a wrong type,
        ``ValueError`` for an int outside 64 bits or a str/bytes value over the limit)."""
        if self.id == OWNER:
            raise AttributeError("owner_id is read-only: use request_ownership() or "
                                 "clear_ownership()")
        tag = self.tag
        if type(value) is int and tag.rstrip("?") in ("int", "float", "f32"):
            self.refuse_int(obj, value)  # a ValueError (not coerce_value's TypeError)
        if type(value) is str and (tag == "str" or tag == "str?"):
            size = len(value)
            if not value.isascii():
                try:
                    size = len(value.encode("utf-8"))
                except UnicodeEncodeError:
                    raise TypeError(f"{type(obj).__name__}.{self.name}: {value[:40]!r}... "
                                    "cannot be sent: it is not valid Unicode (a lone "
                                    "surrogate?)") from None
            if size > _limit(obj):
                self.refuse_size(obj, size)
            return value
        try:
            coerced = coerce_value(tag, value)
        except TypeError as exc:
            raise TypeError(f"{type(obj).__name__}.{self.name}: {exc}") from None
        if type(coerced) is bytes and len(coerced) > _limit(obj):
            self.refuse_size(obj, len(coerced))
        return coerced

    def refuse_int(self, obj: RealtimeModel, value: int) -> None:
        """Raise ``ValueError`` if ``value`` does not fit in 64 bits."""
        if not _INT_MIN <= value <= _INT_MAX:
            raise ValueError(f"{type(obj).__name__}.{self.name}: {value} does not fit in 64 "
                             f"bits (ints must be in [-2**63, 2**64 - 1])")

    def refuse_size(self, obj: RealtimeModel, size: int) -> None:
        """Raise ``ValueError``: a str/bytes value of ``size`` bytes is over the limit."""
        what = "UTF-8 encoding" if self.pytype is str else "value"
        raise ValueError(f"{type(obj).__name__}.{self.name}: the {what} is {size} bytes, over "
                         f"the limit of {_limit(obj)} bytes per value (the server announces "
                         "the limit: max_value_bytes)")


def _limit(obj: RealtimeModel) -> int:
    ds = store_of(obj)
    return DEFAULT_MAX_VALUE_BYTES if ds is None else ds.max_value_bytes


def prop(prop_id: int, *, default: Any = _UNSET, reliable: bool = True,
         float32: bool = False) -> Any:
    """Declare a synchronised property with a wire id (≥ 1, unique in the model, never reused).

    ``reliable=False`` makes it latest-value-wins: no in-flight cache, may coalesce, never
    rolled back (positions, aim). The type comes from the annotation: ``bool``, ``int``,
    ``float``, ``str``, ``bytes``, ``X | None``, or a :class:`RealtimeModel` subclass for a
    declared child model. ``float32=True`` (float properties only) sends the value as a
    4-byte float, as games do for positions: writes are rounded to float32 precision at once,
    so every client shows the same value.
    """
    if type(prop_id) is not int or prop_id < 1:
        raise SchemaError(f"a property id must be an int ≥ 1, not {prop_id!r}")
    return Prop(prop_id, default, reliable, float32)


def _tag_of(hint: Any, where: str) -> tuple[str, type[RealtimeModel] | None]:
    optional = False
    origin = typing.get_origin(hint)
    if origin is Union or origin is types.UnionType:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            hint, optional = args[0], True
    if isinstance(hint, type) and issubclass(hint, RealtimeModel):
        if optional:
            raise SchemaError(f"{where}: a child model cannot be optional")
        return f"model:{hint.type_name}", hint
    for tag, pytype in _PYTYPE.items():
        if hint is pytype:
            return tag + ("?" if optional else ""), None
    raise SchemaError(f"{where}: unsupported property type {hint!r} "
                      "(use bool, int, float, str, bytes, X | None or a RealtimeModel)")


class _Subjects:
    __slots__ = ("changes", "props")

    def __init__(self) -> None:
        self.props: dict[int, Subject[Any]] = {}
        self.changes: Subject[Change] | None = None


class RealtimeModel:
    """Base class of synchronised models. Subclass it and declare properties with :func:`prop`.

    Keyword arguments set initial values: ``Player(name="ann")``. ``type_name`` (a class
    keyword, default the class name) is the model's name on the wire and in the schema.
    """

    __slots__ = ("_ds", "_flags", "_id", "_parent", "_subs", "_v", "_wlog")
    if typing.TYPE_CHECKING:  # set in __init__
        _v: list[Any]
        _ds: _Owner | None
        _wlog: WriteLog | None
        _id: ModelId | None
        _parent: RealtimeModel | None
        _subs: _Subjects | None
        _flags: int

    type_name: ClassVar[str] = "RealtimeModel"
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
        found: dict[str, Prop] = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if isinstance(value, Prop):
                    found[name] = value
        try:
            hints = typing.get_type_hints(cls)
        except Exception as exc:
            raise SchemaError(f"{cls.__name__}: cannot resolve annotations: {exc}") from None
        by_id: dict[int, Prop] = {OWNER: OWNER_PROP}
        template: list[Any] = [-1]
        for name, p in found.items():
            where = f"{cls.__name__}.{name}"
            if name in _RESERVED:  # it would shadow model_id, parent, … (the datastore reads them)
                raise SchemaError(f"{where}: {name!r} is a RealtimeModel attribute; give the "
                                  "property another name")
            if name not in hints:
                raise SchemaError(f"{where}: a property needs a type annotation")
            if p.id in by_id:
                raise SchemaError(f"{where}: property id {p.id} is also used by "
                                  f"{cls.__name__}.{by_id[p.id].name}")
            tag, child = _tag_of(hints[name], where)
            if p.f32:
                if tag.rstrip("?") != "float":
                    raise SchemaError(f"{where}: float32=True needs a float property, not {tag}")
                tag = tag.replace("float", "f32")
            if p.tag and p.tag != tag:
                raise SchemaError(f"{where}: redeclared as {tag}, was {p.tag}")
            p.tag, p.child_type = tag, child
            p.pytype = _PYTYPE.get(tag)
            p.slot = len(template)
            if child is not None:
                if p.default is not _UNSET:
                    raise SchemaError(f"{where}: a child model property takes no default")
                template.append(None)
            elif p.default is _UNSET:
                template.append(None if tag.endswith("?") else _ZERO[tag])
            else:
                try:
                    default = coerce_value(tag, p.default)
                except TypeError as exc:
                    raise SchemaError(f"{where}: bad default: {exc}") from None
                size = (len(default.encode("utf-8")) if type(default) is str
                        else len(default) if type(default) is bytes else 0)
                if size > DEFAULT_MAX_VALUE_BYTES:
                    raise SchemaError(f"{where}: bad default: {size} bytes, over the limit "
                                      f"of {DEFAULT_MAX_VALUE_BYTES} bytes per value")
                template.append(default)
            by_id[p.id] = p
        cls._props = by_id
        cls._props_by_name = {p.name: p for p in by_id.values()}
        cls._children = tuple(p for p in by_id.values() if p.child_type is not None)
        cls._template = template
        # Each class its own __setattr__ (see _setter), unless one in between defines its own
        # (which reaches ours through super()).
        if getattr(cls.__setattr__, "__code__", None) is _SETTER_CODE:
            setattr(cls, "__setattr__", _setter(cls._props_by_name))  # noqa: B010 (unseen by mypy)
        if not abstract:
            _REGISTRY.setdefault(cls.type_name, weakref.WeakSet()).add(cls)

    def __init__(self, **values: Any) -> None:
        cls = type(self)
        # The slots, set past __setattr__ (which would only pass them on, slower).
        _set_v(self, list(cls._template))
        _set_ds(self, None)
        _set_wlog(self, None)
        _set_id(self, None)
        _set_parent(self, None)
        _set_subs(self, None)
        _set_flags(self, 0)
        for p in cls._children:
            assert p.child_type is not None
            child = p.child_type()
            _set_parent(child, self)
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
        return f"{type(self).__name__}(id={self._id!r}, {fields})"

    # ----------------------------------------------------------------- schema

    @classmethod
    def schema(cls) -> dict[int, tuple[str, str, bool]]:
        """This type's properties as sent in the hello: ``{id: (name, tag, reliable)}``."""
        return {p.id: (p.name, p.tag, p.reliable) for p in cls._props.values() if p.id != OWNER}

    # ----------------------------------------------------------------- identity

    @property
    def model_id(self) -> ModelId | None:
        """The network id (None until the model is in a datastore). Not an esper entity id."""
        return self._id

    @property
    def parent(self) -> RealtimeModel | None:
        return self._parent

    # ----------------------------------------------------------------- ownership

    @property
    def owner_id(self) -> int:
        """The owning client id, or -1 when unowned (anyone may write)."""
        owner: int = self._v[0]
        return owner

    @property
    def is_unowned(self) -> bool:
        return bool(self._v[0] == -1)

    @property
    def is_owned_locally(self) -> bool:
        ds = self._ds
        return ds is not None and self._v[0] != -1 and bool(self._v[0] == ds.client_id)

    @property
    def is_owned_remotely(self) -> bool:
        return self._v[0] != -1 and not self.is_owned_locally

    @property
    def prevents_ownership_takeover(self) -> bool:
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
            raise OwnershipError(f"{type(self).__name__} {self._id} is owned by client "
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
            raise ModelDestroyedError(f"{type(self).__name__} {self._id} was destroyed")
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


OWNER_PROP = Prop(OWNER, -1)
OWNER_PROP.name, OWNER_PROP.tag, OWNER_PROP.slot = "owner_id", "int", 0
OWNER_PROP.pytype = type(None)  # never the type of a value: __set__ always refuses

# Markers in a datastore's dirty set for a model's creation and destruction.
CREATE_MARK = Prop(CREATE)
CREATE_MARK.name = "<create>"
DESTROY_MARK = Prop(DESTROY)
DESTROY_MARK.name = "<destroy>"


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
                owner = parent._v[0]  # noqa: SLF001 (this module's class, on the write path)
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
_RESERVED = frozenset(name for name in vars(RealtimeModel) if not name.startswith("_"))
_write = _setter({})  # for any model: finds the property through the instance's class
setattr(RealtimeModel, "__setattr__", _write)  # noqa: B010 (so mypy still flags typos)
_SETTER_CODE = _write.__code__
_SLOTS = RealtimeModel.__dict__
_set_v = _SLOTS["_v"].__set__
_set_ds = _SLOTS["_ds"].__set__
_set_wlog = _SLOTS["_wlog"].__set__
_set_id = _SLOTS["_id"].__set__
_set_parent = _SLOTS["_parent"].__set__
_set_subs = _SLOTS["_subs"].__set__
_set_flags = _SLOTS["_flags"].__set__
# Readers of the slots: attrgetter is the cheapest call there is for it (a slot
# descriptor's __get__ costs a third more).
_get_v = operator.attrgetter("_v")
_get_subs = operator.attrgetter("_subs")


# ----------------------------------------------------------------- the datastore's side
# How the datastore reaches a model (DESIGN §1): these functions, never its attributes. The
# slot readers are C calls (operator.attrgetter), the cheapest calls there are.

values_of: Callable[[RealtimeModel], list[Any]] = _get_v
"""A model's values by :attr:`Prop.slot` (slot 0 is the owner id): the list the datastore
reads when it collects and writes when it shows what the server says."""
store_of: Callable[[RealtimeModel], _Owner | None] = operator.attrgetter("_ds")
"""The datastore a model belongs to (None: none yet; :data:`DESTROYED` once destroyed)."""
id_of: Callable[[RealtimeModel], ModelId | None] = operator.attrgetter("_id")
"""A model's network id (as :attr:`RealtimeModel.model_id`, without the property call)."""
flags_of: Callable[[RealtimeModel], int] = operator.attrgetter("_flags")
"""A model's lifetime flags (``rtecs.protocol`` flag bits)."""
set_flags: Callable[[RealtimeModel, int], None] = _set_flags
"""Set a model's lifetime flags (its create, or the server's record of it, says them)."""


def bind(model: RealtimeModel, owner: _Owner, model_id: ModelId,
         parent: RealtimeModel | None, log: WriteLog | None = None) -> None:
    """Attach ``model`` to the datastore ``owner`` under ``model_id``; raise ``ValueError``
    if it already belongs to one. ``log``: the datastore's :class:`WriteLog`, where the
    model's writes record themselves from now on (without it, they call ``mark_dirty``)."""
    if store_of(model) is not None:
        raise ValueError(f"{model!r} already belongs to a datastore")
    _set_ds(model, owner)
    _set_wlog(model, log)
    _set_id(model, model_id)
    _set_parent(model, parent)


def unbind(model: RealtimeModel) -> None:
    """``model`` was destroyed: from now on every write to it raises."""
    _set_ds(model, DESTROYED)
    _set_wlog(model, None)


def watched(model: RealtimeModel) -> bool:
    """True if anybody subscribed to one of ``model``'s own streams."""
    return _get_subs(model) is not None


def notify(model: RealtimeModel, p: Prop, old: Any, new: Any, source: ChangeSource) -> None:
    """Emit a visible change on ``model``'s own streams (if anybody subscribed)."""
    subs: _Subjects | None = _get_subs(model)
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


def _no_property(cls: type[RealtimeModel], name: str) -> str:
    names = [p.name for p in cls._props.values() if p.id != OWNER]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    listed = ", ".join(names) if names else "none"
    return (f"{cls.__name__} has no property {name!r}: {hint}its properties are {listed} "
            "(only declared properties, class attributes and _private names can be set)")


# ----------------------------------------------------------------- model types by name

_REGISTRY: dict[str, weakref.WeakSet[type[RealtimeModel]]] = {}


def find_model_type(type_name: str) -> type[RealtimeModel] | None:
    """The defined :class:`RealtimeModel` subclass whose ``type_name`` is ``type_name``, or
    None if there is none (DESIGN §4b). Classes that were garbage-collected do not count;
    neither do ``abstract=True`` bases. Raises :class:`~rtecs.errors.SchemaError` naming
    both if two live classes share the name: pass the one you mean in ``types=``."""
    found = _REGISTRY.get(type_name)
    if not found:
        return None
    if len(found) > 1:
        gc.collect()  # classes sit in reference cycles: a dead one may not be freed yet
    if len(found) == 1:
        for only in found:
            return only
    if not found:
        return None
    names = sorted(f"{c.__module__}.{c.__qualname__}" for c in found)  # no strong references
    more = f" (and {len(names) - 2} more)" if len(names) > 2 else ""
    raise SchemaError(f"two model classes are named {type_name!r}: {names[0]} and {names[1]}"
                      f"{more}; pass the one this client uses in types=")
