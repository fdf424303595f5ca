"""Fixtures for the integration suites: real servers and an isolated topology per test.

RabbitMQ: ``amqp_url`` is ``PAOTA_TEST_AMQP_URL`` when set; otherwise the local RabbitMQ at
``127.0.0.1:5672`` (guest/guest) when it answers; otherwise a RabbitMQ container is started with
testcontainers when a Docker engine answers; otherwise the test is skipped (and fails
in CI, see :mod:`tests.integration._skip`). ``make_config`` gives each test its own exchange and
queues and deletes them afterwards.

MongoDB: ``mongo_uri`` and ``mongoeco_servers`` live in :mod:`tests.integration.mongo_server` and
are registered here.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from tests.integration._skip import skip_or_fail
from tests.integration.mongo_server import mongo_uri, mongoeco_servers

__all__ = [
    "amqp_url",
    "delete_topology",
    "make_config",
    "mongo_uri",
    "mongoeco_servers",
    "running",
]

RABBITMQ_IMAGE = "rabbitmq:3.13-management"
LOCAL_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
_AMQP_PORT = 5672


def _docker_reason() -> str | None:
    """None when a Docker engine answers, else why not."""
    try:
        docker = importlib.import_module("docker")  # untyped: used through its dynamic API
    except ImportError as exc:
        return f"the docker package is not installed ({exc})"
    try:
        client = docker.from_env(timeout=5)
        client.ping()
        client.close()
    except Exception as exc:
        return f"no Docker engine reachable ({type(exc).__name__}: {exc})"
    return None


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
    """The URL of a RabbitMQ for this test session."""
    url = os.environ.get("PAOTA_TEST_AMQP_URL")
    if url:
        yield url
        return
    try:
        _wait_for_amqp(LOCAL_AMQP_URL, timeout_s=0)
    except Exception:
        pass  # no local RabbitMQ: try a container
    else:
        yield LOCAL_AMQP_URL
        return
    reason = _docker_reason()
    if reason is not None:
        skip_or_fail(f"no RabbitMQ: set PAOTA_TEST_AMQP_URL or start Docker ({reason})")
    try:
        from testcontainers.community.rabbitmq import RabbitMqContainer
    except ImportError:  # its readiness probe needs pika; a generic container does without
        from testcontainers.core.container import DockerContainer

        container: Any = DockerContainer(RABBITMQ_IMAGE).with_exposed_ports(_AMQP_PORT)
        user = password = "guest"
    else:
        container = RabbitMqContainer(RABBITMQ_IMAGE)
        user, password = container.username, container.password
    with container:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(_AMQP_PORT)
        url = f"amqp://{user}:{password}@{host}:{port}/"
        _wait_for_amqp(url, timeout_s=90)
        yield url


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
async def make_config(amqp_url: str) -> AsyncIterator[Callable[..., Any]]:
    """A factory of :class:`~paota.Config` objects with names unique to this test.

    ``make_config(**amqp_fields)`` overrides AMQPConfig fields; ``task_queue_name=...`` and
    other Config fields can be given as ``config_fields={...}``. Every queue and exchange of every
    config made is deleted after the test.
    """
    from paota.brokers.amqp.topology import Topology
    from paota.core.config import AMQPConfig, Config

    made: list[Config] = []
    suffix = uuid.uuid4().hex[:10]

    def factory(*, config_fields: dict[str, Any] | None = None, **amqp_fields: Any) -> Config:
        amqp = {
            "url": amqp_url,
            "exchange": f"paota_test_exchange_{suffix}",
            "delayed_queue": f"paota_test_delayed_{suffix}",
            "failed_queue": f"paota_test_failed_{suffix}",
            "timeout_queue": f"paota_test_timeout_{suffix}",
            "connection_timeout_s": 5.0,
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
        q, e = Topology.from_config(config).names()
        queues.update(q)
        exchanges.update(e)
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
