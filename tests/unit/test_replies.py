"""Results over the broker (issue 17): a sender without a store awaits its task's outcome on a
reply the worker sends back (``reply=True``), on the memory broker here (RabbitMQ:
tests/integration/test_first_hour.py)."""

from __future__ import annotations

import asyncio

import pytest

from paota import Client, Config, ConfigError, ManualClock, TaskFailedError, WorkerPool
from paota.brokers.memory import MemoryBroker
from paota.core.replies import (
    REPLY_HEADER,
    ReplyInbox,
    ReplyLostError,
    decode_reply,
    encode_reply,
)
from paota.core.state import TaskStatus


async def _pool_and_client() -> tuple[WorkerPool, Client, MemoryBroker]:
    broker = MemoryBroker(clock=ManualClock())
    pool = WorkerPool(Config(), 4, "replies", broker=broker)

    @pool.task(name="add")
    async def add(a: int, b: int) -> int:
        return a + b

    @pool.task(name="boom", retry_count=1)
    async def boom() -> None:
        raise ValueError("no luck")

    await pool.connect()
    return pool, pool, broker


async def test_a_result_without_a_store_comes_back_on_the_reply() -> None:
    pool, _, broker = await _pool_and_client()
    add = pool.registered_task("add")
    boom = pool.registered_task("boom")
    assert add is not None and boom is not None
    worker = asyncio.create_task(pool.start(install_signal_handlers=False))
    try:
        handle = await add.with_options(reply=True).send(2, 3)
        assert await handle.result(timeout=30) == 5
        # a failure after its retries: the final outcome only, with its error
        failing = await boom.with_options(reply=True).send()
        await broker.run_until_idle(timeout_s=30)  # through the retry's delay, in virtual time
        with pytest.raises(TaskFailedError) as failed:
            await failing.result(timeout=30)
        assert failed.value.status == "FAILED" and "no luck" in str(failed.value)
        # a result asked for after the reply came is kept
        late = await add.with_options(reply=True).send(1, 1)
        await broker.run_until_idle(timeout_s=30)
        assert await late.result(timeout=0.01) == 2
        # without reply=True and without a store: says what would give it
        plain = await add.send(1, 2)
        with pytest.raises(ConfigError, match=r"needs a store .* or a send .* reply=True"):
            await plain.result(timeout=1)
    finally:
        await pool.stop()
        await worker
        await pool.close()


async def test_the_reply_header_names_the_senders_address() -> None:
    pool, _, broker = await _pool_and_client()
    add = pool.registered_task("add")
    assert add is not None
    await add.with_options(reply=True).send(1, 2)
    [message] = broker.messages(broker.default_queue)
    assert str(message.headers[REPLY_HEADER]).startswith("paota.reply.")
    await pool.close()


def test_replies_round_trip_and_unjsonable_results_travel_as_text() -> None:
    body = encode_reply("t1", TaskStatus.SUCCEEDED, {"n": 1}, None)
    assert decode_reply(body) == ("t1", TaskStatus.SUCCEEDED, {"n": 1}, None)
    body = encode_reply("t2", TaskStatus.SUCCEEDED, {1, 2}, None)
    assert decode_reply(body)[2] == "{1, 2}"
    failed = decode_reply(encode_reply("t3", TaskStatus.TIMED_OUT, None, ("Timeout", "late")))
    assert failed[1:] == (TaskStatus.TIMED_OUT, None, ("Timeout", "late"))
    with pytest.raises(ValueError, match="not a paota reply"):
        decode_reply(b'{"x": 1}')


async def test_a_lost_reply_path_fails_the_waiting_senders_at_once() -> None:
    broker = MemoryBroker(clock=ManualClock())
    await broker.connect()
    inbox = ReplyInbox(broker)
    address = await inbox.address()
    inbox.expect("t1", address)
    waiting = asyncio.create_task(inbox.wait("t1", timeout=None))
    await asyncio.sleep(0)
    await broker.close()  # the path goes with it (on RabbitMQ: with the connection)
    with pytest.raises(ReplyLostError, match=r"t1: the reply address .* was lost"):
        await waiting
    await inbox.close()


async def test_reply_true_on_a_broker_without_a_reply_path_refuses_before_sending() -> None:
    class NoReplies(MemoryBroker):
        open_replies = None  # type: ignore[assignment]

    broker = NoReplies(clock=ManualClock())
    client = Client(Config(), broker=broker)

    @client.task(name="add")
    async def add(a: int, b: int) -> int: ...

    async with client:
        with pytest.raises(ConfigError, match=r"carries no replies.*Nothing was sent"):
            await add.with_options(reply=True).send(1, 2)
        assert broker.ready_count == 0
