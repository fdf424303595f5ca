"""End to end: a worker pool on RabbitMQ with the MongoDB store.

Each outcome (success, success on retry, failure for good, start deadline, execution timeout) is
checked where it lands, in the MongoDB document, field by field; then a second process reads the
results the way a producer does (``WorkerPool.result`` and the store). Also: ``paota demo`` on the
MongoDB store, and a redelivered duplicate of a finished task that must not move its record.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo.asynchronous.collection import AsyncCollection

from paota import Arg, Config, MongoConfig, Signature, TaskHandle, WorkerPool
from paota.core.message import encode_json
from tests.contracts.broker_contract import publish
from tests.integration.conftest import MongoDatabase

pytestmark = pytest.mark.integration

MakeConfig = Callable[..., Config]
Document = dict[str, Any]

HELPERS = Path(__file__).resolve().parent / "e2e_helpers"
POOL_NAME = "e2e-mongo-worker"
EXEC_LIMIT_S = 1.0
FINAL = ("SUCCEEDED", "FAILED", "TIMED_OUT")
RANK = {"PENDING": 0, "STARTED": 1, "RETRYING": 2, "SUCCEEDED": 3, "FAILED": 3, "TIMED_OUT": 3}
MS = timedelta(milliseconds=1)

ARGS = (
    Arg("a", "int", 2),
    Arg("b", "int", 3),
    Arg("who", "string", "Ada"),
    Arg.of(["x", "y"], "tags"),
    Arg.of({"ratio": 1.5, "note": None}, "meta"),
)


# --- fixtures and helpers ----------------------------------------------------------------------


@dataclass
class Mongo:
    """A fresh database, and its task collection read directly with pymongo."""

    uri: str
    database: str
    tasks: AsyncCollection[Document]


@pytest.fixture
def mongo(mongo_db: MongoDatabase) -> Mongo:
    """A fresh database name and a raw view of its collection; the database is dropped after."""
    return Mongo(mongo_db.uri, mongo_db.name, mongo_db.client[mongo_db.name]["paota_tasks"])


def e2e_config(make_config: MakeConfig, mongo: Mongo) -> Config:
    """RabbitMQ topology of this test, the MongoDB store on the test's database."""
    return make_config(
        config_fields={
            "store": "mongodb",
            "mongo": MongoConfig(uri=mongo.uri, database=mongo.database),
            "max_task_execution_duration_s": EXEC_LIMIT_S,
        }
    )


def ms(dt: datetime) -> datetime:
    """``dt`` as BSON stores it: truncated to the millisecond."""
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


def wire_args(sig: Signature) -> list[Document]:
    """The args exactly as the message on the wire carries them."""
    return list(json.loads(encode_json(sig))["Args"] or [])


def key(doc: Document) -> tuple[int, int]:
    return doc["attempts"], RANK[doc["status"]]


async def watch(tasks: AsyncCollection[Document], task_id: str, timeout_s: float = 30.0) -> Any:
    """Poll a task's document until it is final; returns (final doc, every distinct doc seen)."""
    seen: list[Document] = []
    deadline = time.monotonic() + timeout_s
    while True:
        doc = await tasks.find_one({"_id": task_id})
        if doc is not None and (not seen or seen[-1] != doc):
            seen.append(doc)
        if doc is not None and doc["status"] in FINAL:
            return doc, seen
        assert time.monotonic() < deadline, f"task {task_id} not final after {timeout_s}s: {doc}"
        await asyncio.sleep(0.02)


@dataclass
class Call:
    """One run of a task function."""

    attempt: int
    wall: datetime
    mono: float
    cancelled: bool = False


@dataclass
class Calls:
    """Every run of every task function, by task id (appended from threads too)."""

    by_task: dict[str, list[Call]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, sig: Signature) -> Call:
        call = Call(sig.retries_done, datetime.now(UTC), time.monotonic())
        with self.lock:
            self.by_task.setdefault(sig.uuid, []).append(call)
        return call

    def of(self, task_id: str) -> list[Call]:
        with self.lock:
            return list(self.by_task.get(task_id, []))


def e2e_pool(config: Config, calls: Calls, concurrency: int = 8) -> WorkerPool:
    """A pool (store from the config: MongoDB) with one task per outcome."""
    pool = WorkerPool(config, concurrency=concurrency, name=POOL_NAME)

    @pool.task(name="e2e.add")
    async def add(sig: Signature) -> Document:
        calls.note(sig)
        return {"sum": sig.arg("a") + sig.arg("b"), "who": sig.arg("who"), "tags": sig.arg("tags")}

    @pool.task(name="e2e.flaky")
    def flaky(sig: Signature) -> str:  # sync: runs in the pool's threads
        calls.note(sig)
        if sig.retries_done < 1:
            raise RuntimeError(f"transient failure on attempt {sig.retries_done}")
        return f"ok on attempt {sig.retries_done}"

    @pool.task(name="e2e.broken")
    async def broken(sig: Signature) -> None:
        calls.note(sig)
        raise ValueError(f"bad input on attempt {sig.retries_done}")

    @pool.task(name="e2e.late")
    async def late(sig: Signature) -> str:
        calls.note(sig)
        return "must not run"

    @pool.task(name="e2e.slow")
    async def slow(sig: Signature) -> str:
        call = calls.note(sig)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            call.cancelled = True
            raise
        return "too late"

    return pool


@dataclass
class Sent:
    handle: TaskHandle
    sent_at: datetime  # just before send_task

    @property
    def id(self) -> str:
        return self.handle.id

    @property
    def sig(self) -> Signature:
        return self.handle.signature


async def send(pool: WorkerPool, outcome: str) -> Sent:
    sent_at = datetime.now(UTC)
    sig = {
        "succeeds": Signature("e2e.add", args=ARGS),
        "succeeds-on-retry": Signature("e2e.flaky", args=ARGS, retry_count=2),
        "fails-for-good": Signature("e2e.broken", args=ARGS, retry_count=1),
        "start-deadline": Signature(
            "e2e.late", args=ARGS, task_timeout=30, created_at=sent_at - timedelta(seconds=120)
        ),
        "exec-timeout": Signature("e2e.slow", args=ARGS),
    }[outcome]
    return Sent(await pool.send_task(sig), sent_at)


OUTCOMES = ["succeeds", "succeeds-on-retry", "fails-for-good", "start-deadline", "exec-timeout"]


# --- what each outcome leaves in MongoDB -------------------------------------------------------


def check_pending(doc: Document, sent: Sent) -> None:
    assert doc["_id"] == sent.id
    assert doc["name"] == sent.sig.name
    assert doc["status"] == "PENDING"
    assert doc["rank"] == 0
    assert doc["attempts"] == 0
    assert doc["args"] == wire_args(sent.sig)
    assert doc["result"] is None
    assert doc["error"] is None
    assert doc["worker"] == ""  # nobody has it yet
    assert sent.sig.created_at is not None
    assert doc["created_at"] == ms(sent.sig.created_at)
    assert doc["started_at"] is None
    assert doc["finished_at"] is None
    assert ms(sent.sent_at) <= doc["updated_at"] <= datetime.now(UTC)


def check_final_common(doc: Document, sent: Sent) -> None:
    """What every final record holds, whatever the outcome."""
    now = datetime.now(UTC)
    assert doc["_id"] == sent.id
    assert doc["name"] == sent.sig.name
    assert doc["status"] in FINAL
    assert doc["rank"] == 3
    assert doc["worker"] == POOL_NAME
    assert doc["args"] == wire_args(sent.sig)
    assert sent.sig.created_at is not None
    assert doc["created_at"] == ms(sent.sig.created_at)
    assert doc["finished_at"] is not None
    assert doc["updated_at"] is not None
    assert ms(sent.sent_at) <= doc["finished_at"] <= doc["updated_at"] <= now
    if doc["started_at"] is not None:
        assert doc["created_at"] <= doc["started_at"] <= doc["finished_at"]


def check_seen(seen: list[Document]) -> None:
    """The document never went backwards while it was watched; it ended final."""
    keys = [key(doc) for doc in seen]
    assert keys == sorted(keys), [(d["status"], d["attempts"]) for d in seen]
    assert seen[-1]["status"] in FINAL
    for doc in seen[:-1]:
        assert doc["status"] not in FINAL
        assert doc["finished_at"] is None


def check_outcome(
    outcome: str, doc: Document, seen: list[Document], sent: Sent, calls: Calls
) -> None:
    check_final_common(doc, sent)
    check_seen(seen)
    runs = calls.of(sent.id)
    if outcome == "succeeds":
        assert [c.attempt for c in runs] == [0]
        assert doc["status"] == "SUCCEEDED"
        assert doc["attempts"] == 0
        assert doc["result"] == {"sum": 5, "who": "Ada", "tags": ["x", "y"]}
        assert doc["error"] is None
        assert doc["started_at"] is not None
        assert doc["started_at"] <= runs[0].wall
        assert doc["finished_at"] >= ms(runs[0].wall)
    elif outcome == "succeeds-on-retry":
        # one failure, then the retry after the first Fibonacci delay (1 s)
        assert [c.attempt for c in runs] == [0, 1]
        gap = runs[1].mono - runs[0].mono
        assert 0.9 <= gap < 4.0, gap
        assert doc["status"] == "SUCCEEDED"
        assert doc["attempts"] == 1
        assert doc["result"] == "ok on attempt 1"
        assert doc["error"] is None  # the success replaced the retry's error
        # started_at is the successful attempt's, not the first one's
        assert doc["started_at"] is not None
        assert ms(runs[0].wall) + timedelta(seconds=0.9) <= doc["started_at"] <= runs[1].wall
        # between the attempts the record said RETRYING, with the error and no finish time
        [retrying] = [d for d in seen if d["status"] == "RETRYING"]
        assert retrying["attempts"] == 0
        assert retrying["error"]["type"] == "RuntimeError"
        assert retrying["error"]["message"] == "transient failure on attempt 0"
        assert "RuntimeError: transient failure on attempt 0" in retrying["error"]["traceback"]
        assert retrying["worker"] == POOL_NAME
        assert retrying["result"] is None
        assert retrying["started_at"] is not None and retrying["started_at"] <= runs[0].wall
        assert retrying["finished_at"] is None
    elif outcome == "fails-for-good":
        assert [c.attempt for c in runs] == [0, 1]
        assert doc["status"] == "FAILED"
        assert doc["attempts"] == 1
        assert doc["result"] is None
        assert doc["error"]["type"] == "ValueError"
        assert doc["error"]["message"] == "bad input on attempt 1"
        assert "Traceback" in doc["error"]["traceback"]
        assert "ValueError: bad input on attempt 1" in doc["error"]["traceback"]
        assert doc["started_at"] is not None
        # the last attempt's start (taken just before its STARTED write, so before the call)
        assert ms(runs[0].wall) + timedelta(seconds=0.9) <= doc["started_at"] <= runs[1].wall
        assert any(d["status"] == "RETRYING" and d["attempts"] == 0 for d in seen)
    elif outcome == "start-deadline":
        assert runs == []  # parked without running
        assert doc["status"] == "TIMED_OUT"
        assert doc["attempts"] == 0
        assert doc["result"] is None
        assert doc["error"]["type"] == "TaskTimeoutError"
        assert re.fullmatch(
            r"waited 1[2-9]\d\.\d{3}s to start, over the 30s start deadline",
            doc["error"]["message"],
        ), doc["error"]["message"]
        assert doc["started_at"] is None  # it never started
        assert doc["created_at"] < ms(sent.sent_at) - timedelta(seconds=119)
    elif outcome == "exec-timeout":
        assert [c.attempt for c in runs] == [0]
        assert runs[0].cancelled, "the async task was not cancelled"
        assert doc["status"] == "TIMED_OUT"
        assert doc["attempts"] == 0
        assert doc["result"] is None
        assert doc["error"]["type"] == "TaskTimeoutError"
        assert doc["error"]["message"] == (
            f"ran longer than the {EXEC_LIMIT_S}s maximum execution duration and was cancelled"
        )
        assert doc["started_at"] is not None
        ran = doc["finished_at"] - doc["started_at"]
        assert timedelta(seconds=EXEC_LIMIT_S) - 2 * MS <= ran < timedelta(seconds=10), ran
    else:  # pragma: no cover
        raise AssertionError(outcome)


# --- the tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", OUTCOMES)
async def test_each_outcome_leaves_its_record_in_mongodb(
    make_config: MakeConfig, mongo: Mongo, running: Any, outcome: str
) -> None:
    # given a pool on RabbitMQ with the MongoDB store, connected but not consuming yet
    calls = Calls()
    pool = e2e_pool(e2e_config(make_config, mongo), calls)
    await pool.connect()
    # when a task is sent, then MongoDB has its PENDING record, args as on the wire
    sent = await send(pool, outcome)
    pending = await mongo.tasks.find_one({"_id": sent.id})
    assert pending is not None
    check_pending(pending, sent)
    # and when the pool consumes, the task ends in the record its outcome calls for
    await running(pool)
    doc, seen = await watch(mongo.tasks, sent.id)
    check_outcome(outcome, doc, seen, sent, calls)
    assert await mongo.tasks.count_documents({}) == 1


async def test_a_second_process_reads_every_outcome_from_mongodb(
    make_config: MakeConfig, mongo: Mongo, running: Any
) -> None:
    # given every outcome sent to a pool on RabbitMQ with the MongoDB store
    calls = Calls()
    pool = e2e_pool(e2e_config(make_config, mongo), calls)
    await pool.connect()
    sent = {outcome: await send(pool, outcome) for outcome in OUTCOMES}
    missing = f"task_{uuid.uuid4()}"  # never sent
    # when another process waits for their results (started before the pool consumes: it polls)
    request = {
        "uri": mongo.uri,
        "database": mongo.database,
        "tasks": {**{s.id: 25.0 for s in sent.values()}, missing: 1.0},
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAOTA_")}
    reader = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HELPERS / "read_results.py"),
        json.dumps(request),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    await running(pool)
    finals = await asyncio.gather(*(watch(mongo.tasks, s.id) for s in sent.values()))
    try:
        out, err = await asyncio.wait_for(reader.communicate(), 45)
    finally:
        if reader.returncode is None:
            reader.kill()
            await reader.wait()
    assert reader.returncode == 0, err.decode()
    views = json.loads(out)
    # then the workers' records are right
    docs = {}
    for outcome, (doc, seen) in zip(OUTCOMES, finals, strict=True):
        check_outcome(outcome, doc, seen, sent[outcome], calls)
        docs[outcome] = doc
    # and the second process saw the results, and TaskFailedError for failures and timeouts
    assert set(views) == {s.id for s in sent.values()} | {missing}
    assert {v["pid"] for v in views.values()} != {os.getpid()}
    ok = views[sent["succeeds"].id]
    assert ok["outcome"] == "result"
    assert ok["result"] == {"sum": 5, "who": "Ada", "tags": ["x", "y"]}
    retried = views[sent["succeeds-on-retry"].id]
    assert retried["outcome"] == "result"
    assert retried["result"] == "ok on attempt 1"
    failed = views[sent["fails-for-good"].id]
    assert failed["outcome"] == "TaskFailedError"
    assert failed["task_id"] == sent["fails-for-good"].id
    assert failed["status"] == "FAILED"
    assert failed["error_type"] == "ValueError"
    assert failed["error_message"] == "bad input on attempt 1"
    assert "ValueError: bad input on attempt 1" in failed["traceback"]
    assert failed["text"] == (
        f"task {sent['fails-for-good'].id} FAILED: ValueError: bad input on attempt 1"
    )
    late = views[sent["start-deadline"].id]
    assert late["outcome"] == "TaskFailedError"
    assert late["status"] == "TIMED_OUT"
    assert late["error_type"] == "TaskTimeoutError"
    assert "start deadline" in late["error_message"]
    slow = views[sent["exec-timeout"].id]
    assert slow["outcome"] == "TaskFailedError"
    assert slow["status"] == "TIMED_OUT"
    assert "maximum execution duration" in slow["error_message"]
    # a task the store never heard of: ResultTimeoutError, saying so
    nothing = views[missing]
    assert nothing["outcome"] == "ResultTimeoutError"
    assert nothing["task_id"] == missing
    assert "unknown to the store" in nothing["text"]
    assert nothing["record"] is None
    # and the records it read through the store are the documents the workers wrote
    for outcome, doc in docs.items():
        record = views[sent[outcome].id]["record"]
        assert record["status"] == doc["status"]
        assert record["attempts"] == doc["attempts"]
        assert record["worker"] == POOL_NAME
        assert record["args"] == wire_args(sent[outcome].sig)
        assert record["result"] == doc["result"]
        assert record["error_type"] == (doc["error"] or {}).get("type")
        for name in ("created_at", "started_at", "finished_at", "updated_at"):
            expected = None if doc[name] is None else doc[name].isoformat()
            assert record[name] == expected, name


def _paota_command() -> list[str]:
    script = shutil.which("paota", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "paota"]


async def test_demo_with_the_mongodb_store_records_every_task(mongo: Mongo) -> None:
    # given the demo on the memory broker with the MongoDB store on a fresh database
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAOTA_")}
    env.update(
        PAOTA_BROKER="memory",
        PAOTA_STORE="mongodb",
        PAOTA_MONGO_URI=mongo.uri,
        PAOTA_MONGO_TIMEOUT="30",  # the server shares a loaded machine with other tests
        PAOTA_MONGO_DB=mongo.database,
    )
    # when it runs 200 tasks in a process of its own
    demo = await asyncio.create_subprocess_exec(
        *_paota_command(),
        "demo",
        "--tasks",
        "200",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(demo.communicate(), 50)
    finally:
        if demo.returncode is None:
            demo.kill()
            await demo.wait()
    stdout = out.decode()
    # then it succeeds and says so from the store
    assert demo.returncode == 0, (stdout, err.decode())
    assert "states (from the store): SUCCEEDED 200\n" in stdout
    assert "failures: 0 failed, 0 timed out, 0 retried" in stdout
    assert "store mongodb" in err.decode()
    # and MongoDB holds 200 SUCCEEDED records of the demo task, nothing else
    assert await mongo.tasks.count_documents({}) == 200
    assert (
        await mongo.tasks.count_documents({"name": "paota.demo.noop", "status": "SUCCEEDED"}) == 200
    )
    docs = await mongo.tasks.find({}).to_list(None)
    assert len({d["_id"] for d in docs}) == 200
    for doc in docs:
        assert doc["_id"].startswith("task_")
        assert doc["worker"] == "paota-demo"
        assert doc["attempts"] == 0
        assert doc["args"] == []
        assert doc["result"] is None
        assert doc["error"] is None
        assert doc["created_at"] <= doc["started_at"] <= doc["finished_at"] <= doc["updated_at"]


async def test_a_redelivered_duplicate_of_a_finished_task_is_skipped(
    make_config: MakeConfig, mongo: Mongo, running: Any
) -> None:
    # given a task that ran to SUCCEEDED
    pool = WorkerPool(e2e_config(make_config, mongo), concurrency=4, name=POOL_NAME)
    runs: list[Signature] = []

    @pool.task(name="e2e.once")
    async def once(sig: Signature) -> Document:
        runs.append(sig)
        return {"run": len(runs)}

    await running(pool)
    handle = await pool.send_task(Signature("e2e.once", args=ARGS[:2]))
    assert await handle.result(timeout=20) == {"run": 1}
    first = await mongo.tasks.find_one({"_id": handle.id})
    assert first is not None
    assert first["status"] == "SUCCEEDED"
    assert first["finished_at"] is not None
    # when the same message (same uuid, same attempt) is delivered again, as after a redelivery
    await asyncio.sleep(0.01)  # so that any new timestamp would differ from the first ones
    await publish(pool.broker, handle.signature)
    deadline = time.monotonic() + 20
    while pool.stats.duplicates < 1:
        assert time.monotonic() < deadline, "the duplicate was not seen"
        await asyncio.sleep(0.02)
    await pool.stop()
    # then it is acked without running again, and the record is the first run's, untouched
    assert [sig.uuid for sig in runs] == [handle.id]
    assert pool.stats.received == 2
    assert (pool.stats.succeeded, pool.stats.failed, pool.stats.retried) == (1, 0, 0)
    after = await mongo.tasks.find_one({"_id": handle.id})
    assert after == first
    assert after["status"] == "SUCCEEDED"
    assert after["result"] == {"run": 1}
    assert after["finished_at"] == first["finished_at"]
    # and the producer's view is unchanged
    assert await pool.result(handle.id, timeout=5) == {"run": 1}
