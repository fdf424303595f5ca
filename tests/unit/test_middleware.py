"""Middleware, callbacks, the current task and log fields, on the memory broker."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from paota import (
    Cancelled,
    Config,
    Defer,
    ErrorInfo,
    ManualClock,
    Middleware,
    NotInTaskError,
    Outcome,
    ParkQueue,
    PublishContext,
    Signature,
    StoreError,
    TaskContext,
    TaskLogFilter,
    TaskStatus,
    WorkerPool,
    current_task,
)
from paota.brokers.memory import MemoryBroker
from paota.stores.memory import MemoryStore


def make_pool(*middleware: Middleware, concurrency: int = 8, **config: Any) -> WorkerPool:
    clock = ManualClock()
    return WorkerPool(
        Config(**config),
        concurrency,
        "mw",
        broker=MemoryBroker(clock=clock),
        store=MemoryStore(),
        clock=clock,
        middleware=list(middleware),
    )


@pytest.fixture
async def run() -> AsyncIterator[Callable[[WorkerPool], Awaitable[MemoryBroker]]]:
    pools: list[tuple[WorkerPool, asyncio.Task[None]]] = []

    async def start(pool: WorkerPool) -> MemoryBroker:
        await pool.connect()
        pools.append((pool, asyncio.create_task(pool.start(install_signal_handlers=False))))
        await asyncio.sleep(0)
        assert isinstance(pool.broker, MemoryBroker)
        return pool.broker

    yield start
    for pool, task in pools:
        await pool.close()
        await asyncio.wait_for(task, 10)


class Recorder(Middleware):
    def __init__(self, name: str, events: list[str]) -> None:
        self.name = name
        self.events = events

    async def publish(
        self, message: PublishContext, call_next: Callable[[], Awaitable[None]]
    ) -> None:
        self.events.append(f"{self.name}.publish-in")
        message.headers[f"x-{self.name}"] = "1"
        await call_next()
        self.events.append(f"{self.name}.publish-out")

    async def execute(self, task: TaskContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        self.events.append(f"{self.name}.execute-in")
        result = await call_next()
        self.events.append(f"{self.name}.execute-out")
        return result

    async def after_outcome(self, task: TaskContext, outcome: Outcome) -> None:
        self.events.append(f"{self.name}.after-{type(outcome).__name__}")


async def test_hooks_run_in_list_order_going_in_and_reverse_coming_out(run: Any) -> None:
    events: list[str] = []
    pool = make_pool(Recorder("a", events), Recorder("b", events))
    seen_headers: list[Any] = []

    @pool.task
    async def noop() -> None:
        seen_headers.append(dict(current_task().headers))
        events.append("task")

    broker = await run(pool)
    await noop.send()
    await broker.run_until_idle()
    assert events == [
        "a.publish-in",
        "b.publish-in",
        "b.publish-out",
        "a.publish-out",
        "a.execute-in",
        "b.execute-in",
        "task",
        "b.execute-out",
        "a.execute-out",
        "b.after-Succeeded",
        "a.after-Succeeded",
    ]
    assert seen_headers[0]["x-a"] == "1" and seen_headers[0]["x-b"] == "1"


class Chaotic(Middleware):
    """Raises from every hook, at random, before or after the next step."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.raised = 0

    def _maybe(self) -> None:
        if self.random.random() < 0.3:
            self.raised += 1
            raise RuntimeError("middleware bug")

    async def publish(
        self, message: PublishContext, call_next: Callable[[], Awaitable[None]]
    ) -> None:
        self._maybe()
        await call_next()
        self._maybe()

    async def admit(self, task: TaskContext) -> Outcome | None:
        self._maybe()
        return None

    async def execute(self, task: TaskContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        self._maybe()
        result = await call_next()
        self._maybe()
        return result

    async def after_outcome(self, task: TaskContext, outcome: Outcome) -> None:
        self._maybe()


async def test_a_raising_middleware_loses_and_duplicates_nothing(
    run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    chaos = [Chaotic(1), Chaotic(2), Chaotic(3)]
    pool = make_pool(*chaos)
    runs: Counter[int] = Counter()

    @pool.task(retry_count=2)
    async def work(n: int) -> int:
        runs[n] += 1
        if n % 5 == 0 and current_task().attempt == 0:
            raise ValueError("first attempt fails")
        return n

    broker = await run(pool)
    handles = [await work.send(n) for n in range(200)]
    await broker.run_until_idle()
    assert sum(c.raised for c in chaos) > 100
    # every task ran exactly as often as its own outcomes say: once, or twice after a failure
    assert runs == Counter({n: 2 if n % 5 == 0 else 1 for n in range(200)})
    for n, handle in enumerate(handles):
        assert await handle.result(timeout=1) == n
    assert pool.stats.succeeded == 200 and pool.stats.duplicates == 0
    assert broker.ready_count == 0 and broker.unacked_count == 0
    assert broker.parked(ParkQueue.FAILED) == []
    # every failure was logged with the task id as a field
    failures = [
        r for r in caplog.records if "middleware" in r.getMessage() and "failed" in r.getMessage()
    ]
    assert failures and all(getattr(r, "task_id", "") for r in failures)


class StoreDownOnce(Middleware):
    def __init__(self) -> None:
        self.failed = False

    async def after_outcome(self, task: TaskContext, outcome: Outcome) -> None:
        if not self.failed:
            self.failed = True
            raise StoreError("store went away")


async def test_a_store_error_from_a_hook_returns_the_message_to_the_broker(
    run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(StoreDownOnce())
    runs = 0

    @pool.task
    async def once() -> str:
        nonlocal runs
        runs += 1
        return "ok"

    broker = await run(pool)
    handle = await once.send()
    await broker.run_until_idle()
    # the first delivery went back unacked; the redelivery found the run finished in the store
    assert runs == 1
    assert pool.stats.duplicates == 1
    assert await handle.result(timeout=1) == "ok"
    assert broker.ready_count == 0 and broker.unacked_count == 0
    # and the line that says so names the task, in its text and as fields
    [returned] = [r for r in caplog.records if "returning the message" in r.getMessage()]
    assert handle.id in returned.getMessage()
    assert (returned.task_id, returned.task_name) == (handle.id, "once")  # type: ignore[attr-defined]


class Throttle(Middleware):
    def __init__(self) -> None:
        self.deferred = 0

    async def admit(self, task: TaskContext) -> Outcome | None:
        if task.name == "limited" and self.deferred < 3:
            self.deferred += 1
            return Defer(1.0, "throttled")
        if task.name == "unwanted":
            return Cancelled("cancelled by an operator")
        return None


async def test_an_admit_hook_can_defer_or_cancel_instead_of_running(run: Any) -> None:
    failures: list[ErrorInfo] = []
    pool = make_pool(Throttle())
    ran: list[str] = []

    @pool.task(retry_count=0)
    async def limited() -> None:
        ran.append("limited")

    @pool.task(on_failure=lambda task, error: failures.append(error))
    async def unwanted() -> None:
        ran.append("unwanted")

    broker = await run(pool)
    h1 = await limited.send()
    h2 = await unwanted.send()
    await broker.run_until_idle()
    assert ran == ["limited"]
    assert [d.delay_s for d in broker.delays] == [1.0, 1.0, 1.0]
    assert [d.retries_done for d in broker.delays] == [0, 0, 0]  # deferring is not retrying
    assert pool.stats.deferred == 3 and pool.stats.cancelled == 1
    state = await h2.state()
    assert state is not None and state.status is TaskStatus.CANCELLED
    assert [f.message for f in failures] == ["cancelled by an operator"]
    assert (await h1.state()) is not None


async def test_callbacks_fire_once_per_run_at_its_final_outcome(run: Any) -> None:
    events: list[tuple[str, Any]] = []

    async def on_success(task: TaskContext, result: Any) -> None:
        events.append(("success", (task.name, result)))

    def on_failure(task: TaskContext, error: ErrorInfo) -> None:  # sync callbacks work too
        events.append(("failure", (task.name, task.attempt, error.type)))

    pool = make_pool()

    @pool.task(retry_count=2, on_success=on_success, on_failure=on_failure)
    async def flaky(fail: bool) -> str:
        if fail:
            raise ValueError("no")
        return "yes"

    def bad_callback(task: TaskContext, result: Any) -> None:
        raise RuntimeError("callback bug")

    @pool.task(on_success=bad_callback)
    async def fine() -> int:
        return 1

    broker = await run(pool)
    await flaky.send(True)  # fails three times, then is parked: on_failure once
    await flaky.send(False)
    handle = await fine.send()
    await broker.run_until_idle()
    assert sorted(events) == [
        ("failure", ("flaky", 2, "ValueError")),
        ("success", ("flaky", "yes")),
    ]
    assert await handle.result(timeout=1) == 1  # a raising callback changes nothing
    assert pool.stats.retried == 2


async def test_current_task_in_async_and_sync_tasks_and_in_hooks(run: Any) -> None:
    seen: list[tuple[str, str, int, str, str]] = []

    class Look(Middleware):
        async def after_outcome(self, task: TaskContext, outcome: Outcome) -> None:
            ctx = current_task()
            seen.append(("hook", ctx.name, ctx.attempt, ctx.queue, ctx.id))

    pool = make_pool(Look())

    @pool.task(retry_count=1)
    async def in_loop() -> None:
        ctx = current_task()
        seen.append(("async", ctx.name, ctx.attempt, ctx.queue, ctx.id))
        if ctx.attempt == 0:
            raise ValueError("again")

    @pool.task(queue="threads")
    def in_thread() -> None:
        ctx = current_task()
        seen.append(("sync", ctx.name, ctx.attempt, threading.current_thread().name, ctx.id))

    broker = await run(pool)
    a = await in_loop.send()
    b = await in_thread.send()
    await broker.run_until_idle()
    q = pool.broker.default_queue
    assert ("async", "in_loop", 0, q, a.id) in seen and ("async", "in_loop", 1, q, a.id) in seen
    [sync] = [s for s in seen if s[0] == "sync"]
    assert sync[1] == "in_thread" and sync[3].startswith("paota-task") and sync[4] == b.id
    assert ("hook", "in_thread", 0, "threads", b.id) in seen
    with pytest.raises(NotInTaskError):
        current_task()


async def test_log_records_about_a_task_carry_its_id_as_a_field(
    run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool()
    user_logger = logging.getLogger("user.code")
    user_logger.addFilter(TaskLogFilter())

    @pool.task(retry_count=1)
    async def noisy() -> None:
        user_logger.warning("inside")
        raise ValueError("boom")

    broker = await run(pool)
    handle = await noisy.send()
    with caplog.at_level(logging.INFO):
        await broker.run_until_idle()
    about = [r for r in caplog.records if handle.id in r.getMessage() or r.name == "user.code"]
    assert {r.name for r in about} >= {"paota.core.pool", "user.code"}
    assert all(getattr(r, "task_id", None) == handle.id for r in about)
    assert all(getattr(r, "task_name", None) == "noisy" for r in about)


async def test_headers_survive_retries_defers_and_returns(run: Any) -> None:
    seen: list[tuple[int, Any]] = []
    pool = make_pool(unknown_task_max_returns=1)

    @pool.task(retry_count=1)
    async def traced() -> None:
        ctx = current_task()
        seen.append((ctx.attempt, ctx.headers.get("traceparent")))
        if ctx.attempt == 0:
            raise ValueError("retry me")

    broker = await run(pool)
    headers = {"traceparent": "00-abc-def-01", "x-workflow": "w1"}
    await traced.with_options(headers=headers, delay_s=5).send()  # deferred to its ETA too
    await pool.send_task(Signature("nobody-knows-me"), headers=headers)
    await broker.run_until_idle()
    assert seen == [(0, "00-abc-def-01"), (1, "00-abc-def-01")]
    [parked] = broker.parked(ParkQueue.FAILED)  # returned once, then parked: headers kept
    assert parked.headers["x-paota-reason"] == "unknown-task"
    assert parked.headers["traceparent"] == "00-abc-def-01"
    assert parked.headers["x-workflow"] == "w1"
    assert parked.headers["x-paota-returns"] == 1


def test_middleware_must_be_middleware() -> None:
    with pytest.raises(TypeError, match=r"paota\.Middleware"):
        make_pool(object())  # type: ignore[arg-type]


async def test_startup_receives_the_workers_services_and_old_style_hooks_still_work() -> None:
    from paota.core.services import WorkerServices
    from paota.middleware.stats import PoolStats

    seen: dict[str, Any] = {}

    class Typed(Middleware):
        async def startup(self, services: WorkerServices) -> None:
            seen["typed"] = services

    class OldStyle(Middleware):
        async def startup(self, services: Any) -> None:
            # written for the pool itself: public names still answer, warned
            with pytest.warns(DeprecationWarning, match="services.client.stats"):
                seen["stats"] = services.stats
            with pytest.raises(AttributeError):
                services._registry  # noqa: B018 - private names are not offered

    broker = MemoryBroker()
    pool = WorkerPool(
        Config(), concurrency=3, queues={"a": 2, "b": None}, broker=broker,
        middleware=[Typed(), OldStyle()],
    )  # fmt: skip

    @pool.task(queue="a")
    async def noop() -> None: ...

    worker = asyncio.create_task(pool.start(install_signal_handlers=False))
    try:
        await noop.send()
        await broker.run_until_idle()
    finally:
        await pool.stop()
        await worker
    services = seen["typed"]
    assert isinstance(services, WorkerServices)
    assert services.name == pool.name and services.broker is broker and services.client is pool
    assert dict(services.consumed) == {"a": 2, "b": 3}
    assert "noop" in services.registry and services.running() == 0
    assert isinstance(seen["stats"], PoolStats)
    assert services.read_stats is not None and services.read_stats().succeeded == 1
