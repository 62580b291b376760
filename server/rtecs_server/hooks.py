"""The server plugin interface (DESIGN §5 "Server plugins") and the one place that calls it.

A plugin is a *hook object* with any of these optional methods, or a plain callable
``plugin(room, sender, change) -> value``, which is treated as ``on_write`` for property
writes (so plugins written before hook objects keep working unchanged):

``on_write(ctx, change) -> value``
    Every property write (``change`` a :class:`~rtecs_server.records.Change`): return the
    value to accept — ``change.value`` or a transformed one, coerced to the property's type
    again (a value of the wrong type counts as a failure) — or raise :class:`Reject`. Also
    every collection operation (``change`` a :class:`~rtecs_server.records.CollectionChange`:
    an element added, at a key or not, or removed): return anything to accept it (it cannot
    be transformed), raise :class:`Reject` to refuse it. A plain callable sees property
    writes only: its ``change.value`` is always a property value.
``on_create(ctx, create)``
    Every create (:class:`~rtecs_server.records.Create`: type, flags, parent, key and the
    initial values that follow the create in its run). Raise :class:`Reject` to refuse the
    create *whole*: the model, its initial values and every later change to it in the update
    are rejected (the creator sees it vanish with source ``rollback``). The initial values
    still go through ``on_write`` one by one when the create is accepted.
``on_destroy(ctx, model_id, type_name)``
    Every destroy a client asks for, and the destroy of the element a keyed create replaces.
``on_owner(ctx, model_id, new_owner)``
    Every ownership change a client asks for (``new_owner`` -1: clearing it); an app can
    forbid owning the room model, for example.
``authenticate(hello) -> Identity | None``
    Asked about every hello before it joins (by the host, :mod:`rtecs_server.auth`; see
    :func:`authenticate`), after its join token passed when the server has an auth secret:
    return the session's :class:`Identity` (it replaces the token's user id and claims),
    None for no opinion (the token's identity stays; without a secret the hello joins
    anonymously), or raise :class:`Reject` to refuse the hello — unlike a write's, this
    reason is sent to the client (``ERROR auth_failed``), so it should be fit for a player to
    read. ``hello.token`` is whatever the client passed as ``token=`` (a token of the app's
    own kind works: the client sends a token that is not an rtecs join token only in the
    hello). It runs on the server's loop: keep it fast (no network calls).

Each hook is given a :class:`Context`: the room (read it, never change it from inside a
hook), the sender, and the session's ``user_id`` and ``claims`` (None and empty until the
host authenticates sessions). A hook is asked only about changes that passed the room's own
checks (the model exists, the sender may change it, the value has the declared type), in
the order they appear in the update, right before each is applied. The changes the server
makes itself (lifetime destroys, cleared ownership) are never put to the hooks: they cannot
be refused. Several plugins run in the order given; each ``on_write`` sees the value the
previous one returned, and the first refusal wins. Any exception other than :class:`Reject`
is logged (logger ``rtecs_server.room``) with its traceback and counts as a rejection: a
faulty plugin never takes the room down. What a hook did outside the room is never undone,
even when the update it saw is (an internal error, DESIGN §5).

:class:`Hooks` is a base class with every method; subclass it and override the ones you
need (the rest are never called), or write any object with some of the methods.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final, NamedTuple, Protocol

from rtecs.protocol import Hello, ModelId, Value, coerce_value
from rtecs_server.errors import Reject
from rtecs_server.records import Change, CollectionChange, Create, SnapshotRecord

__all__ = ["REFUSED", "CollectionChange", "Context", "Create", "Hooks", "Identity",
           "PluginSet", "RoomView", "authenticate", "is_plugin"]

log = logging.getLogger("rtecs_server.room")

#: What :meth:`PluginSet.write` returns for a refused write.
REFUSED: Final[Any] = object()

_NO_CLAIMS: Final[Mapping[str, Any]] = MappingProxyType({})

#: The hook methods a hook object may have.
HOOK_NAMES: Final = ("on_write", "on_create", "on_destroy", "on_owner", "authenticate")


class RoomView(Protocol):
    """What a hook may read of the room (:class:`~rtecs_server.room.Room` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def members(self) -> tuple[int, ...]: ...

    def record(self, model_id: ModelId, /) -> SnapshotRecord | None: ...


class Context(NamedTuple):
    """What every hook is given about the change it is asked about."""

    room: RoomView                  # the room (read it; never change it from a hook)
    sender: int                     # the client id of the update's sender
    user_id: str | None = None      # the session's user id (None: not authenticated)
    claims: Mapping[str, Any] = _NO_CLAIMS  # the session's claims (empty: none)


class Identity(NamedTuple):
    """Who a hello belongs to, as ``authenticate`` found."""

    user_id: str | None
    claims: Mapping[str, Any] = _NO_CLAIMS


class Hooks:
    """A base class for hook objects: override the methods you need (see the module docs);
    the ones left as they are here are never called."""

    def on_write(self, ctx: Context, change: Change | CollectionChange) -> Value:
        """Return the value to accept, or raise :class:`Reject`."""
        return change.value if isinstance(change, Change) else None

    def on_create(self, ctx: Context, create: Create) -> None:
        """Raise :class:`Reject` to refuse the create whole."""

    def on_destroy(self, ctx: Context, model_id: ModelId, type_name: str) -> None:
        """Raise :class:`Reject` to refuse the destroy."""

    def on_owner(self, ctx: Context, model_id: ModelId, new_owner: int) -> None:
        """Raise :class:`Reject` to refuse the ownership change."""

    def authenticate(self, hello: Hello) -> Identity | None:
        """Return the session's identity, None (no opinion), or raise :class:`Reject`."""
        return None


def _hooks_of(plugin: object) -> dict[str, Callable[..., Any]]:
    """The hook methods ``plugin`` really has (a :class:`Hooks` default is not one)."""
    found: dict[str, Callable[..., Any]] = {}
    for name in HOOK_NAMES:
        method = getattr(plugin, name, None)
        if method is None or not callable(method):
            continue
        if isinstance(plugin, Hooks) and getattr(type(plugin), name, None) is getattr(
                Hooks, name):
            continue
        found[name] = method
    return found


def is_plugin(obj: object) -> bool:
    """True if ``obj`` can be a plugin: a hook object with at least one hook method, or a
    plain callable (an ``on_write``)."""
    return bool(_hooks_of(obj)) or callable(obj)


def authenticate(plugins: Iterable[object], hello: Hello) -> Identity | None:
    """Ask every plugin's ``authenticate`` about ``hello``, in order: the first identity
    returned wins; None if none had an opinion. Raises :class:`Reject` when one refuses the
    hello — also when one fails unexpectedly (logged with its traceback)."""
    for plugin in plugins:
        method = _hooks_of(plugin).get("authenticate")
        if method is None:
            continue
        try:
            identity = method(hello)
        except Reject:
            raise
        except Exception:
            log.exception("plugin %r failed to authenticate a hello for room %r; it is "
                          "refused", plugin, hello.room)
            raise Reject("authentication failed") from None
        if identity is not None:
            return identity  # type: ignore[no-any-return]
    return None


class PluginSet:
    """One room's plugins, sorted by hook, asked by the store about the changes of the
    update being applied (:meth:`begin` names its sender and session)."""

    __slots__ = ("_collections", "_context", "_creates", "_destroys", "_owners", "_writes",
                 "any", "any_owners", "any_writes", "name", "room")

    def __init__(self, plugins: Iterable[object], room: RoomView) -> None:
        self.room = room
        self.name = room.name
        # (plugin, function, plain): a plain callable is called as fn(room, sender, change)
        writes: list[tuple[object, Callable[..., Any], bool]] = []
        creates: list[tuple[object, Callable[..., Any]]] = []
        destroys: list[tuple[object, Callable[..., Any]]] = []
        owners: list[tuple[object, Callable[..., Any]]] = []
        for plugin in plugins:
            hooks = _hooks_of(plugin)
            if not hooks:
                if not callable(plugin):
                    raise TypeError(f"plugin {plugin!r} is neither callable nor a hook "
                                    f"object (with any of {', '.join(HOOK_NAMES)})")
                writes.append((plugin, plugin, True))
                continue
            if "on_write" in hooks:
                writes.append((plugin, hooks["on_write"], False))
            for name, table in (("on_create", creates), ("on_destroy", destroys),
                                ("on_owner", owners)):
                if name in hooks:
                    table.append((plugin, hooks[name]))
        self._writes = tuple(writes)
        self._collections = tuple((p, fn) for p, fn, plain in writes if not plain)
        self._creates = tuple(creates)
        self._destroys = tuple(destroys)
        self._owners = tuple(owners)
        #: True if any plugin sees property writes / ownership changes / anything.
        self.any_writes = bool(writes)
        self.any_owners = bool(owners)
        self.any = bool(writes or creates or destroys or owners)
        self._context = Context(room, 0)

    def begin(self, sender: int, user_id: str | None = None,
              claims: Mapping[str, Any] | None = None) -> None:
        """The next changes asked about are ``sender``'s, of the session with ``user_id``
        and ``claims``."""
        self._context = Context(self.room, sender, user_id,
                                _NO_CLAIMS if claims is None else claims)

    def write(self, change: Change, tag: str) -> object:
        """The value to write for ``change`` after every ``on_write`` (coerced to ``tag``),
        or :data:`REFUSED`."""
        ctx = self._context
        value = change.value
        for plugin, fn, plain in self._writes:
            try:
                result = fn(ctx.room, ctx.sender, change) if plain else fn(ctx, change)
                if result is not value:
                    result = coerce_value(tag, result)
            except Reject as r:
                log.debug("room %r: plugin rejected %s from client %d: %s",
                          self.name, change, ctx.sender, r.reason)
                return REFUSED
            except Exception:
                log.exception("room %r: plugin %r failed on %s from client %d; the write is "
                              "rejected", self.name, plugin, change, ctx.sender)
                return REFUSED
            if result is not value:
                value = result
                change = change._replace(value=value)
        return value

    def collection(self, change: CollectionChange) -> bool:
        """True if every hook object's ``on_write`` accepts the collection operation."""
        return self._ask(self._collections, change)

    def create(self, create: Create) -> bool:
        """True if every ``on_create`` accepts the create."""
        return self._ask(self._creates, create)

    def destroy(self, model_id: ModelId, type_name: str) -> bool:
        """True if every ``on_destroy`` accepts the destroy."""
        return self._ask(self._destroys, model_id, type_name)

    def owner(self, model_id: ModelId, new_owner: int) -> bool:
        """True if every ``on_owner`` accepts the ownership change."""
        return self._ask(self._owners, model_id, new_owner)

    def _ask(self, hooks: tuple[tuple[object, Callable[..., Any]], ...], *args: Any) -> bool:
        ctx = self._context
        for plugin, fn in hooks:
            try:
                fn(ctx, *args)
            except Reject as r:
                log.debug("room %r: plugin rejected %s from client %d: %s",
                          self.name, args, ctx.sender, r.reason)
                return False
            except Exception:
                log.exception("room %r: plugin %r failed on %s from client %d; the change "
                              "is rejected", self.name, plugin, args, ctx.sender)
                return False
        return True
