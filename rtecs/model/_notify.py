"""Delivering a datastore's visible changes (DESIGN §4b): apply, then notify.

The datastore applies what the server sent and hands the visible changes over as data
(:class:`VisibleChanges`); a :class:`Notifier` emits them once the whole message is applied.
The notifier owns everything reactive about a datastore — the datastore-wide ``changes``
Subject (made on the first subscribe), the lifecycle and error listeners — so the datastore
itself imports no reactivex.

Delivery order: first the collections take in what happened to their elements (all of
them, before anybody hears of it), then the lifecycle listeners hear of dynamic models that
appeared or went, then the collections' streams emit, then the property changes, in order.
A queued property change for a property that a callback has since written locally is
dropped (the local write is newer). A subscriber that raises is reported through
:meth:`Notifier.report_error` and never stops the others: the state is already applied.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from reactivex import Observable
from reactivex.subject import Subject

from rtecs.model._enums import ChangeSource, KidEvent
from rtecs.model._interface import (
    abandon,
    kids_changed,
    notify,
    store_of,
    values_of,
    watched,
)
from rtecs.model._model import Change, Emit, RealtimeModel, WriteLog
from rtecs.model._prop import Prop
from rtecs.model._streams import guarded

__all__ = ["ChangeStream", "Notifier", "VisibleChanges"]

log = logging.getLogger("rtecs.datastore")

#: The type of ``Datastore.changes``: every visible change of every model.
ChangeStream = Observable[Change]

PropChange = tuple[RealtimeModel, Prop, Any, Any, ChangeSource]  # model, prop, old, new, source
KidRecord = tuple[RealtimeModel, KidEvent, RealtimeModel, Any]   # parent, event, kid, key


class VisibleChanges:
    """What applying server messages changed visibly, in stream order, not yet emitted.

    ``props``: property changes ``(model, prop, old, new, source)``; ``kids``: what happened
    to collections' elements ``(collection, event, element, key)``; ``lifecycle``: dynamic
    models that appeared (True) or went (False) other than by this client's own calls;
    ``abandoned``: collections destroyed with the model that held them (their pending
    operations resolve to False)."""

    __slots__ = ("abandoned", "kids", "lifecycle", "props")

    def __init__(self) -> None:
        self.props: list[PropChange] = []
        self.kids: list[KidRecord] = []
        self.lifecycle: list[tuple[RealtimeModel, bool]] = []
        self.abandoned: list[RealtimeModel] = []

    def __bool__(self) -> bool:
        return bool(self.props or self.kids or self.lifecycle or self.abandoned)


class Notifier:
    """Emits a datastore's visible changes: see the module docs.

    ``store`` is the datastore (collections of another datastore hear nothing);
    ``written_locally(model, prop, differs)`` tells whether a local write of it is unsent or
    unanswered (a queued change for it is then dropped); ``log``, the datastore's
    :class:`~rtecs.model.WriteLog`, learns where local writes go datastore-wide."""

    def __init__(self, store: object,
                 written_locally: Callable[[RealtimeModel, Prop, bool], bool],
                 log: WriteLog | None = None) -> None:
        self._store = store
        self._written_locally = written_locally
        self._log = log
        self._subject: Subject[Change] | None = None
        self.emit: Emit | None = None
        """Where a change goes datastore-wide: None until somebody subscribes to
        :attr:`changes` (the write log's ``emit`` is the same)."""
        self.error_listeners: list[Callable[[BaseException], None]] = []
        """Called with every exception a subscriber raised (see :meth:`report_error`)."""
        self.lifecycle_listeners: list[Callable[[RealtimeModel, bool], None]] = []
        """Called with ``(model, alive)`` when a dynamic model appears or goes other than
        by this client's own create()/destroy()."""

    @property
    def changes(self) -> ChangeStream:
        """Every visible change of every model of the datastore."""
        if self._subject is None:
            self._subject = Subject()
            self.emit = self._subject.on_next
            if self._log is not None:
                self._log.emit = self.emit
        return guarded(self._subject, self.report_error)

    def report_error(self, error: BaseException) -> None:
        """A subscriber raised ``error``: log it with its traceback and tell every
        :attr:`error_listeners` (a listener that raises is logged and skipped). The state
        is already applied; nothing else is affected (DESIGN §4b)."""
        log.error("a change subscriber raised %s: %s", type(error).__name__, error,
                  exc_info=(type(error), error, error.__traceback__))
        for listener in list(self.error_listeners):
            try:
                listener(error)
            except Exception:
                log.exception("an error listener raised")

    # ----------------------------------------------------------------- local changes

    def local_change(self, model: RealtimeModel, p: Prop, old: Any, new: Any) -> None:
        """A local change made by the datastore itself (an ownership request): emit now."""
        if watched(model):
            notify(model, p, old, new, ChangeSource.LOCAL)
        if self.emit is not None:
            self.emit(Change(model, p.name, old, new, ChangeSource.LOCAL))

    def tell_local(self, parent: RealtimeModel, event: KidEvent, kid: RealtimeModel,
                   key: Any) -> None:
        """This client's own create or destroy request of a collection's element: the
        collection takes it in and its streams emit at once."""
        emit = kids_changed(parent, [(event, kid, key)], True)
        if emit is not None:
            emit()

    # ----------------------------------------------------------------- from the stream

    def deliver(self, visible: VisibleChanges) -> None:
        """Emit what applying a whole message changed (see the module docs)."""
        emits: list[Callable[[], None]] = []
        if visible.kids:
            by_parent: dict[RealtimeModel, list[Any]] = {}
            for parent, event, kid, key in visible.kids:
                by_parent.setdefault(parent, []).append((event, kid, key))
            for parent, events in by_parent.items():
                if store_of(parent) is self._store:
                    emit = kids_changed(parent, events, False)
                    if emit is not None:
                        emits.append(emit)
        for model, alive in visible.lifecycle:
            for listener in self.lifecycle_listeners:
                listener(model, alive)
        for emit in emits:
            emit()
        for collection in visible.abandoned:
            abandon(collection)
        everything = self.emit
        written = self._written_locally
        for model, p, old, new, source in visible.props:
            now = values_of(model)[p.slot]
            if written(model, p, now is not new and (type(now) is not type(new) or now != new)):
                continue  # written locally since (a callback): that write is newer
            try:
                notify(model, p, old, new, source)
                if everything is not None:
                    everything(Change(model, p.name, old, new, source))
            except Exception as exc:  # a subscriber without the guard (see rtecs.model)
                self.report_error(exc)
