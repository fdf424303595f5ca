"""The pool contract on a real RabbitMQ, in real time: Fibonacci backoffs capped at 0.1 s, the
store and the queue depths polled until the tasks are done and nothing is in flight."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiormq
import pytest

from paota import Config, WorkerPool
from paota.brokers.amqp import AMQPBroker
from paota.core.protocols import Message, ParkQueue
from paota.stores.memory import MemoryStore
from tests.contracts.pool_contract import RIG_DEFAULTS, Condition, PoolContract, Rig, TaskRef
from tests.integration.conftest import delete_topology

pytestmark = pytest.mark.integration

MakeConfig = Callable[..., Config]


class AMQPRig(Rig):
    """A pool on an :class:`AMQPBroker` with a topology of the test's own."""

    def __init__(self, pool: WorkerPool, store: MemoryStore | None, config: Config) -> None:
        super().__init__(pool, store, f"{config.task_queue_name}.extra")
        self.config = config
        self._connection: aiormq.abc.AbstractConnection | None = None

    @property
    def broker(self) -> AMQPBroker:
        broker = self.pool.broker
        assert isinstance(broker, AMQPBroker)
        return broker

    async def _channel(self) -> aiormq.abc.AbstractChannel:
        """A fresh channel on the rig's own connection (another producer's)."""
        if self._connection is None or self._connection.is_closed:
            self._connection = await aiormq.connect(self.config.amqp.url)
        return await self._connection.channel()

    async def _consuming(self) -> None:
        # Wait for a consumer on every queue: a message published to a queue the pool has not
        # declared yet would be unroutable.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        for queue in self.pool.consumed_queues():
            while True:
                channel = await self._channel()
                try:
                    declared = await channel.queue_declare(queue, passive=True)
                    if declared.consumer_count:
                        break
                except aiormq.AMQPError:
                    pass  # not declared yet
                finally:
                    with contextlib.suppress(Exception):
                        await channel.close()
                if loop.time() > deadline:
                    pytest.fail(f"the pool does not consume {queue} after 10 s")
                await asyncio.sleep(0.02)

    async def settle(
        self, *tasks: TaskRef, until: Condition | None = None, timeout_s: float = 10.0
    ) -> None:
        """Poll until the tasks are final, ``until()`` holds, the pool's queues are empty and no
        delivery is in flight."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        consumed = self.pool.consumed_queues()
        while True:
            missing = await self._missing(tasks, until)
            if missing is None:
                depths = await self.broker.queue_depths(consumed)
                ready = {q: n for q, n in depths.items() if q in consumed and n}
                if ready:
                    missing = f"messages are ready in {ready}"
                elif self.pool._inflight:  # the pool's own bookkeeping: deliveries not settled
                    missing = f"{len(self.pool._inflight)} deliveries are in flight"
                else:
                    return
            if loop.time() > deadline:
                pytest.fail(f"not settled after {timeout_s}s: {missing}")
            await asyncio.sleep(0.02)

    async def parked(self, queue: ParkQueue) -> list[Message]:
        seen: list[Message] = []

        def look(parked: Message) -> None:
            seen.append(parked)  # and None: it stays parked

        await self.broker.replay_parked(queue, look)
        return seen

    async def publish_raw(
        self, body: bytes, headers: Mapping[str, Any] | None = None, *, queue: str | None = None
    ) -> None:
        """Publish as another producer: to the task exchange with the binding key (as Go does)
        for the task queue, through the default exchange to any other queue."""
        amqp = self.config.amqp
        if queue is None or queue == self.default_queue:
            exchange, routing_key = amqp.exchange, amqp.binding_key
        else:
            exchange, routing_key = "", queue
        channel = await self._channel()
        try:
            await channel.confirm_delivery()
            await channel.basic_publish(
                body,
                exchange=exchange,
                routing_key=routing_key,
                mandatory=True,
                properties=aiormq.spec.Basic.Properties(
                    content_type="application/json",
                    delivery_mode=2,
                    headers=dict(headers or {}),
                ),
            )
        finally:
            await channel.close()

    async def close(self) -> None:
        await super().close()
        if self._connection is not None:
            await self._connection.close()
            self._connection = None


class TestPoolOnRabbitMQ(PoolContract):
    @pytest.fixture
    async def rig(self, make_config: MakeConfig, amqp_url: str) -> AsyncIterator[Any]:
        rigs: list[AMQPRig] = []

        async def make(
            *,
            concurrency: int = 4,
            extra_concurrency: int | None = None,
            store: bool = True,
            **config_fields: Any,
        ) -> AMQPRig:
            config = make_config(config_fields={**RIG_DEFAULTS, **config_fields})
            extra = f"{config.task_queue_name}.extra"
            queues = None
            if extra_concurrency is not None:
                queues = {config.task_queue_name: concurrency, extra: extra_concurrency}
            memory_store = MemoryStore() if store else None
            pool = WorkerPool(
                config, concurrency, "contract-pool", queues=queues, store=memory_store
            )
            made = AMQPRig(pool, memory_store, config)
            rigs.append(made)
            return made

        yield make
        for made in rigs:
            await made.close()
        if rigs:
            await delete_topology(amqp_url, [made.extra_queue for made in rigs], [])
