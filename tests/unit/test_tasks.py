"""Typed tasks: sending, options, binding to Go args, wrong arguments, Go-style tasks alongside."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from paota import (
    Arg,
    ArgumentError,
    Client,
    Config,
    ManualClock,
    ParkQueue,
    Signature,
    TaskStatus,
    WorkerPool,
)
from paota.brokers.memory import MemoryBroker
from paota.core.message import decode_message
from paota.stores.memory import MemoryStore

VECTORS = Path(__file__).parent / "vectors" / "go-paota"


@pytest.fixture
async def pool() -> AsyncIterator[WorkerPool]:
    clock = ManualClock()
    pool = WorkerPool(
        Config(), 8, "typed", broker=MemoryBroker(clock=clock), store=MemoryStore(), clock=clock
    )
    yield pool
    await pool.close()


async def started(pool: WorkerPool) -> asyncio.Task[None]:
    await pool.connect()
    task = asyncio.create_task(pool.start(install_signal_handlers=False))
    await asyncio.sleep(0)
    return task


def memory(pool: WorkerPool) -> MemoryBroker:
    assert isinstance(pool.broker, MemoryBroker)
    return pool.broker


async def test_a_typed_task_is_sent_and_its_result_comes_back(pool: WorkerPool) -> None:
    @pool.task
    async def add(a: int, b: int) -> int:
        return a + b

    await started(pool)
    handle = await add.send(2, 3)
    await memory(pool).run_until_idle()
    assert await handle.result(timeout=1) == 5
    # one {Name, Type, Value} per parameter, named after it, with Go type names
    assert [(a.name, a.type, a.value) for a in handle.signature.args] == [
        ("a", "int", 2),
        ("b", "int", 3),
    ]


async def test_calling_the_task_runs_the_function_directly(pool: WorkerPool) -> None:
    @pool.task
    async def add(a: int, b: int) -> int:
        return a + b

    @pool.task
    def mul(a: int, b: int) -> int:
        return a * b

    assert await add(2, 3) == 5
    assert mul(2, 3) == 6
    assert add.name == "add" and add.__name__ == "add"


async def test_keywords_defaults_and_annotations_shape_the_args(pool: WorkerPool) -> None:
    @pool.task(name="Scale")
    def scale(values: list[float], factor: float = 2, label: str | None = None) -> list[float]:
        return [v * factor for v in values]

    await started(pool)
    handle = await scale.send([1, 2.5], label="x")
    await memory(pool).run_until_idle()
    assert await handle.result(timeout=1) == [2.0, 5.0]
    assert [(a.name, a.type, a.value) for a in handle.signature.args] == [
        ("values", "[]float64", [1.0, 2.5]),
        ("factor", "float64", 2.0),
        ("label", "string", "x"),
    ]


async def test_per_send_options_come_from_a_builder(pool: WorkerPool) -> None:
    @pool.task(retry_count=1, queue="math")
    async def add(a: int, b: int) -> int:
        return a + b

    await started(pool)
    now = pool.clock.now()
    handle = await add.with_options(priority=7, retry_count=4, task_timeout=60).send(1, 2)
    assert handle.queue == "math"
    sig = handle.signature
    assert (sig.priority, sig.retry_count, sig.task_timeout) == (7, 4, 60)
    later = await add.with_options(delay_s=30, queue="other").send(1, 2)
    assert later.queue == "other"
    assert later.signature.eta == now + timedelta(seconds=30)
    at = now + timedelta(hours=1)
    assert (await add.with_options(eta=at).send(1, 2)).signature.eta == at
    # an option named like a parameter never collides with it
    with pytest.raises(TypeError, match="eta or delay_s"):
        add.with_options(eta=at, delay_s=1)


async def test_wrong_arguments_fail_before_anything_is_published(pool: WorkerPool) -> None:
    @pool.task
    async def add(a: int, b: int) -> int:
        return a + b

    await pool.connect()
    with pytest.raises(TypeError, match="missing a required argument: 'b'"):
        await add.send(1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="too many positional arguments"):
        await add.send(1, 2, 3)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'c'"):
        await add.send(1, 2, c=3)  # type: ignore[call-arg]
    with pytest.raises(ArgumentError, match="argument 'b' cannot be sent"):
        await add.send(1, object())  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match=r"NaN|not a JSON number"):
        await add.send(1, float("nan"))  # type: ignore[arg-type]
    broker = memory(pool)
    assert broker.ready_count == 0 and broker.delayed_count == 0
    assert await pool.require_store().list() == []


async def test_args_that_do_not_fit_are_parked_as_bad_arguments_without_retries(
    pool: WorkerPool,
) -> None:
    ran: list[Any] = []

    @pool.task(retry_count=5)
    async def add(a: int, b: int) -> int:
        ran.append((a, b))
        return a + b

    await started(pool)
    wrong = [
        Signature("add", args=[Arg("a", "int", 1)], retry_count=5),  # missing b
        Signature("add", args=[Arg("a", "int", 1), Arg("c", "int", 2)]),  # unknown name
        Signature("add", args=[Arg("a", "string", "x"), Arg("b", "int", 2)]),  # wrong type
        Signature("add", args=[Arg("", "int", 1), Arg("", "int", 2), Arg("", "int", 3)]),
    ]
    handles = [await pool.send_task(s) for s in wrong]
    await memory(pool).run_until_idle()
    assert ran == []
    parked = memory(pool).parked(ParkQueue.FAILED)
    assert [m.headers["x-paota-reason"] for m in parked] == ["bad-arguments"] * 4
    assert "should be int" in parked[2].headers["x-paota-error"]
    assert memory(pool).delays == []  # no retry was tried
    for handle in handles:
        state = await handle.state()
        assert state is not None and state.status is TaskStatus.FAILED
        assert state.error is not None and state.error.type == "BindError"


async def test_unnamed_args_bind_by_position(pool: WorkerPool) -> None:
    got: list[Any] = []

    @pool.task(name="Print")
    def print_task(payload: str) -> None:
        got.append(json.loads(payload))

    await started(pool)
    # a message produced by the Go library's own encoder: one unnamed string arg
    await memory(pool).publish_raw((VECTORS / "minimal.json").read_bytes())
    await memory(pool).run_until_idle()
    assert got == [{"id": "1", "name": "John Doe", "email": "john.doe@example.com"}]


async def test_go_vectors_with_named_args_and_no_args_run_typed_tasks(pool: WorkerPool) -> None:
    got: list[tuple[Any, ...]] = []

    # parameters in another order than Go's Args: named args bind by name
    @pool.task(name="ResizeImage", retry_count=0)
    async def resize(tags: list[str], keep: bool, ratio: float, width: int, url: str) -> str:
        got.append((url, width, ratio, keep, tags))
        return f"{url}@{width}"

    @pool.task(name="Noop")
    def noop() -> None:
        got.append(("noop",))

    await started(pool)
    # full.json: Go's encoder with named string, int, float64, bool and []string args (its times
    # moved to now: the vector's 30 s start deadline from 2026-11-27 has long passed)
    full = json.loads((VECTORS / "full.json").read_bytes())
    full["CreatedAt"], full["ETA"] = pool.clock.now().isoformat(), None
    await memory(pool).publish_raw(json.dumps(full).encode())
    # zero_values.json: Go's zero Signature, no args at all
    await memory(pool).publish_raw((VECTORS / "zero_values.json").read_bytes())
    await memory(pool).run_until_idle()
    assert sorted(got, key=len) == [
        ("noop",),
        ("https://example.com/a.png", 640, 1.5, True, ["a", "b"]),
    ]
    assert await pool.result(full["UUID"], timeout=1) == "https://example.com/a.png@640"
    assert memory(pool).parked(ParkQueue.FAILED) == []


async def test_a_typed_send_decodes_as_go_expects(pool: WorkerPool) -> None:
    @pool.task(name="Print")
    def print_task(who: str, times: int = 1) -> None: ...

    await pool.connect()
    handle = await print_task.send("Ada", times=2)
    [message] = memory(pool).messages(pool.broker.default_queue)
    doc = json.loads(message.body)
    assert doc["Name"] == "Print"
    assert doc["Args"] == [
        {"Name": "who", "Type": "string", "Value": "Ada"},
        {"Name": "times", "Type": "int", "Value": 2},
    ]
    assert decode_message(message.body) == handle.signature


async def test_go_style_tasks_still_work(pool: WorkerPool) -> None:
    def print_task(sig: Signature) -> str:
        return f"hello {sig.arg('who')}"

    pool.register_tasks({"Print": print_task, "Echo": lambda sig: sig.kwargs})

    @pool.task
    async def legacy(sig: Signature) -> str:
        return sig.name

    await started(pool)
    h1 = await pool.send_task(Signature("Print", args=[Arg("who", "string", "Ada")]))
    h2 = await pool.send_task(Signature("Echo", args=[Arg("x", "int", 1)]))
    h3 = await pool.send_task(Signature("legacy"))
    await memory(pool).run_until_idle()
    assert await h1.result(timeout=1) == "hello Ada"
    assert await h2.result(timeout=1) == {"x": 1}
    assert await h3.result(timeout=1) == "legacy"
    with pytest.raises(TypeError, match="Go style"):
        await legacy.send(Signature("legacy"))


async def test_register_tasks_accepts_typed_functions(pool: WorkerPool) -> None:
    def add(a: int, b: int) -> int:
        return a + b

    pool.register_tasks({"Add": add})
    await started(pool)
    handle = await pool.send_task(Signature("Add", args=[Arg("a", "int", 1), Arg("b", "int", 2)]))
    await memory(pool).run_until_idle()
    assert await handle.result(timeout=1) == 3


async def test_a_producer_only_client_sends_without_consuming() -> None:
    broker, store = MemoryBroker(), MemoryStore()
    client = Client(Config(), broker=broker, store=store)

    @client.task(name="resize", queue="images")
    async def resize(path: str, width: int) -> str: ...  # runs on some worker, never here

    async with client:
        handle = await resize.send("a.png", 100)
        by_name = await client.send_task(Signature("Print", args=[Arg.of("Ada", "who")]))
        assert handle.queue == "images" and by_name.queue == broker.default_queue
        assert broker.depth("images") == 1 and broker.depth(broker.default_queue) == 1
        assert broker.unacked_count == 0  # nobody consumed anything
        state = await handle.state()
        assert state is not None and state.status is TaskStatus.PENDING
