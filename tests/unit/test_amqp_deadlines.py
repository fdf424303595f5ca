"""Deadlines: asyncio.timeout_at semantics without a timer per section (Python 3.11+).

Every test runs in virtual time (:func:`tests.waiting.virtual_time`): the loop's clock jumps to the
next timer, so a deadline fires at exactly its time and a section that sleeps finishes at exactly
its time, whatever the machine's load."""

from __future__ import annotations

import asyncio

import pytest

from paota.brokers.amqp.deadlines import Deadlines
from tests.waiting import virtual_time


@virtual_time
async def test_a_section_past_its_deadline_raises_timeout_error() -> None:
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError), deadlines.at(started + 0.05):
        await asyncio.sleep(10)
    assert loop.time() - started == pytest.approx(0.05)
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0)  # the task is not cancelled any more


@virtual_time
async def test_sections_that_finish_in_time_are_not_cancelled() -> None:
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()

    async def section(delay_s: float) -> str:
        with deadlines.at(loop.time() + 0.5):
            await asyncio.sleep(delay_s)
        return "done"

    assert await asyncio.gather(*(section(0.0005 * i) for i in range(200))) == ["done"] * 200
    assert loop.time() == pytest.approx(0.0005 * 199)
    await asyncio.sleep(0.6)  # the single timer fires on an empty queue without harm
    assert not deadlines._queue


@virtual_time
async def test_one_late_section_expires_while_the_others_go_on() -> None:
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()

    async def section(delay_s: float) -> str:
        try:
            with deadlines.at(loop.time() + 0.1):
                await asyncio.sleep(delay_s)
        except TimeoutError:
            return "timeout"
        return "done"

    results = await asyncio.gather(section(0.01), section(5.0), section(0.02), section(5.0))
    assert list(results) == ["done", "timeout", "done", "timeout"]
    assert loop.time() == pytest.approx(0.1)


@virtual_time
async def test_an_earlier_deadline_after_a_later_one_is_kept() -> None:
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    long = asyncio.ensure_future(_sleep_within(deadlines, loop.time() + 5.0, 10))
    await asyncio.sleep(0)
    started = loop.time()
    # earlier than the last deadline queued: a timer of its own
    with pytest.raises(TimeoutError), deadlines.at(started + 0.05):
        await asyncio.sleep(10)
    assert loop.time() - started == pytest.approx(0.05)
    long.cancel()
    with pytest.raises(asyncio.CancelledError):
        await long


async def _sleep_within(deadlines: Deadlines, deadline: float, delay_s: float) -> None:
    with deadlines.at(deadline):
        await asyncio.sleep(delay_s)


@virtual_time
async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(_sleep_within(deadlines, loop.time() + 10, 10))
    await asyncio.sleep(0.01)  # virtual: the task is inside its section
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@virtual_time
async def test_a_cancellation_from_outside_at_the_deadline_is_not_swallowed() -> None:
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(_sleep_within(deadlines, loop.time() + 10, 10))
    await asyncio.sleep(0.01)  # virtual: the task is inside its section
    deadlines._queue[0].expire()  # the deadline passes ...
    task.cancel()  # ... and someone cancels the task before it runs again
    with pytest.raises(asyncio.CancelledError):
        await task


def test_a_new_event_loop_starts_afresh() -> None:
    deadlines = Deadlines()

    async def once() -> None:
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError), deadlines.at(loop.time() + 0.02):
            await asyncio.sleep(10)
        with deadlines.at(loop.time() + 5):  # leaves a timer behind in this loop
            await asyncio.sleep(0)

    virtual_time(once)()
    virtual_time(once)()  # the stale timer of the first loop does not stop the second


@virtual_time
async def test_finished_sections_behind_a_stuck_one_are_dropped() -> None:
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    stuck = asyncio.ensure_future(_sleep_within(deadlines, loop.time() + 10, 10))
    await asyncio.sleep(0)
    for _ in range(10_000):
        with deadlines.at(loop.time() + 10):
            pass
    assert len(deadlines._queue) <= 2 * Deadlines._MIN_COMPACT + 1
    assert deadlines._queue[0]._state == 0  # the stuck one is still watched
    stuck.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stuck
