"""Webhooks from a real worker process on RabbitMQ with the MongoDB store, to a local HTTP sink.

Given a sink that fails twice and then accepts, every event arrives, signed, with one id each;
given a sink that is down for a while, the events wait in MongoDB and all arrive once it is back,
while the tasks ran at full speed meanwhile.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from paota import Arg, Client, Config, MongoConfig, Signature
from paota.middleware.webhooks import verify_signature
from paota.stores.mongo.store import MongoStore
from tests.integration.test_web_amqp_mongo import APP, env_of, paota_command
from tests.webhook_sink import Sink

pytestmark = pytest.mark.integration

SECRET = "integration-secret-" + uuid.uuid4().hex


@pytest.fixture
async def database(mongo_uri: str) -> AsyncIterator[str]:
    name = f"paota_hooks_{uuid.uuid4().hex[:12]}"
    yield name
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_uri, serverSelectionTimeoutMS=5000
    )
    try:
        await client.drop_database(name)
    finally:
        await client.close()


async def eventually(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout_s}s: {what}"
        await asyncio.sleep(0.1)


async def run_worker(config: Config, mongo_uri: str, database: str, sink: Sink, tmp: Path) -> Any:
    env = env_of(
        config,
        mongo_uri,
        database,
        WEB_MARKER=str(tmp / "marker"),
        WEB_HOLD_S="0",
        WEBHOOK_URL=sink.url,
        WEBHOOK_SECRET=SECRET,
    )
    return await asyncio.create_subprocess_exec(
        *paota_command(),
        "worker",
        APP,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def stop(process: Any) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()


async def send(client: Client, name: str, *args: Any) -> str:
    return (await client.send_task(Signature(name, args=[Arg.of(a) for a in args]))).id


async def test_a_sink_that_fails_twice_then_accepts_gets_every_event_once_accepted(
    make_config: Callable[..., Config], mongo_uri: str, database: str, tmp_path: Path
) -> None:
    config = make_config(
        config_fields={"store": "mongodb", "mongo": MongoConfig(uri=mongo_uri, database=database)}
    )
    sink = await Sink(statuses=[500, 500, 200]).start()
    worker = await run_worker(config, mongo_uri, database, sink, tmp_path)
    client = Client(config, name="hooks-producer")
    try:
        await client.connect()
        # when 5 tasks succeed and 2 fail (their marker file is missing)
        ok = [await send(client, "Add", i, 1) for i in range(5)]
        failed = [await send(client, "Flaky", i) for i in range(2)]
        await eventually(lambda: len(sink.accepted()) >= 7, 90, "seven events accepted")
        await asyncio.sleep(1.0)  # any duplicate would have come by now
        # then: the first two requests failed, and every event was accepted exactly once
        assert [r.status for r in sink.received[:2]] == [500, 500]
        accepted = sink.accepted()
        ids = [r.headers["x-paota-event-id"] for r in accepted]
        assert len(ids) == len(set(ids)) == 7
        by_task = {r.event["task"]["id"]: r.event for r in accepted}
        assert set(by_task) == {*ok, *failed}
        assert {by_task[t]["type"] for t in ok} == {"task.succeeded"}
        assert {by_task[t]["type"] for t in failed} == {"task.failed"}
        assert by_task[failed[0]]["parked"] == {"queue": "failed", "reason": "retries-exhausted"}
        # every request signed over its body, the retried ones sent again with the same id
        for request in sink.received:
            assert verify_signature(SECRET, request.body, request.headers)
            assert request.event["id"] == request.headers["x-paota-event-id"]
        retried = {r.headers["x-paota-event-id"] for r in sink.received[:2]}
        assert retried <= set(ids)
        # and MongoDB's outbox is empty
        store = MongoStore(config)
        async with store:
            assert await store.list_docs("webhook-event:sink") == []
            assert len(await store.list_docs("webhook-sent:sink")) == 7
    finally:
        await stop(worker)
        await client.close()
        await sink.stop()


async def test_events_wait_in_mongodb_while_the_sink_is_down_and_all_arrive_after(
    make_config: Callable[..., Config], mongo_uri: str, database: str, tmp_path: Path
) -> None:
    config = make_config(
        config_fields={"store": "mongodb", "mongo": MongoConfig(uri=mongo_uri, database=database)}
    )
    sink = await Sink().start()
    await sink.stop()  # the port is known, nothing listens: the endpoint is down
    worker = await run_worker(config, mongo_uri, database, sink, tmp_path)
    client = Client(config, name="hooks-producer")
    store = MongoStore(config)
    try:
        await client.connect()
        await store.connect()
        # when 30 tasks run while the endpoint is down
        started = time.monotonic()
        ids = [await send(client, "Add", i, i) for i in range(30)]
        for task_id in ids:
            await client.result(task_id, timeout=60)
        took_s = time.monotonic() - started

        # then they were not held up, and their events wait in MongoDB, tried and failed
        async def all_tried() -> list[dict[str, Any]] | None:
            docs = await store.list_docs("webhook-event:sink")
            return docs if len(docs) == 30 and all(d["attempts"] >= 2 for d in docs) else None

        pending = await eventually(all_tried, 60, "every event tried twice")
        assert all("Connect" in d["last_error"] for d in pending)
        print(f"30 tasks ran in {took_s:.2f}s with the endpoint down")
        # once the endpoint is back, every event arrives
        await sink.start()
        await eventually(lambda: len(sink.accepted()) >= 30, 60, "thirty events accepted")
        assert sorted(r.event["task"]["id"] for r in sink.accepted()) == sorted(ids)
        await eventually(
            lambda: _empty(store.list_docs("webhook-event:sink")), 30, "the outbox empties"
        )
    finally:
        await stop(worker)
        await client.close()
        await store.close()
        await sink.stop()


async def _empty(docs: Any) -> bool:
    return not await docs
