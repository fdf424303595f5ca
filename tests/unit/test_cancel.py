"""Cancellation on the memory broker and store: queued, delayed, running (async and sync), before a
worker starts; never retried; on_failure once with the reason; CANCELLED in the store."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from paota import (
    Client,
    Config,
    ConfigError,
    ErrorInfo,
    ManualClock,
    Middleware,
    Signature,
    TaskCancelledError,
    TaskContext,
    TaskFailedError,
    TaskStatus,
    WorkerPool,
    current_task,
)
from paota.brokers.memory import MemoryBroker
from paota.cli import main
from paota.core.control import decode_control, encode_cancel
from paota.core.runner import Runner
from paota.stores.memory import MemoryStore

Failures = list[tuple[str, ErrorInfo]]


class Setup:
    """A clock, a memory broker and store shared by the pools and clients of one test."""

    def __init__(self) -> None:
        self.clock = ManualClock()
        self.broker = MemoryBroker(clock=self.clock)
        self.store = MemoryStore(clock=self.clock)
        self.failures: Failures = []
        self.successes: list[str] = []
        self.started: list[tuple[asyncio.Task[None], WorkerPool]] = []

    def pool(self, *middleware: Middleware, name: str = "cancel") -> WorkerPool:
        return WorkerPool(
            Config(),
            4,
            name,
            broker=self.broker,
            store=self.store,
            clock=self.clock,
            middleware=list(middleware),
        )

    def on_failure(self, task: TaskContext, error: ErrorInfo) -> None:
        self.failures.append((task.id, error))

    def on_success(self, task: TaskContext, result: Any) -> None:
        self.successes.append(task.id)

    async def start(self, pool: WorkerPool) -> None:
        await pool.connect()
        self.started.append((asyncio.create_task(pool.start(install_signal_handlers=False)), pool))
        for _ in range(5):
            await asyncio.sleep(0)

    async def state(self, task_id: str) -> Any:
        return await self.store.get(task_id)


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    s = Setup()
    yield s
    for task, pool in s.started:
        await pool.stop()
        await asyncio.wait_for(task, 10)
    await s.broker.close()
    await s.store.close()


def check_cancelled_record(state: Any, reason: str) -> None:
    assert state is not None
    assert state.status is TaskStatus.CANCELLED
    assert state.error is not None
    assert (state.error.type, state.error.message) == ("Cancelled", reason)
    assert state.finished_at is not None
    assert state.result is None


# --- queued and delayed ----------------------------------------------------------------------


async def test_a_queued_task_cancelled_never_runs_and_is_acked_on_arrival(setup: Setup) -> None:
    # given a task sent while no worker runs
    pool = setup.pool()
    runs: list[str] = []

    @pool.task(retry_count=3, on_failure=setup.on_failure, on_success=setup.on_success)
    async def job() -> str:
        runs.append(current_task().id)
        return "ran"

    await pool.connect()
    handle = await job.send()
    # when it is cancelled, then the store says CANCELLED at once
    assert await handle.cancel(reason="not needed") is True
    check_cancelled_record(await handle.state(), "not needed")
    # and when a worker starts, it acks the message without running it
    await setup.start(pool)
    await setup.broker.run_until_idle()
    assert runs == []
    assert setup.broker.ready_count == 0 and setup.broker.unacked_count == 0
    assert setup.broker.delayed_count == 0  # never retried
    check_cancelled_record(await handle.state(), "not needed")
    assert setup.failures == [(handle.id, ErrorInfo("Cancelled", "not needed"))]
    assert setup.successes == []
    assert pool.stats.cancelled == 1 and pool.stats.duplicates == 0
    with pytest.raises(TaskFailedError) as failed:
        await handle.result(timeout=1)
    assert failed.value.status == "CANCELLED"
    assert failed.value.error_message == "not needed"


async def test_a_delayed_task_cancelled_never_runs(setup: Setup) -> None:
    pool = setup.pool()
    runs: list[str] = []

    @pool.task(on_failure=setup.on_failure)
    async def later() -> None:
        runs.append("ran")

    # given a worker and a task due in an hour
    await setup.start(pool)
    handle = await later.with_options(delay_s=3600).send()
    await setup.broker.run_until_idle(advance_time=False)
    assert setup.broker.delayed_count == 1
    # when it is cancelled before it is due, and the hour passes
    assert await pool.cancel(handle.id) is True
    await setup.broker.run_until_idle()
    # then it never ran: acked on arrival, CANCELLED with the default reason
    assert runs == []
    assert setup.broker.delayed_count == 0 and setup.broker.ready_count == 0
    check_cancelled_record(await handle.state(), f"cancelled by {pool.name}")
    assert setup.failures == [(handle.id, ErrorInfo("Cancelled", f"cancelled by {pool.name}"))]


async def test_a_worker_that_starts_after_the_cancel_honours_it(setup: Setup) -> None:
    # given a producer that sends and cancels while no worker exists
    client = Client(Config(), broker=setup.broker, store=setup.store, clock=setup.clock)
    await client.connect()
    handle = await client.send_task(Signature("report"))
    assert await client.cancel(handle.id, reason="superseded")
    # when a worker is made and started only afterwards
    pool = setup.pool(name="late-worker")
    runs: list[str] = []

    @pool.task(name="report", on_failure=setup.on_failure)
    def report() -> None:
        runs.append("ran")

    await setup.start(pool)
    await setup.broker.run_until_idle()
    # then the task never runs and stays CANCELLED
    assert runs == []
    check_cancelled_record(await handle.state(), "superseded")
    assert setup.failures == [(handle.id, ErrorInfo("Cancelled", "superseded"))]


async def test_a_retry_waiting_for_its_delay_is_cancelled_not_run(setup: Setup) -> None:
    pool = setup.pool()
    attempts: list[int] = []

    @pool.task(retry_count=5, on_failure=setup.on_failure)
    async def flaky() -> None:
        attempts.append(current_task().attempt)
        raise RuntimeError("boom")

    # given a task that failed once and waits for its retry
    await setup.start(pool)
    handle = await flaky.send()
    await setup.broker.run_until_idle(advance_time=False)
    assert attempts == [0] and setup.broker.delayed_count == 1
    assert (await handle.state()).status is TaskStatus.RETRYING
    # when it is cancelled
    assert await handle.cancel("stop retrying")
    await setup.broker.run_until_idle()
    # then the retry is acked without running, and no further retry is made
    assert attempts == [0]
    assert setup.broker.delayed_count == 0
    check_cancelled_record(await handle.state(), "stop retrying")
    assert setup.failures == [(handle.id, ErrorInfo("Cancelled", "stop retrying"))]
    assert pool.stats.retried == 1 and pool.stats.cancelled == 1 and pool.stats.failed == 0


async def test_on_failure_fires_once_when_a_cancelled_message_arrives_twice(setup: Setup) -> None:
    pool = setup.pool()

    @pool.task(on_failure=setup.on_failure)
    async def job() -> None: ...

    # given a cancelled task whose message the broker holds twice (at-least-once delivery)
    await pool.connect()
    handle = await job.send()
    [message] = setup.broker.messages(setup.broker.default_queue)
    await setup.broker.publish_raw(message.body, message.headers)
    assert await handle.cancel("twice")
    # when a worker gets both copies
    await setup.start(pool)
    await setup.broker.run_until_idle()
    # then both are acked, the callback fires once, the second copy counts as a duplicate
    assert setup.broker.ready_count == 0
    assert setup.failures == [(handle.id, ErrorInfo("Cancelled", "twice"))]
    assert pool.stats.cancelled == 1 and pool.stats.duplicates == 1


# --- running ---------------------------------------------------------------------------------


async def test_a_running_async_task_receives_cancelled_error(setup: Setup) -> None:
    pool = setup.pool()
    began = asyncio.Event()
    seen: list[str] = []

    @pool.task(retry_count=3, on_failure=setup.on_failure, on_success=setup.on_success)
    async def long_job() -> str:
        began.set()
        try:
            await asyncio.sleep(3600)  # sleep-ok: cancelled
        except asyncio.CancelledError:
            seen.append("CancelledError")
            raise
        return "finished"

    await setup.start(pool)
    handle = await long_job.send()
    await asyncio.wait_for(began.wait(), 5)
    assert (await handle.state()).status is TaskStatus.STARTED
    # when it is cancelled while it runs
    assert await handle.cancel("user pressed stop")
    await setup.broker.run_until_idle()
    # then the task got CancelledError, was not retried, and the store says CANCELLED
    assert seen == ["CancelledError"]
    assert setup.broker.delayed_count == 0
    check_cancelled_record(await handle.state(), "user pressed stop")
    assert setup.failures == [(handle.id, ErrorInfo("Cancelled", "user pressed stop"))]
    assert setup.successes == []
    assert pool.stats.cancelled == 1 and pool.stats.retried == 0


async def test_a_running_async_task_with_a_time_limit_is_cancelled_too(setup: Setup) -> None:
    pool = setup.pool()
    began = asyncio.Event()
    seen: list[str] = []

    @pool.task(time_limit_s=600, on_failure=setup.on_failure)
    async def limited() -> None:
        began.set()
        try:
            await asyncio.sleep(3600)  # sleep-ok: cancelled
        except asyncio.CancelledError:
            seen.append("CancelledError")
            raise

    await setup.start(pool)
    handle = await limited.send()
    await asyncio.wait_for(began.wait(), 5)
    assert await handle.cancel("limited")
    await setup.broker.run_until_idle()
    assert seen == ["CancelledError"]
    check_cancelled_record(await handle.state(), "limited")
    assert len(setup.failures) == 1


async def test_an_async_task_that_swallows_the_cancellation_still_ends_cancelled(
    setup: Setup,
) -> None:
    pool = setup.pool()
    began = asyncio.Event()
    cleanup_awaited: list[bool] = []

    @pool.task(on_failure=setup.on_failure, on_success=setup.on_success)
    async def stubborn() -> str:
        began.set()
        try:
            await asyncio.sleep(3600)  # sleep-ok: cancelled
        except asyncio.CancelledError:
            await asyncio.sleep(0)  # cleanup that awaits: the cancellation is not repeated
            cleanup_awaited.append(True)
        return "returned anyway"

    await setup.start(pool)
    handle = await stubborn.send()
    await asyncio.wait_for(began.wait(), 5)
    assert await handle.cancel("stop")
    await setup.broker.run_until_idle()
    assert cleanup_awaited == [True]
    check_cancelled_record(await handle.state(), "stop")
    assert setup.successes == [] and len(setup.failures) == 1
    assert setup.broker.unacked_count == 0  # settled, not stuck with a cancelled delivery task


async def test_a_running_sync_task_sees_the_flag_it_polls(setup: Setup) -> None:
    pool = setup.pool()
    began = threading.Event()
    polled: list[bool] = []

    @pool.task(retry_count=2, on_failure=setup.on_failure)
    def crunch() -> int:
        began.set()
        task = current_task()
        for _ in range(5000):  # at most 5 s
            if task.cancelled:
                polled.append(True)
            task.raise_if_cancelled()
            time.sleep(0.001)  # sleep-ok: work
        return 42

    await setup.start(pool)
    handle = await crunch.send()
    await asyncio.to_thread(began.wait, 5)
    assert await handle.cancel("enough")
    await setup.broker.run_until_idle()
    assert polled == [True]
    check_cancelled_record(await handle.state(), "enough")
    assert setup.failures == [(handle.id, ErrorInfo("Cancelled", "enough"))]
    assert setup.broker.delayed_count == 0  # never retried


async def test_a_sync_task_that_ignores_the_flag_runs_on_and_ends_cancelled(
    setup: Setup,
) -> None:
    pool = setup.pool()
    began, release = threading.Event(), threading.Event()

    @pool.task(on_failure=setup.on_failure, on_success=setup.on_success)
    def oblivious() -> str:
        began.set()
        release.wait(5)
        return "done anyway"

    await setup.start(pool)
    handle = await oblivious.send()
    await asyncio.to_thread(began.wait, 5)
    assert await handle.cancel("too late")
    release.set()
    await setup.broker.run_until_idle()
    # its result is dropped: the store keeps CANCELLED, on_failure fires, on_success does not
    check_cancelled_record(await handle.state(), "too late")
    assert setup.successes == []
    assert setup.failures == [(handle.id, ErrorInfo("Cancelled", "too late"))]


async def test_a_cancelled_task_that_fails_on_its_way_out_is_not_retried(setup: Setup) -> None:
    pool = setup.pool()
    began = asyncio.Event()

    @pool.task(retry_count=3, on_failure=setup.on_failure)
    async def messy() -> None:
        began.set()
        try:
            await asyncio.sleep(3600)  # sleep-ok: cancelled
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    await setup.start(pool)
    handle = await messy.send()
    await asyncio.wait_for(began.wait(), 5)
    assert await handle.cancel("halt")
    await setup.broker.run_until_idle()
    assert setup.broker.delayed_count == 0
    check_cancelled_record(await handle.state(), "halt")
    assert setup.failures == [(handle.id, ErrorInfo("Cancelled", "halt"))]


class Holdup(Middleware):
    """Holds every run between its STARTED record and the task's code."""

    def __init__(self) -> None:
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    async def execute(self, task: TaskContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        self.holding.set()
        await self.release.wait()
        return await call_next()


async def test_a_cancel_heard_before_the_run_reaches_the_runner_keeps_it_from_starting(
    setup: Setup,
) -> None:
    holdup = Holdup()
    pool = setup.pool(holdup)
    runs: list[str] = []

    @pool.task(on_failure=setup.on_failure)
    async def job() -> None:
        runs.append("ran")

    # given a run past its STARTED record, not yet in the task's code
    await setup.start(pool)
    handle = await job.send()
    await asyncio.wait_for(holdup.holding.wait(), 5)
    assert (await handle.state()).status is TaskStatus.STARTED
    # when it is cancelled (the broadcast finds no run yet) and then goes on
    assert await handle.cancel("early")
    holdup.release.set()
    await setup.broker.run_until_idle()
    # then its code never runs
    assert runs == []
    check_cancelled_record(await handle.state(), "early")
    assert len(setup.failures) == 1


async def test_a_task_raising_task_cancelled_error_cancels_itself(setup: Setup) -> None:
    pool = setup.pool()

    @pool.task(retry_count=3, on_failure=setup.on_failure)
    async def quitter() -> None:
        raise TaskCancelledError("nothing left to do")

    await setup.start(pool)
    handle = await quitter.send()
    await setup.broker.run_until_idle()
    check_cancelled_record(await handle.state(), "nothing left to do")
    assert setup.broker.delayed_count == 0
    assert setup.failures == [(handle.id, ErrorInfo("Cancelled", "nothing left to do"))]


async def test_a_worker_that_missed_the_broadcast_cancels_at_the_next_subscription(
    setup: Setup,
) -> None:
    pool = setup.pool()
    began = asyncio.Event()
    seen: list[str] = []

    @pool.task(on_failure=setup.on_failure)
    async def long_job() -> None:
        began.set()
        try:
            await asyncio.sleep(3600)  # sleep-ok: cancelled
        except asyncio.CancelledError:
            seen.append("CancelledError")
            raise

    await setup.start(pool)
    handle = await long_job.send()
    await asyncio.wait_for(began.wait(), 5)
    # given a cancellation recorded while the worker was not listening (no broadcast reached it)
    silent = Client(Config(), broker=MemoryBroker(clock=setup.clock), store=setup.store)
    await silent.connect()
    assert await silent.cancel(handle.id, reason="recorded only")
    await asyncio.sleep(0.01)  # sleep-ok: quiet
    assert seen == []
    # when its control channel subscribes again (a reconnection yields None)
    listeners = list(setup.broker._control)
    for listener in listeners:
        listener.put_nowait(b"not json")  # garbage is skipped
    cancel = next(m for m in pool._run_chain if type(m).__name__ == "CancellationMiddleware")
    runner = pool._runner
    assert runner is not None
    await cancel._sweep(runner, setup.store)  # what the listener does after a subscription
    await setup.broker.run_until_idle()
    # then the run is cancelled from the record
    assert seen == ["CancelledError"]
    check_cancelled_record(await handle.state(), "recorded only")
    await silent.broker.close()  # not silent.close(): the store is the pool's


# --- what cancel() does and refuses -----------------------------------------------------------


async def test_cancelling_a_finished_task_changes_nothing(setup: Setup) -> None:
    pool = setup.pool()

    @pool.task
    async def quick() -> int:
        return 7

    await setup.start(pool)
    handle = await quick.send()
    await setup.broker.run_until_idle()
    assert await handle.cancel() is False
    state = await handle.state()
    assert state.status is TaskStatus.SUCCEEDED and state.result == 7


async def test_cancelling_an_unknown_id_records_it_cancelled(setup: Setup) -> None:
    client = Client(Config(), broker=setup.broker, store=setup.store, clock=setup.clock)
    await client.connect()
    assert await client.cancel("task_from_elsewhere", reason="go producer sent it") is True
    check_cancelled_record(await setup.state("task_from_elsewhere"), "go producer sent it")
    assert await client.cancel("task_from_elsewhere") is False  # final already


async def test_cancel_without_a_store_is_a_clear_error() -> None:
    client = Client(Config(), broker=MemoryBroker())
    with pytest.raises(ConfigError, match="cancelling a task needs a store"):
        await client.cancel("task_1")
    await client.close()


@pytest.mark.parametrize(
    ("task_id", "reason", "error"),
    [("", None, ValueError), (None, None, ValueError), ("t", 5, TypeError)],
)
async def test_cancel_checks_its_arguments(
    setup: Setup, task_id: Any, reason: Any, error: type[Exception]
) -> None:
    client = Client(Config(), broker=setup.broker, store=setup.store)
    with pytest.raises(error):
        await client.cancel(task_id, reason=reason)


async def test_cancel_retries_when_the_record_moves_on_meanwhile(setup: Setup) -> None:
    # given a record that is RETRYING attempt 1 by the time the first write lands
    from paota.core.state import task_state

    store = setup.store
    now = setup.clock.now()

    def state(status: TaskStatus, attempts: int) -> Any:
        return task_state(
            "t1", "job", status, args=[], attempts=attempts, replays=0, worker="w",
            created_at=now, updated_at=now,
        )  # fmt: skip

    await store.connect()
    await store.record(state(TaskStatus.STARTED, 0))
    real_get = store.get
    reads = 0

    async def racing_get(task_id: str) -> Any:
        nonlocal reads
        reads += 1
        found = await real_get(task_id)
        if reads == 1:  # a worker moves the record on right after cancel() read it
            await store.record(state(TaskStatus.RETRYING, 1))
        return found

    store.get = racing_get  # type: ignore[method-assign]
    client = Client(Config(), broker=setup.broker, store=store, clock=setup.clock)
    assert await client.cancel("t1", reason="race")
    store.get = real_get  # type: ignore[method-assign]
    cancelled = await store.get("t1")
    check_cancelled_record(cancelled, "race")
    assert cancelled.attempts == 1 and reads == 2


# --- the control message and the CLI ---------------------------------------------------------


def test_control_messages_round_trip_and_garbage_is_skipped() -> None:
    request = decode_control(encode_cancel("task_1", 2, "why"))
    assert request is not None
    assert (request.task_id, request.replays, request.reason) == ("task_1", 2, "why")
    for garbage in (b"", b"\xff", b"[]", b'{"kind":"pause"}', b'{"kind":"cancel","task_id":""}'):
        assert decode_control(garbage) is None
    assert decode_control(b'{"kind":"cancel","task_id":"t","replays":true}') is None


def test_runner_forgets_old_cancellations_beyond_its_bound() -> None:
    from paota.core import runner as runner_module

    runner = Runner(1)
    for i in range(runner_module.RECENT_CANCELS + 10):
        assert runner.cancel(f"t{i}", "gone") == 0
    assert len(runner._recent) == runner_module.RECENT_CANCELS
    assert "t0" not in runner._recent and f"t{runner_module.RECENT_CANCELS + 9}" in runner._recent


def test_cli_cancel_needs_a_store(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cancel", "task_1"]) == 2
    assert "cancelling a task needs a store" in capsys.readouterr().err


def test_cli_cancel_records_the_cancellation(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PAOTA_STORE", "memory")
    assert main(["cancel", "task_a", "task_b", "--reason", "cli test"]) == 0
    out = capsys.readouterr().out
    assert "task task_a cancelled" in out and "task task_b cancelled" in out
