"""The worker pool on the memory broker and store: outcomes, concurrency, lifecycle, the manual
clock. What every broker must do is in the pool contract (test_pool_contract_memory.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import pytest

from paota import (
    Arg,
    Config,
    ConfigError,
    ManualClock,
    PublishError,
    RegistrationError,
    ResultTimeoutError,
    Signature,
    StoreError,
    TaskFailedError,
    TaskState,
    TaskStatus,
    WorkerPool,
)
from paota.brokers.memory import MemoryBroker
from paota.core.message import decode_message
from paota.core.outcome import fibonacci_backoff_s
from paota.core.protocols import OutgoingMessage, ParkQueue
from paota.stores.memory import MemoryStore
from tests.contracts.broker_contract import publish
from tests.waiting import until


@dataclass
class Rig:
    """A pool wired to a memory broker and store on a manual clock, started in the background."""

    pool: WorkerPool
    broker: MemoryBroker
    store: MemoryStore
    clock: ManualClock

    async def run(self, *sigs: Signature) -> list[str]:
        ids = [(await self.pool.send_task(s)).id for s in sigs]
        await self.broker.run_until_idle()
        return ids

    async def state(self, task_id: str) -> TaskState:
        state = await self.store.get(task_id)
        assert state is not None, f"no record for {task_id}"
        return state


RigFactory = Callable[..., "asyncio.Future[Rig]"]


@pytest.fixture
async def make_rig() -> AsyncIterator[Callable[..., Any]]:
    pools: list[tuple[WorkerPool, asyncio.Task[None]]] = []

    async def make(concurrency: int = 4, **config: Any) -> Rig:
        clock = ManualClock()
        broker = MemoryBroker(clock=clock)
        store = MemoryStore()
        pool = WorkerPool(Config(**config), concurrency, "test-pool", broker=broker, store=store)
        await pool.connect()
        return Rig(pool, broker, store, clock)

    async def started(rig: Rig) -> Rig:
        task = asyncio.create_task(rig.pool.start(install_signal_handlers=False))
        pools.append((rig.pool, task))
        await asyncio.sleep(0)
        return rig

    async def factory(
        concurrency: int = 4, tasks: dict[str, Any] | None = None, **config: Any
    ) -> Rig:
        rig = await make(concurrency, **config)
        rig.pool.register_tasks(tasks or {})
        return await started(rig)

    yield factory
    for pool, task in pools:
        await pool.close()
        await asyncio.wait_for(task, 10)


# --- success, results, concurrency ---------------------------------------------------------


async def test_send_task_fills_uuid_and_created_at(make_rig: Any) -> None:
    rig = await make_rig(tasks={"Noop": lambda sig: None})
    handle = await rig.pool.send_task(Signature("Noop"))
    assert handle.id.startswith("task_") and len(handle.id) == len("task_") + 36
    assert handle.signature.created_at == rig.clock.now()
    kept = await rig.pool.send_task(Signature("Noop", uuid="mine"))
    assert kept.id == "mine"


async def test_sync_tasks_run_in_threads_without_blocking_the_loop(make_rig: Any) -> None:
    threads: set[str] = set()
    together = threading.Barrier(4)
    release = threading.Event()
    all_in = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow(sig: Signature) -> str:
        threads.add(threading.current_thread().name)
        if together.wait(timeout=30) == 0:  # only passes once four run side by side
            loop.call_soon_threadsafe(all_in.set)
        release.wait(timeout=30)
        return "done"

    rig = await make_rig(concurrency=4, tasks={"Slow": slow})
    handles = [await rig.pool.send_task(Signature("Slow")) for _ in range(4)]
    await asyncio.wait_for(all_in.wait(), 30)
    # while four sync runs block their threads, the event loop keeps turning
    ticks = 0
    for _ in range(10):
        await asyncio.sleep(0)
        ticks += 1
    release.set()
    results = [await h.result(timeout=30) for h in handles]
    assert results == ["done"] * 4 and ticks == 10
    assert len(threads) == 4 and all(name.startswith("paota-task") for name in threads)


async def test_at_most_concurrency_tasks_run_at_once(make_rig: Any) -> None:
    running = peak = 0

    async def busy(sig: Signature) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)  # sleep-ok: work
        running -= 1

    rig = await make_rig(concurrency=3, tasks={"Busy": busy})
    await rig.run(*(Signature("Busy") for _ in range(20)))
    assert peak == 3
    assert rig.pool.stats.succeeded == 20


# --- retries -----------------------------------------------------------------------------------


def test_fibonacci_backoff() -> None:
    assert [fibonacci_backoff_s(n, 10) for n in range(1, 10)] == [1, 1, 2, 3, 5, 8, 10, 10, 10]
    assert [fibonacci_backoff_s(n, 4) for n in range(1, 6)] == [1, 1, 2, 3, 4]


async def test_retries_grow_with_fibonacci_delays_then_park(make_rig: Any) -> None:
    seen: list[int] = []

    async def flaky(sig: Signature) -> None:
        seen.append(sig.retries_done)
        raise ValueError(f"boom {sig.retries_done}")

    rig = await make_rig(tasks={"Flaky": flaky})
    [task_id] = await rig.run(Signature("Flaky", retry_count=8))
    # retries_done grows 0..8, each retry after a Fibonacci delay capped at 10 s
    assert seen == list(range(9))
    assert [(d.retries_done, d.delay_s) for d in rig.broker.delays] == [
        (1, 1),
        (2, 1),
        (3, 2),
        (4, 3),
        (5, 5),
        (6, 8),
        (7, 10),
        (8, 10),
    ]
    # then the exhausted task is parked in the failed queue with its reason
    [parked] = rig.broker.parked(ParkQueue.FAILED)
    assert parked.headers["x-paota-reason"] == "retries-exhausted"
    assert parked.headers["x-paota-error"] == "ValueError: boom 8"
    assert "Traceback" in parked.headers["x-paota-traceback"]
    assert decode_message(parked.body, parked.headers).retries_done == 8
    state = await rig.state(task_id)
    assert (state.status, state.attempts) == (TaskStatus.FAILED, 8)
    assert state.error is not None and state.error.type == "ValueError"
    with pytest.raises(TaskFailedError, match="boom 8") as info:
        await rig.pool.result(task_id, timeout=1)
    assert info.value.status == "FAILED"


async def test_retry_then_success(make_rig: Any) -> None:
    async def twice(sig: Signature) -> str:
        if sig.retries_done < 2:
            raise RuntimeError("not yet")
        return f"ok after {sig.retries_done}"

    rig = await make_rig(tasks={"Twice": twice})
    [task_id] = await rig.run(Signature("Twice", retry_count=5))
    assert await rig.pool.result(task_id, timeout=1) == "ok after 2"
    assert rig.broker.parked(ParkQueue.FAILED) == []
    assert rig.pool.stats.retried == 2


async def test_backoff_cap_is_configurable(make_rig: Any) -> None:
    async def fail(sig: Signature) -> None:
        raise ValueError("no")

    rig = await make_rig(tasks={"Fail": fail}, retry_backoff_cap_s=2.0)
    await rig.run(Signature("Fail", retry_count=5))
    assert [d.delay_s for d in rig.broker.delays] == [1, 1, 2, 2, 2]


# --- deadlines ---------------------------------------------------------------------------------


async def test_expired_start_deadline_parks_without_running(make_rig: Any) -> None:
    ran = False

    def task(sig: Signature) -> None:
        nonlocal ran
        ran = True

    rig = await make_rig(tasks={"Late": task})
    created = rig.clock.now() - timedelta(seconds=60)
    [task_id] = await rig.run(Signature("Late", task_timeout=30, created_at=created))
    assert not ran
    [parked] = rig.broker.parked(ParkQueue.TIMEOUT)
    assert parked.headers["x-paota-reason"] == "start-deadline"
    assert (await rig.state(task_id)).status is TaskStatus.TIMED_OUT
    with pytest.raises(TaskFailedError) as info:
        await rig.pool.result(task_id, timeout=1)
    assert info.value.status == "TIMED_OUT"


async def test_start_deadline_not_reached_runs(make_rig: Any) -> None:
    rig = await make_rig(tasks={"Soon": lambda sig: "ran"})
    created = rig.clock.now() - timedelta(seconds=10)
    [task_id] = await rig.run(Signature("Soon", task_timeout=30, created_at=created))
    assert await rig.pool.result(task_id, timeout=1) == "ran"


async def test_async_task_over_the_execution_limit_is_cancelled(make_rig: Any) -> None:
    cancelled = asyncio.Event()

    async def hang(sig: Signature) -> None:
        try:
            await asyncio.sleep(30)  # sleep-ok: cancelled
        except asyncio.CancelledError:
            cancelled.set()
            raise

    rig = await make_rig(tasks={"Hang": hang}, max_task_execution_duration_s=0.05)
    [task_id] = await rig.run(Signature("Hang"))
    assert cancelled.is_set()
    [parked] = rig.broker.parked(ParkQueue.TIMEOUT)
    assert parked.headers["x-paota-reason"] == "exec-timeout"
    assert (await rig.state(task_id)).status is TaskStatus.TIMED_OUT


async def test_execution_timeout_counts_as_a_failed_attempt(make_rig: Any) -> None:
    async def slow_once(sig: Signature) -> str:
        if sig.retries_done == 0:
            await asyncio.sleep(30)  # sleep-ok: cancelled
        return "second time lucky"

    rig = await make_rig(tasks={"SlowOnce": slow_once}, max_task_execution_duration_s=0.05)
    [task_id] = await rig.run(Signature("SlowOnce", retry_count=1))
    assert await rig.pool.result(task_id, timeout=1) == "second time lucky"


async def test_sync_task_over_the_execution_limit_is_abandoned(make_rig: Any) -> None:
    release = threading.Event()

    def stuck(sig: Signature) -> None:
        release.wait(5)

    rig = await make_rig(tasks={"Stuck": stuck}, max_task_execution_duration_s=0.05)
    [task_id] = await rig.run(Signature("Stuck"))
    release.set()
    state = await rig.state(task_id)
    assert state.status is TaskStatus.TIMED_OUT
    assert state.error is not None and "cannot be stopped" in state.error.message


# --- unknown tasks, garbage, ETA ---------------------------------------------------------------


async def test_unknown_task_ignored_when_asked(
    make_rig: Any, caplog: pytest.LogCaptureFixture
) -> None:
    rig = await make_rig(tasks={"Known": lambda sig: None})
    await rig.run(Signature("Unknown", ignore_when_task_not_registered=True, uuid="task_x"))
    assert rig.pool.stats.dropped == 1
    assert rig.broker.parked(ParkQueue.FAILED) == []
    assert any("task_x" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


async def test_unknown_task_is_returned_then_parked(make_rig: Any) -> None:
    rig = await make_rig(tasks={"Known": lambda sig: None}, unknown_task_max_returns=3)
    [task_id] = await rig.run(Signature("Unknown"))
    assert rig.pool.stats.returned == 3
    assert [d.delay_s for d in rig.broker.delays] == [1, 2, 3]
    [parked] = rig.broker.parked(ParkQueue.FAILED)
    assert parked.headers["x-paota-reason"] == "unknown-task"
    assert "Unknown" in parked.headers["x-paota-error"]
    assert (await rig.state(task_id)).status is TaskStatus.FAILED


async def test_unknown_task_reaches_a_worker_that_knows_it() -> None:
    clock = ManualClock()
    async with MemoryBroker(clock=clock) as broker:
        ignorant = WorkerPool(Config(), 2, "ignorant", broker=broker)
        ignorant.register_tasks({"Other": lambda sig: None})
        knowing = WorkerPool(Config(), 2, "knowing", broker=broker)
        done = asyncio.Event()
        knowing.register_tasks({"Special": lambda sig: done.set()})
        first = asyncio.create_task(ignorant.start(install_signal_handlers=False))
        await ignorant.send_task(Signature("Special"))
        await broker.run_until_idle(advance_time=False)
        assert ignorant.stats.returned == 1
        await ignorant.stop()
        await first
        second = asyncio.create_task(knowing.start(install_signal_handlers=False))
        await broker.run_until_idle()
        assert done.is_set()
        await knowing.stop()
        await second


async def test_garbage_body_is_parked_and_the_pool_keeps_running(make_rig: Any) -> None:
    rig = await make_rig(tasks={"Ok": lambda sig: "fine"})
    for garbage in (b"\x00\xffnot json", b"[1,2]", b'{"Name": 5}', b'{"Priority": 999}'):
        await rig.broker.publish_raw(garbage)
    [task_id] = await rig.run(Signature("Ok"))
    assert await rig.pool.result(task_id, timeout=1) == "fine"
    parked = rig.broker.parked(ParkQueue.FAILED)
    assert [p.body for p in parked] == [
        b"\x00\xffnot json",
        b"[1,2]",
        b'{"Name": 5}',
        b'{"Priority": 999}',
    ]
    assert {p.headers["x-paota-reason"] for p in parked} == {"undecodable"}
    assert all(p.headers["x-paota-error"].startswith("DecodeError") for p in parked)


async def test_eta_in_the_future_never_runs_early(make_rig: Any) -> None:
    ran_at: list[Any] = []
    rig = await make_rig(tasks={"Later": lambda sig: ran_at.append(rig.clock.now())})
    eta = rig.clock.now() + timedelta(seconds=90)
    await rig.run(Signature("Later", eta=eta))
    assert len(ran_at) == 1 and ran_at[0] >= eta


async def test_eta_reached_early_is_deferred_again(make_rig: Any) -> None:
    # A message whose ETA is still ahead when it arrives (a Go producer, or clock skew) waits again.
    ran_at: list[Any] = []
    rig = await make_rig(tasks={"Later": lambda sig: ran_at.append(rig.clock.now())})
    eta = rig.clock.now() + timedelta(seconds=30)
    await publish(rig.broker, Signature("Later", uuid="t1", eta=eta))
    await rig.broker.run_until_idle()
    assert rig.pool.stats.deferred == 1
    assert ran_at and ran_at[0] >= eta


# --- store failures ----------------------------------------------------------------------------


class FlakyStore(MemoryStore):
    """Fails the first ``failures`` writes of a final state."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def record(self, state: TaskState) -> bool:
        if state.status.is_final and self.failures > 0:
            self.failures -= 1
            raise StoreError("store down")
        return await super().record(state)


async def test_no_ack_before_the_final_state_is_written() -> None:
    broker, store = MemoryBroker(), FlakyStore(failures=3)
    pool = WorkerPool(Config(), 2, "p", broker=broker, store=store)
    pool.register_tasks({"T": lambda sig: 42})
    async with pool:
        worker = asyncio.create_task(pool.start(install_signal_handlers=False))
        handle = await pool.send_task(Signature("T"))
        await until(lambda: store.failures < 3, what="a first failed record")
        # the store is down: the delivery is still unacked
        assert broker.unacked_count == 1
        assert await handle.result(timeout=5) == 42
        assert broker.unacked_count == 0
        await pool.stop()
        await worker


# --- lifecycle ---------------------------------------------------------------------------------


async def test_graceful_stop_lets_running_tasks_finish() -> None:
    broker = MemoryBroker()
    pool = WorkerPool(Config(shutdown_grace_s=5), 2, "p", broker=broker)
    began, finished = asyncio.Event(), asyncio.Event()

    async def work(sig: Signature) -> None:
        began.set()
        await asyncio.sleep(0.1)  # sleep-ok: work
        finished.set()

    pool.register_tasks({"Work": work})
    async with pool:
        worker = asyncio.create_task(pool.start(install_signal_handlers=False))
        await pool.send_task(Signature("Work"))
        await asyncio.wait_for(began.wait(), 30)
        await pool.stop()
        await worker
        assert finished.is_set()
        assert broker.unacked_count == 0 and broker.ready_count == 0


async def test_stop_returns_unfinished_tasks_after_the_grace_period() -> None:
    broker = MemoryBroker()
    pool = WorkerPool(Config(shutdown_grace_s=0.05), 1, "p", broker=broker)

    async def forever(sig: Signature) -> None:
        await asyncio.sleep(60)  # sleep-ok: cancelled

    pool.register_tasks({"Forever": forever})
    async with pool:
        worker = asyncio.create_task(pool.start(install_signal_handlers=False))
        for _ in range(3):
            await pool.send_task(Signature("Forever"))
        await until(lambda: broker.unacked_count >= 1, what="a running task")
        await pool.stop()
        await worker
        # the running one and the waiting ones are all back in the queue
        assert broker.ready_count == 3
        assert broker.unacked_count == 0


async def test_result_needs_a_store() -> None:
    pool = WorkerPool(Config(), broker=MemoryBroker())
    with pytest.raises(ConfigError, match="store"):
        await pool.result("task_x", timeout=0.1)


async def test_result_timeout(make_rig: Any) -> None:
    rig = await make_rig(tasks={})
    with pytest.raises(ResultTimeoutError, match="task_nope"):
        await rig.pool.result("task_nope", timeout=0.05)


def test_bad_concurrency_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="concurrency"):
        WorkerPool(Config(), concurrency=0)


def test_pool_config_comes_from_the_store_and_broker_names() -> None:
    pool = WorkerPool(replace(Config(), store="memory"))
    assert isinstance(pool.broker, MemoryBroker)
    assert isinstance(pool.store, MemoryStore)
    assert WorkerPool(Config()).store is None


# --- registration ------------------------------------------------------------------------------


def test_registration() -> None:
    pool = WorkerPool(Config())

    @pool.task
    async def resize(sig: Signature) -> None: ...

    @pool.task(name="Print")
    def print_task(sig: Signature) -> None: ...

    pool.register_tasks({"Print": print_task})  # the same function again is fine
    assert pool.is_task_registered("resize")
    assert pool.is_task_registered("Print")
    assert not pool.is_task_registered("print_task")
    with pytest.raises(RegistrationError, match="expected a callable"):
        pool.register_tasks({"Bad": 42})  # type: ignore[dict-item]
    with pytest.raises(RegistrationError, match="already registered"):
        pool.register_tasks({"Print": lambda sig: None})
    # a failed register_tasks registers nothing
    with pytest.raises(RegistrationError):
        pool.register_tasks({"New": lambda sig: None, "Bad": None})  # type: ignore[dict-item]
    assert not pool.is_task_registered("New")
    # registries are per pool
    assert not WorkerPool(Config()).is_task_registered("Print")


async def test_pool_stops_when_its_broker_is_closed_under_it() -> None:
    broker = MemoryBroker()
    pool = WorkerPool(Config(), 1, "p", broker=broker)
    await pool.connect()
    worker = asyncio.create_task(pool.start(install_signal_handlers=False))
    await until(lambda: broker._consumers, what="the pool consuming")
    await broker.close()
    await asyncio.wait_for(worker, 5)


async def test_an_eta_beyond_the_longest_broker_delay_is_deferred_in_steps(make_rig: Any) -> None:
    ran_at: list[Any] = []
    rig = await make_rig(tasks={"Far": lambda sig: ran_at.append(rig.clock.now())})
    eta = rig.clock.now() + timedelta(days=20)
    await rig.run(Signature("Far", eta=eta))
    assert [round(d.delay_s) for d in rig.broker.delays] == [7 * 86400, 7 * 86400, 6 * 86400]
    assert len(ran_at) == 1 and ran_at[0] >= eta


async def test_timeouts_are_recorded_as_task_timeout_errors(make_rig: Any) -> None:
    async def hang(sig: Signature) -> None:
        await asyncio.sleep(30)  # sleep-ok: cancelled

    rig = await make_rig(tasks={"Hang": hang}, max_task_execution_duration_s=0.05)
    late = Signature("Hang", task_timeout=1, created_at=rig.clock.now() - timedelta(seconds=5))
    ids = await rig.run(Signature("Hang"), late)
    for task_id in ids:
        with pytest.raises(TaskFailedError) as info:
            await rig.pool.result(task_id, timeout=1)
        assert info.value.error_type == "TaskTimeoutError"


# --- faults found in review ----------------------------------------------------------------


async def test_a_failed_retry_publish_returns_the_task_instead_of_losing_it() -> None:
    class FlakyBroker(MemoryBroker):
        fail_next_retry = True

        async def publish(self, message: OutgoingMessage) -> None:
            retries_done = decode_message(message.body, message.headers).retries_done
            if retries_done > 0 and self.fail_next_retry:
                self.fail_next_retry = False
                raise PublishError("RabbitMQ did not confirm")
            await super().publish(message)

    clock = ManualClock()
    broker, store = FlakyBroker(clock=clock), MemoryStore()
    pool = WorkerPool(Config(), 2, "p", broker=broker, store=store)
    calls = 0

    @pool.task
    async def boom(sig: Signature) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("fail")

    async with pool:
        worker = asyncio.create_task(pool.start(install_signal_handlers=False))
        handle = await pool.send_task(Signature("boom", retry_count=2))
        await broker.run_until_idle()
        state = await store.get(handle.id)
        assert state is not None and (state.status, state.attempts) == (TaskStatus.FAILED, 2)
        assert calls == 4  # the attempt whose retry could not be published ran again
        assert len(broker.parked(ParkQueue.FAILED)) == 1
        await pool.stop()
        await worker


async def test_a_cancelled_error_from_task_code_is_a_failure_not_a_loop(make_rig: Any) -> None:
    calls = 0

    async def cancels(sig: Signature) -> None:
        nonlocal calls
        calls += 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.cancel()
        await future

    rig = await make_rig(tasks={"Cancels": cancels})
    [task_id] = await rig.run(Signature("Cancels", retry_count=1))
    assert calls == 2
    state = await rig.state(task_id)
    assert state.status is TaskStatus.FAILED
    assert state.error is not None and state.error.type == "CancelledError"


async def test_a_timeout_error_raised_by_the_task_is_an_ordinary_failure(make_rig: Any) -> None:
    async def times_out(sig: Signature) -> None:
        raise TimeoutError("socket read timed out")

    rig = await make_rig(tasks={"T": times_out}, max_task_execution_duration_s=60)
    [task_id] = await rig.run(Signature("T"))
    state = await rig.state(task_id)
    assert state.status is TaskStatus.FAILED
    assert state.error is not None and state.error.type == "TimeoutError"
    assert rig.broker.parked(ParkQueue.FAILED)[0].headers["x-paota-reason"] == "retries-exhausted"


async def test_abandoned_sync_tasks_do_not_starve_the_next_ones(make_rig: Any) -> None:
    release = threading.Event()
    ran: list[str] = []

    def task(sig: Signature) -> None:
        if sig.arg("stuck", False):
            release.wait(10)
        ran.append(sig.uuid)

    rig = await make_rig(concurrency=1, tasks={"T": task}, max_task_execution_duration_s=0.3)
    try:
        ids = await rig.run(
            Signature("T", args=[Arg("stuck", "bool", True)]),
            *(Signature("T") for _ in range(3)),
        )
        states = [await rig.state(i) for i in ids]
        assert [s.status for s in states] == [TaskStatus.TIMED_OUT] + [TaskStatus.SUCCEEDED] * 3
        assert sorted(ran) == sorted(ids[1:])
    finally:
        release.set()


async def test_stop_during_connect_stops_start() -> None:
    connecting = asyncio.Event()

    class SlowStore(MemoryStore):
        async def connect(self) -> None:
            connecting.set()
            await asyncio.sleep(0.2)  # sleep-ok: work
            await super().connect()

    pool = WorkerPool(Config(), 1, "p", broker=MemoryBroker(), store=SlowStore())
    worker = asyncio.create_task(pool.start(install_signal_handlers=False))
    await asyncio.wait_for(connecting.wait(), 30)
    await asyncio.wait_for(pool.stop(), 5)
    await asyncio.wait_for(worker, 5)
    await pool.close()


async def test_an_async_task_behind_a_plain_decorator_is_awaited(make_rig: Any) -> None:
    ran = False

    async def body(sig: Signature) -> str:
        nonlocal ran
        ran = True
        return "awaited"

    def plain_wrapper(sig: Signature) -> Any:
        return body(sig)

    rig = await make_rig(tasks={"Wrapped": plain_wrapper})
    [task_id] = await rig.run(Signature("Wrapped"))
    assert ran
    assert await rig.pool.result(task_id, timeout=1) == "awaited"


def test_a_stuck_sync_task_does_not_keep_a_stopped_process_alive(tmp_path: Any) -> None:
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "stuck.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, threading
            from paota import Config, Signature, WorkerPool

            stuck = threading.Event()

            def run_stuck(sig):
                stuck.set()
                threading.Event().wait(60)  # never set: stuck until the process exits

            async def main():
                pool = WorkerPool(Config(shutdown_grace_s=0.2), 1, "p")
                pool.register_tasks({"Stuck": run_stuck})
                async with pool:
                    worker = asyncio.create_task(pool.start(install_signal_handlers=False))
                    await pool.send_task(Signature("Stuck"))
                    await asyncio.to_thread(stuck.wait, 30)
                    await pool.stop()
                    await worker

            asyncio.run(main())
            """
        )
    )
    started = time.monotonic()
    subprocess.run([sys.executable, str(script)], check=True, timeout=55)
    # far less than the stuck thread's 60 s (a quiet machine: about 1 s, mostly imports)
    assert time.monotonic() - started < 30
