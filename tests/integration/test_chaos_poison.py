"""Chaos by poison messages (issue 7): garbage bytes, wrong JSON shapes, deep nesting, huge bodies,
bad headers and unknown tasks, published as another producer would, in the middle of thousands of
good tasks (immediate and delayed).

Every poison message must end in a known place: parked in the failed queue with its reason
(``undecodable``, ``unknown-task``), run (when it decodes to a task this pool knows: Go's decoder is
lenient about case, extra keys and duplicates), or dropped on request
(``IgnoreWhenTaskNotRegistered``). The pool keeps running, every good task runs, and nothing is
left in the task queue. These tests break no broker, so they use the session's broker
(``make_config``: queues of their own, deleted afterwards).

Two poison messages once had no known end (a negative returns header, AMQP properties that are
not UTF-8); their tests now show where they end.
"""

from __future__ import annotations

import asyncio
import json
import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiormq
import pytest
from pamqp import commands as spec

from paota import Config, Signature, WorkerPool
from tests.integration.chaos_helpers import ChaosCount, Runs, plan, send_all, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

MakeConfig = Callable[..., Config]
POISON_HEADER = "x-chaos-poison"
MB = 1024 * 1024

PARKED_UNDECODABLE = "parked:undecodable"
PARKED_UNKNOWN = "parked:unknown-task"
PARKED_BAD_HEADERS = "parked:bad-headers"
PARKED_FAILED = "parked:retries-exhausted"
RAN = "ran"
DROPPED = "dropped"


@dataclass(frozen=True)
class Poison:
    """One poison message: its id, what must become of it, its body and headers (it is sent with
    the header ``x-chaos-poison: ID`` besides)."""

    id: str
    expected: str
    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    content_type: str = "application/json"


def task_json(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def poison_set() -> list[Poison]:
    """The poison messages, by kind (ids say the kind: g garbage, s shape, d depth, h huge, b bad
    headers, u unknown task)."""
    rng = random.Random(7)
    now = int(time.time())
    weird_headers = {  # every AMQP field type RabbitMQ passes through
        "x-decimal": Decimal("3.14"),
        "x-timestamp": datetime(2026, 1, 1, tzinfo=UTC),
        "x-bytes": bytearray(b"\x00\xff"),
        "x-void": None,
        "x-table": {"nested": {"deeper": [1, "two", 3.0]}},
        "x-array": [True, -(2**40), "text"],
        "x-float": 2.5,
    }
    undecodable = [
        ("g-bytes", b"\x00\xff\xfe this is not json"),
        ("g-random", rng.randbytes(4096)),
        ("g-empty", b""),
        ("g-bom", b"\xef\xbb\xbf" + task_json(Name="work", UUID="poison-g-bom")),
        ("g-truncated", b'{"Name":"work","UUID":"poison-g-trunc"'),
        ("s-null", b"null"),
        ("s-array", b"[]"),
        ("s-number", b"123"),
        ("s-string", b'"work"'),
        ("s-bool", b"true"),
        ("s-name-int", b'{"Name": 5}'),
        ("s-args-object", b'{"Name":"work","Args":{}}'),
        ("s-args-ints", b'{"Name":"work","Args":[1,2]}'),
        ("s-arg-name-int", b'{"Name":"work","Args":[{"Name":1,"Type":"int","Value":1}]}'),
        ("s-priority-300", b'{"Name":"work","Priority":300}'),
        ("s-retry-string", b'{"Name":"work","RetryCount":"3"}'),
        ("s-eta-word", b'{"Name":"work","ETA":"yesterday"}'),
        ("s-created-int", b'{"Name":"work","CreatedAt":12}'),
        ("s-rawargs-b64", b'{"Name":"work","RawArgs":"!!!"}'),
        ("s-ignore-string", b'{"Name":"work","IgnoreWhenTaskNotRegistered":"yes"}'),
        ("s-nan", b'{"Name":"work","Args":[{"Name":"a","Type":"float64","Value":NaN}]}'),
        ("s-huge-float", b'{"Name":"work","RetriesDone":1e400}'),
        ("d-arrays", nested(100_000).encode()),
        ("d-objects", ('{"a":' * 50_000 + "1" + "}" * 50_000).encode()),
        (
            "d-arg",
            f'{{"Name":"work","Args":[{{"Name":"a","Type":"x","Value":{nested(100_000)}}}]}}'.encode(),
        ),
        ("h-garbage", rng.randbytes(16 * MB)),
    ]
    poisons = [Poison(pid, PARKED_UNDECODABLE, body) for pid, body in undecodable]
    # bad headers in Go's header mode (task_name present): the metadata lives in the headers
    header_mode = [
        ("b-name-bytes", {"task_name": bytearray(b"\xff\xfe"), "uuid": "poison-b-name-bytes"}),
        ("b-retry-text", {"task_name": "work", "retry_count": "abc"}),
        ("b-created-overflow", {"task_name": "work", "created_at": 2**62}),
        ("b-eta-text", {"task_name": "work", "eta": "tomorrow"}),
        # (a NaN float RabbitMQ refuses at publish: INTERNAL_ERROR, so it cannot reach a worker)
        ("b-eta-float-past", {"task_name": "work", "eta": -1e12}),
        ("b-priority-999", {"task_name": "work", "priority": 999}),
        ("b-ignore-maybe", {"task_name": "work", "ignore_if_unregistered": "maybe"}),
        ("b-uuid-table", {"task_name": "work", "uuid": {"a": 1}}),
        ("b-retry-decimal", {"task_name": "work", "retry_count": Decimal("1.5")}),
    ]
    poisons += [
        Poison(pid, PARKED_UNDECODABLE, b'{"raw": true}', headers) for pid, headers in header_mode
    ]
    poisons += [
        # an undecodable body whose headers use every AMQP type: the parked copy keeps them
        Poison("b-weird-parked", PARKED_UNDECODABLE, b"\x01", weird_headers),
        # ... and a good task with the same headers runs
        Poison(
            "b-weird-ran",
            RAN,
            task_json(Name="work", UUID="poison-b-weird-ran"),
            weird_headers,
        ),
        # header mode, well formed, created_at as an AMQP timestamp: runs
        Poison(
            "b-timestamp",
            RAN,
            b'{"order": 1}',
            {
                "task_name": "work",
                "uuid": "poison-b-timestamp",
                "created_at": datetime.fromtimestamp(now, UTC),
            },
            content_type="application/octet-stream",
        ),
        # replay counters out of range (negative; over 8 bytes, which no store query takes):
        # parked before anything reaches the store
        Poison(
            "b-replays",
            PARKED_BAD_HEADERS,
            task_json(Name="work", UUID="poison-b-replays"),
            {"x-paota-replays": -3},
        ),
        Poison(
            "b-replays-huge",
            PARKED_BAD_HEADERS,
            task_json(Name="work", UUID="poison-b-replays-huge"),
            {"x-paota-replays": "99999999999999999999"},
        ),
        # 20,000 args with lowercase keys (the careful decoding path; it was quadratic: 37 s)
        Poison(
            "q-lowercase-args",
            RAN,
            task_json(
                Name="work",
                UUID="poison-q-lowercase-args",
                Args=[{"name": f"a{i}", "type": "int", "value": i} for i in range(20_000)],
            ),
        ),
        # a task whose error echoes a 300 KB argument: its parked copy must fit RabbitMQ's frame
        # (131,072 bytes of headers), or the connection drops and the delivery comes back forever
        Poison(
            "e-huge-error",
            PARKED_FAILED,
            task_json(
                Name="echo-error",
                UUID="poison-e-huge-error",
                Args=[{"Name": "text", "Type": "string", "Value": "e" * 300_000}],
            ),
        ),
        # headers of its own that fill most of a frame (a producer may send up to ~130 KB): parked
        # without them, or the parked copy outgrows the frame; under that budget, they stay beside
        # a huge error and the copy still fits
        Poison(
            "h-wide-headers",
            PARKED_BAD_HEADERS,
            task_json(Name="work", UUID="poison-h-wide-headers"),
            {"x-trace": "t" * 127_000},
        ),
        Poison(
            "h-wide-headers-huge-error",
            PARKED_FAILED,
            task_json(
                Name="echo-error",
                UUID="poison-h-wide-headers-huge-error",
                Args=[{"Name": "text", "Type": "string", "Value": "e" * 300_000}],
            ),
            {"x-trace": "t" * 110_000},
        ),
        # what Go's lenient decoder accepts: extra keys, any key case, a later duplicate key
        Poison("s-extra-key", RAN, task_json(Name="work", UUID="poison-s-extra-key", Colour="red")),
        Poison("s-lowercase", RAN, b'{"name":"work","uuid":"poison-s-lowercase"}'),
        Poison("s-duplicate", RAN, b'{"Name":"nobody","Name":"work","UUID":"poison-s-duplicate"}'),
        # nesting a decoder can take, in an arg value
        Poison(
            "d-ok",
            RAN,
            f'{{"Name":"work","UUID":"poison-d-ok","Args":[{{"Name":"a","Type":"x",'
            f'"Value":{nested(200)}}}]}}'.encode(),
        ),
        # huge but valid: a 16 MB argument, and 16 MB of raw args in header mode
        Poison(
            "h-json",
            RAN,
            task_json(
                Name="work",
                UUID="poison-h-json",
                Args=[{"Name": "blob", "Type": "string", "Value": "x" * (16 * MB)}],
            ),
        ),
        Poison(
            "h-raw",
            RAN,
            b"r" * (16 * MB),
            {"task_name": "work", "uuid": "poison-h-raw"},
            content_type="application/octet-stream",
        ),
        # unknown tasks: returned once for another worker (unknown_task_max_returns=1), then parked
        Poison("u-json", PARKED_UNKNOWN, task_json(Name="nobody-knows", UUID="poison-u-json")),
        Poison("u-no-name", PARKED_UNKNOWN, task_json(UUID="poison-u-no-name")),
        Poison(
            "u-header-mode",
            PARKED_UNKNOWN,
            b"{}",
            {"task_name": "nobody-knows", "uuid": "poison-u-header-mode"},
            content_type="application/octet-stream",
        ),
        Poison(
            "u-returns-text",
            PARKED_BAD_HEADERS,
            task_json(Name="nobody-knows", UUID="poison-u-returns-text"),
            {"x-paota-returns": "garbage"},
        ),
        Poison(
            "u-returns-huge",
            PARKED_UNKNOWN,
            task_json(Name="nobody-knows", UUID="poison-u-returns-huge"),
            {"x-paota-returns": 2**40},
        ),
        # unknown, and the sender asked for it to be dropped then
        Poison(
            "u-ignored",
            DROPPED,
            task_json(
                Name="nobody-knows", UUID="poison-u-ignored", IgnoreWhenTaskNotRegistered=True
            ),
        ),
    ]
    return poisons


class RawHeaders(spec.Basic.Properties):
    """Properties whose header table is given as bytes, to send what pamqp would not encode."""

    def __init__(self, table: bytes, **kwargs: Any) -> None:
        super().__init__(headers={"placeholder": 1}, **kwargs)
        self._table = table

    def encode_property(self, name: str, value: Any) -> bytes:
        if name == "headers":
            return self._table
        result: bytes = super().encode_property(name, value)
        return result


def raw_table(*pairs: tuple[bytes, bytes]) -> bytes:
    """An AMQP field table from (key bytes, type letter + encoded value) pairs."""
    data = b"".join(bytes([len(key)]) + key + value for key, value in pairs)
    return struct.pack(">I", len(data)) + data


class RawPublisher:
    """Publishes bytes to the task exchange as another producer would, with confirms."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._connection: Any = None
        self._channel: Any = None

    async def __aenter__(self) -> RawPublisher:
        self._connection = await aiormq.connect(self._config.amqp.url)
        self._channel = await self._connection.channel()
        await self._channel.confirm_delivery()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._connection.close()

    async def publish(self, body: bytes, properties: spec.Basic.Properties) -> None:
        await asyncio.wait_for(
            self._channel.basic_publish(
                body,
                exchange=self._config.amqp.exchange,
                routing_key=self._config.amqp.binding_key,
                properties=properties,
            ),
            60,
        )

    async def poison(self, poison: Poison) -> None:
        await self.publish(
            poison.body,
            spec.Basic.Properties(
                content_type=poison.content_type,
                delivery_mode=2,
                headers={POISON_HEADER: poison.id, **poison.headers},
            ),
        )


def poison_id(message: Any) -> str:
    """Which poison a parked copy is: its x-chaos-poison header, else the task id it carries
    (a returned unknown task is republished with paota's own headers only)."""
    headers = message.header.properties.headers or {}
    marker = headers.get(POISON_HEADER)
    if isinstance(marker, str):
        return marker
    uuid = headers.get("uuid")
    if isinstance(uuid, str) and uuid.startswith("poison-"):
        return uuid[len("poison-") :]
    try:
        return str(json.loads(message.body)["UUID"])[len("poison-") :]
    except (ValueError, KeyError, TypeError):
        return f"(unknown: {message.body[:60]!r})"


async def drain(url: str, queue: str) -> list[Any]:
    """Take every message out of ``queue`` (acked)."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        out = []
        while True:
            message = await channel.basic_get(queue, no_ack=True)
            if not isinstance(message.delivery, spec.Basic.GetOk):
                return out
            out.append(message)
    finally:
        await connection.close()


async def queue_counts(url: str, queue: str) -> tuple[int, int]:
    """(ready messages, consumers) of ``queue``."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        ok = await channel.queue_declare(queue, passive=True)
        return ok.message_count or 0, ok.consumer_count or 0
    finally:
        await connection.close()


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


def chaos_pool(config: Config, runs: Runs, *, concurrency: int = 20) -> WorkerPool:
    pool = WorkerPool(config, concurrency=concurrency, name="chaos-poison")

    @pool.task
    async def work(sig: Signature) -> None:
        await asyncio.sleep(0.005)
        runs.record(sig.uuid)

    @pool.task(name="echo-error")
    async def echo_error(sig: Signature) -> None:
        raise ValueError(sig.arg("text", ""))

    return pool


@pytest.mark.timeout(300)
async def test_poison_messages_are_parked_or_run_and_every_good_task_runs(
    make_config: MakeConfig,
    running: Any,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # given a pool, 3,000 good tasks (half delayed 0.5-6 s) in two halves, and between them the
    # poison set (unknown tasks are returned once, then parked)
    config = make_config(config_fields={"unknown_task_max_returns": 1})
    runs = Runs()
    pool = await running(chaos_pool(config, runs))
    poisons = poison_set()
    good = plan(3000, delayed_fraction=0.5, delay_s=(0.5, 6.0), prefix="good")
    async with WorkerPool(config, name="chaos-producer") as producer:
        sent = await send_all(producer, good[:1500])
        started = time.monotonic()
        async with RawPublisher(config) as raw:
            for poison in poisons:
                await raw.poison(poison)
        poisoned_at = time.monotonic()
        await send_all(producer, good[1500:], result=sent)

    # then every good task runs, and so does every poison message that decodes to a known task
    await runs.wait_for_all(sent.confirmed, timeout_s=120)
    must_run = {p.id: f"poison-{p.id}" for p in poisons if p.expected == RAN}
    await runs.wait_for_all(must_run.values(), timeout_s=60)
    # and the others are parked with their reason (or dropped, as asked)
    must_park = {p.id: p.expected.split(":", 1)[1] for p in poisons if p.expected.startswith("p")}
    parked: dict[str, Any] = {}

    async def collect() -> bool:
        for message in await drain(config.amqp.url, config.amqp.failed_queue):
            parked[poison_id(message)] = message
        return set(must_park) <= set(parked)

    deadline = time.monotonic() + 60
    while not await collect():
        missing = sorted(set(must_park) - set(parked))
        assert time.monotonic() < deadline, f"not parked: {missing}; parked: {sorted(parked)}"
        await asyncio.sleep(0.5)
    settled_s = time.monotonic() - started
    assert sorted(parked) == sorted(must_park)
    reasons = {
        pid: text(m.header.properties.headers["x-paota-reason"]) for pid, m in parked.items()
    }
    assert reasons == must_park
    by_id = {p.id: p for p in poisons}
    for pid, message in parked.items():
        headers = message.header.properties.headers
        assert text(headers["x-paota-worker"]) == "chaos-poison"
        assert text(headers["x-paota-error"])
        if must_park[pid] == "undecodable":  # parked copies keep the original body
            assert message.body == by_id[pid].body, pid
    weird = parked["b-weird-parked"].header.properties.headers
    assert weird["x-decimal"] == Decimal("3.14")
    assert weird["x-table"] == {"nested": {"deeper": [1, "two", 3.0]}}
    assert weird["x-bytes"] == bytearray(b"\x00\xff")
    assert pool.stats.dropped == sum(1 for p in poisons if p.expected == DROPPED)
    assert "poison-u-ignored" not in runs.counts
    # and nothing is left in the task queue, the pool still consuming
    await wait_until(
        lambda: (
            pool.stats.received
            == len(sent.confirmed) + len(poisons) + pool.stats.returned + pool.stats.duplicates
        ),
        30,
        lambda: f"received {pool.stats.received}: {pool.stats}",
    )
    ready, consumers = await queue_counts(config.amqp.url, config.task_queue_name)
    assert (ready, consumers) == (0, 1)
    # and no poison message cost a connection (a frame too large closes it)
    drops = [r.getMessage() for r in caplog.records if "lost (" in r.getMessage()]
    assert drops == []
    error = text(parked["e-huge-error"].header.properties.headers["x-paota-error"])
    assert len(error) <= 2000 and "characters, cut to 2,000]" in error
    count = ChaosCount.of(
        "poison",
        sent.confirmed + list(must_run.values()),
        runs.counts,
        [(runs.first_after(poisoned_at) or poisoned_at) - started],
        poison=len(poisons),
        parked=len(parked),
        poison_ran=len(must_run),
        dropped=pool.stats.dropped,
        settled_s=round(settled_s, 1),
        # the pool's throughput over the mix: good tasks run per second, poison in between
        good_per_s=round(len(sent.confirmed) / settled_s) if settled_s else 0,
        connection_drops=len(drops),
    ).report(capsys)
    assert count.lost == 0


@pytest.mark.timeout(120)
async def test_an_unknown_task_with_a_negative_returns_header_is_parked(
    make_config: MakeConfig, running: Any
) -> None:
    """``WorkerPool._unknown_task`` reads ``x-paota-returns`` with ``header_int`` (any integer,
    negative too) and republishes with ``delay_s=float(returns + 1)``; for returns < -1 the broker
    raises ValueError ("delay_s must be a finite number >= 0"). ``_run_delivery`` only handles
    BrokerError and StoreError, so the delivery is neither acked, rejected nor parked: it stays
    unacked (holding a prefetch slot) until the connection closes, then comes back and sticks
    again. A hundred such messages stop a pool with the default prefetch."""
    config = make_config(config_fields={"unknown_task_max_returns": 1})
    runs = Runs()
    await running(chaos_pool(config, runs, concurrency=4))
    async with RawPublisher(config) as raw:
        await raw.publish(
            task_json(Name="nobody-knows", UUID="poison-negative"),
            spec.Basic.Properties(
                content_type="application/json", delivery_mode=2, headers={"x-paota-returns": -7}
            ),
        )
    deadline = time.monotonic() + 10
    parked: list[Any] = []
    while not parked and time.monotonic() < deadline:
        parked = await drain(config.amqp.url, config.amqp.failed_queue)
        await asyncio.sleep(0.5)
    assert [poison_id(m) for m in parked] == ["negative"], "the message was not parked"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("where", ["header-key", "message-id"])
async def test_a_message_with_non_utf8_properties_runs_and_the_queue_keeps_moving(
    make_config: MakeConfig, running: Any, where: str
) -> None:
    """RabbitMQ accepts a header table whose key is not UTF-8, and a message id that is not
    (it passes properties through without decoding them). pamqp alone raises UnicodeDecodeError
    decoding the content header, aiormq closes the connection, RabbitMQ puts the message back at
    the head of the queue, and the queue is wedged behind it. paota decodes such properties
    tolerantly (paota.brokers.amqp.tolerant): the message, a valid task otherwise, runs, and the
    tasks behind it run too."""
    config = make_config()
    runs = Runs()
    await running(chaos_pool(config, runs, concurrency=4))
    async with RawPublisher(config) as raw:
        body = task_json(Name="work", UUID="poison-non-utf8")
        if where == "header-key":
            props: spec.Basic.Properties = RawHeaders(
                raw_table((b"\xff\xfe", b"I" + struct.pack(">i", 1))),
                content_type="application/json",
                delivery_mode=2,
            )
        else:
            props = NonUTF8MessageId(content_type="application/json", delivery_mode=2)
        await raw.publish(body, props)
    async with WorkerPool(config, name="chaos-producer") as producer:
        sent = await send_all(producer, plan(100, delayed_fraction=0.0, prefix="behind"))
    await runs.wait_for_all([*sent.confirmed, "poison-non-utf8"], timeout_s=15)
    assert await drain(config.amqp.url, config.amqp.failed_queue) == []


class NonUTF8MessageId(spec.Basic.Properties):
    """Properties whose message id is the two bytes ``ff fe`` (not UTF-8)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(message_id="placeholder", **kwargs)

    def encode_property(self, name: str, value: Any) -> bytes:
        if name == "message_id":
            return b"\x02\xff\xfe"
        result: bytes = super().encode_property(name, value)
        return result
