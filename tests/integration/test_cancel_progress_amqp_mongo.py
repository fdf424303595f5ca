"""Cancellation, progress and result lifetimes on RabbitMQ with the MongoDB store.

- a running async task receives ``CancelledError`` within 2 s of ``handle.cancel()`` from another
  client (the broadcast crosses RabbitMQ's control exchange), is not retried, ends CANCELLED in
  MongoDB, its ``on_failure`` fires once; a running sync task sees its flag;
- queued and delayed tasks cancelled before any worker exists never run when a ``paota worker``
  process starts afterwards;
- ``paota cancel`` in a second process cancels a running task;
- progress reported by a running task is read by a second process through the store;
- per-task result lifetimes: ``expires_at`` on the final record, the TTL index, and the record is
  gone for readers once it has expired.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo.asynchronous.collection import AsyncCollection

from paota import (
    Client,
    Config,
    ErrorInfo,
    MongoConfig,
    Signature,
    TaskContext,
    WorkerPool,
    current_task,
)
from paota.brokers.amqp.control import control_exchange_name
from tests.integration.conftest import MongoDatabase, delete_topology
from tests.integration.processes import paota_command
from tests.waiting import until

pytestmark = pytest.mark.integration

MakeConfig = Callable[..., Config]
Document = dict[str, Any]
HELPERS = Path(__file__).resolve().parent / "e2e_helpers"
FINAL = {"SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED"}
CANCEL_WITHIN_S = 2.0


@dataclass
class Mongo:
    uri: str
    database: str
    tasks: AsyncCollection[Document]


@pytest.fixture
def mongo(mongo_db: MongoDatabase) -> Mongo:
    return Mongo(mongo_db.uri, mongo_db.name, mongo_db.client[mongo_db.name]["paota_tasks"])


@pytest.fixture
async def config(make_config: MakeConfig, mongo: Mongo, amqp_url: str) -> AsyncIterator[Config]:
    """RabbitMQ topology of this test, the MongoDB store on its database; the control exchange
    is deleted afterwards."""
    cfg = make_config(
        config_fields={
            "store": "mongodb",
            "mongo": MongoConfig(uri=mongo.uri, database=mongo.database),
        }
    )
    yield cfg
    await delete_topology(amqp_url, [], [control_exchange_name(cfg.amqp.exchange)])


def paota_env(config: Config) -> dict[str, str]:
    """The PAOTA_* variables of ``config``'s text settings (what a second process needs)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAOTA_")}
    for section in (config, config.amqp, config.mongo):
        for f in dataclasses.fields(section):
            spec = f.metadata.get("paota")
            value = getattr(section, f.name)
            if spec is not None and isinstance(value, str) and value:
                env[spec.env] = value
    return env


async def final_doc(tasks: AsyncCollection[Document], task_id: str, timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        doc = await tasks.find_one({"_id": task_id})
        if doc is not None and doc["status"] in FINAL:
            return doc
        assert time.monotonic() < deadline, f"task {task_id} not final after {timeout_s}s: {doc}"
        await asyncio.sleep(0.02)


def check_cancelled(doc: Document, reason: str) -> None:
    assert doc["status"] == "CANCELLED"
    assert doc["rank"] == 3
    assert doc["error"]["type"] == "Cancelled"
    assert doc["error"]["message"] == reason
    assert doc["result"] is None
    assert doc["finished_at"] is not None


@dataclass
class Runs:
    """What the task functions saw, from the loop and from threads."""

    started: dict[str, float] = dataclasses.field(default_factory=dict)
    cancelled: dict[str, float] = dataclasses.field(default_factory=dict)
    attempts: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    failures: list[tuple[str, ErrorInfo]] = dataclasses.field(default_factory=list)
    successes: list[str] = dataclasses.field(default_factory=list)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def begin(self) -> str:
        task = current_task()
        with self.lock:
            self.started[task.id] = time.monotonic()
            self.attempts.append((task.id, task.attempt))
        return task.id

    def on_failure(self, task: TaskContext, error: ErrorInfo) -> None:
        self.failures.append((task.id, error))

    def on_success(self, task: TaskContext, result: Any) -> None:
        self.successes.append(task.id)


def cancel_pool(config: Config, runs: Runs) -> WorkerPool:
    pool = WorkerPool(config, concurrency=4, name="cancel-worker")

    @pool.task(
        name="cancel.async", retry_count=3, on_failure=runs.on_failure, on_success=runs.on_success
    )
    async def long_async() -> str:
        task_id = runs.begin()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            runs.cancelled[task_id] = time.monotonic()
            raise
        return "finished"

    @pool.task(
        name="cancel.sync", retry_count=3, on_failure=runs.on_failure, on_success=runs.on_success
    )
    def long_sync() -> str:
        task_id = runs.begin()
        task = current_task()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if task.cancelled:
                runs.cancelled[task_id] = time.monotonic()
                task.raise_if_cancelled()
            time.sleep(0.005)
        return "finished"

    return pool


async def wait_started(runs: Runs, task_id: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while task_id not in runs.started:
        assert time.monotonic() < deadline, f"task {task_id} did not start"
        await asyncio.sleep(0.01)


# --- running tasks ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_running_task_is_cancelled_within_2s_from_another_client(
    config: Config, mongo: Mongo, running: Any, kind: str
) -> None:
    # given a pool on RabbitMQ + MongoDB running a long task (retries allowed)
    runs = Runs()
    pool = await running(cancel_pool(config, runs))
    producer = Client(config, name="cancel-producer")
    async with producer:
        handle = await producer.send_task(Signature(f"cancel.{kind}"))
        await wait_started(runs, handle.id)
        # when another client cancels it
        asked = time.monotonic()
        assert await handle.cancel(reason=f"integration {kind}") is True
        returned = time.monotonic()
        doc = await final_doc(mongo.tasks, handle.id)
    # then the task saw the cancellation within 2 s (CancelledError / the flag)
    assert handle.id in runs.cancelled, f"the {kind} task never saw the cancellation"
    latency_s = runs.cancelled[handle.id] - asked
    print(
        f"\n{kind} task: cancel() returned after {returned - asked:.3f}s, the task saw it after "
        f"{latency_s:.3f}s"
    )
    assert latency_s < CANCEL_WITHIN_S
    # and it is CANCELLED in MongoDB, was never retried, and on_failure fired once
    check_cancelled(doc, f"integration {kind}")
    await asyncio.sleep(1.5)  # a retry would have come after 1 s
    assert runs.attempts == [(handle.id, 0)]
    assert runs.failures == [(handle.id, ErrorInfo("Cancelled", f"integration {kind}"))]
    assert runs.successes == []
    assert pool.stats.cancelled == 1 and pool.stats.retried == 0
    assert (await mongo.tasks.find_one({"_id": handle.id}))["status"] == "CANCELLED"


async def test_paota_cancel_in_a_second_process_cancels_a_running_task(
    config: Config, mongo: Mongo, running: Any
) -> None:
    runs = Runs()
    await running(cancel_pool(config, runs))
    async with Client(config) as producer:
        handle = await producer.send_task(Signature("cancel.async"))
        await wait_started(runs, handle.id)
        # when `paota cancel` runs in a process of its own
        asked = time.monotonic()
        cli = await asyncio.create_subprocess_exec(
            *paota_command(),
            "cancel",
            handle.id,
            "--reason",
            "from the command line",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=paota_env(config),
        )
        try:
            out, err = await asyncio.wait_for(cli.communicate(), 60)
        finally:
            if cli.returncode is None:
                cli.kill()
                await cli.wait()
        assert cli.returncode == 0, err.decode()
        assert f"task {handle.id} cancelled" in out.decode()
        doc = await final_doc(mongo.tasks, handle.id)
    # then the running task got CancelledError and the record says who cancelled it
    assert handle.id in runs.cancelled
    print(f"\npaota cancel (process start included): {runs.cancelled[handle.id] - asked:.3f}s")
    check_cancelled(doc, "from the command line")
    assert runs.failures == [(handle.id, ErrorInfo("Cancelled", "from the command line"))]


# --- queued and delayed, cancelled before the worker starts ---------------------------------


APP = textwrap.dedent(
    """
    import os

    from paota import Config, WorkerPool

    OUT = os.environ["CANCEL_TEST_OUT"]
    pool = WorkerPool(Config.from_env(), concurrency=4, name="late-worker")


    def note(line):
        with open(OUT, "a") as f:
            f.write(line + "\\n")


    def failed(task, error):
        note(f"on_failure {task.id} {error.type}: {error.message}")


    @pool.task(name="cancel.queued", retry_count=3, on_failure=failed)
    async def queued() -> None:
        note(f"ran {queued.name}")
    """
)


async def test_a_worker_process_started_after_the_cancel_honours_it(
    config: Config, mongo: Mongo, tmp_path: Path
) -> None:
    # given a queued task and one delayed by 1 s, both cancelled while no worker exists
    async with Client(config, name="early-producer") as producer:
        queued = await producer.send_task(Signature("cancel.queued"))
        delayed = await producer.send_task(Signature("cancel.queued"), delay_s=1.0)
        assert await queued.cancel(reason="queued, cancelled")
        assert await delayed.cancel(reason="delayed, cancelled")
        for task_id in (queued.id, delayed.id):
            assert (await mongo.tasks.find_one({"_id": task_id}))["status"] == "CANCELLED"
        # when a worker process starts afterwards and runs past the delay
        (tmp_path / "app.py").write_text(APP)
        out = tmp_path / "out.txt"
        env = {**paota_env(config), "CANCEL_TEST_OUT": str(out)}
        worker = await asyncio.create_subprocess_exec(
            *paota_command(),
            "worker",
            "app:pool",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=tmp_path,
        )
        try:
            deadline = time.monotonic() + 30
            while len(out.read_text().splitlines() if out.exists() else []) < 2:
                assert time.monotonic() < deadline, "the worker did not settle both tasks"
                assert worker.returncode is None, "the worker exited"
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # a retry or a run would come now
        finally:
            worker.terminate()
            _, err = await asyncio.wait_for(worker.communicate(), 30)
        # then neither ran; each fired on_failure once with its reason; both stay CANCELLED
        lines = sorted(out.read_text().splitlines())
        assert lines == sorted(
            [
                f"on_failure {queued.id} Cancelled: queued, cancelled",
                f"on_failure {delayed.id} Cancelled: delayed, cancelled",
            ]
        ), err.decode()
        check_cancelled(await mongo.tasks.find_one({"_id": queued.id}), "queued, cancelled")
        check_cancelled(await mongo.tasks.find_one({"_id": delayed.id}), "delayed, cancelled")
        # and nothing is left in RabbitMQ: both messages were acked
        depths = await producer.broker.queue_depths()  # type: ignore[attr-defined]
        assert depths[config.task_queue_name] == 0
        assert depths[config.amqp.failed_queue] == 0


# --- progress --------------------------------------------------------------------------------


async def test_progress_is_read_from_a_second_process(
    config: Config, mongo: Mongo, running: Any
) -> None:
    pool = WorkerPool(config, concurrency=2, name="progress-worker")
    seen: list[tuple[Any, ...]] = []

    async def watched(fraction: float) -> None:
        # the next report waits until the other process has seen this one: every report is seen
        # however slow the machine (a later one would otherwise overwrite it unseen)
        await until(lambda: any(view[1] == fraction for view in seen), 30, f"{fraction} seen")

    @pool.task(name="progress.steps")
    async def steps() -> str:
        for fraction, message in (
            (0.25, "resized 1 of 4"),
            (0.5, "resized 2 of 4"),
            (0.75, "resized 3 of 4"),
        ):
            await current_task().progress(fraction, message)
            await watched(fraction)
        return "resized 4 of 4"

    await pool.connect()
    handle = await pool.send_task(Signature("progress.steps"))
    request = {"uri": mongo.uri, "database": mongo.database, "task_id": handle.id, "timeout_s": 30}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAOTA_")}
    watcher = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HELPERS / "watch_progress.py"),
        json.dumps(request),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )

    async def read_views() -> None:
        assert watcher.stdout is not None
        async for line in watcher.stdout:
            seen.append(tuple(json.loads(line)))

    reading = asyncio.create_task(read_views())
    await running(pool)
    try:
        await asyncio.wait_for(reading, 60)
        _, err = await asyncio.wait_for(watcher.communicate(), 60)
    finally:
        if watcher.returncode is None:
            watcher.kill()
            await watcher.wait()
    assert watcher.returncode == 0, err.decode()
    # every report was seen from the other process, in order, then the final record
    reports = [view for view in seen if view[1] is not None]
    assert reports == [
        ("STARTED", 0.25, "resized 1 of 4"),
        ("STARTED", 0.5, "resized 2 of 4"),
        ("STARTED", 0.75, "resized 3 of 4"),
    ], seen
    assert seen[-1] == ("SUCCEEDED", None, "")
    assert await handle.result(timeout=5) == "resized 4 of 4"


# --- result lifetimes ------------------------------------------------------------------------


async def test_a_per_task_result_lifetime_on_mongodb(
    make_config: MakeConfig, mongo: Mongo, running: Any
) -> None:
    # given a store with a global TTL (PAOTA_MONGO_RESULT_TTL) and a task with its own, shorter
    config = make_config(
        config_fields={
            "store": "mongodb",
            "mongo": MongoConfig(uri=mongo.uri, database=mongo.database, result_ttl_s=3600),
        }
    )
    pool = WorkerPool(config, concurrency=2, name="ttl-worker")

    @pool.task(name="ttl.brief", result_ttl_s=1.0)
    async def brief() -> int:
        return 1

    @pool.task(name="ttl.kept")
    async def kept() -> int:
        return 2

    await running(pool)
    short, long = await pool.send_task(Signature("ttl.brief")), await kept.send()
    doc = await final_doc(mongo.tasks, short.id)
    other = await final_doc(mongo.tasks, long.id)
    # then the final record expires a second after it finished; the other has no expiry
    assert doc["status"] == "SUCCEEDED"
    assert doc["expires_at"] - doc["finished_at"] == timedelta(seconds=1)
    assert other["expires_at"] is None
    # and both TTL indexes exist: the global one on finished_at, the per-task one on expires_at
    indexes = await mongo.tasks.index_information()
    assert indexes["expires_at_1"]["expireAfterSeconds"] == 0
    assert indexes["finished_at_1"]["expireAfterSeconds"] == 3600
    # and readers see it until it expires (a read that a loaded machine made after the second is
    # not held against it), then no longer (MongoDB deletes it within a minute)
    expires = doc["expires_at"]
    state = await short.state()
    now = datetime.now(UTC)
    now = now if expires.tzinfo else now.replace(tzinfo=None)
    if now < expires:
        assert state is not None
    await asyncio.sleep(max(0.0, (expires - now).total_seconds()) + 0.2)
    assert await short.state() is None
    store = pool.store
    assert store is not None
    assert [s.task_id for s in await store.list(name="ttl.brief")] == []
    assert (await long.state()) is not None
    assert await long.result(timeout=5) == 2


# --- a cancellation the broadcast did not carry ------------------------------------------------


async def test_a_cancel_recorded_while_rabbitmq_was_down_reaches_the_running_task(
    make_config: MakeConfig, mongo: Mongo, running: Any, rabbit_node: Any
) -> None:
    # given a pool on a RabbitMQ of this test's own, running a long async task
    node = rabbit_node()
    config = make_config(
        url=node.url,
        config_fields={
            "store": "mongodb",
            "mongo": MongoConfig(uri=mongo.uri, database=mongo.database),
        },
    )
    runs = Runs()
    pool = await running(cancel_pool(config, runs))
    handle = await pool.send_task(Signature("cancel.async"))
    await wait_started(runs, handle.id)
    # when RabbitMQ goes away, the task is cancelled meanwhile (the record only: no broadcast
    # can reach the worker), and RabbitMQ comes back
    await asyncio.to_thread(node.stop)
    store_only = Client(dataclasses.replace(config, broker="memory"), name="offline-canceller")
    async with store_only:
        assert await store_only.cancel(handle.id, reason="while RabbitMQ was down")
    assert handle.id not in runs.cancelled
    await asyncio.to_thread(node.start_again)
    back = time.monotonic()
    # then, once the worker listens again, it finds the record and cancels the run
    deadline = back + 60
    while handle.id not in runs.cancelled:
        assert time.monotonic() < deadline, "the run was not cancelled after the reconnection"
        await asyncio.sleep(0.05)
    print(f"\ncancelled {runs.cancelled[handle.id] - back:.3f}s after RabbitMQ was back")
    doc = await final_doc(mongo.tasks, handle.id)
    check_cancelled(doc, "while RabbitMQ was down")
    await asyncio.sleep(2.0)  # the redelivered copy of the unacked message comes back now
    assert runs.attempts == [(handle.id, 0)]
    assert runs.failures == [(handle.id, ErrorInfo("Cancelled", "while RabbitMQ was down"))]
