"""Every row of the resume-response classification (DESIGN 6)."""

from __future__ import annotations

import email.utils
import time

import pytest

from gateway.deliver.classify import (
    DEFAULT_RETRY_AFTER_S,
    MAX_RETRY_AFTER_S,
    Action,
    Attempt,
    Verdict,
    classify,
    parse_retry_after,
)

NOW = 1_700_000_000.0


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
@pytest.mark.parametrize("earlier_ambiguous", [False, True])
def test_2xx_is_delivered(status: int, earlier_ambiguous: bool) -> None:
    verdict = classify(Attempt(status), earlier_ambiguous, NOW)
    assert verdict == Verdict(Action.DELIVERED, f"http_{status}")


def test_429_with_delta_seconds_is_throttled_for_that_long() -> None:
    verdict = classify(Attempt(429, retry_after="17"), False, NOW)
    assert verdict.action is Action.THROTTLED
    assert verdict.reason == "http_429"
    assert verdict.retry_after_s == 17.0
    assert not verdict.ambiguous


@pytest.mark.parametrize(
    "value", ["999999999999", "9" * 400, "Fri, 31 Dec 9999 23:59:59 GMT", str(3600 * 5)]
)
def test_an_absurd_retry_after_is_capped(value: str) -> None:
    """Taken at its word, it paused every tenant of the credential for years, and a restart
    keeps pauses; the 400 digits read as infinity."""
    assert MAX_RETRY_AFTER_S == 3600.0
    assert classify(Attempt(429, retry_after=value), False, NOW).retry_after_s == 3600.0
    assert parse_retry_after("3599", NOW) == 3599.0


def test_429_retry_after_tolerates_surrounding_whitespace() -> None:
    assert classify(Attempt(429, retry_after=" 5 "), False, NOW).retry_after_s == 5.0


def test_429_retry_after_zero_means_retry_now() -> None:
    assert classify(Attempt(429, retry_after="0"), False, NOW).retry_after_s == 0.0


def test_429_with_http_date_waits_until_that_date() -> None:
    date = email.utils.formatdate(NOW + 90, usegmt=True)  # "Tue, 14 Nov 2023 22:14:50 GMT"
    verdict = classify(Attempt(429, retry_after=date), False, NOW)
    assert verdict.action is Action.THROTTLED
    assert verdict.retry_after_s == 90.0


def test_429_with_http_date_in_the_past_waits_zero() -> None:
    date = email.utils.formatdate(NOW - 30, usegmt=True)
    assert classify(Attempt(429, retry_after=date), False, NOW).retry_after_s == 0.0


@pytest.mark.parametrize("header", [None, ""])
def test_429_without_retry_after_uses_the_default(header: str | None) -> None:
    verdict = classify(Attempt(429, retry_after=header), False, NOW)
    assert verdict.action is Action.THROTTLED
    assert verdict.retry_after_s == DEFAULT_RETRY_AFTER_S == 60.0


@pytest.mark.parametrize("header", ["soon", "-5", "1.5", "Tuesday", "   ", "\u00b2"])
def test_unparseable_retry_after_falls_back_to_the_default(header: str) -> None:
    assert parse_retry_after(header, NOW) == DEFAULT_RETRY_AFTER_S


def test_429_after_ambiguous_attempt_is_still_throttled() -> None:
    assert classify(Attempt(429, retry_after="3"), True, NOW).action is Action.THROTTLED


@pytest.mark.parametrize("status", [401, 403])
@pytest.mark.parametrize("earlier_ambiguous", [False, True])
def test_401_and_403_pause_the_tenant(status: int, earlier_ambiguous: bool) -> None:
    verdict = classify(Attempt(status), earlier_ambiguous, NOW)
    assert verdict == Verdict(Action.AUTH_PAUSE, f"http_{status}")


@pytest.mark.parametrize("status", [301, 302, 307, 308])
@pytest.mark.parametrize("earlier_ambiguous", [False, True])
def test_a_redirect_pauses_the_tenant(status: int, earlier_ambiguous: bool) -> None:
    """Not followed (it would carry the token elsewhere): the base URL is wrong."""
    verdict = classify(Attempt(status), earlier_ambiguous, NOW)
    assert verdict == Verdict(Action.AUTH_PAUSE, f"http_{status}")


@pytest.mark.parametrize("earlier_ambiguous", [False, True])
def test_413_is_too_large(earlier_ambiguous: bool) -> None:
    verdict = classify(Attempt(413), earlier_ambiguous, NOW)
    assert verdict == Verdict(Action.TOO_LARGE, "payload_too_large")


@pytest.mark.parametrize("status", [500, 502, 503, 504, 599, 408])
def test_5xx_and_408_retry_and_are_ambiguous(status: int) -> None:
    verdict = classify(Attempt(status), False, NOW)
    assert verdict == Verdict(Action.RETRY, f"http_{status}", ambiguous=True)


def test_transport_error_after_the_request_left_is_an_ambiguous_retry() -> None:
    verdict = classify(Attempt(None, error="timeout", sent=True), False, NOW)
    assert verdict == Verdict(Action.RETRY, "timeout", ambiguous=True)


def test_connect_failure_is_a_retry_that_is_not_ambiguous() -> None:
    verdict = classify(Attempt(None, error="connect_error", sent=False), False, NOW)
    assert verdict == Verdict(Action.RETRY, "connect_error", ambiguous=False)


def test_transport_error_without_message_has_a_generic_reason() -> None:
    verdict = classify(Attempt(None, sent=True), False, NOW)
    assert verdict.action is Action.RETRY
    assert verdict.reason == "transport_error"


@pytest.mark.parametrize("status", [400, 404, 409, 410, 422])
def test_other_4xx_is_dead_with_the_status_as_reason(status: int) -> None:
    verdict = classify(Attempt(status), False, NOW)
    assert verdict == Verdict(Action.DEAD, f"http_{status}")


@pytest.mark.parametrize("status", [400, 404, 410, 422])
def test_other_4xx_after_an_ambiguous_attempt_is_delivered_unconfirmed(status: int) -> None:
    verdict = classify(Attempt(status), True, NOW)
    assert verdict.action is Action.UNCONFIRMED
    assert verdict.reason == f"http_{status}_after_ambiguous_attempt"


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Asia/Tokyo"])
def test_a_retry_after_date_with_no_zone_is_gmt_whatever_the_hosts_zone(
    zone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 9110's asctime form ("Sun Nov 14 22:13:20 2023") names no zone; read as local
    time it paused a tenant an hour in New York, and not at all in Tokyo."""
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        at = time.gmtime(NOW + 30)
        asctime = time.strftime("%a %b %d %H:%M:%S %Y", at)
        assert parse_retry_after(asctime, NOW) == 30.0
    finally:
        monkeypatch.undo()
        time.tzset()
