"""The pool contract on the memory broker, on a manual clock: delays and backoffs take no time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from paota import Config, ManualClock, WorkerPool
from paota.brokers.memory import MemoryBroker
from paota.core.protocols import Message, ParkQueue
from paota.stores.memory import MemoryStore
from tests.contracts.pool_contract import RIG_DEFAULTS, Condition, PoolContract, Rig, TaskRef


class MemoryRig(Rig):
    """A pool on a :class:`MemoryBroker` with a :class:`ManualClock`."""

    def __init__(self, pool: WorkerPool, store: MemoryStore | None, broker: MemoryBroker) -> None:
        super().__init__(pool, store, f"{broker.default_queue}.extra")
        self.broker = broker

    async def _consuming(self) -> None:
        # The pool's consumers subscribe within a few turns of the event loop (no I/O here).
        for _ in range(10):
            await asyncio.sleep(0)

    async def settle(
        self, *tasks: TaskRef, until: Condition | None = None, timeout_s: float = 10.0
    ) -> None:
        """Run the broker until idle (moving the clock over every delay), then check."""
        await self.broker.run_until_idle(timeout_s=timeout_s)
        missing = await self._missing(tasks, until)
        if missing is not None:
            pytest.fail(f"the memory broker is idle, but {missing}")

    async def parked(self, queue: ParkQueue) -> list[Message]:
        return list(self.broker.parked(queue))

    async def publish_raw(
        self, body: bytes, headers: Mapping[str, Any] | None = None, *, queue: str | None = None
    ) -> None:
        await self.broker.publish_raw(body, headers, queue=queue)


class TestPoolOnMemory(PoolContract):
    @pytest.fixture
    async def rig(self) -> AsyncIterator[Any]:
        rigs: list[MemoryRig] = []

        async def make(
            *,
            concurrency: int = 4,
            extra_concurrency: int | None = None,
            store: bool = True,
            **config_fields: Any,
        ) -> MemoryRig:
            broker = MemoryBroker(clock=ManualClock())
            queues = None
            if extra_concurrency is not None:
                queues = {
                    broker.default_queue: concurrency,
                    f"{broker.default_queue}.extra": extra_concurrency,
                }
            memory_store = MemoryStore() if store else None
            pool = WorkerPool(
                Config(**{**RIG_DEFAULTS, **config_fields}),
                concurrency,
                "contract-pool",
                queues=queues,
                broker=broker,
                store=memory_store,
            )
            made = MemoryRig(pool, memory_store, broker)
            rigs.append(made)
            return made

        yield make
        for made in rigs:
            await made.close()
