"""Webhooks on the memory broker and store, against a local HTTP sink: retried with backoff until
accepted, signed, one idempotency id per event, kept while the endpoint is down, never in the way
of the tasks, at least once when a worker loses an event's write."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from paota import Client, Config, ConfigError, StoreError, TaskStatus, WorkerPool
from paota.brokers.memory import MemoryBroker
from paota.middleware.webhooks import (
    DEAD_KIND,
    EVENT_KIND,
    SENT_KIND,
    WebhookEndpoint,
    WebhookMiddleware,
    event_id,
    sign,
    verify_signature,
)
from paota.stores.memory import MemoryStore
from tests.waiting import until
from tests.webhook_sink import Sink

SECRET = "s3cret-for-tests"


class Backends:
    """One broker and store shared by the pools of a test (real time: the sender's backoff)."""

    def __init__(self) -> None:
        self.broker = MemoryBroker()
        self.store: Any = MemoryStore()
        self.running: list[tuple[WorkerPool, asyncio.Task[None]]] = []

    def pool(self, *middleware: Any, name: str = "hooks") -> WorkerPool:
        pool = WorkerPool(
            Config(), 8, name, broker=self.broker, store=self.store, middleware=list(middleware)
        )

        @pool.task
        async def ok(n: int) -> int:
            return n * 2

        @pool.task(name="Fail")
        async def fail() -> None:
            raise RuntimeError("it broke")

        @pool.task(name="Slow")
        async def slow() -> None:
            await asyncio.sleep(30)  # sleep-ok: cancelled

        return pool

    async def start(self, pool: WorkerPool) -> WorkerPool:
        await pool.connect()
        self.running.append((pool, asyncio.create_task(pool.start(install_signal_handlers=False))))
        for _ in range(20):
            await asyncio.sleep(0)
        return pool

    async def close(self) -> None:
        for pool, task in self.running:
            await pool.stop()
            await asyncio.wait_for(task, 10)
        await self.broker.close()
        await self.store.close()


@pytest.fixture
async def backends() -> AsyncIterator[Backends]:
    setup = Backends()
    try:
        yield setup
    finally:
        await setup.close()


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    server = await Sink(statuses=[500, 500, 200]).start()
    try:
        yield server
    finally:
        await server.stop()


def hooks(url: str, **options: Any) -> WebhookMiddleware:
    endpoint_options = {
        k: options.pop(k) for k in ("events", "include_result", "timeout_s") if k in options
    }
    endpoint = WebhookEndpoint(url, SECRET, name="sink", **endpoint_options)
    return WebhookMiddleware(
        [endpoint],
        backoff_base_s=options.pop("backoff_base_s", 0.05),
        poll_interval_s=options.pop("poll_interval_s", 0.05),
        **options,
    )


async def eventually(check: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s}s")
        await asyncio.sleep(0.02)  # sleep-ok: poll


async def outbox(store: Any, kind: str = EVENT_KIND) -> list[dict[str, Any]]:
    return list(await store.list_docs(f"{kind}:sink"))


async def test_an_endpoint_that_fails_twice_then_accepts_gets_the_event(
    backends: Backends, sink: Sink
) -> None:
    middleware = hooks(sink.url, events={"succeeded"}, include_result=True)
    pool = await backends.start(backends.pool(middleware))
    # when a task succeeds, and the endpoint answers 500 twice, then 200
    handle = await _send(pool, "ok", 21)
    await eventually(sink.accepted)
    # then the event came three times with the same id, the third accepted, with backoff between
    assert [r.status for r in sink.received] == [500, 500, 200]
    ids = {r.headers["x-paota-event-id"] for r in sink.received}
    assert ids == {event_id(handle, 0, 0, "succeeded")}
    assert [r.headers["x-paota-delivery-attempt"] for r in sink.received] == ["1", "2", "3"]
    gaps = [b.at - a.at for a, b in zip(sink.received, sink.received[1:], strict=False)]
    assert gaps[0] >= 0.05 * 0.9 and gaps[1] >= 0.1 * 0.9  # exponential: 0.05 s, then 0.1 s
    # signed over the exact body, the same body each time
    for request in sink.received:
        assert request.headers["content-type"] == "application/json"
        assert request.headers["x-paota-event"] == "task.succeeded"
        assert verify_signature(SECRET, request.body, request.headers)
        assert request.body == sink.received[0].body
    event = sink.received[-1].event
    assert event["id"] == ids.pop() and event["type"] == "task.succeeded"
    assert event["task"]["id"] == handle and event["task"]["name"] == "ok"
    assert event["task"]["status"] == "SUCCEEDED" and event["task"]["result"] == 42
    assert event["task"]["queue"] == "paota_tasks" and event["parked"] is None
    # and the outbox is empty, a marker of the sent event stays
    await eventually(lambda: middleware.sent == 1)
    assert await outbox(backends.store) == []
    [marker] = await outbox(backends.store, SENT_KIND)
    assert marker["_key"] == event["id"] and marker["attempts"] == 3


async def _send(pool: WorkerPool, name: str, *args: Any, **fields: Any) -> str:
    from paota import Arg, Signature

    handle = await pool.send_task(Signature(name, args=[Arg.of(a) for a in args], **fields))
    return handle.id


async def test_event_types_retrying_failed_parked_and_cancelled(backends: Backends) -> None:
    sink = await Sink().start()
    try:
        pool = await backends.start(backends.pool(hooks(sink.url, events={"retrying", "parked"})))
        failing = await _send(pool, "Fail", retry_count=1)
        await eventually(lambda: len(sink.accepted()) == 2, 15)
        retrying, failed = sorted(
            (r.event for r in sink.accepted()), key=lambda e: e["type"], reverse=True
        )
        assert retrying["type"] == "task.retrying" and retrying["task"]["attempt"] == 0
        assert retrying["retry"] == {"attempt": 1, "delay_s": 1.0}
        assert retrying["task"]["error"] == {"type": "RuntimeError", "message": "it broke"}
        # "parked" subscribes to failed (and timed_out) events
        assert failed["type"] == "task.failed" and failed["task"]["attempt"] == 1
        assert failed["parked"] == {"queue": "failed", "reason": "retries-exhausted"}
        assert failed["task"]["status"] == "FAILED"
        assert all(r.event["task"]["id"] == failing for r in sink.received)
    finally:
        await sink.stop()


async def test_a_cancelled_task_sends_a_cancelled_event(backends: Backends) -> None:
    sink = await Sink().start()
    try:
        pool = await backends.start(backends.pool(hooks(sink.url, events={"cancelled"})))
        client = Client(Config(), broker=backends.broker, store=backends.store)
        slow = await _send(pool, "Slow")

        async def running() -> bool:
            state = await backends.store.get(slow)
            return state is not None and state.status is TaskStatus.STARTED

        await until(running, what="the slow task running")
        assert await client.cancel(slow, reason="no longer needed")
        [request] = await eventually(sink.accepted)
        event = request.event
        assert event["type"] == "task.cancelled" and event["task"]["id"] == slow
        assert event["task"]["error"] == {"type": "Cancelled", "message": "no longer needed"}
    finally:
        await sink.stop()


async def test_a_slow_endpoint_never_delays_the_tasks(backends: Backends) -> None:
    # given an endpoint that takes 5 s to answer (and times out after 1 s)
    sink = await Sink(hang_s=5.0).start()
    try:
        pool = await backends.start(
            backends.pool(hooks(sink.url, events={"succeeded"}, timeout_s=1.0))
        )
        # when 200 tasks run
        started = time.monotonic()
        ids = [await _send(pool, "ok", i) for i in range(200)]
        for task_id in ids:
            await pool.result(task_id, timeout=10)
        took_s = time.monotonic() - started
        # then they finished long before the endpoint answered even once
        assert took_s < 2.0, took_s
        assert len(await outbox(backends.store)) == 200
    finally:
        await sink.stop()


async def test_events_are_kept_while_the_endpoint_is_down_and_all_arrive_after(
    backends: Backends,
) -> None:
    # given an endpoint that is down (its port refuses connections)
    sink = await Sink().start()
    await sink.stop()
    middleware = hooks(sink.url, events={"succeeded"}, backoff_cap_s=0.2)
    pool = await backends.start(backends.pool(middleware))
    ids = [await _send(pool, "ok", i) for i in range(20)]
    # when tasks run while it is down
    await eventually(lambda: middleware.failures >= 40)
    pending = await outbox(backends.store)
    assert len(pending) == 20
    assert all(d["attempts"] >= 1 and "Connect" in d["last_error"] for d in pending)
    # then, once it is back, every event arrives
    await sink.start()
    await eventually(lambda: len(sink.accepted()) == 20)
    assert {r.event["task"]["id"] for r in sink.accepted()} == set(ids)
    # (the sender empties the outbox entry after the sink answered: wait for it, as above)
    await eventually(lambda: middleware.sent >= 20)
    assert await outbox(backends.store) == []


async def test_an_event_past_its_retention_is_given_up_and_kept_as_dead(
    backends: Backends, caplog: pytest.LogCaptureFixture
) -> None:
    sink = await Sink(statuses=[503]).start()
    try:
        middleware = hooks(sink.url, events={"succeeded"}, retention_s=1.0, backoff_cap_s=0.2)
        pool = await backends.start(backends.pool(middleware))
        task_id = await _send(pool, "ok", 1)
        with caplog.at_level(logging.ERROR, "paota.middleware.webhooks"):
            [dead] = await eventually(lambda: _docs(backends.store, DEAD_KIND), 10)
        assert dead["task_id"] == task_id and dead["last_error"] == "HTTP 503"
        assert await outbox(backends.store) == []
        assert any("given up" in r.getMessage() for r in caplog.records)
    finally:
        await sink.stop()


def _docs(store: MemoryStore, kind: str) -> list[dict[str, Any]]:
    # A synchronous peek for eventually() (the memory store answers without waiting).
    return [
        {**doc, "_key": key} for (k, key), (doc, _, _) in store._docs.items() if k == f"{kind}:sink"
    ]


async def test_two_workers_send_each_event_once(backends: Backends) -> None:
    sink = await Sink().start()
    try:
        first = hooks(sink.url, events={"succeeded"})
        second = hooks(sink.url, events={"succeeded"})
        pool = await backends.start(backends.pool(first, name="one"))
        await backends.start(backends.pool(second, name="two"))
        ids = [await _send(pool, "ok", i) for i in range(60)]
        await eventually(lambda: len(sink.accepted()) >= 60)
        # a second send of an event could only come from its outbox entry, deleted once answered
        await eventually(lambda: not _docs(backends.store, EVENT_KIND))
        sent = [r.headers["x-paota-event-id"] for r in sink.accepted()]
        assert len(sent) == len(set(sent)) == 60
        assert {r.event["task"]["id"] for r in sink.accepted()} == set(ids)
        assert first.sent + second.sent == 60 and first.sent > 0 and second.sent > 0
    finally:
        await sink.stop()


class FlakyDocs:
    """A memory store whose event writes fail ``failures`` times (the store went away just
    after the task's record was written)."""

    def __init__(self, inner: MemoryStore, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def put_doc(self, kind: str, key: str, doc: Any, *, ttl_s: float | None = None) -> None:
        if kind.startswith(EVENT_KIND) and self.failures > 0:
            self.failures -= 1
            raise StoreError("the store went away")
        await self.inner.put_doc(kind, key, doc, ttl_s=ttl_s)

    async def __aenter__(self) -> FlakyDocs:
        await self.inner.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.inner.close()


async def test_an_event_whose_write_failed_is_written_by_the_redelivery(
    backends: Backends,
) -> None:
    # given a store that fails the event write once, after the task's record was written
    backends.store = FlakyDocs(MemoryStore(), failures=1)
    sink = await Sink().start()
    try:
        pool = await backends.start(backends.pool(hooks(sink.url, events={"succeeded"})))
        task_id = await _send(pool, "ok", 4)
        # then the message went back to the broker, its redelivery (a duplicate of a finished
        # run) wrote the event, and the endpoint got it once
        [request] = await eventually(sink.accepted)
        assert request.event["task"]["id"] == task_id
        assert request.event["task"]["status"] == "SUCCEEDED"
        state = await backends.store.get(task_id)
        assert state is not None and state.status is TaskStatus.SUCCEEDED
        # a later duplicate (the event was sent) sends nothing more
        await backends.broker.publish(_copy_of_sent(backends.broker, task_id))
        await backends.broker.run_until_idle()
        # had the duplicate written an event, it would be in the outbox until sent and answered
        await eventually(lambda: not _docs(backends.store, EVENT_KIND))
        assert len(sink.received) == 1
    finally:
        await sink.stop()


def _copy_of_sent(broker: MemoryBroker, task_id: str) -> Any:
    from paota import Signature
    from paota.core.message import encode_message
    from paota.core.protocols import OutgoingMessage

    wire = encode_message(Signature("ok", uuid=task_id, args=[]))
    return OutgoingMessage(wire.body, "paota_tasks", headers=wire.headers, message_id=task_id)


async def test_without_coordination_the_middleware_says_so_and_does_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = await Sink().start()
    middleware = hooks(sink.url)
    pool = WorkerPool(Config(), broker=MemoryBroker(), store=None, middleware=[middleware])
    try:
        with caplog.at_level(logging.ERROR):
            await pool.connect()
            worker = asyncio.create_task(pool.start(install_signal_handlers=False))
            await eventually(
                lambda: any("webhooks are off" in r.getMessage() for r in caplog.records)
            )
        await pool.stop()
        await worker
    finally:
        await pool.close()
        await sink.stop()


def test_endpoints_and_options_are_checked() -> None:
    for kwargs, match in (
        ({"url": "ftp://x"}, "url"),
        ({"url": "http://"}, "url"),
        ({"secret": ""}, "secret"),
        ({"events": {"finished"}}, "events"),
        ({"events": set()}, "events"),
        ({"name": "has space"}, "name"),
        ({"timeout_s": 0}, "timeout_s"),
    ):
        fields: dict[str, Any] = {"url": "http://127.0.0.1:9/x", "secret": "k", **kwargs}
        with pytest.raises(ConfigError, match=match):
            WebhookEndpoint(**fields)
    endpoint = WebhookEndpoint("https://example.invalid/hook", "k", events="*")
    assert endpoint.events == frozenset(
        {"succeeded", "retrying", "failed", "timed_out", "cancelled", "parked"}
    )
    assert endpoint.name.startswith("ep-")
    assert WebhookEndpoint("https://example.invalid/hook", "k").wants("failed", True)
    only_parked = WebhookEndpoint("https://example.invalid/hook", "k", events={"parked"})
    assert only_parked.wants("timed_out", True) and not only_parked.wants("succeeded", False)
    with pytest.raises(ConfigError, match="one or more"):
        WebhookMiddleware([])
    with pytest.raises(ConfigError, match="differ"):
        WebhookMiddleware([endpoint, endpoint])
    with pytest.raises(ConfigError, match="retention_s"):
        WebhookMiddleware([endpoint], retention_s=0)
    with pytest.raises(ConfigError, match="concurrency"):
        WebhookMiddleware([endpoint], concurrency=0)


def test_signatures_cover_the_time_the_event_id_and_type_and_the_body() -> None:
    import hashlib
    import hmac

    body = b'{"id":"evt_1"}'
    t = 1_800_000_000
    mac = hmac.new(b"key", b"1800000000.evt_1.task.succeeded." + body, hashlib.sha256)
    expected = f"t={t},v1={mac.hexdigest()}"
    assert sign("key", body, event_id="evt_1", event_type="task.succeeded", timestamp=t) == expected
    headers = {
        "X-Paota-Signature": expected,
        "X-Paota-Event-Id": "evt_1",
        "X-Paota-Event": "task.succeeded",
    }
    assert verify_signature("key", body, headers, now=t + 10)
    # a receiver's headers in any case
    assert verify_signature("key", body, {k.lower(): v for k, v in headers.items()}, now=t)
    # a changed body, secret, event id or type fails
    assert not verify_signature("key", body + b" ", headers, now=t)
    assert not verify_signature("other", body, headers, now=t)
    assert not verify_signature("key", body, {**headers, "X-Paota-Event-Id": "evt_2"}, now=t)
    assert not verify_signature("key", body, {**headers, "X-Paota-Event": "task.failed"}, now=t)
    # a replay outside the tolerance (300 s by default) fails, however well signed
    assert not verify_signature("key", body, headers, now=t + 301)
    assert not verify_signature("key", body, headers, now=t - 301)
    assert verify_signature("key", body, headers, now=t + 3000, tolerance_s=3600)
    # a rotation: any of several v1 values may match; nothing, or garbage, never does
    rotated = {**headers, "X-Paota-Signature": f"t={t},v1=00ff,v1={mac.hexdigest()}"}
    assert verify_signature("key", body, rotated, now=t)
    for bad in ("", "sha256=" + mac.hexdigest(), f"t=x,v1={mac.hexdigest()}", f"t={t}"):
        assert not verify_signature("key", body, {**headers, "X-Paota-Signature": bad}, now=t)
    assert not verify_signature("key", body, {}, now=t)
    assert event_id("t", 0, 0, "succeeded") == event_id("t", 0, 0, "succeeded")
    assert event_id("t", 1, 0, "succeeded") != event_id("t", 0, 0, "succeeded")
