"""Join tokens: what an app's backend gives a player so a room server lets them in.

A server started with an auth secret (``rtecs-server --auth-secret-file``) admits a ``HELLO``
only if it carries a token signed with that secret, for that room, not expired. The app's
backend — which knows who the player is — makes one per join with :func:`make_token`; the
client passes it to :func:`rtecs.connect` (``token=``); the server checks it with
:func:`verify_token` and gives the session the token's user id and claims, which every server
plugin sees in its context. This module is pure (standard library only) and imports nothing of
the server, so a backend can make tokens with ``pip install rtecs`` alone.

**Format** (compact, URL-safe, two base64url parts without padding)::

    token = HEAD "." BODY
    BODY  = base64url(JSON {"claims": {...}, "room": "...", "user": "..."})   (compact, sorted)
    HEAD  = base64url(version (1 byte, 1) | expires (8 bytes: IEEE-754 double, big-endian,
                      seconds since the Unix epoch) | SHA-256(BODY text) (32) | MAC (32))
    MAC   = HMAC-SHA256(secret, "rtecs join token" NUL | version | expires | SHA-256(BODY))

HEAD is 73 bytes (98 characters) whatever the claims. It is signed on its own and names the
body by its digest, so HEAD alone proves that the secret's holder issued a token and until
when it is valid: that is what a server gating the ZeroMQ handshake checks (ZAP, PLAIN
mechanism — :func:`gate_password`, :func:`verify_gate`), because a PLAIN password has at most
255 bytes and a token with claims is longer. The whole token is checked at ``HELLO``.

**Checks**, in order, each a :class:`~rtecs.errors.TokenError` with its
:class:`~rtecs.errors.TokenProblem`: the text's size and shape (``malformed``), the MAC and
the body's digest (``forged``: compared with :func:`hmac.compare_digest`; nothing of the body
is parsed before it is known to be signed), the expiry against ``now`` (``expired``; expiry is
wall-clock time, so the server reads its clock's ``wall()``), the body's fields
(``malformed``), the room (``wrong_room``).

**Bounds** (a token is hostile input): at most :data:`MAX_TOKEN_CHARS` characters, claims at
most :data:`MAX_CLAIMS_BYTES` of JSON, a user id of 1 to :data:`MAX_USER_CHARS` printable
characters, a secret of at least :data:`MIN_SECRET_BYTES` bytes.

A token is a bearer credential: anyone holding it may join its room until it expires, as often
as they like (it is not single-use). Keep ``ttl`` short (a minute is plenty: it gates the
join, not the session, which lives on its resume secret) and send tokens over an encrypted
channel (CURVE, ``server_key=``) if the network is not trusted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import struct
import time
import types
from collections.abc import Mapping
from typing import Final, NamedTuple

from rtecs.errors import TokenError, TokenProblem

__all__ = ["GATE_USERNAME", "MAX_CLAIMS_BYTES", "MAX_TOKEN_CHARS", "MAX_USER_CHARS",
           "MIN_SECRET_BYTES", "TokenError", "TokenIdentity", "TokenProblem", "gate_password",
           "make_token", "peek_expiry", "verify_gate", "verify_token"]

#: Longest token accepted, in characters.
MAX_TOKEN_CHARS: Final = 8192
#: Largest claims, as compact JSON, in bytes.
MAX_CLAIMS_BYTES: Final = 4096
#: Longest user id, in characters.
MAX_USER_CHARS: Final = 256
#: Shortest secret accepted (32 random bytes are recommended: ``secrets.token_bytes(32)``).
MIN_SECRET_BYTES: Final = 16
#: The PLAIN username a client sends with its token's head (:func:`gate_password`).
GATE_USERNAME: Final = "rtecs"

_VERSION: Final = 1
_DOMAIN: Final = b"rtecs join token\x00"
_HEAD_BYTES: Final = 1 + 8 + 32 + 32
_HEAD_CHARS: Final = (4 * _HEAD_BYTES + 2) // 3   # base64 without padding: 98
_B64: Final = re.compile(r"[A-Za-z0-9_-]+")


class TokenIdentity(NamedTuple):
    """Who a verified token says its bearer is."""

    user: str                      # the user id the backend named
    claims: Mapping[str, object]   # what else it vouched for (JSON values), read-only
    expires: float                 # seconds since the Unix epoch


def make_token(secret: bytes, *, room: str, user: str, ttl: float,
               claims: Mapping[str, object] | None = None, now: float | None = None) -> str:
    """A join token for ``user`` in ``room``, valid for ``ttl`` seconds from ``now`` (default:
    the wall clock, :func:`time.time`), signed with ``secret`` (see the module docs).

    ``claims`` are JSON values (a tuple comes back as a list) under string keys, at most
    :data:`MAX_CLAIMS_BYTES` as JSON. Raises ``ValueError`` for a short secret, a bad room,
    user, ttl or claims (a mistake of the caller, not a refused token)."""
    _check_secret(secret)
    if type(room) is not str or not room:
        raise ValueError("room must be a non-empty string")
    if type(user) is not str or not 0 < len(user) <= MAX_USER_CHARS or not user.isprintable():
        raise ValueError(f"user must be 1 to {MAX_USER_CHARS} printable characters")
    if not (isinstance(ttl, int | float) and math.isfinite(ttl) and ttl > 0):
        raise ValueError(f"ttl must be a finite number of seconds > 0, got {ttl!r}")
    claims = {} if claims is None else claims
    if not isinstance(claims, Mapping) or not all(type(k) is str for k in claims):
        raise ValueError("claims must be a mapping with string keys")
    try:
        claims_json = json.dumps(dict(claims), separators=(",", ":"), sort_keys=True,
                                 allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"claims must be JSON values: {exc}") from None
    if len(claims_json.encode()) > MAX_CLAIMS_BYTES:
        raise ValueError(f"claims take {len(claims_json.encode())} bytes as JSON, more than "
                         f"{MAX_CLAIMS_BYTES}")
    expires = (time.time() if now is None else now) + ttl
    body_json = json.dumps({"claims": dict(claims), "room": room, "user": user},
                           separators=(",", ":"), sort_keys=True, allow_nan=False,
                           ensure_ascii=False)
    body = _b64encode(body_json.encode())
    digest = hashlib.sha256(body.encode("ascii")).digest()
    signed = struct.pack(">Bd", _VERSION, expires) + digest
    head = _b64encode(signed + _mac(secret, signed))
    token = f"{head}.{body}"
    if len(token) > MAX_TOKEN_CHARS:
        raise ValueError(f"the token would have {len(token)} characters, more than "
                         f"{MAX_TOKEN_CHARS}")
    return token


def verify_token(secret: bytes, token: object, *, room: str, now: float) -> TokenIdentity:
    """The identity ``token`` vouches for in ``room`` at wall-clock time ``now``; raises
    :class:`~rtecs.errors.TokenError` (see the module docs for the checks and their order)."""
    if type(token) is not str:
        raise TokenError(TokenProblem.MALFORMED, "a token is a string")
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenError(TokenProblem.MALFORMED,
                         f"a token has at most {MAX_TOKEN_CHARS} characters, got {len(token)}")
    head, sep, body = token.partition(".")
    if not sep or not _B64.fullmatch(body):
        raise TokenError(TokenProblem.MALFORMED, "not a join token (HEAD.BODY in base64url)")
    expires = verify_gate(secret, head, now=now,
                          body_digest=hashlib.sha256(body.encode("ascii")).digest())
    try:
        fields = json.loads(_b64decode(body))
    except (ValueError, RecursionError):
        raise TokenError(TokenProblem.MALFORMED, "the token's body is not JSON") from None
    if type(fields) is not dict:
        raise TokenError(TokenProblem.MALFORMED, "the token's body is not a JSON object")
    signed_room, user, claims = fields.get("room"), fields.get("user"), fields.get("claims")
    if type(signed_room) is not str or type(user) is not str or type(claims) is not dict:
        raise TokenError(TokenProblem.MALFORMED, "the token's body lacks room, user or claims")
    if signed_room != room:
        raise TokenError(TokenProblem.WRONG_ROOM,
                         f"the token is for room {signed_room[:64]!r}, not {room[:64]!r}")
    return TokenIdentity(user, types.MappingProxyType(claims), expires)


def gate_password(token: str) -> str | None:
    """What a client sends as its ZeroMQ PLAIN password for ``token``: the token's signed
    head (98 characters; see the module docs), or None if ``token`` does not look like a
    join token of this module (then the client does not use PLAIN)."""
    head, sep, _ = token.partition(".")
    if sep and len(head) == _HEAD_CHARS and _B64.fullmatch(head):
        return head
    return None


def peek_expiry(token: str) -> float | None:
    """The expiry ``token`` (or its head) names, *without verifying it* — for a client to
    say why it was refused, never to decide anything; None if it is not a token."""
    head = gate_password(token) if "." in token else token
    if head is None or len(head) != _HEAD_CHARS or not _B64.fullmatch(head):
        return None
    try:
        version, expires = struct.unpack(">Bd", _b64decode(head)[:9])
    except (TokenError, struct.error):
        return None
    return float(expires) if version == _VERSION and math.isfinite(expires) else None


def verify_gate(secret: bytes, password: str | bytes, *, now: float,
                body_digest: bytes | None = None) -> float:
    """Check a token's head (a PLAIN password, :func:`gate_password`): signed with
    ``secret`` and not expired at ``now``; returns its expiry. ``body_digest``, if given,
    must be the one the head names (:func:`verify_token` passes the body's). Raises
    :class:`~rtecs.errors.TokenError`. Pure and thread-safe (a ZAP thread calls it)."""
    if isinstance(password, bytes):
        try:
            password = password.decode("ascii")
        except UnicodeDecodeError:
            raise TokenError(TokenProblem.MALFORMED, "a token is ASCII text") from None
    if len(password) != _HEAD_CHARS or not _B64.fullmatch(password):
        raise TokenError(TokenProblem.MALFORMED, "not a join token (bad head)")
    raw = _b64decode(password)
    if len(raw) != _HEAD_BYTES:
        raise TokenError(TokenProblem.MALFORMED, "not a join token (bad head)")
    signed, mac = raw[:-32], raw[-32:]
    version, expires = struct.unpack(">Bd", signed[:9])
    if version != _VERSION:
        raise TokenError(TokenProblem.MALFORMED, f"token version {version}, expected "
                                                 f"{_VERSION}")
    if not hmac.compare_digest(mac, _mac(secret, signed)):
        raise TokenError(TokenProblem.FORGED, "the token's signature does not match this "
                                              "server's secret")
    if body_digest is not None and not hmac.compare_digest(signed[9:], body_digest):
        raise TokenError(TokenProblem.FORGED, "the token's body was altered")
    if not math.isfinite(expires):
        raise TokenError(TokenProblem.MALFORMED, "the token's expiry is not a time")
    if now >= expires:
        raise TokenError(TokenProblem.EXPIRED, f"the token expired {now - expires:.1f} s ago")
    return float(expires)


def _mac(secret: bytes, signed: bytes) -> bytes:
    _check_secret(secret)
    return hmac.new(secret, _DOMAIN + signed, hashlib.sha256).digest()


def _check_secret(secret: bytes) -> None:
    if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"an auth secret is at least {MIN_SECRET_BYTES} bytes")


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    """Decode base64url without padding (``text`` already matched the alphabet)."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        raise TokenError(TokenProblem.MALFORMED, "bad base64url") from None
