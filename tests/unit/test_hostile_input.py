"""Hostile or merely oversized messages (issue 16): each reaches an outcome in bounded time and
never stops the pool from running the good tasks beside it.

- a body of 20,000 args with lowercase keys decodes in linear time (it took 37 s before);
- a body over ``max_message_bytes`` is parked ``too-large``, undecoded;
- an ``x-paota-*`` header out of range (a 20-digit replays count) is parked ``bad-headers``;
- an error message of 200,000 characters is cut in the parked copy's headers, kept whole in the
  store;
- a header table too large to leave room for what paota adds is parked ``bad-headers``, its
  largest headers left out of the parked copy (and named), so the copy fits the broker's frame;
- a result the store refuses for good is parked ``store-rejected`` with a smaller FAILED record,
  instead of holding its slot through settle retries forever.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from paota import Config, ManualClock, ParkQueue, StoreError, TaskStatus, WorkerPool
from paota.brokers.amqp.properties import message_properties
from paota.brokers.memory import MemoryBroker
from paota.core.bounds import (
    FRAME_MAX,
    MAX_ERROR_HEADER,
    bounded_text,
    check_headers,
    header_table_bytes,
)
from paota.core.message import decode_message
from paota.core.protocols import OutgoingMessage
from paota.core.state import TaskState
from paota.stores.memory import MemoryStore
from tests.contracts.broker_contract import message, sig


async def _pool(store: Any = None, **config: Any) -> tuple[WorkerPool, MemoryBroker, list[int]]:
    broker = MemoryBroker(clock=ManualClock())
    pool = WorkerPool(Config(**config), 4, "hostile", broker=broker, store=store)
    ran: list[int] = []

    @pool.task(name="good")
    async def good(n: int) -> int:
        ran.append(n)
        return n

    await pool.connect()
    return pool, broker, ran


async def _good(broker: MemoryBroker, n: int) -> None:
    body = json.dumps({"UUID": f"good_{n}", "Name": "good", "Args": [_arg("n", "int", n)]})
    await broker.publish(OutgoingMessage(body.encode(), broker.default_queue, message_id=f"g{n}"))


def _arg(name: str, type_: str, value: Any) -> dict[str, Any]:
    return {"Name": name, "Type": type_, "Value": value}


async def _drain(pool: WorkerPool, broker: MemoryBroker) -> None:
    """Run the pool until every message is settled; stop it (the store stays open)."""
    import asyncio

    worker = asyncio.create_task(pool.start(install_signal_handlers=False))
    try:
        await broker.run_until_idle(timeout_s=60)
    finally:
        await pool.stop()
        await worker


def test_an_args_array_with_lowercase_keys_decodes_in_linear_time() -> None:
    # given 20,000 args whose keys are lowercase (the careful path; list.index per arg made it
    # quadratic: 37 s)
    args = [{"name": f"a{i}", "type": "int", "value": i} for i in range(20_000)]
    body = json.dumps({"UUID": "t1", "Name": "wide", "Args": args}).encode()
    started = time.process_time()  # CPU time: what the decode costs, however loaded the machine
    decoded = decode_message(body)
    took = time.process_time() - started
    assert len(decoded.args) == 20_000 and decoded.args[-1].value == 19_999
    # a quiet machine: about 0.1 s; the bound holds on a loaded 2-core one, quadratic cannot
    assert took < 10, f"{took:.1f} s for 20,000 args"


async def test_a_body_over_the_size_limit_is_parked_too_large_undecoded() -> None:
    pool, broker, ran = await _pool(max_message_bytes=10_000)
    huge = b'{"UUID": "t_big", "Name": "good", "Args": [' + b" " * 20_000 + b"]}"
    await broker.publish(OutgoingMessage(huge, broker.default_queue, message_id="t_big"))
    await _good(broker, 1)
    await _drain(pool, broker)
    [parked] = broker.parked(ParkQueue.FAILED)
    assert parked.headers["x-paota-reason"] == "too-large"
    assert "20,0" in parked.headers["x-paota-error"] and "10,000" in parked.headers["x-paota-error"]
    assert parked.body == huge  # unchanged, for a replay once the limit is raised
    assert ran == [1]
    await pool.close()


async def test_an_out_of_range_paota_header_is_parked_bad_headers() -> None:
    store = MemoryStore()
    pool, broker, ran = await _pool(store)
    bad = sig(name="good", args=[])
    for value in ("99999999999999999999", -3, "seven", 2**64):
        await broker.publish(
            message(bad.replace(uuid=f"bad_{value}"), broker.default_queue,
                    headers={"x-paota-replays": value})
        )  # fmt: skip
    await _good(broker, 2)
    await _drain(pool, broker)
    parked = broker.parked(ParkQueue.FAILED)
    assert len(parked) == 4
    assert {p.headers["x-paota-reason"] for p in parked} == {"bad-headers"}
    assert all("x-paota-replays" in p.headers["x-paota-error"] for p in parked)
    assert ran == [2]
    await pool.close()


def test_header_checks_name_the_header_and_the_range() -> None:
    check_headers({"x-paota-replays": 3, "x-paota-returns": "2", "other": "x" * 100_000})
    for headers in (
        {"x-paota-returns": True},
        {"x-paota-returns": "\u00b2"},  # a digit to str.isdigit, not to int()
        {"x-paota-workflow-id": "w" * 10_000},
    ):
        with pytest.raises(ValueError, match=next(iter(headers))):
            check_headers(headers)


async def test_a_header_table_without_room_for_paotas_headers_is_parked_and_fits_the_frame() -> (
    None
):
    # given a task whose own headers fill most of a frame (a producer may send up to ~131 KB, and
    # a parked copy adds an error, a traceback, a reason: RabbitMQ closed the connection on it)
    pool, broker, ran = await _pool(MemoryStore())
    bad = sig(name="good", args=[]).replace(uuid="wide_headers")
    headers = {"x-trace": "t" * 127_000, "x-small": "kept"}
    await broker.publish(message(bad, broker.default_queue, headers=headers))
    await _good(broker, 4)
    await _drain(pool, broker)
    # then it is parked bad-headers, the big header left out of the copy and named, the copy within
    # the frame, and the good task ran
    [parked] = broker.parked(ParkQueue.FAILED)
    assert parked.headers["x-paota-reason"] == "bad-headers"
    assert (
        "127,0" in parked.headers["x-paota-error"] and "at most" in parked.headers["x-paota-error"]
    )
    assert "x-trace" not in parked.headers and parked.headers["x-small"] == "kept"
    assert parked.headers["x-paota-headers-dropped"] == "x-trace"
    assert header_table_bytes(parked.headers) < FRAME_MAX - 4096
    assert ran == [4]
    await pool.close()


async def test_headers_under_the_budget_still_fit_beside_a_huge_error() -> None:
    # given a task with 110 KB of headers of its own (under the budget) that fails with an error
    # of 200,000 characters
    pool, broker, _ = await _pool(MemoryStore())

    @pool.task(name="echo", retry_count=0)
    async def echo(text: str) -> None:
        raise ValueError(text)

    await echo.with_options(headers={"x-trace": "t" * 110_000}).send("x" * 200_000)
    await _drain(pool, broker)
    # then the parked copy keeps them all and still fits the frame
    [parked] = broker.parked(ParkQueue.FAILED)
    assert parked.headers["x-trace"] == "t" * 110_000
    assert "x-paota-headers-dropped" not in parked.headers
    assert header_table_bytes(parked.headers) < FRAME_MAX - 4096
    await pool.close()


def test_header_sizes_count_text_that_was_not_utf8() -> None:
    # RabbitMQ delivers invalid UTF-8 header text as lone surrogates (paota.brokers.amqp.tolerant):
    # measuring it must not raise, or the delivery can neither run nor park
    headers = {"x-\udcff": "\udcfe" * 10, "x-paota-worker": "w\udcfe"}
    check_headers(headers)
    assert header_table_bytes(headers) == 4 + (2 + 5 + 5 + 30) + (2 + 14 + 5 + 4)


def test_amqp_properties_refuse_headers_that_do_not_fit_a_frame() -> None:
    # an AMQP publish whose headers are over the frame makes RabbitMQ close the connection: refused
    # before it is sent, naming the sizes
    with pytest.raises(ValueError, match=r"headers take 140,0\d\d bytes encoded; at most 130,048"):
        message_properties(
            headers={"x-big": "b" * 140_000}, content_type=None, priority=None, message_id="m"
        )
    assert message_properties(
        headers={"x-big": "b" * 120_000}, content_type=None, priority=None, message_id="m"
    ).headers


async def test_a_huge_error_message_is_cut_in_the_parked_copy_and_kept_in_the_store() -> None:
    store = MemoryStore()
    pool, broker, ran = await _pool(store)

    @pool.task(name="echo", retry_count=0)
    async def echo(text: str) -> None:
        raise ValueError(text)

    handle = await echo.send("x" * 200_000)
    await _good(broker, 3)
    await _drain(pool, broker)
    [parked] = broker.parked(ParkQueue.FAILED)
    error = parked.headers["x-paota-error"]
    assert len(error) <= MAX_ERROR_HEADER and "200,012 characters" in error
    assert len(parked.headers["x-paota-traceback"]) <= 4000
    state = await store.get(handle.id)
    assert state is not None and state.error is not None
    assert len(state.error.message) == 200_000
    assert ran == [3]
    await pool.close()


class RefusingStore(MemoryStore):
    """A memory store that refuses, for good, any record holding a result over 1,000 characters
    (MongoDB's document limit, in small)."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = 0

    async def record(self, state: TaskState) -> bool:
        if len(repr(state.result)) > 1000 or len(repr(state.args)) > 5000:
            self.refused += 1
            raise StoreError("document too large", permanent=True)
        return await super().record(state)


async def test_a_record_the_store_refuses_for_good_is_parked_with_a_smaller_record() -> None:
    store = RefusingStore()
    pool, broker, ran = await _pool(store)

    @pool.task(name="big")
    async def big() -> str:
        return "r" * 5000

    handle = await big.send()
    await _good(broker, 4)
    await _drain(pool, broker)
    # the delivery ended at once (no retrying a write that cannot succeed), parked with why
    assert store.refused == 1
    [parked] = broker.parked(ParkQueue.FAILED)
    assert parked.headers["x-paota-reason"] == "store-rejected"
    assert "document too large" in parked.headers["x-paota-error"]
    state = await store.get(handle.id)
    assert state is not None and state.status is TaskStatus.FAILED
    assert state.error is not None and state.error.type == "StoreRejected"
    assert state.result is None
    assert broker.unacked_count == 0 and ran == [4]
    await pool.close()


def test_bounded_text_says_how_much_was_cut() -> None:
    assert bounded_text("short", 10) == "short"
    cut = bounded_text("a" * 1000, 100)
    assert len(cut) == 100 and cut.endswith("[... 1,000 characters, cut to 100]")
    tail = bounded_text("a" * 999 + "Z", 100, keep="end")
    assert len(tail) == 100 and tail.endswith("Z") and tail.startswith("[... 1,000 characters")


async def test_a_large_body_is_decoded_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    # 700,000 args (35 MiB) take ~4 s of CPU to decode: on the loop, heartbeats and every other
    # delivery wait that long (measured: 3,975 ms of loop lag, 614 ms in a thread)
    import threading

    import paota.core.pool as pool_module

    threads: dict[str, int] = {}
    real = pool_module.decode_message

    def spying(body: bytes, headers: Any = None) -> Any:
        sig = real(body, headers)
        threads[sig.uuid] = threading.get_ident()
        return sig

    monkeypatch.setattr(pool_module, "decode_message", spying)
    pool, broker, ran = await _pool()
    wide = [_arg("n", "int", 1)] + [_arg(f"pad{i}", "string", "p" * 100) for i in range(3000)]
    body = json.dumps({"UUID": "wide", "Name": "good", "Args": wide}).encode()
    assert len(body) > pool_module.DECODE_OFF_LOOP_BYTES
    await broker.publish(OutgoingMessage(body, broker.default_queue, message_id="wide"))
    await _good(broker, 5)
    await _drain(pool, broker)
    loop_thread = threading.get_ident()
    assert threads["good_5"] == loop_thread and threads["wide"] != loop_thread
    assert 5 in ran  # the wide one has extra args: parked bad-arguments, not run
    await pool.close()
