"""The management API on the memory broker and store: authentication, every endpoint, bad input
named field by field, paging, live updates over server-sent events, and ``paota web``."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from paota import (
    Arg,
    Config,
    ConfigError,
    ManualClock,
    ParkQueue,
    Signature,
    TaskStatus,
    WorkerPool,
)
from paota.brokers.memory import MemoryBroker
from paota.cli import main
from paota.middleware.heartbeat import HeartbeatMiddleware
from paota.stores.memory import MemoryStore
from paota.web import create_app
from tests.waiting import until

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Setup:
    """A pool on a manual clock, its app, and an HTTP client talking to the app in-process."""

    def __init__(self, *, heartbeat: bool = False) -> None:
        self.clock = ManualClock()
        self.broker = MemoryBroker(clock=self.clock)
        self.store = MemoryStore(clock=self.clock)
        middleware = [HeartbeatMiddleware(5.0)] if heartbeat else []
        self.pool = WorkerPool(
            Config(),
            4,
            "web-test",
            broker=self.broker,
            store=self.store,
            clock=self.clock,
            middleware=middleware,
        )
        self.app = create_app(self.pool, token=TOKEN)
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app, client=("127.0.0.1", 50000)),
            base_url="http://testserver",
            headers=AUTH,
        )
        self.worker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.pool.connect()
        self.worker = asyncio.create_task(self.pool.start(install_signal_handlers=False))
        for _ in range(20):
            await asyncio.sleep(0)

    async def idle(self) -> None:
        await self.broker.run_until_idle()

    async def close(self) -> None:
        await self.http.aclose()
        await self.pool.close()
        if self.worker is not None:
            await asyncio.wait_for(self.worker, 10)


@pytest.fixture
async def web() -> AsyncIterator[Setup]:
    setup = Setup()

    @setup.pool.task(retry_count=0)
    async def add(a: int, b: int) -> int:
        return a + b

    @setup.pool.task(name="Fail", retry_count=0)
    async def fail(why: str) -> None:
        raise ValueError(why)

    @setup.pool.task(name="Slow")
    async def slow() -> str:
        await asyncio.sleep(0.3)  # sleep-ok: work
        return "done"

    await setup.start()
    try:
        yield setup
    finally:
        await setup.close()


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert "error" in body, body
    assert "Traceback" not in response.text
    return dict(body["error"])


async def send(web: Setup, name: str, *args: Any, **fields: Any) -> str:
    response = await web.http.post("/api/tasks", json={"name": name, "args": list(args), **fields})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def snapshot(web: Setup) -> tuple[Any, ...]:
    """What a request could change: every record, and every queue's messages."""
    records = await web.store.list(limit=10_000)
    queues = {name: len(web.broker.messages(name)) for name in web.broker._queues}
    return tuple(records), tuple(sorted(queues.items())), web.broker.delayed_count


# --- authentication --------------------------------------------------------------------------------


async def test_a_request_without_the_token_gets_401_and_changes_nothing(web: Setup) -> None:
    # given a failed task, a finished one and a delayed one
    failed = await send(web, "Fail", "boom")
    done = await send(web, "add", 1, 2)
    delayed = await send(web, "add", 3, 4, delay_s=3600)
    await web.broker.run_until_idle(advance_time=False)
    before = await snapshot(web)
    requests = [
        ("GET", "/api/tasks", None),
        ("GET", f"/api/tasks/{done}", None),
        ("POST", "/api/tasks", {"name": "add", "args": [1, 1]}),
        ("POST", f"/api/tasks/{failed}/retry", None),
        ("POST", f"/api/tasks/{delayed}/cancel", None),
        ("DELETE", f"/api/tasks/{done}", None),
        ("GET", "/api/parked/failed", None),
        ("POST", "/api/parked/failed/requeue", {}),
        ("GET", "/api/queues", None),
        ("GET", "/api/workers", None),
        ("GET", "/api/schedules", None),
        ("POST", "/api/schedules/nightly/pause", None),
        ("GET", "/api/stream/tasks", None),
        ("GET", "/api/nowhere", None),
    ]
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token-0123456789"},
        {"Authorization": TOKEN},
    ):
        for method, path, body in requests:
            # when it is sent without the right token
            response = await web.http.request(
                method, path, json=body, headers={"Authorization": ""} | headers
            )
            # then it is refused, says why, and nothing moved
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert error_of(response)["message"].startswith("authorization:")
    assert await snapshot(web) == before
    # the OpenAPI description and the dashboard's files are public (they hold no data)
    anonymous = httpx.AsyncClient(transport=web.http._transport, base_url="http://testserver")
    async with anonymous:
        assert (await anonymous.get("/api/openapi.json")).json()["openapi"].startswith("3.1")
        page = await anonymous.get("/")
        assert page.status_code == 200 and "static/app.js" in page.text
        assert (await anonymous.get("/static/app.js")).status_code == 200


def test_an_app_without_a_token_is_refused_unless_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAOTA_WEB_TOKEN", raising=False)
    pool = WorkerPool(Config(store="memory"))
    with pytest.raises(ConfigError, match="PAOTA_WEB_TOKEN"):
        create_app(pool)
    with pytest.raises(ConfigError, match="at least 16"):
        create_app(pool, token="short")
    monkeypatch.setenv("PAOTA_WEB_TOKEN", "x" * 16)
    assert create_app(pool) is not None
    with pytest.raises(ConfigError, match="not both"):
        create_app(pool, token="y" * 20, open=True)
    with pytest.raises(ConfigError, match="poll_interval_s"):
        create_app(pool, poll_interval_s=0)


async def test_an_open_app_answers_loopback_clients_only() -> None:
    pool = WorkerPool(Config(store="memory"), name="open")
    app = create_app(pool, open=True)
    for address, status in (("127.0.0.1", 200), ("::1", 200), ("10.1.2.3", 403)):
        transport = httpx.ASGITransport(app=app, client=(address, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http:
            response = await http.get("/api/tasks")
            assert response.status_code == status, (address, response.text)
    await pool.close()


async def test_an_open_app_refuses_what_a_page_of_another_site_can_send() -> None:
    # given an open app (no token: loopback is the only credential)
    pool = WorkerPool(Config(store="memory"), name="open")
    app = create_app(pool, open=True)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http:
        # a DNS-rebinding page reaches 127.0.0.1 under its own name
        rebound = await http.get("/api/tasks", headers={"Host": "evil.example:8000"})
        assert rebound.status_code == 403 and "DNS rebinding" in rebound.text
        # a cross-site fetch carries its Origin
        cross = await http.get("/api/tasks", headers={"Origin": "https://evil.example"})
        assert cross.status_code == 403 and "Origin" in cross.text
        # a no-cors POST can only be text/plain (or a form): refused before any handler runs
        body = '{"name": "Add", "args": []}'
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = {"Content-Type": content_type} if content_type else {}
            created = await http.post("/api/tasks", content=body, headers=headers)
            assert created.status_code == 415, created.text
            cancelled = await http.post("/api/tasks/t1/cancel", headers=headers)
            assert cancelled.status_code == 415
        # while the dashboard's own requests pass: loopback names, JSON, same origin
        for host in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000", "localhost"):
            ok = await http.get("/api/info", headers={"Host": host})
            assert ok.status_code == 200, (host, ok.text)
        same = await http.post(
            "/api/tasks/t1/cancel",
            headers={"Origin": "http://127.0.0.1:8000", "Content-Type": "application/json"},
        )
        assert same.status_code != 415 and same.status_code != 403, same.text
    await pool.close()


async def test_every_response_carries_the_security_headers(web: Setup) -> None:
    for path in ("/", "/static/app.js", "/api/tasks", "/api/nothing-here"):
        response = await web.http.get(path)
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert "'unsafe-inline'" not in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"


# --- tasks ----------------------------------------------------------------------------------------


async def test_one_task_shows_args_attempts_worker_times_error_and_traceback(web: Setup) -> None:
    task_id = await send(web, "Fail", "it broke")
    await web.idle()
    response = await web.http.get(f"/api/tasks/{task_id}")
    assert response.status_code == 200
    task = response.json()
    assert task["status"] == "FAILED" and task["name"] == "Fail"
    # the app knows the task: its arguments were named after the function's parameters
    assert task["args"] == [{"Name": "why", "Type": "string", "Value": "it broke"}]
    assert task["attempts"] == 0 and task["replays"] == 0 and task["worker"] == "web-test"
    assert task["queue"] == "paota_tasks"
    assert task["created_at"] and task["started_at"] and task["finished_at"]
    assert task["error"]["type"] == "ValueError" and task["error"]["message"] == "it broke"
    assert "raise ValueError(why)" in task["error"]["traceback"]
    assert task["progress"] is None and task["result"] is None
    missing = await web.http.get("/api/tasks/task_nope")
    assert missing.status_code == 404 and error_of(missing)["field"] == "task_id"


async def test_send_a_task_by_name_with_typed_and_inferred_args(web: Setup) -> None:
    # when tasks are sent by name, one with {name, type, value} args and one with bare values
    typed = await send(
        web,
        "add",
        {"name": "a", "type": "int64", "value": 40},
        {"name": "b", "type": "int64", "value": 2},
    )
    bare = await send(web, "add", 1, 2, queue="paota_tasks", priority=3)
    await web.idle()
    # then the worker ran them with those arguments
    assert (await web.http.get(f"/api/tasks/{typed}")).json()["result"] == 42
    task = (await web.http.get(f"/api/tasks/{bare}")).json()
    assert task["result"] == 3 and task["args"][0]["Type"] == "int"
    # a task id may be chosen, once
    chosen = await send(web, "add", 5, 5, id="my-id-1")
    assert chosen == "my-id-1"
    again = await web.http.post("/api/tasks", json={"name": "add", "args": [1, 1], "id": "my-id-1"})
    assert again.status_code == 409 and error_of(again)["field"] == "id"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": 5}, "name"),
        ({"name": "add", "args": {"a": 1}}, "args"),
        ({"name": "add", "args": [{"value": 1, "type": 5}]}, "args[0].type"),
        ({"name": "add", "args": [{"value": 1, "extra": 2}]}, "extra"),
        ({"name": "add", "args": [float("nan")]}, "args[0]"),
        ({"name": "add", "priority": 256}, "priority"),
        ({"name": "add", "priority": "high"}, "priority"),
        ({"name": "add", "priority": True}, "priority"),
        ({"name": "add", "delay_s": -1}, "delay_s"),
        ({"name": "add", "delay_s": 10**9}, "delay_s"),
        ({"name": "add", "retry_count": 1.5}, "retry_count"),
        ({"name": "add", "queue": "no spaces allowed"}, "queue"),
        ({"name": "add", "id": "x" * 300}, "id"),
        ({"name": "add", "colour": "red"}, "colour"),
    ],
)
async def test_a_bad_send_gets_400_naming_the_field_and_sends_nothing(
    web: Setup, body: dict[str, Any], field: str
) -> None:
    before = await snapshot(web)
    raw = json.dumps(body, allow_nan=True)
    response = await web.http.post(
        "/api/tasks", content=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert error_of(response)["field"] == field
    assert await snapshot(web) == before


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"name": "add", "args": [1, "x"]}, "do not fit add(a: int, b: int)"),
        ({"name": "add", "args": [1]}, "missing a required argument: 'b'"),
        ({"name": "add", "args": {"a": 1, "b": 2, "c": 3}}, "unexpected keyword argument 'c'"),
        ({"name": "add", "args": [1, 2, 3]}, "too many positional arguments"),
    ],
)
async def test_a_send_is_checked_against_the_tasks_function(
    web: Setup, body: dict[str, Any], says: str
) -> None:
    # add(1, "x"), add(1) ... were accepted and parked later as bad-arguments
    before = await snapshot(web)
    response = await web.http.post("/api/tasks", json=body)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["field"] == "args" and says in error["message"], error
    assert "nothing was sent" in error["message"]
    assert await snapshot(web) == before


async def test_an_unknown_name_is_refused_unless_sent_unchecked(web: Setup) -> None:
    before = await snapshot(web)
    response = await web.http.post("/api/tasks", json={"name": "ad", "args": [1, 2]})
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["field"] == "name" and "'ad' is not a task this server knows" in error["message"]
    assert "add" in error["allowed"]
    assert await snapshot(web) == before
    # a task only other workers run (a Go worker's, say) is sent when the sender says so
    sent = await web.http.post(
        "/api/tasks", json={"name": "GoOnly", "args": [1], "unchecked": True, "queue": "go"}
    )
    assert sent.status_code == 201, sent.text


async def test_arguments_by_name_are_bound_to_the_function(web: Setup) -> None:
    response = await web.http.post("/api/tasks", json={"name": "add", "args": {"b": 2, "a": 40}})
    assert response.status_code == 201, response.text
    await web.idle()
    task = (await web.http.get(f"/api/tasks/{response.json()['id']}")).json()
    assert task["result"] == 42 and task["call"] == "add(a=40, b=2)"


@pytest.mark.parametrize(
    "raw", [b"{not json", b"[1, 2]", b'"text"', b'{"name": "add"' + b" " * 10 + b"}}"]
)
async def test_a_body_that_is_not_a_json_object_gets_400(web: Setup, raw: bytes) -> None:
    response = await web.http.post("/api/tasks", content=raw)
    assert response.status_code == 400 and error_of(response)["field"] == "body"


async def test_a_body_over_one_megabyte_gets_413(web: Setup) -> None:
    response = await web.http.post("/api/tasks", content=b" " * (1024 * 1024 + 1))
    assert response.status_code == 413 and error_of(response)["field"] == "body"


async def test_listing_filters_pages_with_a_cursor_and_is_newest_first(web: Setup) -> None:
    # given 25 tasks created one second apart, on two queues, some failed
    ids = []
    for i in range(25):
        if i % 5 == 0:
            ids.append(await send(web, "Fail", f"n{i}", queue="other"))
        else:
            ids.append(await send(web, "add", i, i))
        web.clock.advance(1)
    # (the other queue is not consumed: those tasks stay PENDING)
    await web.idle()
    # when paging through all of them, 7 at a time
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        page = (await web.http.get("/api/tasks", params=params)).json()
        seen += [t["id"] for t in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    # then each comes once, newest first, in four pages
    assert seen == ids[::-1] and pages == 4
    # and the filters narrow it down
    other = (await web.http.get("/api/tasks", params={"queue": "other"})).json()["items"]
    assert [t["id"] for t in other] == [ids[i] for i in (20, 15, 10, 5, 0)]
    assert all(t["status"] == "PENDING" for t in other)
    ok = (await web.http.get("/api/tasks", params={"status": "succeeded"})).json()["items"]
    assert len(ok) == 20 and {t["status"] for t in ok} == {"SUCCEEDED"}
    named = (await web.http.get("/api/tasks", params={"name": "Fail"})).json()["items"]
    assert len(named) == 5
    t0 = (await web.store.get(ids[0])).created_at  # type: ignore[union-attr]
    assert t0 is not None
    window = {
        "created_after": (t0 + timedelta(seconds=10)).isoformat(),
        "created_before": (t0 + timedelta(seconds=13)).isoformat(),
    }
    timed = (await web.http.get("/api/tasks", params=window)).json()["items"]
    assert [t["id"] for t in timed] == [ids[12], ids[11], ids[10]]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"status": "DONE"}, "status"),
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"created_after": "2026-01-01T00:00:00"}, "created_after"),
        ({"created_before": "2026-13-01T00:00:00Z"}, "created_before"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "W10"}, "cursor"),
        ({"stauts": "FAILED"}, "stauts"),
        ({"status": ["FAILED", "PENDING"]}, "status"),
    ],
)
async def test_a_bad_list_query_gets_400_naming_the_field(
    web: Setup, query: dict[str, Any], field: str
) -> None:
    response = await web.http.get("/api/tasks", params=query)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["field"] == field
    if query.get("status") == "DONE":
        assert "FAILED" in error["allowed"]


async def test_retry_of_a_parked_task_requeues_its_parked_message(web: Setup) -> None:
    task_id = await send(web, "Fail", "once")
    await web.idle()
    assert len(web.broker.parked(ParkQueue.FAILED)) == 1
    response = await web.http.post(f"/api/tasks/{task_id}/retry")
    assert response.status_code == 202
    assert response.json() == {"id": task_id, "replays": 1, "from": "parked"}
    await web.idle()
    # a new run (it fails again: parked again, as its second run)
    state = await web.store.get(task_id)
    assert state is not None and state.replays == 1 and state.status is TaskStatus.FAILED
    assert len(web.broker.parked(ParkQueue.FAILED)) == 1


async def test_retry_of_a_finished_task_rebuilds_it_from_its_record(web: Setup) -> None:
    task_id = await send(web, "add", 2, 3)
    await web.idle()
    response = await web.http.post(f"/api/tasks/{task_id}/retry")
    assert response.json() == {"id": task_id, "replays": 1, "from": "record"}
    # the new run is recorded at once, PENDING
    state = await web.store.get(task_id)
    assert state is not None and state.status is TaskStatus.PENDING and state.replays == 1
    await web.idle()
    state = await web.store.get(task_id)
    assert state is not None and state.status is TaskStatus.SUCCEEDED and state.replays == 1
    assert state.result == 5
    # again: run 3
    assert (await web.http.post(f"/api/tasks/{task_id}/retry")).json()["replays"] == 2


async def test_retry_cancel_and_delete_answer_404_and_409_as_the_state_says(web: Setup) -> None:
    done = await send(web, "add", 1, 1)
    await web.idle()
    later = await send(web, "add", 1, 1, delay_s=3600)
    for method, path in (
        ("POST", "/api/tasks/nope/retry"),
        ("POST", "/api/tasks/nope/cancel"),
        ("DELETE", "/api/tasks/nope"),
    ):
        assert (await web.http.request(method, path)).status_code == 404
    # a task that has not finished cannot be retried or deleted
    for method, path in (("POST", f"/api/tasks/{later}/retry"), ("DELETE", f"/api/tasks/{later}")):
        response = await web.http.request(method, path)
        assert response.status_code == 409 and "PENDING" in error_of(response)["message"]
    # a finished one cannot be cancelled
    response = await web.http.post(f"/api/tasks/{done}/cancel")
    assert response.status_code == 409 and "finished" in error_of(response)["message"]
    bad = await web.http.post(f"/api/tasks/{later}/cancel", json={"reason": 5})
    assert bad.status_code == 400 and error_of(bad)["field"] == "reason"


async def test_cancel_a_delayed_task_then_delete_its_record(web: Setup) -> None:
    later = await send(web, "add", 1, 1, delay_s=60)
    response = await web.http.post(f"/api/tasks/{later}/cancel", json={"reason": "not needed"})
    assert response.status_code == 200 and response.json() == {"id": later, "cancelled": True}
    await web.idle()  # the delay passes: the worker acks it without running it
    task = (await web.http.get(f"/api/tasks/{later}")).json()
    assert task["status"] == "CANCELLED" and task["error"]["message"] == "not needed"
    assert task["result"] is None
    assert (await web.http.delete(f"/api/tasks/{later}")).status_code == 204
    assert (await web.http.get(f"/api/tasks/{later}")).status_code == 404


# --- parking queues, queues, workers, schedules ---------------------------------------------------


async def test_parked_messages_are_browsed_by_reason_and_requeued(web: Setup) -> None:
    # given three failed tasks and one whose arguments do not fit
    failed = [await send(web, "Fail", f"no {i}") for i in range(3)]
    # (the API refuses arguments that do not fit a task it knows: an unchecked producer sent it)
    unfit = (await web.pool.send_task(Signature("add", args=(Arg("", "string", "one"),)))).id
    await web.idle()
    before = await snapshot(web)
    # when the failed queue is browsed
    page = (await web.http.get("/api/parked/failed")).json()
    # then it shows every message with why, from where and by whom, and moves nothing
    assert page["total"] == 4
    assert page["by_reason"] == {"bad-arguments": 1, "retries-exhausted": 3}
    assert [i["id"] for i in page["items"]] == [*failed, unfit]
    item = page["items"][0]
    assert item["reason"] == "retries-exhausted" and item["name"] == "Fail"
    assert item["error"] == {"type": "ValueError", "message": "no 0"}
    assert item["origin_queue"] == "paota_tasks" and item["worker"] == "web-test"
    assert item["args"] == [{"Name": "why", "Type": "string", "Value": "no 0"}]
    assert await snapshot(web) == before
    by_reason = await web.http.get("/api/parked/failed", params={"reason": "bad-arguments"})
    assert [i["id"] for i in by_reason.json()["items"]] == [unfit]
    # requeue one task by id, then the rest by reason
    one = await web.http.post("/api/parked/failed/requeue", json={"task_ids": [failed[1]]})
    assert one.json() == {"queue": "failed", "moved": 1}
    assert (await web.store.get(failed[1])).replays == 0  # type: ignore[union-attr]
    await web.idle()
    assert (await web.store.get(failed[1])).replays == 1  # type: ignore[union-attr]
    rest = await web.http.post(
        "/api/parked/failed/requeue", json={"reason": "retries-exhausted", "limit": 1}
    )
    assert rest.json()["moved"] == 1
    # bad input
    assert (await web.http.get("/api/parked/elsewhere")).status_code == 404
    for body, field in (
        ({"task_ids": "x"}, "task_ids"),
        ({"task_ids": []}, "task_ids"),
        ({"limit": 0}, "limit"),
        ({"reasons": "x"}, "reasons"),
    ):
        response = await web.http.post("/api/parked/failed/requeue", json=body)
        assert response.status_code == 400 and error_of(response)["field"] == field
    assert (await web.http.get("/api/parked/timeout")).json()["total"] == 0


async def test_queues_show_depths_and_consumers(web: Setup) -> None:
    await send(web, "add", 1, 2, queue="reports")  # nobody consumes reports
    await send(web, "Fail", "x")
    await web.idle()
    queues = {q["name"]: q for q in (await web.http.get("/api/queues")).json()["items"]}
    assert queues["paota_tasks"] == {
        "name": "paota_tasks",
        "kind": "task",
        "exists": True,
        "ready": 0,
        "consumers": 1,
        "workers": 0,
    }
    assert queues["paota_task_failed_queue"]["ready"] == 1
    assert queues["paota_task_failed_queue"]["kind"] == "parking:failed"
    assert queues["paota_task_timeout_queue"]["exists"] is False


async def test_workers_are_read_from_their_heartbeats() -> None:
    setup = Setup(heartbeat=True)
    await setup.start()
    try:
        page = (await setup.http.get("/api/workers")).json()
        workers = page["items"]
        assert [w["name"] for w in workers] == ["web-test"]
        # with what the broker counts, so that the page can say why a consumer is not listed
        assert page["consumers"] == 1 and page["store"] == "MemoryStore"
        worker = workers[0]
        assert worker["queues"] == {"paota_tasks": 4} and worker["concurrency"] == 4
        assert worker["running"] == 0 and worker["late"] is False
        assert worker["started_at"] and worker["last_seen"]
    finally:
        await setup.close()


async def test_a_worker_record_with_odd_fields_is_shown_not_fatal(web: Setup) -> None:
    await web.store.put_doc(
        "worker", "odd", {"name": 5, "queues": "not a dict", "pid": "x", "last_seen": "garbage"}
    )
    workers = (await web.http.get("/api/workers")).json()["items"]
    assert workers == [
        {
            "key": "odd",
            "name": "5",
            "host": "",
            "pid": None,
            "queues": {},
            "concurrency": None,
            "running": None,
            "tasks": [],
            "started_at": None,
            "last_seen": "garbage",
            "interval_s": None,
            "late": False,
            "stats": {},
            "version": "",
        }
    ]


async def test_schedules_are_listed_paused_and_resumed(web: Setup) -> None:
    @web.pool.periodic(every=60, id="every-minute")
    async def tick() -> None:
        return None

    listed = (await web.http.get("/api/schedules")).json()["items"]
    assert [(s["id"], s["task"], s["paused"]) for s in listed] == [("every-minute", "tick", False)]
    assert len(listed[0]["next"]) == 3
    paused = await web.http.post("/api/schedules/every-minute/pause")
    assert paused.json() == {"id": "every-minute", "paused": True}
    listed = (await web.http.get("/api/schedules")).json()["items"]
    assert listed[0]["paused"] is True and listed[0]["next"] == []
    resumed = await web.http.post("/api/schedules/every-minute/resume")
    assert resumed.json()["paused"] is False
    missing = await web.http.post("/api/schedules/nope/pause")
    assert missing.status_code == 404 and error_of(missing)["field"] == "schedule_id"
    bad = await web.http.post("/api/schedules/has%20space/pause")
    assert bad.status_code == 400 and error_of(bad)["field"] == "schedule_id"
    many = await web.http.get("/api/schedules", params={"count": 99})
    assert many.status_code == 400 and error_of(many)["field"] == "count"


async def test_a_store_outage_is_a_503_with_a_message(web: Setup) -> None:
    await web.store.close()
    response = await web.http.get("/api/tasks")
    assert response.status_code == 503
    assert "store did not answer" in error_of(response)["message"]


# --- memory stays flat ----------------------------------------------------------------------------


async def test_a_page_costs_the_same_memory_however_many_tasks_exist(web: Setup) -> None:
    async def peak_of_one_page() -> int:
        tracemalloc.start()
        try:
            response = await web.http.get("/api/tasks", params={"limit": 50})
            assert len(response.json()["items"]) == 50
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    async def add_records(n: int) -> None:
        from tests.contracts.store_contract import make_state

        start = len(web.store._records)
        for i in range(start, start + n):
            await web.store.record(make_state(f"t-{i:06}", TaskStatus.SUCCEEDED))

    await add_records(1_000)
    await peak_of_one_page()  # warm up (imports, caches of the libraries)
    small = await peak_of_one_page()
    await add_records(19_000)
    large = await peak_of_one_page()
    # twenty times the records, the same page: what the request allocates does not grow with them
    assert large < small * 1.5 + 64 * 1024, (small, large)


# --- live updates (a real server: server-sent events stream) --------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_live_view_shows_a_task_go_from_started_to_succeeded_within_2s() -> None:
    import uvicorn

    pool = WorkerPool(Config(store="memory"), 2, "live")
    release = asyncio.Event()

    @pool.task
    async def held() -> str:
        await release.wait()
        return "ok"

    app = create_app(pool, token=TOKEN, poll_interval_s=0.2)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    await pool.connect()
    worker = asyncio.create_task(pool.start(install_signal_handlers=False))
    try:
        await until(lambda: server.started, what="the server listening")
        handle = await held.send()
        seen: list[tuple[float, str]] = []
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=AUTH) as http,
            http.stream("GET", f"/api/stream/tasks/{handle.id}") as stream,
        ):
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()
            released_at = None
            async with asyncio.timeout(20):
                async for line in lines:
                    if not line.startswith("data:"):
                        continue
                    status = json.loads(line[5:])["status"]
                    seen.append((time.monotonic(), status))
                    if status == "STARTED" and released_at is None:
                        released_at = time.monotonic()
                        release.set()
                    if status == "SUCCEEDED":
                        break
        statuses = [s for _, s in seen]
        assert "STARTED" in statuses and statuses[-1] == "SUCCEEDED"
        assert released_at is not None and seen[-1][0] - released_at < 2.0
    finally:
        release.set()
        await pool.close()
        await asyncio.wait_for(worker, 10)
        server.should_exit = True
        await asyncio.wait_for(serving, 10)


# --- the command and the package ------------------------------------------------------------------


def test_paota_web_refuses_to_start_without_a_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PAOTA_WEB_TOKEN", raising=False)
    assert main(["web", "--port", "0"]) == 2
    assert "PAOTA_WEB_TOKEN" in capsys.readouterr().err
    assert main(["web", "--insecure-open", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "loopback" in capsys.readouterr().err
    monkeypatch.setenv("PAOTA_WEB_TOKEN", "short")
    assert main(["web", "--port", "0"]) == 2
    assert "at least 16" in capsys.readouterr().err


def test_import_paota_imports_no_web_metrics_or_tracing_library() -> None:
    code = (
        "import sys, paota, paota.middleware.builtin; print(sorted(m for m in ('starlette', "
        "'uvicorn', 'httpx', 'prometheus_client', 'opentelemetry', 'sse_starlette', 'cronsim') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
