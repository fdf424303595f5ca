"""Chaos on the store (issue 7): the MongoDB store goes away in the middle of a run and comes back.

The pool keeps retrying the state writes and leaves the deliveries unacked meanwhile; once a server
answers again every task finishes, none is lost, and every task that finished during or after the
outage has its final state (SUCCEEDED) in the store: nothing was acked as done without it.

The server is mongoeco (``mongoeco_servers``), which keeps its data in memory: the server that
comes back on the same port is empty, so the records written before the crash are gone with it and
only the tasks that finished after the crash are checked in the store. mongoeco is slow on large
collections, so this test runs 1,000 tasks (the broker tests run 3,000 to 4,000). The broker is not
broken here: the session's broker serves (``make_config``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import aiormq
import pytest

from paota import Config, MongoConfig, Signature, StoreError, TaskStatus, WorkerPool
from tests.integration.chaos_helpers import ChaosCount, Runs, plan, send_all
from tests.integration.mongo_server import MongoecoServer

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

MakeConfig = Callable[..., Config]


async def ready_in_queue(url: str, queue: str) -> int:
    """Messages ready in ``queue``."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        ok = await channel.queue_declare(queue, passive=True)
        return ok.message_count or 0
    finally:
        await connection.close()


@pytest.mark.timeout(300)
async def test_mongo_store_going_away_mid_run_loses_nothing_and_acks_nothing_unrecorded(
    make_config: MakeConfig,
    mongoeco_servers: Callable[..., MongoecoServer],
    running: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # given a pool recording states in MongoDB, and 1,000 tasks (half with ETAs 0.5-8 s)
    server = mongoeco_servers(0)
    mongo = MongoConfig(uri=server.uri, database="chaos", timeout_s=1.0)
    config = make_config(config_fields={"store": "mongodb", "mongo": mongo})
    total = 1000
    runs = Runs()
    pool = WorkerPool(config, concurrency=20, name="chaos-store")

    @pool.task
    async def work(sig: Signature) -> str:
        await asyncio.sleep(0.02)
        runs.record(sig.uuid)
        return "done"

    # (the producer writes no PENDING records: the test is about the worker's writes)
    async with WorkerPool(dataclasses.replace(config, store=""), name="chaos-producer") as producer:
        sent = await send_all(producer, plan(total, delayed_fraction=0.5, delay_s=(0.5, 8.0)))
    await running(pool)

    # when MongoDB is killed a third of the way through, and back (empty) 3 s later
    await runs.wait_for_count(total // 3, timeout_s=120)
    fault_at = time.monotonic()
    server.kill()
    await asyncio.sleep(3.0)
    ran_during_outage = runs.between(fault_at + 1.5, time.monotonic())
    mongoeco_servers(server.port)
    back_at = time.monotonic()

    # then every task runs
    await runs.wait_for_all(sent.confirmed, timeout_s=180)
    first = runs.first_after(back_at)
    assert first is not None
    # and every task that finished after the crash has its final state in the (new) store
    finished_after = {task_id for task_id, at in runs.last.items() if at > fault_at}
    store = pool.store
    assert store is not None
    recorded: set[str] = set()

    async def all_recorded() -> bool:
        try:
            states = await store.list(status=TaskStatus.SUCCEEDED, limit=10 * total)
        except StoreError:
            # the store's 1 s timeout (the test's, for a quick outage) can be too short for a
            # listing of thousands on a loaded machine: look again, until the deadline
            return False
        recorded.update(state.task_id for state in states)
        return finished_after <= recorded

    deadline = time.monotonic() + 60
    while not await all_recorded():
        missing = len(finished_after - recorded)
        assert time.monotonic() < deadline, f"{missing} finished tasks have no final state"
        await asyncio.sleep(0.5)
    # and once the pool stops, nothing comes back to the queue: every delivery was acked
    await pool.close()
    assert await ready_in_queue(config.amqp.url, config.task_queue_name) == 0

    count = ChaosCount.of(
        "mongo-outage",
        sent.confirmed,
        runs.counts,
        [first - fault_at],
        outage_s=round(back_at - fault_at, 1),
        finished_after_crash=len(finished_after),
        recorded_after_crash=len(finished_after & recorded),
        ran_during_outage=ran_during_outage,
    ).report(capsys)
    assert count.lost == 0
    assert count.duplicates == 0  # the broker redelivers nothing: only the store went away
