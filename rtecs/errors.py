"""Typed exceptions. Every error rtecs raises on purpose is an :class:`RtecsError`."""

from __future__ import annotations

import enum


class RtecsError(Exception):
    """Base class of every error rtecs raises on purpose."""


class ProtocolError(RtecsError):
    """A frame could not be decoded or does not have the shape its message kind requires.

    Raised by :mod:`rtecs.protocol` for *anything* malformed: bad MessagePack, wrong types,
    frames over the configured limits. The message says what was wrong.

    ``code`` is the ``ERROR`` code a server answers it with when the frame's fault has one
    of its own (:attr:`ErrorCode.OVER_LIMIT <rtecs.protocol.ErrorCode.OVER_LIMIT>` for a
    frame over a size limit), else None (``protocol``).
    """

    def __init__(self, *args: object, code: str | None = None) -> None:
        super().__init__(*args)
        self.code = code
        """The error code of this fault (an :class:`~rtecs.protocol.ErrorCode` value), or
        None for a plain malformed frame."""


class SchemaError(RtecsError):
    """Two schemas contradict each other (one property id, two types), or a model class is
    declared wrongly."""


class OwnershipError(RtecsError):
    """A write to a model (or a child of a model) that another client is known to own."""


class ModelDestroyedError(RtecsError):
    """A destroyed model was written to or observed. Drop references to destroyed models."""


class NotConnectedError(RtecsError):
    """The operation needs a client id from the server; wait for the welcome first."""


class TokenProblem(enum.StrEnum):
    """Why a join token was refused (:attr:`TokenError.reason`)."""

    MALFORMED = "malformed"    # not a token of this format: bad text, sizes or fields
    FORGED = "forged"          # its signature does not match (another secret, or altered)
    EXPIRED = "expired"        # its expiry (wall-clock time) has passed
    WRONG_ROOM = "wrong_room"  # signed for another room
    MISSING = "missing"        # the server requires a token and the hello carried none


class TokenError(RtecsError):
    """A join token that does not admit its bearer (:func:`rtecs.auth.verify_token`).

    ``reason`` says which check failed (a :class:`TokenProblem`); the message says more.
    """

    def __init__(self, reason: TokenProblem, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        """Which check failed."""
