"""Progress of running tasks and per-task result lifetimes, on the memory broker and store."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from paota import (
    Client,
    Config,
    ManualClock,
    RegistrationError,
    TaskCancelledError,
    TaskStatus,
    WorkerPool,
    current_task,
)
from paota.brokers.memory import MemoryBroker
from paota.core.state import task_state
from paota.middleware import progress as progress_module
from paota.stores.memory import MemoryStore


class Setup:
    def __init__(self) -> None:
        self.clock = ManualClock()
        self.broker = MemoryBroker(clock=self.clock)
        self.store = MemoryStore(clock=self.clock)
        self.pool = WorkerPool(
            Config(), 4, "progress", broker=self.broker, store=self.store, clock=self.clock
        )
        self.worker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.pool.connect()
        self.worker = asyncio.create_task(self.pool.start(install_signal_handlers=False))
        for _ in range(5):
            await asyncio.sleep(0)


@pytest.fixture
async def setup(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Setup]:
    # Rate limiting runs on the loop's real clock: a short interval keeps the tests fast.
    monkeypatch.setattr(progress_module, "MIN_INTERVAL_S", 0.05)
    s = Setup()
    yield s
    await s.pool.close()
    if s.worker is not None:
        await asyncio.wait_for(s.worker, 10)


async def eventually(setup: Setup, task_id: str, check: Any, timeout_s: float = 5.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        state = await setup.store.get(task_id)
        if state is not None and check(state):
            return state
        assert loop.time() < deadline, f"not seen in time; last record: {state}"
        await asyncio.sleep(0.005)  # sleep-ok: poll


# --- progress --------------------------------------------------------------------------------


async def test_progress_shows_in_the_record_while_the_task_runs(setup: Setup) -> None:
    step, done = asyncio.Event(), asyncio.Event()

    @setup.pool.task
    async def resize(n: int) -> str:
        await current_task().progress(0.4, f"resized 4 of {n}")
        step.set()
        await done.wait()
        return "ok"

    await setup.start()
    handle = await resize.send(10)
    await asyncio.wait_for(step.wait(), 5)
    state = await handle.state()
    assert state is not None
    assert state.status is TaskStatus.STARTED
    assert (state.progress, state.progress_message) == (0.4, "resized 4 of 10")
    assert state.started_at is not None and state.worker == "progress"
    assert state.args == [{"Name": "n", "Type": "int", "Value": 10}]
    done.set()
    await setup.broker.run_until_idle()
    final = await handle.state()
    assert final.status is TaskStatus.SUCCEEDED and final.result == "ok"
    assert final.progress is None  # the final record carries no progress


async def test_reports_within_the_interval_are_coalesced_last_one_wins(setup: Setup) -> None:
    written: list[Any] = []
    real_record = setup.store.record

    async def spying(state: Any) -> bool:
        if state.progress is not None:
            written.append((state.progress, state.progress_message))
        return await real_record(state)

    setup.store.record = spying  # type: ignore[method-assign]
    done = asyncio.Event()

    @setup.pool.task
    async def busy() -> None:
        for i in range(1, 11):
            await current_task().progress(i / 10, f"step {i}")
        await done.wait()

    await setup.start()
    handle = await busy.send()
    # the first report is written at once, the other nine within the interval: only the last
    state = await eventually(setup, handle.id, lambda s: s.progress == 1.0)
    assert state.progress_message == "step 10"
    assert written == [(0.1, "step 1"), (1.0, "step 10")]
    done.set()
    await setup.broker.run_until_idle()


async def test_a_sync_task_reports_progress_from_its_thread(setup: Setup) -> None:
    reported, release = threading.Event(), threading.Event()

    @setup.pool.task
    def crunch() -> int:
        current_task().progress_nowait(0.5, "halfway")
        reported.set()
        release.wait(5)
        return 1

    await setup.start()
    handle = await crunch.send()
    await asyncio.to_thread(reported.wait, 5)
    state = await eventually(setup, handle.id, lambda s: s.progress == 0.5)
    assert state.progress_message == "halfway" and state.status is TaskStatus.STARTED
    release.set()
    await setup.broker.run_until_idle()


@pytest.mark.parametrize(
    ("fraction", "message", "error"),
    [
        (1.5, "", ValueError),
        (-0.1, "", ValueError),
        (math.nan, "", ValueError),
        ("half", "", TypeError),
        (True, "", TypeError),
        (0.5, 42, TypeError),
        (0.5, "x" * 1001, ValueError),
    ],
)
async def test_bad_progress_is_a_clear_error(
    setup: Setup, fraction: Any, message: Any, error: type[Exception]
) -> None:
    raised: list[BaseException] = []

    @setup.pool.task
    async def bad() -> None:
        try:
            await current_task().progress(fraction, message)
        except Exception as exc:
            raised.append(exc)

    await setup.start()
    await bad.send()
    await setup.broker.run_until_idle()
    [exc] = raised
    assert isinstance(exc, error)
    assert "progress" in str(exc)


async def test_progress_without_a_store_does_nothing() -> None:
    pool = WorkerPool(Config(), 2, "nostore", broker=MemoryBroker())
    ran: list[str] = []

    @pool.task
    async def job() -> None:
        await current_task().progress(0.3, "fine")
        ran.append("ok")

    await pool.connect()
    worker = asyncio.create_task(pool.start(install_signal_handlers=False))
    await job.send()
    assert isinstance(pool.broker, MemoryBroker)
    await pool.broker.run_until_idle()
    assert ran == ["ok"]
    await pool.close()
    await worker


async def test_a_progress_write_refused_by_a_cancellation_cancels_the_run(setup: Setup) -> None:
    began = asyncio.Event()
    raised: list[str] = []

    @setup.pool.task(retry_count=2)
    async def chatty() -> None:
        began.set()
        await asyncio.sleep(0)
        while True:
            try:
                await current_task().progress(0.1, "still here")
            except TaskCancelledError as exc:
                raised.append(exc.reason)
                raise
            await asyncio.sleep(0.06)  # sleep-ok: work

    await setup.start()
    handle = await chatty.send()
    await asyncio.wait_for(began.wait(), 5)
    # a cancellation written by a process whose broadcast never reaches this worker
    other = Client(Config(), broker=MemoryBroker(), store=setup.store)
    assert await other.cancel(handle.id, reason="quietly")
    await setup.broker.run_until_idle()
    assert raised == ["quietly"]
    state = await handle.state()
    assert state.status is TaskStatus.CANCELLED and setup.broker.delayed_count == 0
    await other.broker.close()  # not other.close(): the store is the pool's


# --- result lifetimes ------------------------------------------------------------------------


async def test_a_result_expires_after_the_tasks_result_ttl(setup: Setup) -> None:
    @setup.pool.task(result_ttl_s=60)
    async def short_lived() -> int:
        return 1

    @setup.pool.task
    async def kept() -> int:
        return 2

    await setup.start()
    brief, lasting = await short_lived.send(), await kept.send()
    await setup.broker.run_until_idle()
    state = await brief.state()
    assert state is not None and state.status is TaskStatus.SUCCEEDED
    assert state.finished_at is not None
    assert state.expires_at == state.finished_at + timedelta(seconds=60)
    assert (await lasting.state()).expires_at is None
    # a minute later the record is gone, for get, list and result; the other one stays
    setup.clock.advance(59)
    assert await brief.state() is not None
    setup.clock.advance(2)
    assert await brief.state() is None
    assert [s.task_id for s in await setup.store.list()] == [lasting.id]
    assert await lasting.result(timeout=1) == 2
    assert brief.id not in setup.store._records  # dropped, not just hidden


async def test_failed_and_cancelled_records_expire_too(setup: Setup) -> None:
    @setup.pool.task(result_ttl_s=5)
    async def broken() -> None:
        raise ValueError("nope")

    await setup.start()
    failed = await broken.send()
    await setup.broker.run_until_idle()
    assert (await failed.state()).status is TaskStatus.FAILED
    queued = await broken.with_options(delay_s=100).send()
    assert await queued.cancel()  # the pool knows the task: its lifetime applies
    state = await queued.state()
    assert state.expires_at == state.finished_at + timedelta(seconds=5)
    setup.clock.advance(6)
    assert await failed.state() is None and await queued.state() is None


async def test_expired_records_unread_are_dropped_by_later_writes(setup: Setup) -> None:
    store, now = setup.store, setup.clock.now()
    await store.connect()

    def final(task_id: str, expires: Any) -> Any:
        return task_state(
            task_id, "t", TaskStatus.SUCCEEDED, args=[], attempts=0, replays=0, worker="w",
            created_at=now, updated_at=now, finished_at=now, expires_at=expires,
        )  # fmt: skip

    for i in range(10):
        await store.record(final(f"old{i}", now + timedelta(seconds=1)))
    setup.clock.advance(2)
    for i in range(300):
        await store.record(final(f"new{i}", None))
    assert not any(key.startswith("old") for key in store._records)


async def test_an_expired_record_no_longer_blocks_its_task_id(setup: Setup) -> None:
    store, now = setup.store, setup.clock.now()
    await store.connect()
    done = task_state(
        "t1", "t", TaskStatus.SUCCEEDED, args=[], attempts=0, replays=0, worker="w",
        created_at=now, updated_at=now, finished_at=now, expires_at=now + timedelta(seconds=1),
    )  # fmt: skip
    assert await store.record(done)
    assert not await store.record(done.replace(status=TaskStatus.STARTED, expires_at=None))
    setup.clock.advance(1)
    assert await store.record(done.replace(status=TaskStatus.STARTED, expires_at=None))


@pytest.mark.parametrize("ttl", [0, -1, math.inf, math.nan, "60", True])
def test_a_bad_result_ttl_is_refused_at_registration(ttl: Any) -> None:
    pool = WorkerPool(Config(), broker=MemoryBroker())
    with pytest.raises(RegistrationError, match="result_ttl_s"):

        @pool.task(result_ttl_s=ttl)
        async def job() -> None: ...


async def test_a_second_client_reads_state_without_connecting_first(setup: Setup) -> None:
    @setup.pool.task
    async def job() -> int:
        return 3

    await setup.start()
    handle = await job.send()
    await setup.broker.run_until_idle()
    reader = Client(Config(), broker=MemoryBroker(), store=MemoryStore())
    assert await reader.handle(handle.id).state() is None  # its own (empty) store, connected
    await reader.close()
    shared = Client(Config(), broker=MemoryBroker(), store=setup.store)
    state = await shared.handle(handle.id).state()
    assert state is not None and state.result == 3
