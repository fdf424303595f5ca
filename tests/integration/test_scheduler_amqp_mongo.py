"""Periodic tasks on RabbitMQ with the MongoDB store: three ``paota scheduler`` processes for two
real minutes send each slot once (one of them restarted on the way, a runtime schedule added and
removed with ``paota schedules``), and without a shared store a second scheduler refuses to start
because the first holds the broker lock."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from paota import Config, MongoConfig, WorkerPool, current_task
from paota.scheduler import Cron, Every, Scheduler, SchedulerError, slot_task_id
from tests.integration.conftest import MongoDatabase
from tests.integration.e2e_helpers.scheduler_app import SCHEDULES, make_pool

pytestmark = pytest.mark.integration

HELPERS = Path(__file__).resolve().parent / "e2e_helpers"
# Two real minutes; PAOTA_TEST_SCHEDULER_RUN_S shortens it when working on the test itself.
RUN_S = float(os.environ.get("PAOTA_TEST_SCHEDULER_RUN_S", "120"))
Document = dict[str, Any]


@dataclass
class Mongo:
    uri: str
    database: str
    client: AsyncMongoClient[Document]

    @property
    def coord(self) -> Any:
        return self.client[self.database]["paota_tasks_coord"]

    @property
    def tasks(self) -> Any:
        return self.client[self.database]["paota_tasks"]


@pytest.fixture
def mongo(mongo_db: MongoDatabase) -> Mongo:
    return Mongo(mongo_db.uri, mongo_db.name, mongo_db.client)


def scheduler_env(config: Config, mongo: Mongo, name: str) -> dict[str, str]:
    amqp = config.amqp
    raw = {
        "task_queue_name": config.task_queue_name,
        "amqp": {
            "url": amqp.url,
            "exchange": amqp.exchange,
            "delayed_queue": amqp.delayed_queue,
            "delay_ladder": amqp.delay_ladder,
            "failed_queue": amqp.failed_queue,
            "timeout_queue": amqp.timeout_queue,
        },
        "mongo_uri": mongo.uri,
        "database": mongo.database,
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAOTA_")}
    env.update(
        PAOTA_TEST_SCHEDULER_CONFIG=json.dumps(raw),
        PAOTA_TEST_SCHEDULER_NAME=name,
        PAOTA_STORE="mongodb",
        PAOTA_MONGO_URI=mongo.uri,
        PAOTA_MONGO_DB=mongo.database,
    )
    return env


async def start_scheduler(config: Config, mongo: Mongo, name: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "paota",
        "scheduler",
        "scheduler_app:pool",
        "--name",
        name,
        "--refresh",
        "1",
        cwd=HELPERS,
        env=scheduler_env(config, mongo, name),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


async def stop(proc: asyncio.subprocess.Process) -> str:
    """SIGTERM, then its stderr; it must exit 0."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    except TimeoutError:
        proc.kill()
        _, err = await proc.communicate()
    text = err.decode()
    assert proc.returncode == 0, text[-3000:]
    return text


async def schedules_cli(mongo: Mongo, config: Config, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "paota",
        "schedules",
        *args,
        cwd=HELPERS,
        env=scheduler_env(config, mongo, "cli"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


@dataclass(frozen=True)
class Run:
    task_id: str
    schedule_id: str
    scheduled_at: datetime
    ran_at: datetime


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_three_scheduler_processes_for_two_minutes_send_each_slot_once(
    make_config: Callable[..., Config], mongo: Mongo, running: Any
) -> None:
    # given a worker on RabbitMQ with the MongoDB store that runs the periodic tasks and notes
    # each run, and a runtime task added later
    config = make_config(
        config_fields={
            "store": "mongodb",
            "mongo": MongoConfig(uri=mongo.uri, database=mongo.database),
        }
    )
    worker = WorkerPool(config, concurrency=8, name="sched-worker")
    runs: list[Run] = []

    def note() -> None:
        ctx = current_task()
        assert ctx.scheduled_at is not None
        runs.append(Run(ctx.id, ctx.schedule_id, ctx.scheduled_at, datetime.now(UTC)))

    for schedule_id in [*SCHEDULES, "runtime-2s"]:

        async def body() -> None:
            note()

        worker.register_task(f"sched.{schedule_id}", body)
    await running(worker)
    # when three scheduler processes run for two minutes (the second restarted half-way), and a
    # runtime schedule is added with `paota schedules add` and removed again
    started = time.monotonic()
    names = ["sched-a", "sched-b", "sched-c"]
    procs = {name: await start_scheduler(config, mongo, name) for name in names}
    logs: dict[str, str] = {}

    async def until(offset_s: float) -> None:
        await asyncio.sleep(max(0.0, started + offset_s - time.monotonic()))

    await until(0.2 * RUN_S)
    await schedules_cli(
        mongo, config, "add", "runtime-2s", "--task", "sched.runtime-2s", "--every", "2"
    )
    added_at = datetime.now(UTC)
    await until(0.45 * RUN_S)
    logs["sched-b (first run)"] = await stop(procs["sched-b"])
    await until(0.55 * RUN_S)
    procs["sched-b"] = await start_scheduler(config, mongo, "sched-b")
    await until(0.7 * RUN_S)
    listing = json.loads(
        await schedules_cli(
            mongo, config, "--target", "scheduler_app:pool", "--json", "--next", "2"
        )
    )
    await schedules_cli(mongo, config, "remove", "runtime-2s")
    removed_at = datetime.now(UTC)
    await until(RUN_S)
    stopped_at = datetime.now(UTC)
    for name, proc in procs.items():
        logs[name] = await stop(proc)
    # the last tasks sent run (however long a loaded machine takes)
    logged = {t for log in logs.values() for t in re.findall(r" as task (sched:\S+)", log)}
    deadline = time.monotonic() + 60
    while not logged <= {run.task_id for run in runs}:
        assert time.monotonic() < deadline, logged - {run.task_id for run in runs}
        await asyncio.sleep(0.1)
    await worker.stop()

    # then every slot between the first scheduler's start and the stop ran exactly once
    by_id = Counter(run.task_id for run in runs)
    assert [task_id for task_id, n in by_id.items() if n > 1] == []
    # and was published once: a second publish would have run as a skipped duplicate, so count
    # the sends the schedulers logged
    sends = Counter(
        task_id for log in logs.values() for task_id in re.findall(r" as task (sched:\S+)", log)
    )
    assert [task_id for task_id, n in sends.items() if n > 1] == [], logs
    assert set(sends) == set(by_id)
    states = {d["key"]: d for d in await _docs(mongo, "schedule-state")}
    window_s: dict[str, float] = {}
    for schedule_id, (cron, every, tz) in SCHEDULES.items():
        since = datetime.fromisoformat(states[schedule_id]["doc"]["since"])
        window_s[schedule_id] = (stopped_at - since).total_seconds()
        trigger = Cron(cron, tz=tz) if cron else Every(every or 0, tz=tz)
        expected = _slots(trigger, since, stopped_at - timedelta(seconds=2))
        ran = {r.task_id for r in runs if r.schedule_id == schedule_id}
        missing = [
            slot_task_id(schedule_id, s)
            for s in expected
            if slot_task_id(schedule_id, s) not in ran
        ]
        assert missing == [], (schedule_id, missing, logs)
        assert len(ran) >= len(expected)
    # the slot each run saw is the one of its task id, in its schedule's zone
    for run in runs:
        assert run.task_id == slot_task_id(run.schedule_id, run.scheduled_at)
        if run.schedule_id == "every-minute":
            assert str(run.scheduled_at.tzinfo) == "Europe/Berlin"
            assert run.scheduled_at.second == 0
    # and as many as the time the schedules ran allows (a loaded machine starts the schedulers
    # later, so the window is measured, not assumed to be RUN_S)
    assert len([r for r in runs if r.schedule_id == "every-5s"]) >= window_s["every-5s"] / 5 - 2
    assert len([r for r in runs if r.schedule_id == "every-3s"]) >= window_s["every-3s"] / 3 - 2
    minutes = window_s["every-minute"] // 60
    assert len([r for r in runs if r.schedule_id == "every-minute"]) >= minutes - 1
    # the runtime schedule ran from shortly after it was added until it was removed, once a slot
    runtime = sorted(r.scheduled_at for r in runs if r.schedule_id == "runtime-2s")
    expected_runtime = _slots(
        Every(2), added_at + timedelta(seconds=3), removed_at - timedelta(seconds=1)
    )
    assert set(expected_runtime) <= set(runtime), (expected_runtime, runtime)
    assert all(
        added_at - timedelta(seconds=2) < t < removed_at + timedelta(seconds=3) for t in runtime
    )
    # `paota schedules --json` listed every schedule with its next fire times and last slot
    listed = {s["id"]: s for s in listing}
    assert set(listed) == {*SCHEDULES, "runtime-2s"}
    assert listed["runtime-2s"]["source"] == "runtime"
    for s in listed.values():
        assert len(s["next"]) == 2 and s["last_slot"] is not None
    assert listed["every-minute"]["next"][0].endswith(("+01:00", "+02:00"))
    # the store holds one finished record per slot, and the claims of the slots were shared out
    records = await mongo.tasks.find({"_id": {"$regex": "^sched:"}}).to_list(None)
    assert Counter(r["status"] for r in records) == {"SUCCEEDED": len(by_id)}
    claims = await mongo.coord.find({"_id": {"$regex": "^claim:sched:"}}).to_list(None)
    assert {c["_id"][len("claim:") :] for c in claims} >= set(by_id)
    owners = Counter(c["owner"] for c in claims)
    assert len(owners) >= 2, owners
    print(f"\nslots sent by each scheduler: {dict(owners)}; runs: {len(runs)}")


async def _docs(mongo: Mongo, kind: str) -> list[Document]:
    found: list[Document] = await mongo.coord.find({"kind": kind}).to_list(None)
    return found


def _slots(trigger: Cron | Every, after: datetime, until: datetime) -> list[datetime]:
    found = []
    for slot in trigger.slots_after(after):
        if slot > until:
            break
        found.append(slot)
    return found


async def test_without_a_shared_store_a_second_scheduler_refuses_to_start(
    make_config: Callable[..., Config],
) -> None:
    # given two producers on one RabbitMQ, each with its own memory store
    config = make_config(config_fields={"store": "memory"})
    pools = [WorkerPool(config, concurrency=1, name=f"lonely-{i}") for i in range(2)]
    for pool in pools:

        @pool.periodic(every=1)
        async def job() -> None: ...

    first, second = (Scheduler(p, name=p.name) for p in pools)
    try:
        # when both start, the second refuses with an error that says why and what to do
        await first.start()
        with pytest.raises(SchedulerError) as info:
            await second.start()
        text = str(info.value)
        assert (
            f"another scheduler holds the broker lock '{config.task_queue_name}.scheduler-lock'"
            in text
        )
        assert "MemoryStore" in text and "PAOTA_STORE=mongodb" in text
        # and the first sends
        await asyncio.sleep(1.2)
        assert await first.tick() != []
        # when the first goes away, its lock goes with it and the second may start
        await first.close()
        await second.start()
        assert second._lock is not None and second._lock.held
    finally:
        await first.close()
        await second.close()
        for pool in pools:
            await pool.close()


async def test_paota_scheduler_in_a_second_process_without_a_shared_store_exits_saying_why(
    make_config: Callable[..., Config], mongo: Mongo
) -> None:
    # given a scheduler without a shared store, holding the broker lock
    config = make_config(config_fields={"store": "memory"})
    pool = make_pool(config, "holder")
    holder = Scheduler(pool, name="holder")
    await holder.start()
    try:
        # when `paota scheduler` starts in another process, on the same broker with its own
        # memory store
        env = scheduler_env(config, mongo, "second")
        raw = json.loads(env["PAOTA_TEST_SCHEDULER_CONFIG"])
        env["PAOTA_TEST_SCHEDULER_CONFIG"] = json.dumps({**raw, "store": "memory"})
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "paota",
            "scheduler",
            "scheduler_app:pool",
            cwd=HELPERS,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        # then it exits 1 with one clear line: who holds what, and what to do instead
        text = err.decode()
        assert proc.returncode == 1, text
        [line] = [x for x in text.splitlines() if x.startswith("paota: error:")]
        assert "another scheduler holds the broker lock" in line
        assert "PAOTA_STORE=mongodb" in line
        assert "Traceback" not in text
    finally:
        await holder.close()
        await pool.close()
