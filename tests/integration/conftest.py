"""Fixtures for the integration suites: real servers and an isolated topology per test.

RabbitMQ: ``amqp_url`` is ``PAOTA_TEST_AMQP_URL`` when set; otherwise a RabbitMQ container of the
session's own, started with testcontainers (:mod:`tests.integration.containers`) when a Docker
engine answers (``bash .ci/containers.sh up`` starts one); otherwise, outside CI, the local
RabbitMQ at ``127.0.0.1:5672`` when it answers; otherwise the test is skipped (and fails in CI,
see :mod:`tests.integration._skip`). Tests that kill or restart a broker start their own
containers (``rabbit_node``) and never touch this one.

``make_config`` gives each test its own exchange and queues and deletes them afterwards. The delay
ladder is shared by the whole session (its routing keys name the target queue, so tests do not
see each other's delays) and deleted once at the end, one queue at a time: deleting many
at-least-once quorum queues at once can strand RabbitMQ's dead-letter workers
(:func:`paota.brokers.amqp.topology.delete_ladder`).

MongoDB: ``mongo_uri`` and ``mongoeco_servers`` live in :mod:`tests.integration.mongo_server` and
are registered here; ``mongo_db`` gives a test a fresh database (a name and a timezone-aware
pymongo client), dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import pytest

from tests.integration._skip import in_ci, skip_or_fail
from tests.integration.containers import RabbitNode, docker_reason, rabbit_node_or_skip
from tests.integration.mongo_server import mongo_uri, mongoeco_servers

__all__ = [
    "amqp_url",
    "delay_ladder",
    "delete_topology",
    "make_config",
    "MongoDatabase",
    "mongo_db",
    "mongo_uri",
    "mongoeco_servers",
    "rabbit_node",
    "running",
]

LOCAL_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


@dataclass
class MongoDatabase:
    """A fresh database of the MongoDB-protocol server: its URI, its name, and a pymongo client
    that reads times as aware UTC datetimes."""

    uri: str
    name: str
    client: Any  # AsyncMongoClient[dict[str, Any]]


@pytest.fixture
async def mongo_db(mongo_uri: str, request: pytest.FixtureRequest) -> AsyncIterator[MongoDatabase]:
    """A database named after the test's module (``paota_<module>_<random>``), dropped after it."""
    from pymongo import AsyncMongoClient

    module = request.module.__name__.rpartition(".")[2].removeprefix("test_")[:20]
    name = f"paota_{module}_{uuid.uuid4().hex[:12]}"
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_uri, serverSelectionTimeoutMS=5000, tz_aware=True, tzinfo=UTC
    )
    try:
        yield MongoDatabase(mongo_uri, name, client)
    finally:
        try:
            await client.drop_database(name)
        finally:
            await client.close()


def _wait_for_amqp(url: str, timeout_s: float) -> None:
    """Block until RabbitMQ at ``url`` accepts an AMQP connection."""
    import aiormq

    async def attempt() -> None:
        connection = await aiormq.connect(url)
        await connection.close()

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            asyncio.run(asyncio.wait_for(attempt(), 5))
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """The URL of a RabbitMQ for this test session (see the module docs)."""
    url = os.environ.get("PAOTA_TEST_AMQP_URL")
    if url:
        yield url
        return
    reason = docker_reason()
    if reason is None:
        node = RabbitNode()
        try:
            node.start()
            yield node.url
        finally:
            node.remove()
        return
    if not in_ci():
        try:
            _wait_for_amqp(LOCAL_AMQP_URL, timeout_s=0)
        except Exception:
            pass
        else:
            yield LOCAL_AMQP_URL
            return
    skip_or_fail(f"no RabbitMQ: set PAOTA_TEST_AMQP_URL or start Docker ({reason})")


@pytest.fixture
def rabbit_node() -> Iterator[Callable[..., RabbitNode]]:
    """A factory of started :class:`RabbitNode` brokers of the test's own, removed afterwards."""
    nodes: list[RabbitNode] = []

    def start(**kwargs: Any) -> RabbitNode:
        node = rabbit_node_or_skip(**kwargs)
        nodes.append(node)
        return node

    try:
        yield start
    finally:
        for node in nodes:
            node.remove()


@pytest.fixture(scope="session")
def delay_ladder(amqp_url: str) -> Iterator[str]:
    """The delay ladder's name prefix, one for the session; deleted (slowly) at the end."""
    name = f"paota_test_ladder_{uuid.uuid4().hex[:8]}"
    yield name
    from paota.brokers.amqp.topology import Topology
    from paota.core.config import AMQPConfig, Config

    async def delete() -> None:
        import aiormq

        from paota.brokers.amqp.topology import delete_ladder

        connection = await aiormq.connect(amqp_url)
        try:
            for mode in ("hold", "ladder"):
                for kind in ("quorum", "classic"):
                    config = Config(
                        broker="amqp",
                        amqp=AMQPConfig(
                            url=amqp_url, delay_ladder=name, delay_queue_type=kind, delay_mode=mode
                        ),
                    )
                    await delete_ladder(await connection.channel(), Topology.from_config(config))
        finally:
            await connection.close()

    with contextlib.suppress(Exception):
        asyncio.run(delete())


async def delete_topology(url: str, queues: list[str], exchanges: list[str]) -> None:
    """Delete ``queues`` and ``exchanges`` over a fresh connection, ignoring missing ones."""
    import aiormq

    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        for name in queues:
            try:
                await channel.queue_delete(name)
            except aiormq.AMQPError:
                channel = await connection.channel()
        for name in exchanges:
            try:
                await channel.exchange_delete(name)
            except aiormq.AMQPError:
                channel = await connection.channel()
    finally:
        await connection.close()


@pytest.fixture
async def make_config(amqp_url: str, delay_ladder: str) -> AsyncIterator[Callable[..., Any]]:
    """A factory of :class:`~paota.Config` objects with names unique to this test.

    ``make_config(**amqp_fields)`` overrides AMQPConfig fields; ``task_queue_name=...`` and
    other Config fields can be given as ``config_fields={...}``. Every queue and exchange of every
    config made is deleted after the test.
    """
    from paota.brokers.amqp.control import control_exchange_name
    from paota.brokers.amqp.topology import Topology
    from paota.core.config import AMQPConfig, Config

    made: list[Config] = []
    suffix = uuid.uuid4().hex[:10]

    def factory(*, config_fields: dict[str, Any] | None = None, **amqp_fields: Any) -> Config:
        amqp = {
            "url": amqp_url,
            "exchange": f"paota_test_exchange_{suffix}",
            "delayed_queue": f"paota_test_delayed_{suffix}",
            "delay_ladder": delay_ladder,
            "failed_queue": f"paota_test_failed_{suffix}",
            "timeout_queue": f"paota_test_timeout_{suffix}",
            "connection_timeout_s": 15.0,  # a loaded machine may take over 5 s
            "publish_timeout_s": 10.0,
            **amqp_fields,
        }
        fields: dict[str, Any] = {"broker": "amqp", "task_queue_name": f"paota_test_tasks_{suffix}"}
        fields.update(config_fields or {})
        config = Config(**fields, amqp=AMQPConfig(**amqp))
        made.append(config)
        return config

    yield factory

    queues: set[str] = set()
    exchanges: set[str] = set()
    for config in made:
        topology = Topology.from_config(config)
        q, e = topology.names()
        shared = {*topology.ladder_queues, topology.delivery_exchange}
        queues.update(name for name in q if name not in shared)
        exchanges.update(name for name in e if name not in shared)
        exchanges.add(control_exchange_name(config.amqp.exchange))  # cancellations' fanout
    with contextlib.suppress(Exception):
        await delete_topology(amqp_url, sorted(queues), sorted(exchanges))


@pytest.fixture
async def running() -> AsyncIterator[Callable[..., Any]]:
    """``await running(pool)`` connects a WorkerPool and starts it in the background; every pool
    started is stopped and closed after the test."""
    from paota import WorkerPool

    started: list[tuple[WorkerPool, asyncio.Task[None]]] = []

    async def start(pool: WorkerPool) -> WorkerPool:
        await pool.connect()
        started.append((pool, asyncio.create_task(pool.start(install_signal_handlers=False))))
        return pool

    yield start
    for pool, task in started:
        await pool.close()
        await asyncio.wait_for(task, 30)
