"""Per-peer message rate limiting: a token bucket per peer, with a notion of *sustained* abuse.

Every frame a peer sends (joined or not, well-formed or not) takes one token from its bucket,
which holds at most ``burst`` tokens and refills at ``rate`` tokens per second. A frame that
finds the bucket empty is dropped unread. The drops form an *episode* that ends once a peer
has gone :data:`EPISODE_QUIET` seconds without a drop:

- the first drop of an episode is answered with ``ERROR rate_limit`` (not fatal);
- when an episode has dropped more than ``burst`` frames, or has lasted ``grace`` seconds, the
  abuse is sustained: ``ERROR rate_limit`` (fatal) and the peer's session ends. Later drops
  of the same episode are silent.

A well-behaved rtecs client sends about 21 frames a second (20 updates and a ping), so the
default (200/s, burst 400) only ever trips on a bug or an attack. Dropping an update breaks
the client's sequence, which the server repairs with a resync (DESIGN §5): nothing is skipped
silently.

**Per peer.** :class:`PeerTable` is what the host keeps per peer (routing id), apart from
sessions: its bucket and the throttle of its bad-input log lines. A peer is anything that
sent a frame, joined or not: the rate limit must hold before a hello too, and a flood of
garbage must not flood the log. The state of a peer that has no session
is forgotten once it has been quiet for :data:`PEER_IDLE` seconds and its bucket is full
again (:meth:`PeerTable.forget_idle`), so a scan of random routing ids costs no memory.

Bad input is logged at most :data:`LOG_BURST` times per peer per :data:`LOG_WINDOW` seconds
at warning level; the rest go to debug level and are counted in the next warning.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Container
from dataclasses import dataclass
from typing import Final

__all__ = ["BUDGET_SECONDS", "EPISODE_QUIET", "LOG_BURST", "LOG_WINDOW", "PEER_IDLE",
           "SCHEMA_BURST_SECONDS", "AddressTable", "Allowance", "PeerTable", "RateLimit",
           "TokenBucket", "Verdict"]

#: The host's logger: bad input is an event of the host's (``rtecs_server.host`` in the logs).
log = logging.getLogger("rtecs_server.host")

#: Seconds without a dropped frame that end an episode of drops.
EPISODE_QUIET: Final = 1.0


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``rate`` frames per second with bursts of up to ``burst``; over it for ``grace``
    seconds (or by more than ``burst`` dropped frames) ends the session."""

    rate: float = 200.0  # frames per second, sustained
    burst: int = 400     # frames admitted at once above the rate
    grace: float = 2.0   # seconds over the limit before the session ends
    update_bytes: float = 512 * 1024  # bytes of UPDATEs per second, sustained (0: no limit)
    update_changes: float = 40_000.0  # changes of UPDATEs per second, sustained (0: no limit)
    address_budgets: float = 1.0  # update budgets one network address's sessions share (0: off)
    schema_bytes: float = 1024 * 1024  # bytes/s per address of frames but UPDATE, PING (0: off)

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"rate must be > 0 messages/s, got {self.rate}")
        if self.burst < 1:
            raise ValueError(f"burst must be ≥ 1 message, got {self.burst}")
        if not self.grace > 0:
            raise ValueError(f"grace must be > 0 s, got {self.grace}")
        if self.update_bytes < 0 or self.update_changes < 0:
            raise ValueError("update budgets must be ≥ 0 (0: no limit)")
        if self.address_budgets < 0:
            raise ValueError(f"address_budgets must be ≥ 0 (0: none shared), got "
                             f"{self.address_budgets}")
        if self.schema_bytes < 0:
            raise ValueError(f"schema_bytes must be ≥ 0 (0: no limit), got {self.schema_bytes}")

    @classmethod
    def parse(cls, text: str) -> RateLimit | None:
        """``"RATE"`` or ``"RATE:BURST"`` (burst defaults to twice the rate); ``"0"`` → None
        (no limit). Raises ``ValueError`` with a readable message."""
        rate_text, _, burst_text = text.partition(":")
        try:
            rate = float(rate_text)
            burst = int(burst_text) if burst_text else max(1, round(2 * rate))
        except ValueError:
            raise ValueError(f"expected RATE or RATE:BURST (e.g. 200 or 200:400), got "
                             f"{text!r}") from None
        if rate == 0:
            return None
        return cls(rate, burst)


#: Seconds of update budget a session may spend at once (its bursts): 1,000 spawns of a
#: 10-property model in one frame are ~11,000 changes and ~150 kB, inside 0.5 s (20,000
#: changes, 256 KiB). Longer bursts let one client hold the loop up: measured with
#: ``bench/abuse.py``, 2 s let an abuser raise honest p99 ping by 173-511 ms, 0.5 s by 26 ms
#: (at e4a8445; on 2026-12-03 the same run gives 75-110 ms, the current code 130-180 ms:
#: ``docs/server.md``, Limits).
BUDGET_SECONDS: Final = 0.5


class Allowance:
    """One session's update budget (:attr:`RateLimit.update_bytes` and
    :attr:`RateLimit.update_changes` per second, up to :data:`BUDGET_SECONDS` of either
    saved up), or ``share`` times that for what the sessions of one address share
    (:class:`AddressTable`). The message rate limit counts frames; this counts what they
    carry, since a frame of 4,000 changes costs the server a thousand times one of 4. An
    update the allowance cannot pay for is refused inside the stream, not dropped
    (DESIGN §8)."""

    __slots__ = ("bytes", "changes", "refused", "share", "stamp")

    def __init__(self, limit: RateLimit, now: float, share: float = 1.0) -> None:
        self.share = share
        self.bytes = limit.update_bytes * share * BUDGET_SECONDS
        self.changes = limit.update_changes * share * BUDGET_SECONDS
        self.stamp = now
        self.refused = 0  # updates refused since the last one paid for

    def pay(self, limit: RateLimit, size: int, changes: int, now: float,
            also: Allowance | None = None) -> bool:
        """Take ``size`` bytes and ``changes`` changes if both are there — from ``also`` too,
        if given (the address's share), and only if both can pay; False (nothing taken, the
        refusal counted in :attr:`refused`) if not."""
        if not (self.can_pay(limit, size, changes, now)
                and (also is None or also.can_pay(limit, size, changes, now))):
            self.refused += 1
            return False
        self.take(size, changes)
        if also is not None:
            also.take(size, changes)
        self.refused = 0
        return True

    def can_pay(self, limit: RateLimit, size: int, changes: int, now: float) -> bool:
        """True if ``size`` bytes and ``changes`` changes are there (nothing taken)."""
        self.refill(limit, now)
        return not ((limit.update_bytes and size > self.bytes)
                    or (limit.update_changes and changes > self.changes))

    def take(self, size: int, changes: int) -> None:
        self.bytes -= size
        self.changes -= changes

    def refill(self, limit: RateLimit, now: float) -> None:
        elapsed = now - self.stamp
        if elapsed > 0:
            self.stamp = now
            rate_bytes = limit.update_bytes * self.share
            rate_changes = limit.update_changes * self.share
            self.bytes = min(rate_bytes * BUDGET_SECONDS, self.bytes + elapsed * rate_bytes)
            self.changes = min(rate_changes * BUDGET_SECONDS,
                               self.changes + elapsed * rate_changes)

    def full(self, limit: RateLimit, now: float) -> bool:
        """True once nothing spent is still missing: forgettable."""
        self.refill(limit, now)
        return (self.bytes >= limit.update_bytes * self.share * BUDGET_SECONDS
                and self.changes >= limit.update_changes * self.share * BUDGET_SECONDS)

    @staticmethod
    def over_budget(limit: RateLimit, shared: Allowance | None = None) -> str:
        """The ``ERROR rate_limit`` message for an update a session's allowance refused, or
        (``shared``) the allowance its address's sessions share."""
        if shared is not None:
            whose = (f"shared by every session from this client's network address "
                     f"({shared.share:g} x ")
            end = ")"
        else:
            whose, end = "", ""
        return (f"over the update budget {whose}{limit.update_bytes:g} bytes/s and "
                f"{limit.update_changes:g} changes/s{end} (bursts of {BUDGET_SECONDS:g} s): "
                f"the update is refused, its changes rolled back; send less")


#: Seconds of schema budget (HELLO, SCHEMA: every frame but UPDATE and PING) one address may
#: spend at once: 2 MiB at the default rate, twice the largest HELLO (1 MiB; a bucket
#: smaller than a frame would never pass it).
SCHEMA_BURST_SECONDS: Final = 2.0


class _Address:
    __slots__ = ("schema", "stamp", "updates")

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.updates = (Allowance(limit, now, limit.address_budgets)
                        if limit.address_budgets else None)
        self.schema = limit.schema_bytes * SCHEMA_BURST_SECONDS
        self.stamp = now

    def refill(self, limit: RateLimit, now: float) -> None:
        if now > self.stamp:
            self.schema = min(limit.schema_bytes * SCHEMA_BURST_SECONDS,
                              self.schema + (now - self.stamp) * limit.schema_bytes)
            self.stamp = now


class AddressTable:
    """What every session and connection of one network address shares (DESIGN §8: a cost
    is charged to the client that makes it, and an attacker is one address however many
    sockets it opens): :attr:`RateLimit.address_budgets` session update budgets, one
    :class:`Allowance` that every update of the address's sessions also pays; and
    :attr:`RateLimit.schema_bytes` bytes a second of every frame but UPDATE and PING — the
    HELLOs and SCHEMAs that carry schemas, and anything undecodable (bursts of
    :data:`SCHEMA_BURST_SECONDS`), paid *before* the frame is decoded — decoding and
    checking a 1 MB schema takes the loop 35-50 ms, and a HELLO comes from a connection with
    no session to charge. Addresses are :func:`~rtecs_server.sessions.address_key` keys;
    None (a transport that names none) pays nothing. ``limit`` None: nothing is limited.
    An address is forgotten once its budgets are full again and it holds no session
    (:meth:`forget_idle`), so memory follows the addresses active in the last seconds."""

    __slots__ = ("_addresses", "rate_limit")

    def __init__(self, rate_limit: RateLimit | None) -> None:
        self.rate_limit = rate_limit
        self._addresses: dict[str, _Address] = {}

    def __len__(self) -> int:
        return len(self._addresses)

    def _get(self, address: str, limit: RateLimit, now: float) -> _Address:
        state = self._addresses.get(address)
        if state is None:
            state = self._addresses[address] = _Address(limit, now)
        return state

    def updates(self, address: str | None, now: float) -> Allowance | None:
        """The update allowance the sessions of ``address`` share (None: no address, no
        limit, or no shared budget)."""
        limit = self.rate_limit
        if address is None or limit is None or not limit.address_budgets:
            return None
        return self._get(address, limit, now).updates

    def pay_schema(self, address: str | None, size: int, now: float) -> bool:
        """Take ``size`` bytes of a frame that is neither an UPDATE nor a PING (a HELLO, a
        SCHEMA, …) from ``address``'s schema budget; False (nothing taken) if they are not
        there."""
        limit = self.rate_limit
        if address is None or limit is None or not limit.schema_bytes:
            return True
        state = self._get(address, limit, now)
        state.refill(limit, now)
        if size > state.schema:
            return False
        state.schema -= size
        return True

    def over_schema_budget(self, address: str, size: int) -> str:
        """The ``ERROR rate_limit`` message for a frame :meth:`pay_schema` refused."""
        limit = self.rate_limit
        assert limit is not None
        return (f"over the schema budget of {limit.schema_bytes:g} bytes/s of HELLO and "
                f"SCHEMA frames from {address} (bursts of {SCHEMA_BURST_SECONDS:g} s): this "
                f"frame of {size} bytes is dropped unread; try again later")

    def forget_idle(self, now: float, live: Container[str]) -> None:
        """Forget the addresses not in ``live`` (holding no session) whose budgets are full."""
        limit = self.rate_limit
        if limit is None:
            self._addresses.clear()
            return
        for address, state in list(self._addresses.items()):
            if address in live:
                continue
            state.refill(limit, now)
            if (state.schema >= limit.schema_bytes * SCHEMA_BURST_SECONDS
                    and (state.updates is None or state.updates.full(limit, now))):
                del self._addresses[address]


class Verdict(enum.Enum):
    ADMIT = "admit"
    WARN = "warn"      # dropped: the first drop of an episode (send a non-fatal error)
    DROP = "drop"      # dropped quietly
    FATAL = "fatal"    # dropped: the abuse is sustained (end the session)


class TokenBucket:
    """One peer's bucket. ``take()`` is called once per frame with the current time."""

    __slots__ = ("dropped", "episode_start", "kicked", "last_drop", "stamp", "tokens")

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.tokens = float(limit.burst)
        self.stamp = now
        self.episode_start = 0.0
        self.last_drop: float | None = None
        self.dropped = 0
        self.kicked = False

    def take(self, limit: RateLimit, now: float) -> Verdict:
        tokens = self.tokens
        if now > self.stamp:
            tokens = min(float(limit.burst), tokens + (now - self.stamp) * limit.rate)
            self.stamp = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return Verdict.ADMIT
        self.tokens = tokens
        last = self.last_drop
        self.last_drop = now
        if last is None or now - last > EPISODE_QUIET:
            self.episode_start = now
            self.dropped = 1
            self.kicked = False
            return Verdict.WARN
        self.dropped += 1
        if not self.kicked and (self.dropped > limit.burst
                                or now - self.episode_start >= limit.grace):
            self.kicked = True
            return Verdict.FATAL
        return Verdict.DROP

    def idle(self, limit: RateLimit, now: float) -> bool:
        """True once the bucket is full again and no episode is running: forgettable."""
        full_at = self.stamp + (limit.burst - self.tokens) / limit.rate
        episode_over = self.last_drop is None or now - self.last_drop > EPISODE_QUIET
        return now >= full_at and episode_over


#: Bad-input warnings logged per peer per window; the rest go to debug level and are counted.
LOG_BURST: Final = 5
LOG_WINDOW: Final = 10.0
#: Seconds after its last frame that an unjoined peer's rate-limit state is forgotten.
PEER_IDLE: Final = 10.0


class _Peer:
    __slots__ = ("bucket", "last_frame", "log_start", "logged", "suppressed")

    def __init__(self, bucket: TokenBucket | None, now: float) -> None:
        self.bucket = bucket
        self.last_frame = now
        self.log_start = now
        self.logged = 0
        self.suppressed = 0


class PeerTable:
    """Per-peer rate limits (``rate_limit`` None: off) and log throttles."""

    __slots__ = ("_peers", "rate_limit")

    def __init__(self, rate_limit: RateLimit | None) -> None:
        self.rate_limit = rate_limit
        """The limit every peer's bucket follows (None: no rate limit)."""
        self._peers: dict[bytes, _Peer] = {}

    def __len__(self) -> int:
        return len(self._peers)

    def admit(self, peer: bytes, now: float) -> Verdict:
        """Take one token for a frame from ``peer`` (see :class:`TokenBucket
        <rtecs_server.ratelimit.TokenBucket>`); ADMIT when rate limiting is off."""
        state = self._peers.get(peer)
        limit = self.rate_limit
        if state is None:
            bucket = TokenBucket(limit, now) if limit is not None else None
            state = self._peers[peer] = _Peer(bucket, now)
        state.last_frame = now
        if state.bucket is None or limit is None:
            return Verdict.ADMIT
        return state.bucket.take(limit, now)

    def over_limit(self, peer: bytes, verdict: Verdict, now: float) -> str:
        """The ``ERROR rate_limit`` message for a WARN or FATAL verdict of :meth:`admit`."""
        limit = self.rate_limit
        state = self._peers.get(peer)
        assert limit is not None and state is not None and state.bucket is not None
        if verdict is Verdict.WARN:
            return (f"over the rate limit of {limit.rate:g} messages/s (burst {limit.burst}): "
                    f"messages are dropped; send less often")
        b = state.bucket
        return (f"over the rate limit of {limit.rate:g} messages/s for "
                f"{now - b.episode_start:.1f} s ({b.dropped} messages dropped): session ended")

    def log_bad_input(self, peer: bytes, now: float, fmt: str, *args: object) -> None:
        """Log one bad-input event of ``peer`` at warning level, or at debug level once it
        had :data:`LOG_BURST` in the current window (module docs)."""
        state = self._peers.get(peer)
        if state is None:
            log.warning(fmt, *args)
            return
        if now - state.log_start >= LOG_WINDOW:
            if state.suppressed:
                log.warning("peer %s: %d more bad-input messages in the last %.0f s (logged at "
                            "debug level)", peer.hex(), state.suppressed, now - state.log_start)
            state.log_start = now
            state.logged = 0
            state.suppressed = 0
        if state.logged < LOG_BURST:
            state.logged += 1
            log.warning(fmt, *args)
        else:
            state.suppressed += 1
            log.debug(fmt, *args)

    def forget_idle(self, now: float, joined: Container[bytes]) -> None:
        """Forget the peers not in ``joined`` that are quiet past :data:`PEER_IDLE` and whose
        bucket is full again."""
        limit = self.rate_limit
        for peer, state in list(self._peers.items()):
            if peer in joined or now - state.last_frame < PEER_IDLE:
                continue
            if limit is None or state.bucket is None or state.bucket.idle(limit, now):
                del self._peers[peer]
