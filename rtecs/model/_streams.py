"""Streams whose subscribers cannot break the code that emits (DESIGN §4b).

reactivex lets an exception raised in an observer's ``on_next`` propagate to whoever called
``Subject.on_next`` — the tick, or a local write — and skips the Subject's remaining
observers. Every stream rtecs hands out is therefore :func:`guarded`: each subscriber is
wrapped so that its exception is caught and passed to a report function (the datastore's
``report_error``: logged with its traceback and put on ``rt.errors``), and the emission goes
on to the next subscriber. A subscriber that raised stays subscribed.

Only ``Exception`` is caught: ``KeyboardInterrupt`` and ``SystemExit`` still stop the
program. ``on_error`` and ``on_completed`` pass through unchanged (rtecs's own Subjects send
neither).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import reactivex
from reactivex import Observable
from reactivex.abc import DisposableBase, ObserverBase, SchedulerBase
from reactivex.subject import Subject

__all__ = ["Report", "guarded", "log_error"]

T = TypeVar("T")

#: Takes a subscriber's exception; must not raise (if it does, that is logged too).
Report = Callable[[BaseException], None]

log = logging.getLogger("rtecs.model")


def log_error(exc: BaseException) -> None:
    """The report used when there is nobody to report to: log ``exc`` with its traceback."""
    log.error("a subscriber raised %s: %s", type(exc).__name__, exc, exc_info=exc)


def _report(report: Report, exc: Exception) -> None:
    try:
        report(exc)
    except Exception as failure:  # the report itself failed: never let it reach the emitter
        log_error(exc)
        log.error("reporting a subscriber's error failed", exc_info=failure)


def guarded(subject: Subject[T], report: Report,
            on_subscribe: Callable[[ObserverBase[T]], None] | None = None) -> Observable[T]:
    """An Observable of ``subject``'s values whose subscribers' ``on_next`` exceptions go to
    ``report`` (and never to whoever calls ``subject.on_next``).

    ``on_subscribe``, if given, is called with each new subscriber's observer before it is
    attached (``observe()`` uses it to send the current value); an exception there is
    reported the same way. Disposing the subscription detaches the subscriber.
    """

    def subscribe(observer: ObserverBase[T],
                  scheduler: SchedulerBase | None = None) -> DisposableBase:
        on_next = observer.on_next

        def safe_next(value: T) -> None:
            try:
                on_next(value)
            except Exception as exc:
                _report(report, exc)

        if on_subscribe is not None:
            try:
                on_subscribe(observer)
            except Exception as exc:
                _report(report, exc)
        return subject.subscribe(safe_next, observer.on_error, observer.on_completed)

    return reactivex.create(subscribe)
