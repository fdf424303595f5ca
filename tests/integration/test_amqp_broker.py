"""The AMQP broker against a real RabbitMQ: the broker contract, then what only AMQP shows.

Each test gets its own exchange and queues (uuid suffix) and deletes them afterwards. The restart
tests stop and start the RabbitMQ application (``rabbitmqctl stop_app`` / ``start_app``) of a
broker of their own, in a container (``rabbit_node``), never the session's broker.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import cast

import aiormq
import pytest

from paota.brokers.amqp import MAX_DELAY_S, AMQPBroker
from paota.brokers.amqp.properties import encode_headers
from paota.core.config import Config
from paota.core.errors import BrokerError, ConfigError, PublishError, TopologyError
from paota.core.message import Arg, decode_message
from paota.core.protocols import (
    PARKING_HEADERS,
    REPLAYS_HEADER,
    RETURNS_HEADER,
    ParkQueue,
    ParkReason,
)
from tests.contracts.broker_contract import (
    BrokerContract,
    Receiver,
    park,
    park_info,
    publish,
    requeue,
    sig,
)
from tests.integration.chaos_helpers import chaos_config
from tests.integration.containers import RabbitNode

pytestmark = pytest.mark.integration

ConfigFactory = Callable[..., Config]
NodeFactory = Callable[..., RabbitNode]


@pytest.fixture
async def config(make_config: ConfigFactory) -> Config:
    """A config with names unique to this test."""
    return make_config()


@pytest.fixture
async def broker(config: Config) -> AsyncIterator[AMQPBroker]:
    """A connected broker on a fresh topology."""
    async with AMQPBroker(config, worker_name="it") as connected:
        yield connected


class TestAMQPContract(BrokerContract):
    """The broker contract every implementation passes (fixture ``broker`` above)."""


# --- helpers ------------------------------------------------------------------------------------


async def queue_depth(url: str, queue: str) -> int:
    """Messages ready in ``queue`` (passive declare over a fresh connection)."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        ok = await channel.queue_declare(queue, passive=True)
        return ok.message_count or 0
    finally:
        await connection.close()


async def get_all(url: str, queue: str) -> list[aiormq.abc.DeliveredMessage]:
    """Take every message out of ``queue`` (acked) over a fresh connection."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        messages: list[aiormq.abc.DeliveredMessage] = []
        while True:
            message = await channel.basic_get(queue, no_ack=True)
            if not isinstance(message.delivery, aiormq.spec.Basic.GetOk):
                return messages
            messages.append(message)
    finally:
        await connection.close()


async def wait_for_depth(url: str, queue: str, depth: int, timeout_s: float = 5.0) -> None:
    """Wait until ``queue`` holds ``depth`` ready messages."""
    deadline = time.monotonic() + timeout_s
    while (current := await queue_depth(url, queue)) != depth:
        if time.monotonic() > deadline:
            pytest.fail(f"queue {queue} holds {current} messages, expected {depth}")
        await asyncio.sleep(0.05)


def _field_types(table: bytes) -> dict[str, bytes]:
    """The AMQP type letter of each top-level field of an encoded field table."""
    sizes = {b"t": 1, b"b": 1, b"s": 2, b"I": 4, b"l": 8, b"d": 8}
    out: dict[str, bytes] = {}
    pos, end = 4, 4 + struct.unpack(">I", table[:4])[0]
    while pos < end:
        key_len = table[pos]
        key = table[pos + 1 : pos + 1 + key_len].decode()
        pos += 1 + key_len
        kind = table[pos : pos + 1]
        pos += 1
        if kind == b"S":
            pos += 4 + struct.unpack(">I", table[pos : pos + 4])[0]
        else:
            pos += sizes[kind]
        out[key] = kind
    return out


# --- publishing ---------------------------------------------------------------------------------


async def test_a_burst_of_concurrent_publishes_is_confirmed_together(
    broker: AMQPBroker, config: Config
) -> None:
    # given 1,000 publishes started at once
    started = time.monotonic()
    await asyncio.wait_for(
        asyncio.gather(*(publish(broker, sig(uuid=f"burst-{i}")) for i in range(1000))), 30
    )
    elapsed = time.monotonic() - started
    # then every one is in the queue, and they did not wait one round trip each
    await wait_for_depth(config.amqp.url, config.task_queue_name, 1000)
    assert elapsed < 20.0


async def test_an_unroutable_publish_raises_publish_error(broker: AMQPBroker) -> None:
    # given a routing key nothing is bound to
    with pytest.raises(PublishError, match="unroutable"):
        await publish(broker, sig(routing_key="nobody-listens-here"))


async def test_a_batch_mixing_unroutable_large_and_small_publishes_settles_each_on_its_own(
    broker: AMQPBroker, config: Config
) -> None:
    # given, in one turn of the event loop (one batch of frames), small publishes, two bodies
    # larger than a frame (sent as several body frames) and two unroutable ones between them
    big = "x" * 300_000
    good = [sig(uuid=f"small-{i}") for i in range(50)]
    large = [sig(uuid=f"large-{i}", args=[Arg("s", "string", big)]) for i in range(2)]
    sends = [publish(broker, s) for s in good[:25]]
    sends += [publish(broker, sig(uuid="lost-1", routing_key="nobody-listens-here"))]
    sends += [publish(broker, s) for s in large]
    sends += [publish(broker, sig(uuid="lost-2", routing_key="nobody-listens-here"))]
    sends += [publish(broker, s) for s in good[25:]]
    results = await asyncio.wait_for(asyncio.gather(*sends, return_exceptions=True), 30)
    # then exactly the unroutable ones raise, and the queue holds every other one, intact
    failed = [i for i, r in enumerate(results) if isinstance(r, BaseException)]
    assert failed == [25, 28]
    assert all(isinstance(results[i], PublishError) for i in failed)
    messages = await get_all(config.amqp.url, config.task_queue_name)
    decoded = {decode_message(m.body).uuid: decode_message(m.body) for m in messages}
    assert set(decoded) == {s.uuid for s in good + large}
    assert decoded["large-1"].args[0].value == big


async def test_publishes_wait_for_a_channel_lock_held_by_another_publisher(
    broker: AMQPBroker, config: Config
) -> None:
    # given the publishing channel's lock held (as aiormq's own basic_publish holds it)
    pool = broker._pool
    assert pool is not None
    channel = cast("aiormq.Channel", await pool.publish_channel(None))
    async with channel.lock:
        sends = asyncio.gather(*(publish(broker, sig(uuid=f"held-{i}")) for i in range(20)))
        await asyncio.sleep(0.3)
        # then nothing is written meanwhile
        assert not sends.done()
        assert await queue_depth(config.amqp.url, config.task_queue_name) == 0
    # and every publish is confirmed once the lock is free, in order
    await asyncio.wait_for(sends, 10)
    messages = await get_all(config.amqp.url, config.task_queue_name)
    assert [decode_message(m.body).uuid for m in messages] == [f"held-{i}" for i in range(20)]


async def test_delays_out_of_range_are_refused(broker: AMQPBroker) -> None:
    with pytest.raises(ValueError, match="7 days"):
        await publish(broker, sig(), delay_s=MAX_DELAY_S + 1)
    with pytest.raises(ValueError, match=">= 0"):
        await publish(broker, sig(), delay_s=-1.0)


def test_header_mode_integers_have_the_widths_go_reads() -> None:
    # Go paota reads retry_count & co. as int32/int64 only, created_at/eta as int64 only.
    from paota.core.message import encode_message

    wire = encode_message(
        sig(
            raw_args=b"{}",
            retry_count=3,
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
            eta=datetime(2026, 1, 2, tzinfo=UTC),
        )
    )
    types = _field_types(encode_headers(wire.headers))
    for name in ("retry_count", "retry_timeout", "timeout", "wait_time", "retries_done"):
        assert types[name] == b"I", name
    assert types["created_at"] == types["eta"] == b"l"
    assert types["ignore_if_unregistered"] == b"t"
    assert types["uuid"] == types["task_name"] == b"S"


# --- delays -------------------------------------------------------------------------------------


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_the_delay_ladder_has_one_ttl_per_queue(queue_type: str) -> None:
    # (no server needed: what would be declared)
    from paota.brokers.amqp.topology import DELAY_LEVELS, Topology
    from paota.core.config import AMQPConfig

    config = Config(broker="amqp", amqp=AMQPConfig(url="amqp://localhost/"))
    topology = Topology.from_config(config, delay_queue_type=queue_type, delay_mode="ladder")
    ladder = [q for q in topology.queues if q.name in topology.ladder.levels]
    assert [q.arguments["x-message-ttl"] for q in ladder] == [2**k for k in range(DELAY_LEVELS)]
    assert {q.arguments["x-queue-type"] for q in ladder} == {queue_type}
    at_least_once = {q.arguments.get("x-dead-letter-strategy") for q in ladder}
    assert at_least_once == ({"at-least-once"} if queue_type == "quorum" else {None})
    # a 1.5 s delay enters at the level of its highest bit (1024 ms) with its bits in the key
    exchange, key = topology.delay_route(1500)
    assert exchange == topology.ladder_queues[10]
    assert key == ".".join([*format(1500, "030b"), topology.task_queue])
    with pytest.raises(ValueError, match="delay_queue_type"):
        Topology.from_config(config, delay_queue_type="stream")
    with pytest.raises(ValueError, match="delay_mode"):
        Topology.from_config(config, delay_mode="wheel")


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_the_hold_ladder_starts_at_16_s_and_ends_in_the_hold_queue(queue_type: str) -> None:
    # (no server needed: what would be declared)
    from paota.brokers.amqp.ladder import DELAY_LEVELS, HOLD_BITS
    from paota.brokers.amqp.specs import ExchangeSpec
    from paota.brokers.amqp.topology import Topology
    from paota.core.config import AMQPConfig

    config = Config(broker="amqp", amqp=AMQPConfig(url="amqp://localhost/"))
    topology = Topology.from_config(config, delay_queue_type=queue_type)
    ladder = topology.ladder
    assert ladder.mode == "hold" and ladder.levels[0].startswith("paota.delay.")
    assert topology.ladder_queues == (*ladder.levels, ladder.hold_queue, ladder.uses_queue)
    levels = [q for q in topology.queues if q.name in ladder.levels]
    assert [q.arguments["x-message-ttl"] for q in levels] == [
        2**k for k in range(HOLD_BITS, DELAY_LEVELS)
    ]
    hold = next(q for q in topology.queues if q.name == ladder.hold_queue)
    limit = {"x-delivery-limit": 1_000_000} if queue_type == "quorum" else {}
    assert dict(hold.arguments) == {"x-queue-type": queue_type, **limit}
    # the lowest level dead-letters into the hold exchange, a fanout to the hold queue
    assert levels[0].arguments["x-dead-letter-exchange"] == ladder.bottom
    assert ExchangeSpec(ladder.bottom, "fanout") in topology.exchanges
    # short delays skip the ladder; longer ones enter it at their highest bit from 2**14 ms on
    assert topology.delay_route(1500) == ("", ladder.hold_queue)
    assert topology.delay_route(2**HOLD_BITS - 1) == ("", ladder.hold_queue)
    exchange, key = topology.delay_route(40_000)
    assert exchange == ladder.levels[1]  # 40 s = 2**15 + 2**12 + ...: level 15
    assert key == ".".join(format(40_000 >> HOLD_BITS, f"0{DELAY_LEVELS - HOLD_BITS}b"))
    # task queues need no binding to the ladder
    assert not [
        b
        for b in topology.queue_bindings
        if b.exchange == ladder.bottom and b.queue == topology.task_queue
    ]


async def test_a_short_delay_published_after_a_long_one_arrives_first(
    broker: AMQPBroker,
) -> None:
    # given a 60 s delay, then a 1 s delay
    slow, fast = sig(uuid="slow"), sig(uuid="fast")
    await publish(broker, slow, delay_s=60.0)
    sent_at = time.monotonic()
    await publish(broker, fast, delay_s=1.0)
    rx = Receiver(broker.consume(broker.default_queue, prefetch=10))
    try:
        # then the 1 s one arrives after about a second, not behind the 60 s one
        delivery = await rx.next(timeout=5.0)
        elapsed = time.monotonic() - sent_at
        assert decode_message(delivery.body, delivery.headers).uuid == "fast"
        assert 0.9 <= elapsed <= 3.0
        await delivery.ack()
        await rx.nothing(within=0.5)
    finally:
        await rx.close()


@pytest.mark.parametrize("delay_s", [0.01, 1.5])
async def test_delayed_messages_keep_headers_priority_and_body(
    broker: AMQPBroker, delay_s: float
) -> None:
    # given a header-mode task with extra headers and a priority, delayed 10 ms or 1.5 s
    sent = sig(
        args=[],
        raw_args=b'{"order": 42}',
        retry_count=4,
        priority=7,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    extra = {"x-paota-returns": 2, "x-trace": "abc"}
    sent_at = time.monotonic()
    await publish(broker, sent, delay_s=delay_s, headers=extra)
    rx = Receiver(broker.consume(broker.default_queue, prefetch=10))
    try:
        delivery = await rx.next(timeout=delay_s + 3.0)
        elapsed = time.monotonic() - sent_at
        # then it arrives near its time, exactly as published (the ladder's x-death is removed)
        assert delay_s * 0.9 <= elapsed <= delay_s + 1.0
        assert delivery.body == b'{"order": 42}'
        from paota.core.message import encode_message

        assert dict(delivery.headers) == {**extra, **encode_message(sent).headers}
        assert getattr(delivery, "priority", None) == 7
        got = decode_message(delivery.body, delivery.headers)
        assert (got.uuid, got.retry_count, got.created_at) == (
            sent.uuid,
            4,
            sent.created_at,
        )
        await delivery.ack()
    finally:
        await rx.close()


# --- consuming ----------------------------------------------------------------------------------


async def test_higher_priority_is_delivered_first(make_config: ConfigFactory) -> None:
    # given a priority queue holding a low, then a high priority task, and no consumer yet
    config = make_config(queue_declare_args={"x-max-priority": 10})
    async with AMQPBroker(config) as broker:
        low, high = sig(priority=1), sig(priority=9)
        await publish(broker, low)
        await publish(broker, high)
        # when a consumer starts
        rx = Receiver(broker.consume(broker.default_queue, prefetch=10))
        try:
            first, second = await rx.next(), await rx.next()
            # then the high one comes first
            assert decode_message(first.body, first.headers).uuid == high.uuid
            assert decode_message(second.body, second.headers).uuid == low.uuid
            await first.ack()
            await second.ack()
        finally:
            await rx.close()


async def test_closing_the_iterator_returns_prefetched_deliveries(
    broker: AMQPBroker, config: Config
) -> None:
    # given five tasks, all prefetched, one of them yielded
    for _ in range(5):
        await publish(broker, sig())
    deliveries = broker.consume(broker.default_queue, prefetch=5)
    held = await asyncio.wait_for(deliveries.__anext__(), 5)
    await asyncio.sleep(0.2)  # let the other four arrive in the local buffer
    # when the iterator is closed
    await deliveries.aclose()  # type: ignore[attr-defined]
    # then the four not yielded are back in the queue, and the yielded one can still be acked
    await wait_for_depth(config.amqp.url, config.task_queue_name, 4)
    await held.ack()
    await asyncio.sleep(0.2)
    assert await queue_depth(config.amqp.url, config.task_queue_name) == 4


async def test_a_second_ack_raises_and_sends_nothing(broker: AMQPBroker) -> None:
    await publish(broker, sig())
    await publish(broker, sig())
    rx = Receiver(broker.consume(broker.default_queue, prefetch=10))
    try:
        first = await rx.next()
        await first.ack()
        with pytest.raises(BrokerError, match="already"):
            await first.ack()
        # the channel is still alive: the next delivery can be acked
        second = await rx.next()
        await second.ack()
    finally:
        await rx.close()


# --- parking ------------------------------------------------------------------------------------


@pytest.mark.parametrize("queue", [ParkQueue.FAILED, ParkQueue.TIMEOUT])
async def test_park_copies_body_headers_and_reason(
    broker: AMQPBroker, config: Config, queue: ParkQueue
) -> None:
    # given a consumed header-mode task with an extra header
    sent = sig(args=[], raw_args=b"\x00raw\xff", priority=4)
    await publish(broker, sent, headers={"x-trace": "t-1"})
    rx = Receiver(broker.consume(broker.default_queue, prefetch=1))
    try:
        delivery = await rx.next()
        # when it is parked
        info = park_info(ParkReason.EXEC_TIMEOUT)
        await park(broker, delivery, queue, info)
        await delivery.ack()
    finally:
        await rx.close()
    # then the parking queue holds the original body and headers plus the x-paota-* headers
    name = config.amqp.failed_queue if queue is ParkQueue.FAILED else config.amqp.timeout_queue
    [parked] = await get_all(config.amqp.url, name)
    headers = parked.header.properties.headers or {}
    assert parked.body == b"\x00raw\xff"
    assert headers["x-trace"] == "t-1"
    assert headers["task_name"] == sent.name and headers["uuid"] == sent.uuid
    assert headers["x-paota-reason"] == "exec-timeout"
    assert headers["x-paota-error"] == "ValueError: boom"
    assert headers["x-paota-worker"] == "contract-worker"
    assert str(headers["x-paota-traceback"]).startswith("Traceback")
    assert datetime.fromisoformat(str(headers["x-paota-parked-at"])) == info.parked_at
    assert parked.header.properties.priority == 4
    assert parked.header.properties.message_id == sent.uuid


async def test_requeue_parked_filters_by_reason_and_stops_at_the_limit(
    broker: AMQPBroker, config: Config
) -> None:
    # given three parked for exhausted retries and two for an unknown task
    sent = {sig().uuid: "retries-exhausted" for _ in range(3)}
    sent.update({sig().uuid: "unknown-task" for _ in range(2)})
    rx = Receiver(broker.consume(broker.default_queue, prefetch=10))
    try:
        for task_id, _ in sent.items():
            await publish(broker, sig(uuid=task_id, retries_done=3, retry_count=3))
        for _ in sent:
            delivery = await rx.next()
            task_id = decode_message(delivery.body, delivery.headers).uuid
            await park(broker, delivery, ParkQueue.FAILED, park_info(ParkReason(sent[task_id])))
            await delivery.ack()
        # when two of the exhausted ones are requeued
        moved = await requeue(broker, ParkQueue.FAILED, reason="retries-exhausted", limit=2)
        # then exactly two come back, retries reset, without parking headers
        assert moved == 2
        for _ in range(2):
            delivery = await rx.next()
            back = decode_message(delivery.body, delivery.headers)
            assert sent[back.uuid] == "retries-exhausted"
            assert back.retries_done == 0
            assert set(delivery.headers) & {*PARKING_HEADERS, RETURNS_HEADER} == set()
            assert delivery.headers[REPLAYS_HEADER] == 1
            await delivery.ack()
        await rx.nothing()
        # and the other three are still parked
        await wait_for_depth(config.amqp.url, config.amqp.failed_queue, 3)
        assert await requeue(broker, ParkQueue.FAILED, reason="unknown-task") == 2
        assert await requeue(broker, ParkQueue.FAILED) == 1
        assert await queue_depth(config.amqp.url, config.amqp.failed_queue) == 0
    finally:
        await rx.close()


# --- topology and connection errors -------------------------------------------------------------


async def test_a_queue_argument_clash_raises_topology_error(make_config: ConfigFactory) -> None:
    # given the task queue declared with x-max-priority 5
    async with AMQPBroker(make_config(queue_declare_args={"x-max-priority": 5})):
        pass
    # when a broker wants it with x-max-priority 10
    clashing = AMQPBroker(make_config(queue_declare_args={"x-max-priority": 10}))
    with pytest.raises(TopologyError) as raised:
        await asyncio.wait_for(clashing.connect(), 15)
    # then the error names the queue and the argument
    message = str(raised.value)
    assert "x-max-priority" in message
    assert clashing.topology.task_queue in message
    await clashing.close()


async def test_changing_only_the_binding_key_names_the_setting_and_the_migration(
    make_config: ConfigFactory,
) -> None:
    # given the queues declared with one binding key (the delayed queue forwards with it)
    async with AMQPBroker(make_config(binding_key="first_key")):
        pass
    # when a config changes only the binding key
    clashing = AMQPBroker(make_config(binding_key="second_key"))
    with pytest.raises(ConfigError) as raised:
        await asyncio.wait_for(clashing.connect(), 15)
    # then it is a ConfigError (a TopologyError) that names the setting and the way out
    message = str(raised.value)
    assert isinstance(raised.value, TopologyError)
    assert "x-dead-letter-routing-key" in message
    assert "amqp.binding_key (PAOTA_AMQP_BINDING_KEY)" in message
    assert "PAOTA_AMQP_DELAYED_QUEUE" in message
    assert "rabbitmqctl delete_queue paota_test_delayed_" in message
    await clashing.close()


async def test_an_unreachable_broker_raises_broker_error_in_time(
    make_config: ConfigFactory,
) -> None:
    config = make_config(
        url="amqp://guest:s3cret-pw@127.0.0.1:1/", connection_timeout_s=1.5, connection_pool_size=2
    )
    broker = AMQPBroker(config)
    started = time.monotonic()
    with pytest.raises(BrokerError) as raised:
        await broker.connect()
    assert time.monotonic() - started < 3.0
    assert "127.0.0.1:1" in str(raised.value)
    assert "s3cret-pw" not in str(raised.value)
    await broker.close()


async def test_an_unconnected_broker_says_so(config: Config) -> None:
    with pytest.raises(BrokerError, match="not connected"):
        await publish(AMQPBroker(config), sig())


# --- RabbitMQ restart ---------------------------------------------------------------------------


async def _ctl(node: RabbitNode, *args: str) -> None:
    """``rabbitmqctl ARGS`` against ``node``, in a thread."""
    await asyncio.wait_for(asyncio.to_thread(node.ctl, *args), 90)


async def _wait_until_amqp_answers(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            connection = await asyncio.wait_for(aiormq.connect(url), 5)
            await connection.close()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def test_consumer_and_publisher_survive_a_rabbitmq_restart(
    rabbit_node: NodeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    node = await asyncio.to_thread(rabbit_node)
    config = chaos_config(node.url, publish_timeout_s=60.0, heartbeat_interval_s=5)
    caplog.set_level("WARNING", logger="paota.brokers.amqp")
    received: dict[str, int] = {}
    async with AMQPBroker(config, worker_name="restart") as broker:
        # given 20 tasks, 5 of them consumed and acked, one more received and not yet acked
        sent = [sig(uuid=f"before-{i}") for i in range(20)]
        for task in sent:
            await publish(broker, task)
        rx = Receiver(broker.consume(broker.default_queue, prefetch=5))
        try:
            for _ in range(5):
                delivery = await rx.next()
                received[decode_message(delivery.body).uuid] = 1
                await delivery.ack()
            in_flight = await rx.next()
            # when RabbitMQ stops, a publish is attempted during the outage, and RabbitMQ starts
            restarted = False
            try:
                await _ctl(node, "stop_app")
                during = sig(uuid="during-outage")
                publishing = asyncio.create_task(publish(broker, during))
                await asyncio.sleep(3.0)  # long enough for a few reconnection attempts
                assert not publishing.done()  # it waits for the reconnection
            finally:
                await _ctl(node, "start_app")
                await _wait_until_amqp_answers(config.amqp.url, 60)
                restarted = True
            assert restarted
            # then acking the delivery of the dead connection does not raise
            await in_flight.ack()
            # and the publish made during the outage succeeded after the reconnection
            await asyncio.wait_for(publishing, 60)
            expected = {t.uuid for t in sent} | {during.uuid}
            # and the same iterator delivers every task not acked before the restart
            while not expected <= set(received):
                delivery = await rx.next(timeout=30)
                task_id = decode_message(delivery.body).uuid
                received[task_id] = received.get(task_id, 0) + 1
                await delivery.ack()
            # and publishing works on the new connections
            after = sig(uuid="after-restart")
            await publish(broker, after)
            delivery = await rx.next(timeout=10)
            assert decode_message(delivery.body).uuid == after.uuid
            await delivery.ack()
        finally:
            await rx.close()
    logged = caplog.text
    assert "lost" in logged
    assert "re-established" in logged
    assert "subscribing again" in logged


async def test_publish_during_an_outage_raises_when_the_timeout_passes(
    rabbit_node: NodeFactory,
) -> None:
    node = await asyncio.to_thread(rabbit_node)
    config = chaos_config(node.url, publish_timeout_s=2.0)
    async with AMQPBroker(config) as broker:
        try:
            await _ctl(node, "stop_app")
            started = time.monotonic()
            with pytest.raises(PublishError, match="no connection"):
                await publish(broker, sig())
            assert time.monotonic() - started < 4.0
        finally:
            await _ctl(node, "start_app")
            await _wait_until_amqp_answers(config.amqp.url, 60)
