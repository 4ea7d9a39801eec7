"""``sleep_or_wake``: woken by its event, ended by its timeout, and never deaf to a cancel."""

from __future__ import annotations

import asyncio

import pytest

from gateway.wakeable import sleep_or_wake


async def test_the_event_cuts_the_sleep_short() -> None:
    wake = asyncio.Event()
    sleeping = asyncio.create_task(sleep_or_wake(wake, 60))
    await asyncio.sleep(0)
    wake.set()
    await asyncio.wait_for(sleeping, 1)


async def test_the_sleep_ends_after_its_time_without_the_event() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(sleep_or_wake(asyncio.Event(), 0.05), 1)
    assert loop.time() - started >= 0.05


async def test_a_cancel_that_comes_as_the_event_is_set_still_cancels() -> None:
    wake = asyncio.Event()
    sleeping = asyncio.create_task(sleep_or_wake(wake, 60))
    await asyncio.sleep(0)  # asleep
    wake.set()  # in the same turn of the loop: the owner stops it as work arrives
    sleeping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(sleeping, 1)
