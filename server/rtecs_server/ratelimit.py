"""Per-client message rate limiting: a token bucket per peer, with a notion of *sustained* abuse.

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
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

__all__ = ["EPISODE_QUIET", "RateLimit", "TokenBucket", "Verdict"]

#: Seconds without a dropped frame that end an episode of drops.
EPISODE_QUIET: Final = 1.0


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``rate`` frames per second with bursts of up to ``burst``; over it for ``grace``
    seconds (or by more than ``burst`` dropped frames) ends the session."""

    rate: float = 200.0  # frames per second, sustained
    burst: int = 400     # frames admitted at once above the rate
    grace: float = 2.0   # seconds over the limit before the session ends

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"rate must be > 0 messages/s, got {self.rate}")
        if self.burst < 1:
            raise ValueError(f"burst must be ≥ 1 message, got {self.burst}")
        if not self.grace > 0:
            raise ValueError(f"grace must be > 0 s, got {self.grace}")

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
