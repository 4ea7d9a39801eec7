"""Backoff with full jitter, and what each verdict does to the outbox row."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from gateway.deliver.classify import Action, Verdict
from gateway.deliver.retry import Backoff, settlement
from gateway.security.tokens import SealedToken
from gateway.store.records import Claim, Settlement

NOW = 1_700_000_000.0


def make_claim(**changes: object) -> Claim:
    claim = Claim(
        delivery_id=7,
        tenant="acme",
        key="order-1",
        sealed=SealedToken("k1", b"\x00" * 40),
        deadline=NOW + 3_600.0,
        attempt=1,
        ambiguous=False,
        job_json=None,
        metadata_json=None,
        event_id="ev-1",
        source="api",
        status="succeeded",
        data=b"{}",
        received_at=NOW - 5.0,
    )
    return replace(claim, **changes)  # type: ignore[arg-type]


# -- Backoff ---------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 8, 12, 40, 1_000])
def test_full_jitter_stays_within_zero_and_the_capped_ceiling(attempt: int) -> None:
    backoff = Backoff(base_s=0.5, cap_s=60.0)
    rng = random.Random(attempt)
    ceiling = min(60.0, 0.5 * 2 ** (attempt - 1))
    draws = [backoff.delay(attempt, rng) for _ in range(2_000)]
    assert all(0.0 <= d <= ceiling for d in draws)
    # full jitter: the draws spread over the whole range, not bunched near the ceiling
    assert min(draws) < 0.05 * ceiling
    assert max(draws) > 0.95 * ceiling


def test_ceiling_doubles_per_attempt_then_stays_at_the_cap() -> None:
    backoff = Backoff(base_s=1.0, cap_s=100.0)
    rng = random.Random(42)
    observed = [max(backoff.delay(a, rng) for _ in range(3_000)) for a in range(1, 11)]
    expected = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 100.0, 100.0, 100.0]
    for seen, ceiling in zip(observed, expected, strict=True):
        assert 0.97 * ceiling < seen <= ceiling


def test_attempt_zero_or_negative_uses_the_base_ceiling() -> None:
    backoff = Backoff(base_s=2.0, cap_s=100.0)
    rng = random.Random(1)
    assert all(0.0 <= backoff.delay(a, rng) <= 2.0 for a in (0, -3) for _ in range(500))


def test_a_backoff_longer_than_the_time_left_is_drawn_within_it_and_keeps_retrying() -> None:
    """A 503 at attempt 9 with 100 s left: the ceiling is 256 s, and drawn over it most delays
    landed past the deadline, so the wait expired while there was time for a retry."""
    backoff = Backoff(base_s=1.0, cap_s=300.0)
    rng = random.Random(3)
    claim = make_claim(deadline=NOW + 100.0)
    draws = [backoff.delay(9, rng, within_s=claim.deadline - NOW) for _ in range(2_000)]
    outcomes = {
        settlement(Verdict(Action.RETRY, "http_503"), claim, 503, NOW, d).state for d in draws
    }
    assert outcomes == {"pending"}
    assert min(draws) < 5.0  # still full jitter, over the time left
    assert max(draws) > 95.0


def test_no_time_left_draws_no_delay() -> None:
    assert Backoff(base_s=1.0, cap_s=300.0).delay(3, random.Random(1), within_s=-2.0) == 0.0


def test_backoff_is_reproducible_with_a_seeded_rng() -> None:
    backoff = Backoff(base_s=1.0, cap_s=30.0)
    first = [backoff.delay(a, random.Random(9)) for a in range(1, 20)]
    second = [backoff.delay(a, random.Random(9)) for a in range(1, 20)]
    assert first == second


# -- settlement ------------------------------------------------------------------------------


def test_delivered_settles_as_delivered() -> None:
    result = settlement(Verdict(Action.DELIVERED, "http_204"), make_claim(), 204, NOW, 5.0)
    assert result == Settlement("delivered", "http_204", 204)


def test_unconfirmed_settles_as_delivered_unconfirmed() -> None:
    verdict = Verdict(Action.UNCONFIRMED, "http_404_after_ambiguous_attempt")
    result = settlement(verdict, make_claim(ambiguous=True), 404, NOW, 5.0)
    assert result == Settlement("delivered_unconfirmed", "http_404_after_ambiguous_attempt", 404)


@pytest.mark.parametrize(
    ("verdict", "status", "claim_check"),
    [
        (Verdict(Action.DEAD, "http_404"), 404, False),
        (Verdict(Action.TOO_LARGE, "payload_too_large"), 413, True),
        (Verdict(Action.DEAD, "token_key_missing"), None, False),
    ],
)
def test_dead_and_too_large_by_reference_settle_as_dead_with_reason(
    verdict: Verdict, status: int | None, claim_check: bool
) -> None:
    result = settlement(verdict, make_claim(claim_check=claim_check), status, NOW, 5.0)
    assert result == Settlement("dead", verdict.reason, status)
    assert result.retry_at is None


def test_413_for_an_inline_payload_retries_now_by_reference() -> None:
    verdict = Verdict(Action.TOO_LARGE, "payload_too_large")
    result = settlement(verdict, make_claim(), 413, NOW, 5.0)
    assert result == Settlement("pending", "payload_too_large", 413, retry_at=NOW, claim_check=True)


def test_retry_stays_pending_until_now_plus_delay() -> None:
    result = settlement(
        Verdict(Action.RETRY, "http_503", ambiguous=True), make_claim(), 503, NOW, 12.5
    )
    assert result == Settlement(
        "pending", "http_503", 503, retry_at=NOW + 12.5, ambiguous=True, refund_attempt=False
    )


def test_retry_after_connect_failure_is_pending_and_not_ambiguous() -> None:
    verdict = Verdict(Action.RETRY, "connect_error", ambiguous=False)
    result = settlement(verdict, make_claim(), None, NOW, 3.0)
    assert result.state == "pending"
    assert result.retry_at == NOW + 3.0
    assert result.ambiguous is False
    assert result.refund_attempt is False


@pytest.mark.parametrize(
    "verdict",
    [
        Verdict(Action.THROTTLED, "http_429", retry_after_s=30.0),
        Verdict(Action.AUTH_PAUSE, "http_401"),
        Verdict(Action.AUTH_PAUSE, "http_403"),
    ],
)
def test_throttled_and_auth_pause_refund_the_attempt(verdict: Verdict) -> None:
    status = int(verdict.reason.removeprefix("http_"))
    result = settlement(verdict, make_claim(), status, NOW, 30.0)
    assert result == Settlement(
        "pending", verdict.reason, status, retry_at=NOW + 30.0, refund_attempt=True
    )


@pytest.mark.parametrize(
    "verdict",
    [
        Verdict(Action.RETRY, "http_502", ambiguous=True),
        Verdict(Action.RETRY, "connect_error"),
        Verdict(Action.THROTTLED, "http_429", retry_after_s=120.0),
        Verdict(Action.AUTH_PAUSE, "http_401"),
    ],
)
def test_retry_landing_after_the_deadline_expires(verdict: Verdict) -> None:
    claim = make_claim(deadline=NOW + 60.0)
    result = settlement(verdict, claim, 502, NOW, 61.0)
    assert result.state == "expired"
    assert result.reason == f"wait_expired_after_{verdict.reason}"
    assert result.retry_at is None
    assert result.refund_attempt is False
    assert result.ambiguous is verdict.ambiguous


def test_retry_landing_exactly_on_the_deadline_expires() -> None:
    claim = make_claim(deadline=NOW + 60.0)
    result = settlement(Verdict(Action.RETRY, "http_500", ambiguous=True), claim, 500, NOW, 60.0)
    assert result.state == "expired"


def test_retry_landing_just_before_the_deadline_stays_pending() -> None:
    claim = make_claim(deadline=NOW + 60.0)
    result = settlement(Verdict(Action.RETRY, "http_500", ambiguous=True), claim, 500, NOW, 59.9)
    assert result.state == "pending"
    assert result.retry_at == NOW + 59.9


def test_expired_after_an_ambiguous_attempt_keeps_the_ambiguity() -> None:
    claim = make_claim(deadline=NOW + 1.0)
    result = settlement(Verdict(Action.RETRY, "timeout", ambiguous=True), claim, None, NOW, 5.0)
    assert result == Settlement("expired", "wait_expired_after_timeout", None, None, True)


@pytest.mark.parametrize("action", [Action.DELIVERED, Action.DEAD, Action.UNCONFIRMED])
def test_final_verdicts_ignore_the_deadline(action: Action) -> None:
    claim = make_claim(deadline=NOW - 10.0)  # already past: a final answer still counts
    result = settlement(Verdict(action, "r"), claim, 200, NOW, 5.0)
    assert result.state != "expired"
    assert result.state != "pending"
