"""The exact sliding window (invariant 5): never over the limit, and never under it."""

from __future__ import annotations

import random

import pytest

from gateway.clock import FakeClock
from gateway.deliver.limiter import SlidingWindow


def drive_randomly(window: SlidingWindow, clock: FakeClock, rng: random.Random) -> list[float]:
    """Bursty demand at random instants; returns the accepted send times."""
    accepted: list[float] = []
    for _ in range(2_000):
        clock.advance(rng.choice([0.0, rng.uniform(0, 0.5), rng.expovariate(1.0), 7.3]))
        now = clock()
        wanted = rng.randint(1, window.limit + 2)
        granted = min(wanted, window.available(now))
        if granted:
            window.record(now, granted)
            accepted += [now] * granted
    return accepted


@pytest.mark.parametrize(
    ("limit", "window_s", "seed"),
    [(60, 60.0, 1), (60, 60.5, 2), (5, 10.0, 3), (1, 2.5, 4), (7, 3.0, 5), (3, 0.75, 6)],
)
def test_no_interval_of_window_s_holds_more_than_limit_sends(
    limit: int, window_s: float, seed: int
) -> None:
    clock = FakeClock()
    sent = drive_randomly(SlidingWindow(limit, window_s), clock, random.Random(seed))

    assert len(sent) > 3 * limit  # the schedule really pressed against the limit
    for i in range(len(sent) - limit):
        assert sent[i + limit] - sent[i] >= window_s, (i, sent[i], sent[i + limit])


def test_random_schedule_is_refused_sometimes_and_accepted_sometimes() -> None:
    clock = FakeClock()
    window = SlidingWindow(5, 10.0)
    rng = random.Random(7)
    refused = accepted = 0
    for _ in range(500):
        clock.advance(rng.uniform(0, 1.0))
        if window.available(clock()):
            window.record(clock())
            accepted += 1
        else:
            refused += 1
    assert accepted > 0
    assert refused > 0


@pytest.mark.parametrize(("limit", "window_s", "tick_s"), [(60, 60.0, 1.0), (5, 10.0, 0.25)])
def test_backlog_drains_exactly_limit_sends_per_window(
    limit: int, window_s: float, tick_s: float
) -> None:
    clock = FakeClock(start=1_700_000_000.0)
    start = clock()
    window = SlidingWindow(limit, window_s)
    sent: list[float] = []
    windows = 10
    while clock() < start + windows * window_s:
        granted = window.available(clock())  # constant demand: always more waiting than allowed
        window.record(clock(), granted)
        sent += [clock()] * granted
        clock.advance(tick_s)

    per_window = [0] * windows
    for t in sent:
        per_window[int((t - start) // window_s)] += 1
    assert per_window == [limit] * windows


def test_backlog_drains_at_full_rate_when_sleeping_until_next_free_at() -> None:
    clock = FakeClock()
    start = clock()
    window = SlidingWindow(60, 60.0)
    sent: list[float] = []
    while len(sent) < 600:
        now = clock()
        granted = window.available(now)
        window.record(now, granted)
        sent += [now] * granted
        clock.advance(window.next_free_at(now) - now)
    assert len(sent) == 600
    assert sent[-1] - start == pytest.approx(9 * 60.0)  # ten full windows, no idle gap


def test_next_free_at_is_now_while_there_is_room() -> None:
    window = SlidingWindow(3, 60.0, history=[100.0, 110.0])
    assert window.next_free_at(120.0) == 120.0


def test_next_free_at_is_the_exact_instant_a_slot_frees() -> None:
    window = SlidingWindow(3, 60.0)
    for t in (100.0, 110.0, 125.0):
        window.record(t)

    assert window.available(130.0) == 0
    assert window.next_free_at(130.0) == 160.0  # the oldest send leaves the window
    assert window.available(159.999) == 0
    assert window.available(160.0) == 1
    assert window.next_free_at(160.0) == 160.0
    window.record(160.0)
    assert window.next_free_at(160.0) == 170.0


def test_next_free_at_with_several_sends_at_one_instant() -> None:
    window = SlidingWindow(4, 10.0)
    window.record(0.0, 3)
    window.record(2.0)
    assert window.next_free_at(5.0) == 10.0
    assert window.available(9.999) == 0
    assert window.available(10.0) == 3


def test_next_free_at_is_exact_for_random_histories() -> None:
    rng = random.Random(11)
    for _ in range(500):
        limit = rng.randint(1, 10)
        window_s = rng.uniform(0.5, 120.0)
        now = 1_700_000_000.0 + rng.uniform(0, 1_000)
        history = [now - rng.uniform(0, window_s * 0.99) for _ in range(limit)]
        window = SlidingWindow(limit, window_s, history)
        free_at = window.next_free_at(now)
        assert free_at > now
        assert window.available(free_at - 1e-3) == 0  # probe earlier first: time only moves on
        assert window.available(free_at) >= 1


def test_history_restores_the_window_after_a_restart() -> None:
    rng = random.Random(3)
    before = SlidingWindow(5, 60.0)
    now = 1_000.0
    sends: list[float] = []
    for _ in range(40):
        now += rng.uniform(0, 20)
        if before.available(now):
            before.record(now)
            sends.append(now)

    rng.shuffle(sends)  # the store need not return them in order
    after = SlidingWindow(5, 60.0, history=sends)

    for probe in (now, now + 1.0, now + 30.0, now + 59.0, now + 61.0):
        assert after.available(probe) == before.available(probe)
        assert after.next_free_at(probe) == before.next_free_at(probe)


def test_restored_full_window_refuses_until_history_ages_out() -> None:
    window = SlidingWindow(2, 60.0, history=[10.0, 20.0, -100.0])
    assert window.available(30.0) == 0
    with pytest.raises(ValueError, match="more sends than the window allows"):
        window.record(30.0)
    assert window.next_free_at(30.0) == 70.0
    assert window.available(80.0) == 2


def test_record_beyond_availability_raises_and_changes_nothing() -> None:
    window = SlidingWindow(3, 60.0)
    window.record(0.0, 2)
    with pytest.raises(ValueError, match="more sends than the window allows"):
        window.record(1.0, 2)
    assert window.available(1.0) == 1
    window.record(1.0)
    with pytest.raises(ValueError, match="more sends than the window allows"):
        window.record(1.0)


def test_record_more_than_limit_at_once_raises() -> None:
    window = SlidingWindow(3, 60.0)
    with pytest.raises(ValueError, match="more sends than the window allows"):
        window.record(0.0, 4)
    assert window.available(0.0) == 3


@pytest.mark.parametrize(("limit", "window_s"), [(0, 60.0), (-1, 60.0), (1, 0.0), (1, -5.0)])
def test_invalid_limit_or_window_is_rejected(limit: int, window_s: float) -> None:
    with pytest.raises(ValueError, match="limit must be"):
        SlidingWindow(limit, window_s)


def test_a_slot_is_held_from_when_its_request_ended() -> None:
    """Taken when the row was claimed, a slot freed a window after the claim, though the
    request left later (a slow preparation or connect) and the server counted it then: two
    requests within one window at a limit of one."""
    window = SlidingWindow(1, 10.0)
    window.reserve(100.0)
    assert window.available(105.0) == 0
    assert window.next_free_at(105.0) == 115.0  # at the earliest: it may end any moment
    window.complete(103.0)  # the request reached the server by 103
    assert window.available(110.5) == 0
    assert window.next_free_at(110.5) == 113.0
    assert window.available(113.0) == 1


def test_a_reserved_slot_that_never_left_is_free_again() -> None:
    window = SlidingWindow(2, 10.0, history=[100.0])
    window.reserve(101.0)
    assert window.available(101.0) == 0
    assert window.next_free_at(101.0) == 110.0  # the remembered send expires first
    window.release()
    assert window.available(101.0) == 1
    with pytest.raises(ValueError, match="more sends"):
        window.reserve(101.0, 2)
