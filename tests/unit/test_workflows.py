"""Workflows on the memory broker and store: chains, groups, chords, nesting, failure rules,
redelivered and retried steps, what the store holds, and bad input."""

from __future__ import annotations

import asyncio
import collections
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import paota
from paota import (
    Cancelled,
    Client,
    Config,
    ConfigError,
    ManualClock,
    Middleware,
    Outcome,
    ParkQueue,
    Signature,
    StoreError,
    TaskContext,
    TaskFailedError,
    TaskSignature,
    TaskStatus,
    WorkerPool,
    WorkflowFailure,
    WorkflowHandle,
)
from paota.brokers.memory import MemoryBroker
from paota.core.message import decode_message
from paota.middleware.workflows import PLAN_KIND, WorkflowMiddleware
from paota.stores.memory import MemoryStore


@dataclass
class Rig:
    pool: WorkerPool
    broker: MemoryBroker
    store: MemoryStore
    runs: list[tuple[str, str, tuple[Any, ...]]] = field(default_factory=list)
    failures: list[WorkflowFailure] = field(default_factory=list)
    worker: asyncio.Task[None] | None = None

    def count(self, name: str) -> int:
        return sum(1 for n, _, _ in self.runs if n == name)

    def ran(self, task_id: str) -> int:
        return sum(1 for _, i, _ in self.runs if i == task_id)

    async def start(self) -> None:
        self.worker = asyncio.create_task(self.pool.start(install_signal_handlers=False))
        await asyncio.sleep(0)

    async def idle(self) -> None:
        await self.broker.run_until_idle()

    async def run(self, workflow: Any) -> WorkflowHandle[Any]:
        if self.worker is None:
            await self.start()
        handle: WorkflowHandle[Any] = await workflow.send()
        await self.idle()
        return handle


def make_rig(concurrency: int = 8, store: MemoryStore | None = None, **kwargs: Any) -> Rig:
    clock = ManualClock()
    broker = MemoryBroker(clock=clock)
    store = store or MemoryStore()
    pool = WorkerPool(
        Config(retry_backoff_cap_s=1),
        concurrency,
        "wf",
        broker=broker,
        store=store,
        clock=clock,
        **kwargs,
    )
    rig = Rig(pool, broker, store)
    add_tasks(rig)
    return rig


def add_tasks(rig: Rig) -> None:
    pool = rig.pool

    def note(*args: Any) -> None:
        ctx = paota.current_task()
        rig.runs.append((ctx.name, ctx.id, args))

    @pool.task
    async def inc(x: int) -> int:
        note(x)
        return x + 1

    @pool.task
    async def add(a: int, b: int) -> int:
        note(a, b)
        return a + b

    @pool.task
    async def total(xs: list[int]) -> int:
        note(xs)
        return sum(xs)

    @pool.task
    async def echo(value: Any) -> Any:
        note(value)
        return value

    finished: collections.defaultdict[int, asyncio.Event] = collections.defaultdict(asyncio.Event)

    @pool.task
    async def slow_inc(x: int) -> int:
        # later members finish first: each waits for the next of its five (events, not sleeps,
        # so a loaded machine cannot reorder them)
        if x % 5 != 4:
            await asyncio.wait_for(finished[x + 1].wait(), 5)
        note(x)
        finished[x].set()
        return x + 1

    @pool.task(retry_count=2)
    async def boom(x: int) -> int:
        note(x)
        raise ValueError(f"boom {x}")

    @pool.task(retry_count=1)
    async def flaky(x: int) -> int:
        note(x)
        if paota.current_task().attempt == 0:
            raise RuntimeError("transient")
        return x * 10

    @pool.task
    async def text(x: int) -> str:
        note(x)
        return f"<{x}>"

    @pool.task
    async def report(failure: WorkflowFailure) -> str:
        note(failure["task_id"])
        rig.failures.append(failure)
        return "reported"


def t(rig: Rig, name: str) -> Any:
    task = rig.pool._registry.get(name)
    assert task is not None
    return task


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    made = make_rig()
    await made.pool.connect()
    yield made
    await made.pool.close()
    if made.worker is not None:
        await asyncio.wait_for(made.worker, 10)


# --- composition ---------------------------------------------------------------------------------


async def test_a_chain_passes_each_result_to_the_next_step(rig: Rig) -> None:
    inc = t(rig, "inc")
    handle = await rig.run(paota.chain(inc.signature(1), inc.signature(), inc.signature()))
    assert await handle.result(timeout=1) == 4
    assert [args for _, _, args in rig.runs] == [(1,), (2,), (3,)]
    # the steps' ids come from the workflow id and the step's place
    assert handle.task_ids == [f"{handle.id}.0", f"{handle.id}.1", f"{handle.id}.2"]
    assert [i for _, i, _ in rig.runs] == handle.task_ids


async def test_a_group_returns_its_results_in_its_order(rig: Rig) -> None:
    slow_inc = t(rig, "slow_inc")
    handle = await rig.run(paota.group(slow_inc.signature(i) for i in range(5)))
    assert [args[0] for _, _, args in rig.runs] == [4, 3, 2, 1, 0]  # the order they finished
    assert await handle.result(timeout=1) == [1, 2, 3, 4, 5]


async def test_a_chord_callback_receives_the_list_once(rig: Rig) -> None:
    inc, total = t(rig, "inc"), t(rig, "total")
    handle = await rig.run(paota.chord((inc.signature(i) for i in range(10)), total.signature()))
    assert await handle.result(timeout=1) == sum(range(1, 11))
    assert rig.count("total") == 1
    [(_, callback_id, (xs,))] = [r for r in rig.runs if r[0] == "total"]
    assert xs == list(range(1, 11))
    assert callback_id == f"{handle.id}.1"


async def test_a_group_inside_a_chain_feeds_each_member_and_then_the_list(rig: Rig) -> None:
    inc, add, total = t(rig, "inc"), t(rig, "add"), t(rig, "total")
    workflow = paota.chain(
        inc.signature(1),
        paota.group(inc.signature(), add.signature(b=10), add.signature(100)),
        total.signature(),
        inc.signature(),
    )
    handle = await rig.run(workflow)
    # 2 -> [3, 12, 102] -> 117 -> 118
    assert await handle.result(timeout=1) == 118
    calls = [(n, args) for n, _, args in rig.runs]
    assert ("add", (2, 10)) in calls  # b given by name: the previous result is a
    assert ("add", (2, 100)) in calls  # given positionally: the previous result comes first
    assert ("total", ([3, 12, 102],)) in calls


async def test_a_chain_as_a_chord_callback(rig: Rig) -> None:
    inc, total = t(rig, "inc"), t(rig, "total")
    workflow = paota.chord(
        [inc.signature(1), inc.signature(2)],
        paota.chain(total.signature(), inc.signature(), inc.signature()),
    )
    handle = await rig.run(workflow)
    assert await handle.result(timeout=1) == 2 + 3 + 2


async def test_chains_and_groups_nest_inside_groups(rig: Rig) -> None:
    inc, total = t(rig, "inc"), t(rig, "total")
    workflow = paota.chain(
        paota.group(
            paota.chain(inc.signature(1), inc.signature()),
            paota.group(inc.signature(10), paota.chain(inc.signature(20), inc.signature())),
            inc.signature(30),
        ),
        paota.chord([inc.signature(0)], total.signature()),
    )
    handle = await rig.run(paota.group(workflow, inc.signature(-1)))
    # the inner chord's members are complete: they ignore the nested group's results
    assert await handle.result(timeout=1) == [1, 0]
    inner = await rig.run(workflow.steps[0])  # type: ignore[arg-type]
    assert await inner.result(timeout=1) == [3, [11, 22], 31]


async def test_a_complete_step_in_a_chain_ignores_the_previous_result(rig: Rig) -> None:
    inc = t(rig, "inc")
    handle = await rig.run(paota.chain(inc.signature(1), inc.signature(41)))
    assert await handle.result(timeout=1) == 42


async def test_steps_keep_their_options(rig: Rig) -> None:
    inc = t(rig, "inc")
    await rig.pool.connect()
    workflow = paota.chain(
        inc.signature(1),
        inc.with_options(queue="other", priority=3, delay_s=5, headers={"x-app": "a"}).signature(),
    )
    rig2 = rig.pool
    handle = await workflow.send(client=rig2)
    await rig.start()
    await rig.idle()
    # the second step waits in its own queue, which this pool does not consume
    [message] = rig.broker.messages("other")
    assert message.priority == 3
    assert message.headers["x-app"] == "a"
    assert [d.delay_s for d in rig.broker.delays] == [5.0]
    sig = decode_message(message.body, message.headers)
    assert sig.uuid == handle.task_ids[1]
    assert sig.args[0].value == 2


# --- the messages and the store ------------------------------------------------------------------


async def test_step_messages_are_go_json_and_the_links_are_x_paota_text_headers(rig: Rig) -> None:
    inc, add = t(rig, "inc"), t(rig, "add")
    handle = await paota.chain(inc.signature(1), add.signature(b=2)).send()
    [first] = rig.broker.messages(rig.broker.default_queue)
    # a Go worker reads the body alone: a plain Go Signature with the step's id and args
    sig = decode_message(first.body, {})
    assert sig.uuid == f"{handle.id}.0"
    assert sig.name == "inc"
    assert [(a.name, a.type, a.value) for a in sig.args] == [("x", "int", 1)]
    assert json.loads(first.body)["UUID"] == sig.uuid
    assert first.headers == {
        "x-paota-workflow-id": handle.id,
        "x-paota-parent-id": handle.id,
        "x-paota-workflow-step": "0",
    }
    await rig.start()
    await rig.idle()
    second = await rig.store.get(f"{handle.id}.1")
    assert second is not None
    assert second.args == [
        {"Name": "a", "Type": "int", "Value": 2},
        {"Name": "b", "Type": "int", "Value": 2},
    ]


async def test_the_store_holds_the_plan_and_every_step_links_to_its_parent(rig: Rig) -> None:
    inc, total = t(rig, "inc"), t(rig, "total")
    handle = await paota.chain(
        inc.signature(1), paota.group(inc.signature(), inc.signature()), total.signature()
    ).send()
    wf = handle.id
    pending = await rig.store.get(f"{wf}.0")
    assert pending is not None and pending.status is TaskStatus.PENDING
    assert (pending.workflow_id, pending.parent_id) == (wf, wf)
    await rig.start()
    await rig.idle()
    states = await handle.states()
    assert {k: (s.status, s.parent_id, s.workflow_id) for k, s in states.items() if s} == {
        f"{wf}.0": (TaskStatus.SUCCEEDED, wf, wf),
        f"{wf}.1.0": (TaskStatus.SUCCEEDED, f"{wf}.1", wf),
        f"{wf}.1.1": (TaskStatus.SUCCEEDED, f"{wf}.1", wf),
        f"{wf}.2": (TaskStatus.SUCCEEDED, wf, wf),
    }
    doc = await rig.store.get_doc(PLAN_KIND, wf)
    assert doc is not None
    root = doc["root"]
    assert (root["kind"], root["id"], root["parent"]) == ("chain", wf, "")
    assert [c["id"] for c in root["children"]] == [f"{wf}.0", f"{wf}.1", f"{wf}.2"]
    group = root["children"][1]
    assert (group["kind"], group["parent"]) == ("group", wf)
    assert [(c["id"], c["parent"], c["name"]) for c in group["children"]] == [
        (f"{wf}.1.0", f"{wf}.1", "inc"),
        (f"{wf}.1.1", f"{wf}.1", "inc"),
    ]
    # a handle made from the store alone, in another client, reads the same result
    client = Client(Config(), broker=MemoryBroker(), store=rig.store)
    await client.connect()
    again = await WorkflowHandle.load(client, wf)
    assert again.task_ids == handle.task_ids
    assert await again.result(timeout=1) == 6
    with pytest.raises(LookupError, match="no workflow 'wf_nope'"):
        await WorkflowHandle.load(client, "wf_nope")


async def test_tasks_outside_workflows_leave_no_workflow_entries(rig: Rig) -> None:
    inc = t(rig, "inc")
    await rig.start()
    handle = await inc.send(1)
    await rig.idle()
    assert await handle.result(timeout=1) == 2
    state = await rig.store.get(handle.id)
    assert state is not None and (state.parent_id, state.workflow_id) == ("", "")
    assert rig.store._docs == {} and rig.store._claims == {} and rig.store._sets == {}


def test_the_workflow_middleware_is_installed_only_with_a_coordination_store() -> None:
    with_store = make_rig()
    with_store.pool._prepare({"paota_tasks": 1})
    assert any(isinstance(m, WorkflowMiddleware) for m in with_store.pool._run_chain)
    clock = ManualClock()
    bare = WorkerPool(Config(), 1, "bare", broker=MemoryBroker(clock=clock), clock=clock)
    bare._prepare({"paota_tasks": 1})
    assert not any(isinstance(m, WorkflowMiddleware) for m in bare._run_chain)


# --- failures ------------------------------------------------------------------------------------


async def test_a_failed_step_stops_its_chain_and_the_error_callback_fires_once(rig: Rig) -> None:
    inc, boom, report = t(rig, "inc"), t(rig, "boom"), t(rig, "report")
    workflow = paota.chain(
        inc.signature(1), boom.signature(), inc.signature(), paota.group(inc.signature())
    ).on_error(report.signature())
    handle = await rig.run(workflow)
    wf = handle.id
    # boom ran its three attempts; nothing after it ran
    assert rig.count("boom") == 3
    assert rig.count("inc") == 1
    states = await handle.states()
    failed = states[f"{wf}.1"]
    assert failed is not None and failed.status is TaskStatus.FAILED
    for later in (f"{wf}.2", f"{wf}.3.0"):
        state = states[later]
        assert state is not None, later
        assert state.status is TaskStatus.CANCELLED
        assert state.error is not None
        assert state.error.message == (
            f"workflow {wf} stopped: step {wf}.1 (boom) ended FAILED: ValueError: boom 2"
        )
        assert state.workflow_id == wf
    assert states[f"{wf}.3.0"].parent_id == f"{wf}.3"  # type: ignore[union-attr]
    # the error callback ran once, with what failed
    assert rig.count("report") == 1
    assert rig.failures[0]["task_id"] == f"{wf}.1"
    assert {k: v for k, v in rig.failures[0].items() if k != "traceback"} == {
        "workflow_id": wf,
        "task_id": f"{wf}.1",
        "task_name": "boom",
        "status": "FAILED",
        "error_type": "ValueError",
        "error_message": "boom 2",
    }
    assert "ValueError: boom 2" in rig.failures[0]["traceback"]
    error_state = states[f"{wf}.error"]
    assert error_state is not None and error_state.status is TaskStatus.SUCCEEDED
    assert (error_state.parent_id, error_state.workflow_id) == (wf, wf)
    # the handle raises the failed step's error, not the cancellation of the last step
    with pytest.raises(TaskFailedError) as raised:
        await handle.result(timeout=1)
    assert (raised.value.task_id, raised.value.status) == (f"{wf}.1", "FAILED")
    assert raised.value.error_message == "boom 2"
    assert await handle.failed_task_id() == f"{wf}.1"


async def test_a_failed_member_cancels_the_chord_callback_and_the_rest_of_the_group_runs(
    rig: Rig,
) -> None:
    inc, boom, total, report = t(rig, "inc"), t(rig, "boom"), t(rig, "total"), t(rig, "report")
    members = [inc.signature(0), boom.signature(1), paota.chain(inc.signature(2), inc.signature())]
    members.append(boom.signature(3))
    workflow = paota.chain(paota.group(members), total.signature(), inc.signature())
    handle = await rig.run(workflow.on_error(report.signature()))
    wf = handle.id
    # the other members ran to their end (the chain in the group too); the callback never ran
    assert rig.count("inc") == 3
    assert rig.count("total") == 0
    states = await handle.states()
    assert states[f"{wf}.0.2.1"].status is TaskStatus.SUCCEEDED  # type: ignore[union-attr]
    for later in (f"{wf}.1", f"{wf}.2"):
        assert states[later].status is TaskStatus.CANCELLED  # type: ignore[union-attr]
    # two members failed; the error callback fired once, for the first of them
    assert rig.count("report") == 1
    first = await handle.failed_task_id()
    assert first in (f"{wf}.0.1", f"{wf}.0.3")
    assert rig.failures[0]["task_id"] == first
    with pytest.raises(TaskFailedError) as raised:
        await handle.result(timeout=1)
    assert raised.value.task_id == first


async def test_a_bare_group_with_a_failed_member_raises_that_members_error(rig: Rig) -> None:
    inc, boom = t(rig, "inc"), t(rig, "boom")
    handle = await rig.run(paota.group(inc.signature(1), boom.signature(2), inc.signature(3)))
    with pytest.raises(TaskFailedError) as raised:
        await handle.result(timeout=1)
    assert raised.value.task_id == f"{handle.id}.1"
    assert rig.count("inc") == 2


async def test_a_retried_step_moves_the_workflow_on_once(rig: Rig) -> None:
    flaky, inc = t(rig, "flaky"), t(rig, "inc")
    handle = await rig.run(paota.chain(flaky.signature(1), inc.signature(), inc.signature()))
    assert await handle.result(timeout=1) == 12
    assert rig.count("flaky") == 2
    assert rig.count("inc") == 2
    # the retry kept the links
    state = await rig.store.get(handle.task_ids[0])
    assert state is not None and state.attempts == 1 and state.workflow_id == handle.id


async def test_a_result_the_next_step_cannot_take_stops_the_workflow(rig: Rig) -> None:
    text, inc, report = t(rig, "text"), t(rig, "inc"), t(rig, "report")
    handle = await rig.run(
        paota.chain(text.signature(1), inc.signature(), inc.signature()).on_error(
            report.signature()
        )
    )
    wf = handle.id
    # inc(x: int) got "<1>": parked with bad arguments, no retries; the last step cancelled
    states = await handle.states()
    assert states[f"{wf}.1"].status is TaskStatus.FAILED  # type: ignore[union-attr]
    assert states[f"{wf}.2"].status is TaskStatus.CANCELLED  # type: ignore[union-attr]
    [parked] = rig.broker.parked(ParkQueue.FAILED)
    assert parked.headers["x-paota-reason"] == "bad-arguments"
    assert rig.failures[0]["task_id"] == f"{wf}.1"
    assert rig.count("inc") == 0


async def test_a_result_that_cannot_travel_fails_the_next_step_where_it_is_built(
    rig: Rig,
) -> None:
    pool = rig.pool

    @pool.task
    async def odd() -> Any:
        return {1, 2}  # the memory store keeps it as it is; no message can carry it

    echo, report = t(rig, "echo"), t(rig, "report")
    handle = await rig.run(
        paota.chain(odd.signature(), echo.signature(), echo.signature()).on_error(
            report.signature()
        )
    )
    wf = handle.id
    states = await handle.states()
    failed = states[f"{wf}.1"]
    assert failed is not None and failed.status is TaskStatus.FAILED
    assert failed.error is not None and failed.error.type == "ArgumentError"
    assert "cannot be sent" in failed.error.message
    assert states[f"{wf}.2"].status is TaskStatus.CANCELLED  # type: ignore[union-attr]
    assert rig.count("echo") == 0
    assert rig.count("report") == 1


class CancelStep(Middleware):
    """Cancels the runs of one task, as a cancellation feature would."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def admit(self, task: TaskContext) -> Outcome | None:
        return Cancelled("cancelled by the operator") if task.name == self.name else None


async def test_a_cancelled_step_stops_its_chain() -> None:
    rig = make_rig(middleware=[CancelStep("add")])
    await rig.pool.connect()
    try:
        inc, add = t(rig, "inc"), t(rig, "add")
        handle = await rig.run(paota.chain(inc.signature(1), add.signature(b=1), inc.signature()))
        states = await handle.states()
        cancelled = states[handle.task_ids[1]]
        last = states[handle.task_ids[2]]
        assert cancelled is not None and cancelled.status is TaskStatus.CANCELLED
        assert last is not None and last.status is TaskStatus.CANCELLED
        assert last.error is not None
        assert "ended CANCELLED: Cancelled: cancelled by the operator" in last.error.message
        with pytest.raises(TaskFailedError) as raised:
            await handle.result(timeout=1)
        assert raised.value.task_id == handle.task_ids[1]
    finally:
        await rig.pool.close()
        if rig.worker is not None:
            await rig.worker


# --- redelivery ----------------------------------------------------------------------------------


async def copy_of(rig: Rig, task_id: str) -> tuple[bytes, dict[str, Any]]:
    [message] = [
        m for m in rig.broker.messages(rig.broker.default_queue) if m.message_id == task_id
    ]
    return message.body, dict(message.headers)


@pytest.mark.parametrize("concurrency", [1, 8])
async def test_a_member_delivered_twice_completes_the_chord_once(concurrency: int) -> None:
    rig = make_rig(concurrency)
    await rig.pool.connect()
    try:
        inc, total = t(rig, "inc"), t(rig, "total")
        handle = await paota.chord([inc.signature(i) for i in range(4)], total.signature()).send()
        # given a member's message in the queue twice (as after a redelivery)
        body, headers = await copy_of(rig, f"{handle.id}.0.3")
        await rig.broker.publish_raw(body, headers)
        # when the pool runs everything
        await rig.start()
        await rig.idle()
        # then the callback ran once, with one result per member
        assert await handle.result(timeout=1) == 1 + 2 + 3 + 4
        assert rig.count("total") == 1
        assert rig.ran(f"{handle.id}.0.3") in (1, 2)  # at-least-once: the copy may run too
        assert len(rig.broker.messages(rig.broker.default_queue)) == 0
    finally:
        await rig.pool.close()
        if rig.worker is not None:
            await rig.worker


async def test_a_step_redelivered_after_the_workflow_finished_changes_nothing(rig: Rig) -> None:
    inc, total = t(rig, "inc"), t(rig, "total")
    handle = await paota.chain(
        inc.signature(1), paota.chord([inc.signature(), inc.signature()], total.signature())
    ).send()
    first = await copy_of(rig, f"{handle.id}.0")
    await rig.start()
    await rig.idle()
    member = [m for m in rig.runs if m[1] == f"{handle.id}.1.0.1"]
    assert len(member) == 1
    before = await handle.states()
    runs = list(rig.runs)
    # when the first step and a group member come again
    await rig.broker.publish_raw(*first)
    await rig.idle()
    # then they are duplicates: nothing runs, nothing is published, no record moves
    assert rig.runs == runs
    assert await handle.states() == before
    assert rig.pool.stats.duplicates == 1
    assert await handle.result(timeout=1) == 6


class FlakyBarrier(MemoryStore):
    """A memory store whose first ``fail`` set adds fail, as a store outage would."""

    def __init__(self, fail: int) -> None:
        super().__init__()
        self.fail = fail

    async def add_member(
        self, key: str, member: str, *, ttl_s: float | None = None
    ) -> tuple[int, bool]:
        if self.fail > 0:
            self.fail -= 1
            raise StoreError("store unavailable")
        return await super().add_member(key, member, ttl_s=ttl_s)


async def test_a_barrier_write_that_fails_returns_the_member_and_its_redelivery_completes_it() -> (
    None
):
    rig = make_rig(store=FlakyBarrier(fail=2))
    await rig.pool.connect()
    try:
        inc, total = t(rig, "inc"), t(rig, "total")
        handle = await rig.run(paota.chord([inc.signature(i) for i in range(3)], total.signature()))
        assert await handle.result(timeout=1) == 6
        assert rig.count("total") == 1
        assert rig.count("inc") == 3  # the returned members were duplicates the second time
        assert rig.pool.stats.duplicates == 2
    finally:
        await rig.pool.close()
        if rig.worker is not None:
            await rig.worker


async def test_a_failed_member_delivered_again_fires_the_error_callback_once(rig: Rig) -> None:
    pool = rig.pool
    inc, report = t(rig, "inc"), t(rig, "report")

    @pool.task
    async def fails(x: int) -> int:
        raise ValueError("no")

    handle = (
        await paota.chord([fails.signature(1), inc.signature(2)], inc.signature())
        .on_error(report.signature())
        .send()
    )
    copy = await copy_of(rig, f"{handle.id}.0.0")
    await rig.start()
    await rig.idle()
    await rig.broker.publish_raw(*copy)
    await rig.idle()
    assert rig.count("report") == 1
    assert rig.pool.stats.duplicates == 1
    assert len(rig.broker.messages(rig.broker.default_queue)) == 0


# --- building workflows: what is allowed ---------------------------------------------------------


def test_signature_binds_now_and_says_whether_it_takes_the_previous_result(rig: Rig) -> None:
    inc, add = t(rig, "inc"), t(rig, "add")
    assert inc.signature(1).takes_previous is False
    assert inc.signature().takes_previous is True
    assert add.signature(b=1).takes_previous is True
    assert isinstance(inc.signature(1), TaskSignature)
    sig = inc.with_options(priority=4).signature(1).to_signature()
    assert isinstance(sig, Signature)
    assert (sig.name, sig.priority, [a.value for a in sig.args]) == ("inc", 4, [1])
    with pytest.raises(TypeError, match=r"too many positional arguments.*nor does it fit"):
        add.signature(1, 2, 3)
    with pytest.raises(TypeError, match=r"missing a required argument: 'a'.*'b'"):
        add.signature()
    with pytest.raises(TypeError, match="multiple values for argument 'a'"):
        add.signature(a=1)
    with pytest.raises(paota.ArgumentError, match="cannot be sent"):
        inc.signature(object())
    with pytest.raises(TypeError, match=r"leaves its first parameter 'x'.*give 'x'"):
        inc.signature().to_signature()


async def test_a_complete_signature_sends_as_a_task(rig: Rig) -> None:
    inc = t(rig, "inc")
    await rig.start()
    handle = await inc.signature(1).send()
    await rig.idle()
    assert await handle.result(timeout=1) == 2
    with pytest.raises(TypeError, match="only run in a workflow"):
        await inc.signature().send()


async def test_misplaced_and_wrong_steps_are_refused_before_anything_is_sent(rig: Rig) -> None:
    inc, report = t(rig, "inc"), t(rig, "report")
    with pytest.raises(TypeError, match=r"step 0 .* no step comes before it"):
        await paota.chain(inc.signature(), inc.signature()).send()
    with pytest.raises(TypeError, match=r"step 1 .* no step comes before it"):
        await paota.group(inc.signature(1), inc.signature()).send()
    with pytest.raises(TypeError, match=r"step 2 must be a step.*call .signature"):
        paota.chain(inc.signature(1), inc.signature(), inc)
    with pytest.raises(TypeError, match="group step 0 must be a step"):
        paota.group([42])
    with pytest.raises(TypeError, match=r"TaskSender.*call .signature"):
        paota.group(inc.with_options(priority=1), inc.signature(1))
    with pytest.raises(ValueError, match="a chain needs at least one step"):
        paota.chain()
    with pytest.raises(ValueError, match="a group needs at least one step"):
        paota.group(x for x in [])
    nested = paota.chain(
        inc.signature(1), paota.group(inc.signature()).on_error(report.signature())
    )
    with pytest.raises(TypeError, match="on_error belongs to the outermost workflow"):
        await nested.send()
    with pytest.raises(TypeError, match="raw_args"):
        await paota.chain(Signature("inc", raw_args=b"x")).send(client=rig.pool)
    with pytest.raises(ValueError, match="ttl_s must be a finite number"):
        await paota.chain(inc.signature(1)).send(ttl_s=0)
    with pytest.raises(TypeError, match=r"send\(client=\.\.\.\)"):
        await paota.chain(Signature("inc")).send()
    with pytest.raises(TypeError, match="on_error must be"):
        paota.chain(inc.signature(1)).on_error(inc)
    assert rig.broker.messages(rig.broker.default_queue) == []
    assert rig.store._records == {} and rig.store._docs == {}


async def test_workflows_need_a_store_with_coordination() -> None:
    clock = ManualClock()
    client = Client(Config(), broker=MemoryBroker(clock=clock), clock=clock)

    @client.task
    async def inc(x: int) -> int: ...

    with pytest.raises(ConfigError, match="results need a store"):
        await paota.chain(inc.signature(1)).send()

    class Plain:  # a store without the Coordination capability
        async def connect(self) -> None: ...

    other = Client(Config(), broker=MemoryBroker(clock=clock), store=Plain())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="Coordination capability"):
        await paota.chain(inc.signature(1)).send(client=other)


async def test_go_signatures_are_steps_too(rig: Rig) -> None:
    pool = rig.pool
    seen: list[Signature] = []

    def go_print(sig: Signature) -> str:
        seen.append(sig)
        return f"hello {sig.arg('who')}"

    pool.register_tasks({"Print": go_print})
    echo = t(rig, "echo")
    step = Signature("Print", args=[paota.Arg("who", "string", "Ada")], uuid="ignored")
    handle = await rig.run(paota.chain(step, echo.signature()))
    assert await handle.result(timeout=1) == "hello Ada"
    assert seen[0].uuid == f"{handle.id}.0"


async def test_a_producer_client_sends_a_workflow_its_workers_run() -> None:
    clock = ManualClock()
    broker, store = MemoryBroker(clock=clock), MemoryStore()
    producer = Client(Config(), broker=broker, store=store, clock=clock)

    @producer.task(name="inc")
    async def inc(x: int) -> int: ...

    rig = Rig(WorkerPool(Config(), 4, "w", broker=broker, store=store, clock=clock), broker, store)
    add_tasks(rig)
    await producer.connect()
    try:
        await rig.start()
        handle = await paota.chain(inc.signature(1), inc.signature()).send()
        await rig.idle()
        assert await handle.result(timeout=1) == 3
    finally:
        await rig.pool.stop()
        if rig.worker is not None:
            await rig.worker
        await producer.close()


async def test_two_pools_running_copies_of_a_member_publish_the_callback_once() -> None:
    # given two pools (as two processes) on one broker and store, and a member queued twice
    first = make_rig(4)
    second = Rig(
        WorkerPool(
            Config(), 4, "wf2", broker=first.broker, store=first.store, clock=first.broker.clock
        ),
        first.broker,
        first.store,
    )
    add_tasks(second)
    second.runs = first.runs
    await first.pool.connect()
    try:
        inc, total = t(first, "inc"), t(first, "total")
        handle = await paota.chord([inc.signature(i) for i in range(6)], total.signature()).send()
        for member in (f"{handle.id}.0.4", f"{handle.id}.0.5"):
            await first.broker.publish_raw(*await copy_of(first, member))
        # when both pools run
        await first.start()
        await second.start()
        await first.idle()
        # then the callback was published and ran once
        assert await handle.result(timeout=1) == sum(range(1, 7))
        assert first.count("total") == 1
    finally:
        await second.pool.stop()
        await first.pool.close()
        for rig in (first, second):
            if rig.worker is not None:
                await rig.worker


class DropsFirstPublish(MemoryBroker):
    """A memory broker whose first publish of workflow step ``path`` fails."""

    def __init__(self, path: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = path
        self.failed = 0

    async def publish(self, message: paota.OutgoingMessage) -> None:
        if message.message_id.partition(".")[2] == self.path and not self.failed:
            self.failed += 1
            raise paota.PublishError("not confirmed")
        await super().publish(message)


async def test_a_publish_that_failed_midway_is_taken_over_once_its_lease_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("paota.middleware.workflows.LEASE_S", 0.05)
    clock = ManualClock()
    broker, store = DropsFirstPublish("1", clock=clock), MemoryStore()
    rig = Rig(WorkerPool(Config(), 4, "wf", broker=broker, store=store, clock=clock), broker, store)
    add_tasks(rig)
    await rig.pool.connect()
    try:
        inc, total = t(rig, "inc"), t(rig, "total")
        # the member that completes the group fails to publish the callback: its delivery goes
        # back to the broker holding the lease; its redelivery waits the lease out, then publishes
        handle = await rig.run(paota.chord([inc.signature(1), inc.signature(2)], total.signature()))
        assert broker.failed == 1
        assert await handle.result(timeout=2) == 5
        assert rig.count("total") == 1
        assert rig.pool.stats.duplicates == 1
    finally:
        await rig.pool.close()
        if rig.worker is not None:
            await rig.worker


# --- paota workflow ------------------------------------------------------------------------------


async def test_paota_workflow_shows_each_step_with_its_state(rig: Rig) -> None:
    from paota.cli.workflow import as_json, describe

    inc, boom, report = t(rig, "inc"), t(rig, "boom"), t(rig, "report")
    handle = await rig.run(
        paota.chain(inc.signature(1), paota.group(boom.signature(), inc.signature())).on_error(
            report.signature()
        )
    )
    wf = handle.id
    states = await handle.states()
    failed = await handle.failed_task_id()
    assert describe(handle, states, failed) == [
        f"workflow {wf}: 3 of 3 steps finished; stopped by {wf}.1.0",
        f"  chain {wf}",
        f"    {wf}.0 inc: SUCCEEDED on wf -> 2",
        f"    group {wf}.1",
        f"      {wf}.1.0 boom: FAILED on wf ValueError: boom 2",
        f"      {wf}.1.1 inc: SUCCEEDED on wf -> 3",
        "  on error:",
        f'    {wf}.error report: SUCCEEDED on wf -> "reported"',
    ]
    doc = as_json(handle, states, failed)
    assert doc["failed_task_id"] == f"{wf}.1.0"
    group = doc["root"]["children"][1]
    assert [(c["id"], c["parent"], c["status"]) for c in group["children"]] == [
        (f"{wf}.1.0", f"{wf}.1", "FAILED"),
        (f"{wf}.1.1", f"{wf}.1", "SUCCEEDED"),
    ]
    json.dumps(doc)


def test_paota_workflow_needs_a_store_and_a_known_id(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from paota.cli import main

    for name in [k for k in os.environ if k.startswith("PAOTA_")]:
        monkeypatch.delenv(name)
    assert main(["workflow", "wf_nope"]) == 2
    assert "results need a store" in capsys.readouterr().err
    monkeypatch.setenv("PAOTA_STORE", "memory")
    assert main(["workflow", "wf_nope"]) == 1
    assert "the store has no workflow 'wf_nope'" in capsys.readouterr().err
