"""The pool contract: a :class:`~paota.WorkerPool` behaves the same on every broker.

Subclass :class:`PoolContract` and provide a ``rig`` fixture: an async factory
``await rig(concurrency=4, extra_concurrency=None, store=True, **config_fields)`` returning a
:class:`Rig` whose pool is built on the backend (with a fresh :class:`MemoryStore`, or none) and
not started yet, so tests can register tasks first; ``await r.start()`` starts it in the
background. ``extra_concurrency`` makes the pool consume the rig's extra queue too, with that
concurrency (the default queue keeps ``concurrency``). Config fields default to
:data:`RIG_DEFAULTS` (tiny retry backoffs, so real-time brokers stay fast). The fixture closes every
pool it made and removes the extra queue afterwards.

The memory backend settles with ``run_until_idle`` on a manual clock; RabbitMQ in real time, by
polling the store and the queues (tests/unit/test_pool_contract_memory.py,
tests/integration/test_pool_contract_amqp.py). Every test says what it waits for (the tasks, or a
condition), so both rigs stop at the same point.
"""

from __future__ import annotations

import abc
import asyncio
import inspect
import itertools
import json
import math
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pytest

from paota import Arg, Signature, TaskStatus, WorkerPool, current_task
from paota.core.errors import BrokerError, PaotaError, PublishError, StoreError
from paota.core.message import (
    CONTENT_TYPE_HEADERS,
    CONTENT_TYPE_JSON,
    decode_message,
    encode_json,
    encode_message,
)
from paota.core.protocols import (
    ORIGIN_HEADER,
    PARKING_HEADERS,
    RETURNS_HEADER,
    Message,
    ParkQueue,
)
from paota.core.state import ErrorInfo, TaskState
from paota.core.tasks import TaskHandle
from paota.stores.memory import MemoryStore
from tests.contracts.broker_contract import message

__all__ = ["RIG_DEFAULTS", "Condition", "PoolContract", "Rig", "RigFactory", "TaskRef", "text"]

VECTORS = Path(__file__).resolve().parents[1] / "unit" / "vectors" / "go-paota"

RIG_DEFAULTS: Mapping[str, Any] = {"retry_backoff_cap_s": 0.1}
"""Config fields every rig starts from: Fibonacci backoffs capped at 0.1 s."""

TaskRef = TaskHandle[Any] | str
Condition = Callable[[], bool | Awaitable[bool]]

TRACE = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "x-custom": "7"}
"""Headers another layer (tracing, a workflow, a middleware) put on a task."""


def text(value: Any) -> Any:
    """A header value as a test compares it: bytes decoded (AMQP libraries may hand either)."""
    return value.decode() if isinstance(value, bytes | bytearray) else value


def carried(headers: Mapping[str, Any], keys: Mapping[str, Any] = TRACE) -> dict[str, Any]:
    """The headers of ``keys`` found in ``headers``."""
    return {k: text(headers[k]) for k in keys if k in headers}


def task_id(ref: TaskRef) -> str:
    return ref if isinstance(ref, str) else ref.id


class Rig(abc.ABC):
    """A pool on one backend, its store, and what a test needs to drive it and look inside."""

    def __init__(self, pool: WorkerPool, store: MemoryStore | None, extra_queue: str) -> None:
        self.pool = pool
        self.store = store
        self.extra_queue = extra_queue
        """A second task queue, free to use (removed after the test)."""
        self._running: asyncio.Task[None] | None = None

    @property
    def default_queue(self) -> str:
        """The task queue."""
        return self.pool.broker.default_queue

    def parking_queue(self, queue: ParkQueue) -> str:
        """The name of a parking queue."""
        return self.pool.broker.parking_queue(queue)

    def now(self) -> datetime:
        """The pool's time (a manual clock on the memory rig)."""
        return self.pool.clock.now()

    async def start(self) -> Rig:
        """Start the pool in the background; returns once it consumes every queue."""
        self._running = asyncio.create_task(self.pool.start(install_signal_handlers=False))
        await self._consuming()
        return self

    async def close(self) -> None:
        """Stop and close the pool (idempotent)."""
        await self.pool.close()
        if self._running is not None:
            await asyncio.wait_for(self._running, 30)

    async def state(self, ref: TaskRef) -> TaskState:
        """The stored record of a task (which must exist)."""
        assert self.store is not None, "this rig has no store"
        state = await self.store.get(task_id(ref))
        assert state is not None, f"no record of {task_id(ref)}"
        return state

    async def publish(
        self, sig: Signature, queue: str | None = None, *, headers: dict[str, Any] | None = None
    ) -> None:
        """Publish ``sig`` through the broker as the core encodes it, without a delay and without
        a store record (a message from another producer, or a redelivered copy)."""
        await self.pool.broker.publish(message(sig, queue or self.default_queue, headers=headers))

    async def _missing(self, tasks: tuple[TaskRef, ...], until: Condition | None) -> str | None:
        """What is not done yet (None: the tasks are final and the condition holds)."""
        for ref in tasks:
            assert self.store is not None, "waiting for tasks needs a store; use until="
            state = await self.store.get(task_id(ref))
            if state is None or not state.status.is_final:
                status = "no record" if state is None else state.status.value
                return f"task {task_id(ref)} is not finished ({status})"
        if until is not None:
            held = until()
            if inspect.isawaitable(held):
                held = await held
            if not held:
                return "the condition does not hold"
        return None

    # --- what each backend provides ------------------------------------------------------------

    @abc.abstractmethod
    async def _consuming(self) -> None:
        """Return once the started pool consumes every one of its queues."""

    @abc.abstractmethod
    async def settle(
        self, *tasks: TaskRef, until: Condition | None = None, timeout_s: float = 10.0
    ) -> None:
        """Wait until ``tasks`` have a final state, ``until()`` holds and nothing is in flight;
        fail the test after ``timeout_s``."""

    @abc.abstractmethod
    async def parked(self, queue: ParkQueue) -> list[Message]:
        """The messages of a parking queue, left where they are."""

    @abc.abstractmethod
    async def publish_raw(
        self, body: bytes, headers: Mapping[str, Any] | None = None, *, queue: str | None = None
    ) -> None:
        """Put bytes into ``queue`` (default: the task queue) as another producer would."""


class RigFactory(Protocol):
    """The ``rig`` fixture."""

    def __call__(
        self,
        *,
        concurrency: int = 4,
        extra_concurrency: int | None = None,
        store: bool = True,
        **config_fields: Any,
    ) -> Awaitable[Rig]: ...


def go_body(**fields: Any) -> bytes:
    """Go's minimal vector (what the Go example producer sends) with ``fields`` changed."""
    doc = json.loads((VECTORS / "minimal.json").read_bytes())
    doc.update(fields)
    return json.dumps(doc, separators=(",", ":")).encode()


class PoolContract:
    """Behaviour every broker gives a pool; subclasses provide the ``rig`` fixture."""

    # --- outcomes ------------------------------------------------------------------------------

    async def test_success_is_recorded_with_its_result(self, rig: RigFactory) -> None:
        r = await rig()

        @r.pool.task
        async def add(a: int, b: int) -> int:
            return a + b

        await r.start()
        handle = await add.send(2, 3)
        await r.settle(handle)
        assert await handle.result(timeout=1) == 5
        state = await r.state(handle)
        assert state.status is TaskStatus.SUCCEEDED
        assert state.worker == r.pool.name
        assert state.args == [
            {"Name": "a", "Type": "int", "Value": 2},
            {"Name": "b", "Type": "int", "Value": 3},
        ]
        assert state.started_at is not None and state.finished_at is not None
        assert r.pool.stats.succeeded == 1

    async def test_retries_then_park_with_why_and_where_from(self, rig: RigFactory) -> None:
        r = await rig()
        attempts: list[tuple[int, datetime]] = []

        @r.pool.task(name="broken")
        async def broken(sig: Signature) -> None:
            attempts.append((sig.retries_done, r.now()))
            raise ValueError(f"boom {sig.retries_done}")

        await r.start()
        handle = await r.pool.send_task(Signature("broken", retry_count=2))
        await r.settle(handle)
        # then it ran three times, each retry after its backoff (capped at 0.1 s here) ...
        assert [attempt for attempt, _ in attempts] == [0, 1, 2]
        gaps = [(b - a).total_seconds() for (_, a), (_, b) in itertools.pairwise(attempts)]
        assert all(0.099 <= gap < 2.0 for gap in gaps), gaps
        # ... and the last failure is parked with the reason in headers
        [parked] = await r.parked(ParkQueue.FAILED)
        headers = parked.headers
        assert text(headers["x-paota-reason"]) == "retries-exhausted"
        assert text(headers["x-paota-error"]) == "ValueError: boom 2"
        assert "Traceback" in text(headers["x-paota-traceback"])
        assert "boom 2" in text(headers["x-paota-traceback"])
        assert text(headers["x-paota-worker"]) == r.pool.name
        assert datetime.fromisoformat(text(headers["x-paota-parked-at"]))
        assert text(headers[ORIGIN_HEADER]) == r.default_queue
        body = decode_message(parked.body, parked.headers)
        assert (body.uuid, body.retries_done) == (handle.id, 2)
        state = await r.state(handle)
        assert (state.status, state.attempts) == (TaskStatus.FAILED, 2)
        assert state.error is not None and state.error.message == "boom 2"
        assert (r.pool.stats.retried, r.pool.stats.failed) == (2, 1)

    async def test_an_expired_start_deadline_parks_without_running(self, rig: RigFactory) -> None:
        r = await rig()
        ran: list[str] = []
        r.pool.register_tasks({"late": lambda sig: ran.append(sig.uuid)})
        await r.start()
        created = r.now() - timedelta(seconds=120)
        handle = await r.pool.send_task(Signature("late", task_timeout=30, created_at=created))
        await r.settle(handle)
        assert ran == []
        [parked] = await r.parked(ParkQueue.TIMEOUT)
        assert text(parked.headers["x-paota-reason"]) == "start-deadline"
        assert text(parked.headers[ORIGIN_HEADER]) == r.default_queue
        assert (await r.state(handle)).status is TaskStatus.TIMED_OUT
        assert await r.parked(ParkQueue.FAILED) == []

    async def test_an_unknown_task_is_returned_then_parked(self, rig: RigFactory) -> None:
        r = await rig(unknown_task_max_returns=1)
        r.pool.register_tasks({"known": lambda sig: None})
        await r.start()
        handle = await r.pool.send_task(Signature("nobody-knows-me"))
        await r.settle(handle)
        assert r.pool.stats.returned == 1
        [parked] = await r.parked(ParkQueue.FAILED)
        assert text(parked.headers["x-paota-reason"]) == "unknown-task"
        assert "nobody-knows-me" in text(parked.headers["x-paota-error"])
        assert parked.headers[RETURNS_HEADER] == 1
        assert (await r.state(handle)).status is TaskStatus.FAILED

    async def test_an_unknown_task_that_asks_to_be_ignored_is_dropped(
        self, rig: RigFactory
    ) -> None:
        r = await rig(store=False)
        r.pool.register_tasks({"known": lambda sig: None})
        await r.start()
        await r.pool.send_task(Signature("nobody-knows-me", ignore_when_task_not_registered=True))
        await r.settle(until=lambda: r.pool.stats.dropped == 1)
        assert await r.parked(ParkQueue.FAILED) == []
        assert r.pool.stats.returned == 0

    async def test_garbage_is_parked_undecodable_and_the_pool_keeps_running(
        self, rig: RigFactory
    ) -> None:
        r = await rig()
        r.pool.register_tasks({"known": lambda sig: "still here"})
        await r.start()
        garbage = [b"\x00\xff this is not json", b"[1,2]", b'{"Name": 5}']
        for body in garbage:
            await r.publish_raw(body)
        handle = await r.pool.send_task(Signature("known"))
        await r.settle(handle, until=lambda: r.pool.stats.failed == len(garbage))
        assert await handle.result(timeout=1) == "still here"
        parked = await r.parked(ParkQueue.FAILED)
        assert sorted(p.body for p in parked) == sorted(garbage)
        for p in parked:
            assert text(p.headers["x-paota-reason"]) == "undecodable"
            assert text(p.headers["x-paota-error"]).startswith("DecodeError")
            assert text(p.headers[ORIGIN_HEADER]) == r.default_queue

    async def test_arguments_that_do_not_fit_park_at_once(self, rig: RigFactory) -> None:
        r = await rig()
        ran: list[int] = []

        @r.pool.task(retry_count=3)
        async def add(a: int, b: int) -> int:
            ran.append(a + b)
            return a + b

        await r.start()
        wrong_type = await r.pool.send_task(
            Signature("add", args=[Arg("a", "string", "two"), Arg("b", "int", 3)], retry_count=3)
        )
        missing = await r.pool.send_task(Signature("add", args=[Arg("a", "int", 2)], retry_count=3))
        await r.settle(wrong_type, missing)
        assert ran == []
        assert r.pool.stats.retried == 0
        parked = await r.parked(ParkQueue.FAILED)
        assert {text(p.headers["x-paota-reason"]) for p in parked} == {"bad-arguments"}
        assert len(parked) == 2
        for handle in (wrong_type, missing):
            state = await r.state(handle)
            assert (state.status, state.attempts) == (TaskStatus.FAILED, 0)
            assert state.error is not None and state.error.type == "BindError"

    async def test_a_duplicate_of_a_finished_run_is_acked_without_running(
        self, rig: RigFactory
    ) -> None:
        r = await rig()
        runs: list[str] = []
        r.pool.register_tasks({"once": lambda sig: runs.append(sig.uuid)})
        await r.start()
        handle = await r.pool.send_task(Signature("once"))
        await r.settle(handle)
        # when the same message comes again (a redelivery after a lost ack)
        await r.publish(handle.signature)
        await r.settle(until=lambda: r.pool.stats.duplicates == 1)
        # then it is acked without running, and the record stays as it was
        assert runs == [handle.id]
        assert (await r.state(handle)).status is TaskStatus.SUCCEEDED

    # --- headers -------------------------------------------------------------------------------

    async def test_extra_headers_survive_a_retry_a_defer_and_a_return(
        self, rig: RigFactory
    ) -> None:
        r = await rig(unknown_task_max_returns=1)
        seen: dict[str, list[dict[str, Any]]] = {"flaky": [], "later": []}

        @r.pool.task(name="flaky")
        async def flaky(sig: Signature) -> None:
            seen["flaky"].append(carried(current_task().headers))
            if sig.retries_done == 0:
                raise RuntimeError("first attempt fails")

        @r.pool.task(name="later")
        async def later(sig: Signature) -> None:
            seen["later"].append(carried(current_task().headers))

        await r.start()
        # a retry
        retried = await r.pool.send_task(Signature("flaky", retry_count=1), headers=TRACE)
        # an ETA not reached when the message arrives: deferred by the pool
        eta = Signature("later", uuid=f"task_{uuid.uuid4()}", eta=r.now() + timedelta(seconds=0.3))
        await r.publish(eta, headers=dict(TRACE))
        # a task nobody here knows: returned once, then parked
        returned = await r.pool.send_task(Signature("stranger"), headers=TRACE)
        await r.settle(
            retried, returned, until=lambda: len(seen["later"]) == 1 and r.pool.stats.deferred > 0
        )
        assert seen == {"flaky": [TRACE, TRACE], "later": [TRACE]}
        [parked] = await r.parked(ParkQueue.FAILED)
        assert parked.headers[RETURNS_HEADER] == 1
        assert carried(parked.headers) == TRACE

    async def test_codec_headers_win_over_extra_headers_of_the_same_name(
        self, rig: RigFactory
    ) -> None:
        # header mode: the task's metadata travels in headers, and a caller's extra headers must
        # not replace it, on the first publish or on a retry
        r = await rig()
        seen: list[tuple[str, str, int, dict[str, Any]]] = []

        @r.pool.task(name="raw")
        async def raw(sig: Signature) -> str:
            seen.append((sig.uuid, sig.name, sig.retries_done, carried(current_task().headers)))
            if sig.retries_done == 0:
                raise RuntimeError("once")
            return sig.raw_args.decode() if sig.raw_args else ""

        await r.start()
        forged = {"uuid": "task_forged", "task_name": "other", "retries_done": 5, "retry_count": 0}
        handle = await r.pool.send_task(
            Signature("raw", raw_args=b'{"id":"1"}', retry_count=1), headers={**forged, **TRACE}
        )
        await r.settle(handle)
        assert seen == [(handle.id, "raw", 0, TRACE), (handle.id, "raw", 1, TRACE)]
        assert await handle.result(timeout=1) == '{"id":"1"}'
        assert (await r.state(handle)).attempts == 1

    async def test_a_parked_copy_keeps_its_properties_and_every_header(
        self, rig: RigFactory
    ) -> None:
        r = await rig()
        r.pool.register_tasks({"doomed": lambda sig: 1 / 0})
        await r.start()
        json_mode = await r.pool.send_task(Signature("doomed", priority=7), headers=TRACE)
        header_mode = await r.pool.send_task(
            Signature("doomed", priority=3, raw_args=b'{"k":1}'), headers=TRACE
        )
        await r.settle(json_mode, header_mode)
        parked = {p.message_id: p for p in await r.parked(ParkQueue.FAILED)}
        assert set(parked) == {json_mode.id, header_mode.id}
        for handle, content_type, priority in (
            (json_mode, CONTENT_TYPE_JSON, 7),
            (header_mode, CONTENT_TYPE_HEADERS, 3),
        ):
            copy = parked[handle.id]
            assert copy.priority == priority
            assert copy.content_type == content_type
            assert copy.body == encode_message(handle.signature).body
            # every header it was sent with, plus the parking headers, nothing else
            sent = {**TRACE, **encode_message(handle.signature).headers}
            assert set(PARKING_HEADERS) <= set(copy.headers)
            kept = {k: text(v) for k, v in copy.headers.items() if k not in PARKING_HEADERS}
            assert kept == sent

    # --- queues --------------------------------------------------------------------------------

    async def test_retries_and_defers_of_a_second_queue_come_back_to_it(
        self, rig: RigFactory
    ) -> None:
        r = await rig(extra_concurrency=2)
        runs: list[tuple[str, str, int]] = []

        @r.pool.task(retry_count=1)
        async def flaky(n: int) -> int:
            ctx = current_task()
            runs.append((ctx.name, ctx.queue, ctx.attempt))
            if ctx.attempt == 0:
                raise RuntimeError("first attempt fails")
            return n

        @r.pool.task(name="later")
        async def later(sig: Signature) -> None:
            runs.append((sig.name, current_task().queue, sig.retries_done))

        await r.start()
        handle = await flaky.with_options(queue=r.extra_queue).send(1)
        eta = Signature("later", uuid=f"task_{uuid.uuid4()}", eta=r.now() + timedelta(seconds=0.3))
        await r.publish(eta, r.extra_queue)
        await r.settle(handle, until=lambda: len(runs) == 3)
        assert sorted(runs) == [
            ("flaky", r.extra_queue, 0),
            ("flaky", r.extra_queue, 1),
            ("later", r.extra_queue, 0),
        ]
        assert (r.pool.stats.retried, r.pool.stats.deferred) == (1, 1)

    async def test_each_queue_runs_at_its_own_concurrency(self, rig: RigFactory) -> None:
        # given a pool consuming the task queue 50 at a time and the extra queue 5 at a time
        r = await rig(concurrency=50, extra_concurrency=5)
        running: dict[str, int] = {r.default_queue: 0, r.extra_queue: 0}
        peak = dict(running)
        limits = {r.default_queue: 50, r.extra_queue: 5}
        full = asyncio.Event()

        @r.pool.task
        async def slow() -> None:
            queue = current_task().queue
            running[queue] += 1
            peak[queue] = max(peak[queue], running[queue])
            if running == limits:
                full.set()
            await full.wait()  # the first runs hold their slots until both queues are full
            running[queue] -= 1

        # and many slow tasks waiting in both queues
        handles = [await slow.send() for _ in range(60)]
        handles += [await slow.with_options(queue=r.extra_queue).send() for _ in range(20)]
        # when it starts
        await r.start()
        await r.settle(*handles, timeout_s=20)
        # then each queue ran at its own limit
        assert peak == {r.default_queue: 50, r.extra_queue: 5}
        assert r.pool.stats.succeeded == 80

    # --- requeue -------------------------------------------------------------------------------

    async def test_requeue_returns_a_message_to_its_origin_queue_as_a_new_run(
        self, rig: RigFactory
    ) -> None:
        r = await rig(extra_concurrency=2)
        fixed = False
        runs: list[tuple[str, int]] = []

        @r.pool.task
        async def needs_fix() -> str:
            ctx = current_task()
            runs.append((ctx.queue, ctx.attempt))
            if not fixed:
                raise RuntimeError("bug")
            return "fixed"

        await r.start()
        handle = await needs_fix.with_options(queue=r.extra_queue).send()
        await r.settle(handle)
        [parked] = await r.parked(ParkQueue.FAILED)
        assert text(parked.headers[ORIGIN_HEADER]) == r.extra_queue
        # when the bug is fixed and the parked message requeued
        fixed = True
        assert await r.pool.requeue_parked(ParkQueue.FAILED) == 1

        async def replayed() -> bool:
            state = await r.state(handle)
            return state.replays == 1 and state.status.is_final

        await r.settle(until=replayed)
        # then it ran again from the queue it came from, as a new run
        assert runs == [(r.extra_queue, 0), (r.extra_queue, 0)]
        state = await r.state(handle)
        assert (state.status, state.replays, state.result) == (TaskStatus.SUCCEEDED, 1, "fixed")
        assert await r.parked(ParkQueue.FAILED) == []

    async def test_requeue_follows_the_origin_queue_not_the_body_routing_key(
        self, rig: RigFactory
    ) -> None:
        # The Go library writes the parking or delayed queue's name into the body's RoutingKey
        # when it parks or retries; a message carrying one is parked by this pool from the extra
        # queue, and must go back there.
        r = await rig(extra_concurrency=2)
        fixed = False
        runs: list[tuple[str, str]] = []

        @r.pool.task(name="Print")
        async def print_(sig: Signature) -> None:
            runs.append((sig.uuid, current_task().queue))
            if not fixed:
                raise RuntimeError("bug")

        await r.start()
        keys = [r.parking_queue(ParkQueue.FAILED), r.pool.config.amqp.delayed_queue]
        sent = [Signature("Print", uuid=f"task_{uuid.uuid4()}", routing_key=key) for key in keys]
        for sig in sent:
            await r.publish_raw(encode_json(sig), queue=r.extra_queue)
        await r.settle(*(s.uuid for s in sent))
        assert len(await r.parked(ParkQueue.FAILED)) == 2
        fixed = True
        assert await r.pool.requeue_parked(ParkQueue.FAILED) == 2

        async def replayed() -> bool:
            return [(await r.state(s.uuid)).replays for s in sent] == [1, 1]

        await r.settle(*(s.uuid for s in sent), until=replayed)
        assert sorted(runs) == sorted([(s.uuid, r.extra_queue) for s in sent] * 2)
        for sig in sent:
            assert (await r.state(sig.uuid)).status is TaskStatus.SUCCEEDED
        assert await r.parked(ParkQueue.FAILED) == []

    async def test_requeue_sends_a_go_parked_message_to_the_task_queue(
        self, rig: RigFactory
    ) -> None:
        # given a message as the Go library parks it: no x-paota-* headers, the failed queue's
        # name in the body's RoutingKey, sitting in the failed queue
        r = await rig(extra_concurrency=2)
        runs: list[tuple[str, str, str]] = []

        @r.pool.task(name="Print")
        def print_(sig: Signature) -> None:
            runs.append((sig.uuid, current_task().queue, sig.routing_key))

        await r.start()
        failed = r.parking_queue(ParkQueue.FAILED)
        go_id = f"task_{uuid.uuid4()}"
        await r.publish_raw(go_body(UUID=go_id, RoutingKey=failed), queue=failed)
        [parked] = await r.parked(ParkQueue.FAILED)
        assert decode_message(parked.body, parked.headers).routing_key == failed
        # when it is requeued
        assert await r.pool.requeue_parked(ParkQueue.FAILED) == 1

        async def ran() -> bool:
            state = await r.store.get(go_id) if r.store is not None else None
            return state is not None and state.status.is_final

        await r.settle(until=ran)
        # then it runs from the task queue, with the parking queue's name cleared
        assert runs == [(go_id, r.default_queue, "")]
        state = await r.state(go_id)
        assert (state.status, state.replays) == (TaskStatus.SUCCEEDED, 1)
        assert await r.parked(ParkQueue.FAILED) == []

    async def test_requeue_of_a_task_sent_with_the_failed_queue_as_routing_key(
        self, rig: RigFactory
    ) -> None:
        # The Python-only form of the Go case: tasks whose RoutingKey names the failed queue.
        # Sent at once, the routing key takes it straight to the failed queue; sent with a delay,
        # it ends in the task queue (delays always do), runs, fails and is parked. Requeued,
        # both must reach the task queue, not go back to the failed one.
        r = await rig()
        fixed = False
        runs: list[tuple[str, str]] = []

        @r.pool.task(name="Print")
        async def print_(sig: Signature) -> None:
            runs.append((sig.uuid, current_task().queue))
            if not fixed:
                raise RuntimeError("bug")

        await r.start()
        failed = r.parking_queue(ParkQueue.FAILED)
        routed = await r.pool.send_task(Signature("Print", routing_key=failed))
        delayed = await r.pool.send_task(Signature("Print", routing_key=failed), delay_s=0.1)
        await r.settle(delayed)

        async def both_parked() -> bool:
            return len(await r.parked(ParkQueue.FAILED)) == 2

        await r.settle(until=both_parked)
        assert runs == [(delayed.id, r.default_queue)]
        # when the bug is fixed and both are requeued
        fixed = True
        assert await r.pool.requeue_parked(ParkQueue.FAILED) == 2

        async def both_succeeded() -> bool:
            states = [await r.state(h) for h in (routed, delayed)]
            return all(s.status is TaskStatus.SUCCEEDED for s in states)

        await r.settle(until=both_succeeded)
        # then both ran from the task queue, as new runs
        assert sorted(runs[1:]) == sorted(
            [(routed.id, r.default_queue), (delayed.id, r.default_queue)]
        )
        assert [(await r.state(h)).replays for h in (routed, delayed)] == [1, 1]
        assert await r.parked(ParkQueue.FAILED) == []

    async def test_requeue_counts_a_start_deadline_from_the_replay(self, rig: RigFactory) -> None:
        # given a task parked in the timeout queue from the extra queue: its start deadline passed
        r = await rig(extra_concurrency=2)
        runs: list[str] = []
        r.pool.register_tasks({"late": lambda sig: runs.append(current_task().queue)})
        await r.start()
        created = r.now() - timedelta(seconds=120)
        handle = await r.pool.send_task(
            Signature("late", task_timeout=30, created_at=created), queue=r.extra_queue
        )
        await r.settle(handle)
        assert runs == []
        # when it is requeued
        assert await r.pool.requeue_parked(ParkQueue.TIMEOUT) == 1

        async def replayed() -> bool:
            state = await r.state(handle)
            return state.replays == 1 and state.status.is_final

        await r.settle(until=replayed)
        # then it runs, in its own queue: the deadline counts from the replay
        assert runs == [r.extra_queue]
        assert (await r.state(handle)).status is TaskStatus.SUCCEEDED
        assert await r.parked(ParkQueue.TIMEOUT) == []

    async def test_a_routing_key_that_reaches_no_queue_is_refused(self, rig: RigFactory) -> None:
        # An explicit RoutingKey (Go's Signature.RoutingKey) routes on the task exchange; one that
        # no queue is bound to must fail the send, not land somewhere else.
        r = await rig()
        ran: list[str] = []
        r.pool.register_tasks({"t": lambda sig: ran.append(sig.uuid)})
        await r.start()
        with pytest.raises(PublishError):
            await r.pool.send_task(Signature("t", routing_key=f"nowhere-{uuid.uuid4().hex}"))
        handle = await r.pool.send_task(Signature("t"))
        await r.settle(handle)
        assert ran == [handle.id]

    # --- callbacks -----------------------------------------------------------------------------

    async def test_callbacks_fire_once_per_run_at_its_final_outcome(self, rig: RigFactory) -> None:
        r = await rig()
        calls: list[tuple[str, str, Any]] = []
        fixed = False

        def on_success(task: Any, result: Any) -> None:
            calls.append(("success", task.id, result))

        async def on_failure(task: Any, error: ErrorInfo) -> None:
            calls.append(("failure", task.id, (error.type, error.message)))

        @r.pool.task(retry_count=2, on_success=on_success, on_failure=on_failure)
        async def flaky(succeed_on: int) -> str:
            attempt = current_task().attempt
            if not fixed and attempt < succeed_on:
                raise ValueError(f"attempt {attempt}")
            return f"ok on {attempt}"

        await r.start()
        # a task that fails three times and is then parked, and one that succeeds on its third try
        parked = await flaky.send(succeed_on=99)
        recovers = await flaky.send(succeed_on=2)
        await r.settle(parked, recovers)
        assert sorted(calls) == sorted(
            [
                ("failure", parked.id, ("ValueError", "attempt 2")),
                ("success", recovers.id, "ok on 2"),
            ]
        )
        # a replay is a new run: its final outcome fires once more
        fixed = True
        assert await r.pool.requeue_parked(ParkQueue.FAILED) == 1

        async def replayed() -> bool:
            return (await r.state(parked)).status is TaskStatus.SUCCEEDED

        await r.settle(until=replayed)
        assert calls[2:] == [("success", parked.id, "ok on 0")]
        assert (r.pool.stats.retried, r.pool.stats.failed) == (4, 1)

    # --- limits and lifecycle ------------------------------------------------------------------

    async def test_a_delay_that_is_no_number_of_seconds_publishes_nothing(
        self, rig: RigFactory
    ) -> None:
        r = await rig()
        r.pool.register_tasks({"t": lambda sig: None})
        await r.start()
        for bad in (math.nan, math.inf):
            with pytest.raises((ValueError, OverflowError)):
                await r.pool.send_task(Signature("t", uuid=f"task_bad_{bad}"), delay_s=bad)
        handle = await r.pool.send_task(Signature("t"))
        await r.settle(handle)
        assert r.pool.stats.received == 1
        assert r.store is not None
        assert await r.store.list(name="t") == [await r.state(handle)]

    async def test_a_bad_delay_is_a_value_error_naming_delay_s(self, rig: RigFactory) -> None:
        r = await rig()
        await r.start()
        for bad in (math.nan, math.inf, 1e12, -1.0):
            with pytest.raises(ValueError, match="delay_s"):
                await r.pool.send_task(Signature("t"), delay_s=bad)
        with pytest.raises(TypeError, match="delay_s"):
            await r.pool.send_task(Signature("t"), delay_s="5")  # type: ignore[arg-type]

    async def test_a_closed_pool_opens_neither_broker_nor_store_again(
        self, rig: RigFactory
    ) -> None:
        r = await rig()
        await r.start()
        await r.close()
        assert r.store is not None
        with pytest.raises(StoreError, match="closed"):
            await r.store.connect()
        with pytest.raises(BrokerError, match="closed"):
            await r.pool.broker.connect()
        with pytest.raises(PaotaError):
            await r.pool.connect()
        with pytest.raises(PaotaError):
            await r.pool.send_task(Signature("t"))
