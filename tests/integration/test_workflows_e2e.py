"""Workflows end to end: RabbitMQ, the MongoDB store, two worker processes.

The producer (this process, a :class:`~paota.Client` that runs nothing) sends chains, chords and
nested workflows; two worker processes (``e2e_helpers/workflow_worker.py``) share the task queue,
so a group's members, and the add that completes its barrier, land on either. Checked: results
through the handle, every step's MongoDB document with its workflow and parent ids, the plan and
the barrier in the coordination collection, the failure rules (CANCELLED records with the
reason, the error callback once), and members delivered twice (before and after they ran).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

import paota
from paota import Client, Config, MongoConfig, OutgoingMessage, TaskFailedError, WorkflowHandle
from paota.middleware.workflows import PLAN_KIND, PlanNode
from tests.contracts.broker_contract import message
from tests.integration.conftest import MongoDatabase

pytestmark = pytest.mark.integration

MakeConfig = Callable[..., Config]
Document = dict[str, Any]

HELPERS = Path(__file__).resolve().parent / "e2e_helpers"
WORKERS = ("wf-worker-a", "wf-worker-b")
RESULT_TIMEOUT_S = 60.0


@dataclass
class Mongo:
    uri: str
    name: str
    db: AsyncDatabase[Document]

    async def task(self, task_id: str) -> Document:
        doc = await self.db["paota_tasks"].find_one({"_id": task_id})
        assert doc is not None, f"no document for {task_id}"
        return doc


@pytest.fixture
def mongo(mongo_db: MongoDatabase) -> Mongo:
    return Mongo(mongo_db.uri, mongo_db.name, mongo_db.client[mongo_db.name])


@dataclass
class Rig:
    client: Client
    config: Config
    log: Path
    spec: dict[str, Any]
    processes: list[asyncio.subprocess.Process]

    def lines(self) -> list[Document]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    def runs(self, task_id: str) -> list[Document]:
        return [line for line in self.lines() if line.get("id") == task_id]

    async def start_workers(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAOTA_")}
        for name in WORKERS:
            spec = json.dumps({**self.spec, "name": name})
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                str(HELPERS / "workflow_worker.py"),
                spec,
                stdout=asyncio.subprocess.PIPE,
                env=env,
            )
            self.processes.append(process)
        for process in self.processes:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), 60)
            assert line == b"ready\n", line

    async def wait_for(self, what: Callable[[], bool], timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not what():
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.05)


@pytest.fixture
async def rig(make_config: MakeConfig, mongo: Mongo, tmp_path: Path) -> AsyncIterator[Rig]:
    config = make_config(
        config_fields={
            "store": "mongodb",
            "mongo": MongoConfig(uri=mongo.uri, database=mongo.name),
            "retry_backoff_cap_s": 1,
        }
    )
    amqp = config.amqp
    spec = {
        "log": str(tmp_path / "runs.jsonl"),
        "queue": config.task_queue_name,
        "amqp": {
            "url": amqp.url,
            "exchange": amqp.exchange,
            "delayed_queue": amqp.delayed_queue,
            "delay_ladder": amqp.delay_ladder,
            "failed_queue": amqp.failed_queue,
            "timeout_queue": amqp.timeout_queue,
        },
        "mongo": {"uri": mongo.uri, "database": mongo.name},
    }
    client = Client(config, name="wf-producer")
    made = Rig(client, config, tmp_path / "runs.jsonl", spec, [])
    await client.connect()
    try:
        yield made
    finally:
        for process in made.processes:
            if process.returncode is None:
                process.terminate()
        for process in made.processes:
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
        await client.close()


def tasks(client: Client) -> Any:
    """The producer's declarations of the workers' tasks (their bodies run on the workers)."""

    @client.task(name="wf.inc")
    async def inc(x: int) -> int: ...

    @client.task(name="wf.total")
    async def total(xs: list[int]) -> int: ...

    @client.task(name="wf.boom", retry_count=1)  # retries travel in the message
    async def boom(x: int) -> int: ...

    @client.task(name="wf.report")
    async def report(failure: dict[str, Any]) -> str: ...

    return inc, total, boom, report


async def test_workflows_run_across_two_worker_processes(rig: Rig, mongo: Mongo) -> None:
    inc, total, _, _ = tasks(rig.client)
    await rig.start_workers()
    # given a chain, a chord of twelve members and a nested workflow, sent at once
    chained = await paota.chain(inc.signature(1), inc.signature(), inc.signature()).send()
    chord = await paota.chord([inc.signature(i) for i in range(12)], total.signature()).send()
    nested = await paota.chain(
        inc.signature(1),
        paota.group(inc.signature(), inc.signature()),
        total.signature(),
        inc.signature(),
    ).send()
    # then each handle has its result
    assert await chained.result(timeout=RESULT_TIMEOUT_S) == 4
    assert await chord.result(timeout=RESULT_TIMEOUT_S) == sum(range(1, 13))
    assert await nested.result(timeout=RESULT_TIMEOUT_S) == 2 * 3 + 1
    # and the chord's members ran on both workers, its callback once
    members = [await mongo.task(f"{chord.id}.0.{i}") for i in range(12)]
    assert {doc["worker"] for doc in members} == set(WORKERS)
    assert len(rig.runs(f"{chord.id}.1")) == 1
    # and MongoDB holds every step with its links
    wf = nested.id
    expected = {
        f"{wf}.0": wf,
        f"{wf}.1.0": f"{wf}.1",
        f"{wf}.1.1": f"{wf}.1",
        f"{wf}.2": wf,
        f"{wf}.3": wf,
    }
    for task_id, parent in expected.items():
        doc = await mongo.task(task_id)
        assert (doc["status"], doc["workflow_id"], doc["parent_id"]) == ("SUCCEEDED", wf, parent)
    assert (await mongo.task(f"{wf}.2"))["args"] == [
        {"Name": "xs", "Type": "[]int", "Value": [3, 3]}
    ]
    # and the plan and the group's barrier are in the coordination collection
    coord = mongo.db["paota_tasks_coord"]
    plan = await coord.find_one({"_id": f"doc:{PLAN_KIND}:{wf}"})
    assert plan is not None
    children = [c["id"] for c in plan["doc"]["root"]["children"]]
    assert children == [f"{wf}.0", f"{wf}.1", f"{wf}.2", f"{wf}.3"]
    barrier = await coord.find_one({"_id": f"set:paota.wf.group:{chord.id}.0"})
    assert barrier is not None and sorted(barrier["members"], key=int) == [
        str(i) for i in range(12)
    ]
    # and another client reads a workflow from the store by its id
    again = await WorkflowHandle.load(rig.client, chord.id)
    assert await again.result(timeout=5) == sum(range(1, 13))


async def test_a_failed_step_stops_its_workflow_and_the_error_callback_fires_once(
    rig: Rig, mongo: Mongo
) -> None:
    inc, total, boom, report = tasks(rig.client)
    await rig.start_workers()
    chained = (
        await paota.chain(inc.signature(1), boom.signature(), inc.signature(), inc.signature())
        .on_error(report.signature())
        .send()
    )
    chord = (
        await paota.chord(
            [inc.signature(1), boom.signature(2), inc.signature(3)], total.signature()
        )
        .on_error(report.signature())
        .send()
    )
    # the chain's handle raises the failed step's error
    with pytest.raises(TaskFailedError) as raised:
        await chained.result(timeout=RESULT_TIMEOUT_S)
    wf = chained.id
    assert (raised.value.task_id, raised.value.status) == (f"{wf}.1", "FAILED")
    assert raised.value.error_message == "boom 2"
    # boom ran its two attempts; what would have followed is CANCELLED with the reason
    assert [run["attempt"] for run in rig.runs(f"{wf}.1")] == [0, 1]
    reason = f"workflow {wf} stopped: step {wf}.1 (wf.boom) ended FAILED: ValueError: boom 2"
    for later in (f"{wf}.2", f"{wf}.3"):
        doc = await mongo.task(later)
        assert doc["status"] == "CANCELLED"
        assert doc["error"]["message"] == reason
        assert (doc["workflow_id"], doc["parent_id"]) == (wf, wf)
        assert rig.runs(later) == []
    # the error callback ran once, with what failed
    error_id = chained.error_task_id
    assert error_id == f"{wf}.error"
    assert await rig.client.result(error_id, timeout=RESULT_TIMEOUT_S) == (
        f"reported {wf}.1 ValueError: boom 2"
    )
    # the chord: the other members ran, the callback is CANCELLED, the error callback ran once
    with pytest.raises(TaskFailedError) as raised:
        await chord.result(timeout=RESULT_TIMEOUT_S)
    assert raised.value.task_id == f"{chord.id}.0.1"
    callback = await mongo.task(f"{chord.id}.1")
    assert callback["status"] == "CANCELLED"
    assert await rig.client.result(f"{chord.id}.error", timeout=RESULT_TIMEOUT_S) == (
        f"reported {chord.id}.0.1 ValueError: boom 2"
    )
    for member in (f"{chord.id}.0.0", f"{chord.id}.0.2"):
        assert (await mongo.task(member))["status"] == "SUCCEEDED"
    await asyncio.sleep(1.0)  # time for a second error callback, if one were coming
    assert len(rig.runs(f"{wf}.error")) == 1
    assert len(rig.runs(f"{chord.id}.error")) == 1


def copy_of(handle: WorkflowHandle[Any], node: PlanNode, queue: str) -> OutgoingMessage:
    """Another copy of a step's message, as a redelivery brings it (same id, same links)."""
    headers = {
        "x-paota-workflow-id": handle.id,
        "x-paota-parent-id": node.parent,
        "x-paota-workflow-step": node.path,
    }
    return message(node.signature(None, has_previous=False), queue, headers=headers)


async def test_members_delivered_twice_complete_the_chord_once(rig: Rig, mongo: Mongo) -> None:
    inc, total, _, _ = tasks(rig.client)
    # given a chord sent while no worker runs, and two of its members in the queue twice
    handle = await paota.chord([inc.signature(i) for i in range(6)], total.signature()).send()
    twice = [node for node in handle.plan.root.leaves() if node.path in ("0.4", "0.5")]
    for node in twice:
        await rig.client.broker.publish(copy_of(handle, node, rig.config.task_queue_name))
    # when both workers run them (the copies may run side by side, on either worker)
    await rig.start_workers()
    # then the callback was published once and ran once, with one result per member
    assert await handle.result(timeout=RESULT_TIMEOUT_S) == sum(range(1, 7))
    callback_id = f"{handle.id}.1"
    await asyncio.sleep(1.0)  # time for a second callback, if one were coming
    assert len(rig.runs(callback_id)) == 1
    before = await mongo.task(callback_id)
    # and when a finished member comes again, it is skipped and the workflow does not move
    seen = len([line for line in rig.lines() if "duplicate" in line])
    await rig.client.broker.publish(copy_of(handle, twice[0], rig.config.task_queue_name))
    await rig.wait_for(lambda: len([x for x in rig.lines() if "duplicate" in x]) > seen)
    await asyncio.sleep(1.0)
    assert len(rig.runs(callback_id)) == 1
    assert await mongo.task(callback_id) == before
