"""Batch sends: ``task.send_many([...])`` and ``client.send_many(signatures)`` pipeline the sends
and return the handles in order; a bad item fails before anything is published; a failure names
which tasks were sent and which were not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from paota import (
    Arg,
    ArgumentError,
    Client,
    Config,
    ManualClock,
    OutgoingMessage,
    PublishError,
    SendManyError,
    Signature,
    TaskStatus,
    WorkerPool,
)
from paota.brokers.memory import MemoryBroker
from paota.core.message import decode_message
from paota.stores.memory import MemoryStore


class SlowBroker(MemoryBroker):
    """A memory broker whose publishes take a while to be confirmed (as RabbitMQ's round trip),
    that refuses the task ids in ``refuse``, and that counts publishes in flight."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.refuse: set[str] = set()
        self.in_flight = 0
        self.most_in_flight = 0
        self.confirm_s = 0.0

    async def publish(self, message: OutgoingMessage) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.confirm_s:
                await asyncio.sleep(self.confirm_s)  # sleep-ok: work
            if message.message_id in self.refuse:
                raise PublishError(f"task {message.message_id} was nacked by the broker")
            await super().publish(message)
        finally:
            self.in_flight -= 1


@pytest.fixture
async def pool() -> AsyncIterator[WorkerPool]:
    clock = ManualClock()
    pool = WorkerPool(
        Config(), 8, "batch", broker=SlowBroker(clock=clock), store=MemoryStore(), clock=clock
    )
    yield pool
    await pool.close()


def broker_of(pool: Client) -> SlowBroker:
    assert isinstance(pool.broker, SlowBroker)
    return pool.broker


def queued(pool: Client, queue: str = "paota_tasks") -> list[Signature]:
    return [decode_message(m.body, m.headers) for m in broker_of(pool).messages(queue)]


async def run_all(pool: WorkerPool) -> None:
    await pool.connect()
    worker = asyncio.create_task(pool.start(install_signal_handlers=False))
    await broker_of(pool).run_until_idle()
    await pool.stop()
    await worker


async def test_send_many_returns_the_handles_in_order_and_every_task_runs(
    pool: WorkerPool,
) -> None:
    @pool.task
    async def add(a: int, b: int) -> int:
        return a + b

    handles = await add.send_many([(i, 10 * i) for i in range(50)])

    assert [h.signature.args[0].value for h in handles] == list(range(50))
    assert len({h.id for h in handles}) == 50
    assert {s.uuid for s in queued(pool)} == {h.id for h in handles}
    await run_all(pool)
    assert [await h.result(timeout=1) for h in handles] == [11 * i for i in range(50)]


async def test_items_are_tuples_lists_or_dicts_and_one_parameter_tasks_take_values(
    pool: WorkerPool,
) -> None:
    @pool.task
    async def add(a: int, b: int = 1) -> int:
        return a + b

    @pool.task
    async def total(xs: list[int]) -> int:
        return sum(xs)

    @pool.task
    async def square(x: int) -> int:
        return x * x

    added = await add.send_many([(1, 2), [3, 4], {"a": 5}, {"b": 6, "a": 7}, (8,)])
    totals = await total.send_many([[1, 2, 3], [], ([4],)])
    squares = await square.send_many([2, 3, (4,)])

    await run_all(pool)
    assert [await h.result(timeout=1) for h in added] == [3, 7, 6, 13, 9]
    assert [await h.result(timeout=1) for h in totals] == [6, 0, 4]
    assert [await h.result(timeout=1) for h in squares] == [4, 9, 16]


async def test_a_bad_item_fails_before_anything_is_published(pool: WorkerPool) -> None:
    @pool.task
    async def add(a: int, b: int) -> int:
        return a + b

    with pytest.raises(TypeError, match=r"item #2: .*missing a required argument: 'b'"):
        await add.send_many([(1, 2), (3, 4), (5,)])
    with pytest.raises(TypeError, match=r"item #1 is a int; expected a tuple"):
        await add.send_many([(1, 2), 3])
    with pytest.raises(ArgumentError, match=r"item #0: .*cannot be sent"):
        await add.send_many([(float("nan"), 1)])
    with pytest.raises(TypeError, match=r"item #1 is a str, expected a paota.Signature"):
        await pool.send_many([add.signature(1, 2), "add(1, 2)"])  # type: ignore[list-item]

    @pool.task
    async def inc(x: int) -> int:
        return x + 1

    with pytest.raises(TypeError, match=r"item #0 .* leaves its first parameter"):
        await pool.send_many([inc.signature()])
    with pytest.raises(ValueError, match=r"window=0 is not valid: expected an integer >= 1"):
        await add.send_many([(1, 2)], window=0)
    assert queued(pool) == []


async def test_pool_send_many_takes_task_signatures_with_their_options_and_go_signatures(
    pool: WorkerPool,
) -> None:
    @pool.task
    async def add(a: int, b: int) -> int:
        return a + b

    pool.register_tasks({"Print": lambda sig: f"hello {sig.arg('who')}"})
    handles = await pool.send_many(
        [
            add.signature(1, 2),
            add.with_options(queue="math", priority=3, headers={"x-tag": "t"}).signature(3, 4),
            Signature("Print", args=[Arg("who", "string", "Ada")]),
        ]
    )

    assert [h.queue for h in handles] == ["paota_tasks", "math", "paota_tasks"]
    [math] = broker_of(pool).messages("math")
    assert math.priority == 3 and math.headers["x-tag"] == "t"
    pool.queues = ["paota_tasks", "math"]
    await run_all(pool)
    assert [await h.result(timeout=1) for h in handles] == [3, 7, "hello Ada"]


async def test_sends_overlap_up_to_the_window(pool: WorkerPool) -> None:
    @pool.task
    async def noop() -> None: ...

    broker = broker_of(pool)
    broker.confirm_s = 0.01  # real time: each confirm takes 10 ms

    loop = asyncio.get_running_loop()
    started = loop.time()
    await noop.send_many([()] * 200, window=50)
    elapsed = loop.time() - started

    # 200 sends of 10 ms each, 50 at a time: about 4 round trips, not 200
    assert broker.most_in_flight == 50
    assert elapsed < 1.0
    assert len(queued(pool)) == 200


async def test_a_failure_names_what_was_sent_and_what_was_not(pool: WorkerPool) -> None:
    @pool.task
    async def square(x: int) -> int:
        return x * x

    broker = broker_of(pool)
    sigs = [square.signature(i).to_signature().replace(uuid=f"task_{i}") for i in range(10)]
    broker.refuse = {"task_3", "task_7"}

    with pytest.raises(SendManyError) as caught:
        await pool.send_many(sigs, window=4)

    error = caught.value
    assert [(i, s.uuid) for i, s, _ in error.failed] == [(3, "task_3"), (7, "task_7")]
    assert all(isinstance(e, PublishError) for _, _, e in error.failed)
    assert [h.id for h in error.sent] == [f"task_{i}" for i in range(10) if i not in (3, 7)]
    assert [h is None for h in error.handles] == [i in (3, 7) for i in range(10)]
    assert "2 of 10 tasks were not sent (the first: #3 task_3 'square'" in str(error)
    assert isinstance(error.__cause__, PublishError)
    # only what was confirmed is in the queue; the failed ones go again with the same ids
    assert sorted(s.uuid for s in queued(pool)) == sorted(h.id for h in error.sent)
    broker.refuse = set()
    again = await pool.send_many([sig for _, sig, _ in error.failed])
    assert [h.id for h in again] == ["task_3", "task_7"]
    await run_all(pool)
    assert [await pool.result(f"task_{i}", timeout=1) for i in range(10)] == [
        i * i for i in range(10)
    ]


async def test_each_task_of_a_batch_has_a_pending_record_and_the_publish_hooks_run() -> None:
    from paota import Middleware, PublishContext

    seen: list[str] = []

    class Tag(Middleware):
        async def publish(self, message: PublishContext, call_next: Any) -> None:
            message.headers["x-batch"] = "yes"
            seen.append(message.signature.uuid)
            await call_next()

    clock = ManualClock()
    store = MemoryStore()
    client = Client(
        Config(), broker=SlowBroker(clock=clock), store=store, clock=clock, middleware=[Tag()]
    )

    @client.task
    async def resize(path: str, width: int) -> str: ...

    async with client:
        handles = await resize.with_options(delay_s=5).send_many([("a.png", 10), ("b.png", 20)])
        states = [await store.get(h.id) for h in handles]
    assert [s.status if s else None for s in states] == [TaskStatus.PENDING] * 2
    assert sorted(seen) == sorted(h.id for h in handles)
    broker = broker_of(client)
    assert [d.delay_s for d in broker.delays] == [5.0, 5.0]
    assert all(d.headers["x-batch"] == "yes" for d in broker.delays)


async def test_an_empty_batch_sends_nothing_and_connects_nothing(pool: WorkerPool) -> None:
    @pool.task
    async def noop() -> None: ...

    assert await noop.send_many([]) == []
    assert await pool.send_many([]) == []
    assert not broker_of(pool)._open


async def test_go_style_tasks_are_sent_as_signatures_not_args(pool: WorkerPool) -> None:
    def print_task(sig: Signature) -> None: ...

    task = pool.register_task("Print", print_task)
    with pytest.raises(TypeError, match=r"item #0: task 'Print' takes a Signature"):
        await task.send_many([(1,)])
