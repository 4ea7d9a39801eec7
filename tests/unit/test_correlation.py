"""plan_events: a batch decided in memory as if each event were recorded alone, in order."""

from __future__ import annotations

from gateway.store.correlation import DeliveryRow, LatestWait, plan_events
from gateway.store.records import Acceptance, NewEvent

NOW = 1_000.0


def event(event_id: str, key: str, ttl: float = 60.0) -> NewEvent:
    return NewEvent("acme", "kafka", event_id, key, "succeeded", b"{}", None, ttl)


def test_each_outcome_and_the_ids_sqlite_would_give() -> None:
    latest = {
        ("acme", "open"): LatestWait(7, "open", NOW + 10),
        ("acme", "expired"): LatestWait(8, "open", NOW),  # expires_at <= now is too late
        ("acme", "done"): LatestWait(9, "resolved", NOW + 10),
    }
    events = [event("a", "open"), event("b", "none", ttl=5), event("c", "expired")]
    plan = plan_events([*events, event("d", "done")], {}, latest, NOW, 100, 40)
    assert plan.acceptances == [
        Acceptance("matched", 41),
        Acceptance("buffered"),
        Acceptance("late"),
        Acceptance("late"),
    ]
    assert [(r.id, r.state, r.wait_id, r.buffer_until) for r in plan.rows] == [
        (101, "matched", 7, None),
        (102, "buffered", None, NOW + 5),
        (103, "late", None, None),
        (104, "late", None, None),
    ]
    assert plan.deliveries == [DeliveryRow(41, "acme", 7, 101, NOW + 10)]


def test_repeats_are_duplicates_and_a_wait_is_taken_once() -> None:
    known = {("acme", "kafka", "old"): 5}
    latest = {("acme", "k"): LatestWait(7, "open", NOW + 10)}
    batch = [event("old", "k"), event("e1", "k"), event("e1", "k"), event("e2", "k")]
    plan = plan_events(batch, known, latest, NOW, 10, 0)
    assert [a.outcome for a in plan.acceptances] == ["duplicate", "matched", "duplicate", "late"]
    assert plan.duplicates == {5: 1, 11: 1}
    assert [(r.id, r.event.event_id) for r in plan.rows] == [(11, "e1"), (12, "e2")]
    assert len(plan.deliveries) == 1


def test_an_event_for_one_wait_matches_only_that_wait() -> None:
    """A poll's result answers the wait that watched the job: another wait of the key, or
    none, makes it late (never buffered for a wait to come)."""
    latest = {("acme", "k"): LatestWait(7, "open", NOW + 10)}
    batch = [
        event("other", "k")._replace(wait_id=6),  # the key's wait was replaced
        event("gone", "none")._replace(wait_id=5),  # the key has no wait any more
        event("own", "k")._replace(wait_id=7),
    ]
    plan = plan_events(batch, {}, latest, NOW, 0, 0)
    assert [a.outcome for a in plan.acceptances] == ["late", "late", "matched"]
    assert [(r.state, r.wait_id) for r in plan.rows] == [
        ("late", None),
        ("late", None),
        ("matched", 7),
    ]
