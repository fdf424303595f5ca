"""Faults the chaos suite found: a negative returns header, a handler that crashes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from paota import Config, ManualClock, ParkQueue, WorkerPool
from paota.brokers.memory import MemoryBroker
from tests.contracts.broker_contract import message, sig

_RUNNING: set[asyncio.Task[None]] = set()


async def _run(pool: WorkerPool) -> MemoryBroker:
    await pool.connect()
    running = asyncio.create_task(pool.start(install_signal_handlers=False))
    _RUNNING.add(running)
    running.add_done_callback(_RUNNING.discard)
    await asyncio.sleep(0)
    assert isinstance(pool.broker, MemoryBroker)
    return pool.broker


async def test_a_negative_returns_header_is_parked_as_a_bad_header() -> None:
    clock = ManualClock()
    pool = WorkerPool(Config(unknown_task_max_returns=1), 2, broker=MemoryBroker(clock=clock))
    broker = await _run(pool)
    unknown = sig(name="nobody")
    await broker.publish(message(unknown, broker.default_queue, headers={"x-paota-returns": -7}))
    await broker.run_until_idle()
    # at once: it is not returned for another worker first (nothing paota reads is out of range)
    [parked] = broker.parked(ParkQueue.FAILED)
    assert parked.headers["x-paota-reason"] == "bad-headers"
    assert "x-paota-returns" in parked.headers["x-paota-error"]
    assert broker.unacked_count == 0 and broker.ready_count == 0
    await pool.close()


async def test_a_crash_in_handling_parks_the_delivery_instead_of_looping(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pool = WorkerPool(Config(), 2, broker=MemoryBroker(clock=ManualClock()))
    pool.register_tasks({"Add": lambda sig: None})
    broker = await _run(pool)

    async def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug in a seam")

    monkeypatch.setattr(pool, "_outcome", crash)
    await broker.publish(message(sig(), broker.default_queue))
    await broker.run_until_idle()
    [parked] = broker.parked(ParkQueue.FAILED)
    assert parked.headers["x-paota-reason"] == "internal-error"
    assert "a bug in a seam" in parked.headers["x-paota-error"]
    assert broker.unacked_count == 0 and broker.ready_count == 0
    # the ERROR names the task, in its text and as fields
    [crashed] = [r for r in caplog.records if "parking it" in r.getMessage()]
    task_id = parked.message_id
    assert task_id and task_id in crashed.getMessage()
    assert (crashed.task_id, crashed.task_name) == (task_id, "Add")  # type: ignore[attr-defined]
    await pool.close()
