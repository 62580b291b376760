"""Who may join: the server's side of join tokens (:mod:`rtecs.auth`) and the plugins'
``authenticate`` hooks, with no sockets.

:class:`JoinAuth` answers two questions:

- :meth:`JoinAuth.admit` — may this ``HELLO`` join its room, and as whom? With an auth secret
  the hello must carry a token signed with it, for the hello's room, not expired at the wall
  clock's time (``wall``: the server passes its clock's ``wall()``); then every plugin's
  ``authenticate(hello)`` is asked (:func:`rtecs_server.hooks.authenticate`): a
  :class:`~rtecs_server.errors.Reject` refuses the hello, an
  :class:`~rtecs_server.hooks.Identity` replaces the token's, None keeps it. Without a
  secret the plugins alone decide (none with an opinion: the hello joins anonymously, user id
  None). A refusal is an :class:`AuthRefused`; the host answers it with a fatal
  ``ERROR auth_failed`` carrying its message.
- :meth:`JoinAuth.check_gate` — may this connection finish its ZeroMQ handshake? (ZAP with
  the PLAIN mechanism: :mod:`rtecs_server.zmq_transport`.) The username must be
  :data:`~rtecs.auth.GATE_USERNAME` and the password a token's signed head
  (:func:`rtecs.auth.verify_gate`: signed with the secret, not expired). It runs on the ZAP
  thread, so it reads only the secret (immutable bytes) and ``wall`` — which must be safe to
  call from another thread (:class:`~rtecs.clock.SystemClock` and
  :class:`~rtecs.clock.ManualClock` are) — and never the host's state or the plugins.

Secrets: :func:`read_secret_file` and :func:`secret_from_environment` (``rtecs-server
--auth-secret-file``, ``RTECS_AUTH_SECRET_FILE``, ``RTECS_AUTH_SECRET``). A secret never
travels on the command line, where every user of the machine can read it.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from rtecs.auth import GATE_USERNAME, MIN_SECRET_BYTES, verify_gate, verify_token
from rtecs.errors import RtecsError, TokenError, TokenProblem
from rtecs.protocol import Hello
from rtecs_server.errors import Reject
from rtecs_server.hooks import Identity, authenticate

__all__ = ["ANONYMOUS", "ENV_SECRET", "ENV_SECRET_FILE", "AuthRefused", "JoinAuth",
           "read_secret_file", "secret_from_environment"]

log = logging.getLogger(__name__)

#: The identity of a hello nothing vouched for.
ANONYMOUS: Final = Identity(None)
#: Environment variable naming the auth secret's file.
ENV_SECRET_FILE: Final = "RTECS_AUTH_SECRET_FILE"
#: Environment variable holding the auth secret itself (UTF-8 text).
ENV_SECRET: Final = "RTECS_AUTH_SECRET"
_MAX_SECRET_FILE: Final = 64 * 1024


class AuthRefused(RtecsError):
    """A hello that may not join. ``reason``: a :class:`~rtecs.errors.TokenProblem` value
    (``missing``, ``malformed``, ``forged``, ``expired``, ``wrong_room``) or ``refused``
    (an ``authenticate`` plugin); the message says more and is sent to the client."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        """Which check refused the hello."""


class JoinAuth:
    """The join checks of one server (see the module docs). ``secret`` None: no token is
    required (the plugins may still refuse)."""

    __slots__ = ("_plugins", "_secret", "_wall")

    def __init__(self, secret: bytes | None, plugins: Iterable[object] = (),
                 wall: Callable[[], float] = time.time) -> None:
        if secret is not None and len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"an auth secret is at least {MIN_SECRET_BYTES} bytes, got "
                             f"{len(secret)}")
        self._secret = secret
        self._plugins = tuple(plugins)
        self._wall = wall

    @property
    def requires_token(self) -> bool:
        """True if a hello must carry a valid token (the server has an auth secret)."""
        return self._secret is not None

    def admit(self, hello: Hello) -> Identity:
        """The identity ``hello`` joins as; raises :class:`AuthRefused`."""
        identity = ANONYMOUS
        if self._secret is not None:
            if hello.token is None:
                raise AuthRefused(TokenProblem.MISSING, "join token refused: missing: this "
                                  "server requires a join token (connect with token=)")
            try:
                found = verify_token(self._secret, hello.token, room=hello.room,
                                     now=self._wall())
            except TokenError as exc:
                raise AuthRefused(exc.reason, f"join token refused: {exc}") from None
            identity = Identity(found.user, found.claims)
        try:
            vouched = authenticate(self._plugins, hello)
        except Reject as exc:
            raise AuthRefused("refused", f"refused by the server: {exc.reason}"
                              if exc.reason else "refused by the server") from None
        return identity if vouched is None else vouched

    def check_gate(self, username: bytes, password: bytes) -> str | None:
        """A PLAIN handshake's credentials: None if they admit the connection, else why not.
        Thread-safe (see the module docs)."""
        if self._secret is None:
            return "this server takes no join tokens"
        if username != GATE_USERNAME.encode():
            return f"the PLAIN username must be {GATE_USERNAME!r}"
        try:
            verify_gate(self._secret, password, now=self._wall())
        except TokenError as exc:
            return str(exc)
        return None


def read_secret_file(path: str | os.PathLike[str]) -> bytes:
    """The auth secret in the file at ``path``: its bytes without surrounding whitespace
    (so ``echo`` or an editor's newline does not count), at least
    :data:`~rtecs.auth.MIN_SECRET_BYTES`. Raises ``ValueError`` with a readable message; a
    file that others may read is used, with a warning."""
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            data = f.read(_MAX_SECRET_FILE + 1)
    except OSError as exc:
        raise ValueError(f"cannot read the auth secret file {os.fspath(path)!r}: "
                         f"{exc.strerror or exc}") from None
    if len(data) > _MAX_SECRET_FILE:
        raise ValueError(f"the auth secret file {os.fspath(path)!r} is over "
                         f"{_MAX_SECRET_FILE} bytes: is it the right file?")
    secret = data.strip()
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the auth secret in {os.fspath(path)!r} has {len(secret)} bytes; "
                         f"use at least {MIN_SECRET_BYTES} (32 random ones, e.g. python -c "
                         f"\"import secrets; print(secrets.token_urlsafe(32))\")")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the auth secret file %s may be read by other users (mode %o): chmod 600 "
                    "it", os.fspath(path), stat.S_IMODE(info.st_mode))
    return secret


def secret_from_environment(path: str | os.PathLike[str] | None = None,
                            environ: Mapping[str, str] | None = None) -> bytes | None:
    """The auth secret: from the file at ``path`` (``--auth-secret-file``) if given, else
    from the file ``$RTECS_AUTH_SECRET_FILE`` names, else ``$RTECS_AUTH_SECRET`` itself
    (UTF-8), else None (no authentication). Raises ``ValueError`` as
    :func:`read_secret_file` does."""
    env = os.environ if environ is None else environ
    if path is not None:
        return read_secret_file(path)
    if env.get(ENV_SECRET_FILE):
        return read_secret_file(env[ENV_SECRET_FILE])
    text = env.get(ENV_SECRET)
    if text:
        secret = text.strip().encode()
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"${ENV_SECRET} has {len(secret)} bytes; use at least "
                             f"{MIN_SECRET_BYTES}")
        return secret
    return None
