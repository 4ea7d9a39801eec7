"""What an answer from ``POST /api/job/resume`` means (DESIGN 6). Pure: no I/O, no clock."""

from __future__ import annotations

import email.utils
from dataclasses import dataclass
from datetime import UTC
from enum import Enum

DEFAULT_RETRY_AFTER_S = 60.0
MAX_RETRY_AFTER_S = 3600.0
"""Workato's limit is per minute: a longer ``Retry-After`` is a broken header or proxy, and
taken at its word it paused the credential's tenants for years (a restart keeps pauses)."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """One resume request as the client saw it: a status, or an error and whether it left."""

    status: int | None
    retry_after: str | None = None
    error: str | None = None
    sent: bool = True


class Action(Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    THROTTLED = "throttled"  # 429: wait Retry-After, pause the whole tenant
    AUTH_PAUSE = "auth_pause"  # 401/403 (or a redirect): the tenant's, not the delivery's
    TOO_LARGE = "too_large"
    DEAD = "dead"
    UNCONFIRMED = "delivered_unconfirmed"
    UNSENT = "unsent"  # stopped before the request left: handed back, the attempt refunded


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    reason: str
    ambiguous: bool = False  # this attempt may have reached Workato
    retry_after_s: float | None = None


def classify(attempt: Attempt, earlier_ambiguous: bool, now: float) -> Verdict:
    """Map an attempt to an action; ``earlier_ambiguous`` turns "unknown token" into success."""
    status = attempt.status
    if status is None:
        reason = attempt.error or "transport_error"
        return Verdict(Action.RETRY, reason, ambiguous=attempt.sent)
    if 200 <= status < 300:
        return Verdict(Action.DELIVERED, f"http_{status}")
    if status == 429:
        delay = parse_retry_after(attempt.retry_after, now)
        return Verdict(Action.THROTTLED, "http_429", retry_after_s=delay)
    if status in (401, 403) or 300 <= status < 400:  # a redirect: the base URL is wrong
        return Verdict(Action.AUTH_PAUSE, f"http_{status}")
    if status == 413:
        return Verdict(Action.TOO_LARGE, "payload_too_large")
    if status >= 500 or status == 408:
        return Verdict(Action.RETRY, f"http_{status}", ambiguous=True)
    if earlier_ambiguous:
        return Verdict(Action.UNCONFIRMED, f"http_{status}_after_ambiguous_attempt")
    return Verdict(Action.DEAD, f"http_{status}")


def parse_retry_after(value: str | None, now: float) -> float:
    """Seconds to wait from a ``Retry-After`` of delta-seconds or an HTTP date, at most
    ``MAX_RETRY_AFTER_S``."""
    if not value:
        return DEFAULT_RETRY_AFTER_S
    value = value.strip()
    if value.isascii() and value.isdigit():  # "²".isdigit() is True, float("²") fails
        return min(float(value), MAX_RETRY_AFTER_S)  # 400 digits are inf
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER_S
    if when.tzinfo is None:  # asctime and "-0000" forms carry no zone: HTTP dates are GMT, and
        when = when.replace(tzinfo=UTC)  # read as local time they were off by the host's offset
    return min(max(0.0, when.timestamp() - now), MAX_RETRY_AFTER_S)
