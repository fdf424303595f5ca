"""The pool with the MongoDB store when MongoDB goes away: nothing is acked as done without its
final state written; the deliveries wait, unacked, and finish once the store is back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from paota import Config, MongoConfig, Signature, TaskStatus, WorkerPool
from paota.brokers.memory import MemoryBroker
from paota.stores.mongo import MongoStore
from tests.integration.mongo_server import MongoecoServer

pytestmark = pytest.mark.integration


async def test_store_outage_holds_acks_until_the_final_state_is_written(
    mongoeco_servers: Callable[..., MongoecoServer],
) -> None:
    # given a pool on the memory broker with the Mongo store, and tasks that wait for a signal
    server = mongoeco_servers(0)
    config = Config(
        store="mongodb", mongo=MongoConfig(uri=server.uri, database="outage", timeout_s=1.0)
    )
    broker = MemoryBroker()
    pool = WorkerPool(
        config, concurrency=4, name="outage-pool", broker=broker, store=MongoStore(config)
    )
    release = asyncio.Event()
    started = 0

    @pool.task
    async def wait_then_succeed(sig: Signature) -> str:
        nonlocal started
        started += 1
        await release.wait()
        return "done"

    async with pool:
        worker = asyncio.create_task(pool.start(install_signal_handlers=False))
        ids = [(await pool.send_task(Signature("wait_then_succeed"))).id for _ in range(4)]
        deadline = time.monotonic() + 10
        while started < 4:
            assert time.monotonic() < deadline, "tasks did not start"
            await asyncio.sleep(0.01)

        # when MongoDB dies while the tasks run, and they finish
        server.kill()
        release.set()
        await asyncio.sleep(2.5)

        # then no delivery is acked: their final state could not be written (and the pool's
        # counters, which count durable outcomes, have not counted them yet)
        assert broker.unacked_count == 4
        assert pool.stats.succeeded == 0

        # and when a server is back on the same port, the writes go through and the acks follow
        mongoeco_servers(server.port)
        deadline = time.monotonic() + 30
        while broker.unacked_count:
            assert time.monotonic() < deadline, "deliveries still unacked after the store came back"
            await asyncio.sleep(0.1)
        for task_id in ids:
            state = await pool.store.get(task_id)  # type: ignore[union-attr]
            assert state is not None and state.status is TaskStatus.SUCCEEDED
            assert state.result == "done"
        assert pool.stats.succeeded == 4
        await pool.stop()
        await worker
