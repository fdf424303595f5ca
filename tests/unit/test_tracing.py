"""OpenTelemetry tracing with the SDK's in-memory exporter, on the memory broker (virtual clock):
a producer span per send, a consumer span per run linked through the W3C headers, the trace kept
through retries, deferrals, follow-up tasks and a chord's steps, and a new root for a message
without headers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from paota import (
    Config,
    Defer,
    ManualClock,
    Middleware,
    Outcome,
    Signature,
    Succeeded,
    TaskContext,
    WorkerPool,
)
from paota.brokers.memory import MemoryBroker
from paota.core.message import encode_message
from paota.core.services import WorkerServices
from paota.middleware.tracing import TracingMiddleware
from paota.stores.memory import MemoryStore
from paota.workflows import chord


class ThrottleOnce(Middleware):
    def __init__(self) -> None:
        self.seen: set[str] = set()

    async def admit(self, task: TaskContext) -> Outcome | None:
        if task.name == "limited" and task.id not in self.seen:
            self.seen.add(task.id)
            return Defer(1.0, "throttled")
        return None


class FollowUp(Middleware):
    """Sends ``second`` from after_outcome once ``first`` succeeded (as a workflow does)."""

    def __init__(self) -> None:
        self.pool: WorkerServices | None = None

    async def startup(self, services: WorkerServices) -> None:
        self.pool = services

    async def after_outcome(self, task: TaskContext, outcome: Outcome) -> None:
        if task.name == "first" and isinstance(outcome, Succeeded) and self.pool is not None:
            await self.pool.client.send_task(Signature("second"))


@dataclass
class Rig:
    pool: WorkerPool
    broker: MemoryBroker
    exporter: InMemorySpanExporter
    provider: TracerProvider

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        found = list(self.exporter.get_finished_spans())
        return [s for s in found if name is None or s.name == name]


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    clock = ManualClock()
    broker = MemoryBroker(clock=clock)
    tracing = TracingMiddleware(
        tracer_provider=provider, propagator=TraceContextTextMapPropagator()
    )
    pool = WorkerPool(
        Config(),
        4,
        "traced",
        broker=broker,
        store=MemoryStore(clock=clock),
        clock=clock,
        middleware=[tracing, ThrottleOnce(), FollowUp()],
    )
    await pool.connect()
    worker = asyncio.create_task(pool.start(install_signal_handlers=False))
    await asyncio.sleep(0)
    yield Rig(pool, broker, exporter, provider)
    await pool.close()
    await asyncio.wait_for(worker, 10)
    provider.shutdown()


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.trace_id


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_a_run_is_a_child_of_its_send_through_the_headers(rig: Rig) -> None:
    @rig.pool.task
    async def add(a: int, b: int) -> int:
        return a + b

    handle = await add.send(2, 3)
    await rig.broker.run_until_idle()
    assert await handle.result(timeout=1) == 5

    [send] = rig.spans("send add")
    [run] = rig.spans("process add")
    assert send.kind is SpanKind.PRODUCER and run.kind is SpanKind.CONSUMER
    assert trace_id(run) == trace_id(send)
    assert parent_id(run) == span_id(send)
    assert send.attributes is not None and run.attributes is not None
    assert send.attributes["messaging.destination.name"] == "paota_tasks"
    assert send.attributes["messaging.message.id"] == handle.id
    assert run.attributes["paota.task.attempt"] == 0
    assert run.attributes["paota.worker"] == "traced"
    assert run.status.status_code is StatusCode.UNSET


async def test_retries_keep_the_trace(rig: Rig) -> None:
    attempts = 0

    @rig.pool.task(retry_count=2)
    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ValueError(f"attempt {attempts}")
        return "third time"

    handle = await flaky.send()
    await rig.broker.run_until_idle()
    assert await handle.result(timeout=1) == "third time"

    [send] = rig.spans("send flaky")
    runs = sorted(rig.spans("process flaky"), key=lambda s: s.start_time or 0)
    assert [r.attributes["paota.task.attempt"] for r in runs if r.attributes] == [0, 1, 2]
    assert {trace_id(r) for r in runs} == {trace_id(send)}
    assert {parent_id(r) for r in runs} == {span_id(send)}
    assert [r.status.status_code for r in runs] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    assert runs[0].events and runs[0].events[0].name == "exception"


async def test_a_throttled_delivery_has_its_span_and_the_run_keeps_the_trace(rig: Rig) -> None:
    @rig.pool.task
    async def limited() -> None: ...

    await limited.send()
    await rig.broker.run_until_idle()

    [send] = rig.spans("send limited")
    bounce, run = sorted(rig.spans("process limited"), key=lambda s: s.start_time or 0)
    assert bounce.attributes is not None and bounce.attributes["paota.outcome"] == "throttled"
    assert run.attributes is not None and "paota.outcome" not in run.attributes
    assert {trace_id(bounce), trace_id(run)} == {trace_id(send)}
    assert parent_id(run) == span_id(send)


async def test_an_eta_deferral_keeps_the_trace(rig: Rig) -> None:
    @rig.pool.task
    async def later() -> None: ...

    # a message that arrives before its ETA is deferred to it, then runs
    eta = rig.pool.clock.now() + timedelta(seconds=60)
    wire = encode_message(Signature("later", uuid="task_later", eta=eta))
    headers = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    await rig.broker.publish_raw(wire.body, {**wire.headers, **headers})
    await rig.broker.run_until_idle()

    deferred, run = sorted(rig.spans("process later"), key=lambda s: s.start_time or 0)
    assert deferred.attributes is not None and deferred.attributes["paota.outcome"] == "deferred"
    assert run.attributes is not None and "paota.outcome" not in run.attributes
    for span in (deferred, run):
        assert trace_id(span) == 0x0AF7651916CD43DD8448EB211C80319C
        assert parent_id(span) == 0xB7AD6B7169203331
    [copy] = rig.broker.delays  # the deferred copy carried the same trace context
    assert copy.headers["traceparent"] == headers["traceparent"]


async def test_tasks_sent_by_a_task_or_after_its_outcome_stay_in_its_trace(rig: Rig) -> None:
    @rig.pool.task
    async def first() -> None:
        await child.send()  # inside the run: a child of the run's span

    @rig.pool.task
    async def child() -> None: ...

    @rig.pool.task
    async def second() -> None: ...  # sent by FollowUp.after_outcome, as a workflow step is

    await first.send()
    await rig.broker.run_until_idle()

    [send_first] = rig.spans("send first")
    [run_first] = rig.spans("process first")
    [send_child] = rig.spans("send child")
    [run_child] = rig.spans("process child")
    [send_second] = rig.spans("send second")
    [run_second] = rig.spans("process second")
    everything = [send_first, run_first, send_child, run_child, send_second, run_second]
    assert {trace_id(s) for s in everything} == {trace_id(send_first)}
    assert parent_id(send_child) == span_id(run_first)
    assert parent_id(run_child) == span_id(send_child)
    assert parent_id(send_second) == span_id(run_first)
    assert parent_id(run_second) == span_id(send_second)


async def test_a_message_without_trace_headers_runs_as_a_new_root(rig: Rig) -> None:
    ran: list[str] = []

    @rig.pool.task(name="Print")
    def print_task(sig: Signature) -> None:
        ran.append(str(sig.arg("who")))

    # what a Go producer publishes: the JSON body, no trace header
    body = (
        b'{"UUID":"task_go","Name":"Print","Args":[{"Name":"who","Type":"string","Value":"Go"}],'
        b'"RoutingKey":"","Priority":0,"RetryCount":0,"RetryTimeout":0,"WaitTime":0,'
        b'"RetriesDone":0,"TaskTimeOut":0,"IgnoreWhenTaskNotRegistered":false,'
        b'"CreatedAt":null,"ETA":null}'
    )
    await rig.broker.publish_raw(body)
    await rig.broker.run_until_idle()

    assert ran == ["Go"]
    [run] = rig.spans("process Print")
    assert run.parent is None
    assert trace_id(run) != 0
    assert run.status.status_code is StatusCode.UNSET


async def test_a_delivery_parked_without_running_is_an_error_span(rig: Rig) -> None:
    await rig.broker.publish_raw(
        b"garbage", {"traceparent": "00-11111111111111111111111111111111-2222222222222222-01"}
    )
    await rig.broker.run_until_idle()
    [span] = rig.spans("process (undecodable)")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["paota.park.reason"] == "undecodable"
    assert span.attributes["paota.outcome"] == "failed"
    assert trace_id(span) == 0x11111111111111111111111111111111


async def test_sync_tasks_see_the_run_span_as_current(rig: Rig) -> None:
    from opentelemetry import trace

    seen: list[int] = []

    @rig.pool.task
    def blocking() -> None:  # runs in a thread
        seen.append(trace.get_current_span().get_span_context().span_id)

    await blocking.send()
    await rig.broker.run_until_idle()
    [run] = rig.spans("process blocking")
    assert seen == [span_id(run)]


async def test_the_steps_of_a_real_chord_stay_in_the_trace_it_was_sent_in(rig: Rig) -> None:
    @rig.pool.task
    async def inc(x: int) -> int:
        return x + 1

    @rig.pool.task
    async def total(xs: list[int]) -> int:
        return sum(xs)

    # a chord sent inside a span of the producer's (a web request, say)
    with rig.provider.get_tracer("shop").start_as_current_span("checkout") as outer:
        handle = await chord([inc.signature(1), inc.signature(2)], total.signature()).send()
    await rig.broker.run_until_idle()
    assert await handle.result(timeout=1) == 5

    members = rig.spans("process inc")
    [send_total] = rig.spans("send total")
    [run_total] = rig.spans("process total")
    # every step, the callback the workflow middleware sent included, is in the producer's trace
    everything = [*rig.spans("send inc"), *members, send_total, run_total]
    assert {trace_id(s) for s in everything} == {outer.get_span_context().trace_id}
    # the callback was sent by the member that completed the barrier, and ran as its child
    assert parent_id(send_total) in {span_id(m) for m in members}
    assert parent_id(run_total) == span_id(send_total)
