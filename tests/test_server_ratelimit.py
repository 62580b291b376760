"""The per-client token bucket (pure: explicit times, no clock)."""

from __future__ import annotations

import pytest

from rtecs_server.ratelimit import EPISODE_QUIET, RateLimit, TokenBucket, Verdict

pytestmark = pytest.mark.timeout(10)


def take(bucket: TokenBucket, limit: RateLimit, now: float, n: int) -> list[Verdict]:
    return [bucket.take(limit, now) for _ in range(n)]


def test_burst_then_refill_at_the_rate() -> None:
    limit = RateLimit(rate=10, burst=5)
    bucket = TokenBucket(limit, 0.0)
    assert take(bucket, limit, 0.0, 5) == [Verdict.ADMIT] * 5
    assert bucket.take(limit, 0.0) is Verdict.WARN           # the first drop warns
    assert bucket.take(limit, 0.05) is Verdict.DROP          # half a token: still dropped
    assert bucket.take(limit, 0.1) is Verdict.ADMIT          # one token refilled
    assert take(bucket, limit, 10.0, 5) == [Verdict.ADMIT] * 5  # never more than the burst
    assert bucket.take(limit, 10.0) is not Verdict.ADMIT


def test_a_steady_client_under_the_rate_is_never_dropped() -> None:
    limit = RateLimit(rate=200, burst=400)
    bucket = TokenBucket(limit, 0.0)
    verdicts = {bucket.take(limit, i / 190) for i in range(5000)}  # 190 msgs/s for 26 s
    assert verdicts == {Verdict.ADMIT}


def test_dropping_more_than_the_burst_in_one_episode_is_fatal_once() -> None:
    limit = RateLimit(rate=10, burst=5)
    bucket = TokenBucket(limit, 0.0)
    verdicts = take(bucket, limit, 0.0, 5 + 6 + 20)
    assert verdicts[:5] == [Verdict.ADMIT] * 5
    assert verdicts[5] is Verdict.WARN             # drop 1
    assert verdicts[6:10] == [Verdict.DROP] * 4    # drops 2-5
    assert verdicts[10] is Verdict.FATAL           # drop 6: more than the burst
    assert set(verdicts[11:]) == {Verdict.DROP}    # fatal is reported once per episode


def test_sustained_moderate_excess_is_fatal_after_the_grace_period() -> None:
    limit = RateLimit(rate=10, burst=20, grace=2.0)
    bucket = TokenBucket(limit, 0.0)
    t, verdicts = 0.0, []
    while t < 40.0:          # 12 msgs/s: 2 a second over the limit, forever
        verdicts.append((t, bucket.take(limit, t)))
        t += 1 / 12
    fatal = [t for t, v in verdicts if v is Verdict.FATAL]
    first_drop = next(t for t, v in verdicts if v is Verdict.WARN)
    assert len(fatal) == 1 and fatal[0] - first_drop == pytest.approx(2.0, abs=0.2)


def test_an_episode_ends_after_a_quiet_second_and_the_next_one_warns_again() -> None:
    limit = RateLimit(rate=1, burst=1)
    bucket = TokenBucket(limit, 0.0)
    assert take(bucket, limit, 0.0, 2) == [Verdict.ADMIT, Verdict.WARN]
    t = 0.5 + EPISODE_QUIET  # no drop for over a second (and one token back)
    assert take(bucket, limit, t, 2) == [Verdict.ADMIT, Verdict.WARN]


def test_idle_once_full_again() -> None:
    limit = RateLimit(rate=10, burst=10)
    bucket = TokenBucket(limit, 0.0)
    take(bucket, limit, 0.0, 12)
    assert not bucket.idle(limit, 0.5)
    assert bucket.idle(limit, 1.0 + EPISODE_QUIET + 0.01)


@pytest.mark.parametrize(("text", "expected"), [
    ("200", RateLimit(200, 400)), ("50:70", RateLimit(50, 70)), ("0", None),
    ("2.5", RateLimit(2.5, 5)),
])
def test_parse(text: str, expected: RateLimit | None) -> None:
    assert RateLimit.parse(text) == expected


@pytest.mark.parametrize("text", ["fast", "10:x", "-5", "10:0"])
def test_parse_refuses_nonsense(text: str) -> None:
    with pytest.raises(ValueError):
        RateLimit.parse(text)
