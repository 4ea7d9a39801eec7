"""Where retries are decided: backoff with full jitter, bounded by the wait's deadline."""

from __future__ import annotations

import random
from dataclasses import dataclass

from gateway.deliver.classify import Action, Verdict
from gateway.store.records import Claim, Settlement


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**(attempt-1))]."""

    base_s: float
    cap_s: float

    def delay(self, attempt: int, rng: random.Random, within_s: float = float("inf")) -> float:
        """A delay drawn below ``within_s`` too (the time left before the wait's deadline):
        a draw past the deadline would give up on a wait that still had time for a retry."""
        ceiling = min(self.cap_s, self.base_s * 2 ** min(max(attempt - 1, 0), 32), within_s)
        return rng.uniform(0.0, max(ceiling, 0.0))


def settlement(
    verdict: Verdict, claim: Claim, status: int | None, now: float, delay_s: float
) -> Settlement:
    """The store update for an attempt; ``delay_s`` is when a retry would be tried again."""
    action = verdict.action
    if action is Action.DELIVERED:
        return Settlement("delivered", verdict.reason, status)
    if action is Action.UNCONFIRMED:
        return Settlement("delivered_unconfirmed", verdict.reason, status)
    if action is Action.TOO_LARGE and not claim.claim_check:
        # Workato's limit may be below ours: send the payload by reference, right away.
        return Settlement("pending", verdict.reason, status, now, claim_check=True)
    if action in (Action.DEAD, Action.TOO_LARGE):
        return Settlement("dead", verdict.reason, status)
    refund = action in (Action.THROTTLED, Action.AUTH_PAUSE, Action.UNSENT)
    retry_at = now + delay_s
    if retry_at >= claim.deadline:
        return Settlement(
            "expired", f"wait_expired_after_{verdict.reason}", status, None, verdict.ambiguous
        )
    return Settlement("pending", verdict.reason, status, retry_at, verdict.ambiguous, refund)
