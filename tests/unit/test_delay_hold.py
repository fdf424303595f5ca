"""The hold queue's mover (:class:`paota.brokers.amqp.hold.DelayHold`) against fake deliveries and a
recording publish: due order, never early, a dead channel's messages left alone, and every message
that cannot be moved parked with its reason or sent back to the ladder. No RabbitMQ."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from aiormq.exceptions import PublishError as AiormqPublishError

from paota.brokers.amqp.consumer import AMQPDelivery
from paota.brokers.amqp.hold import DelayHold, due_headers
from paota.brokers.amqp.ladder import DUE_HEADER, HOLD_BITS, TARGET_HEADER, Ladder
from paota.core.errors import PublishError
from tests import waiting


class FakeDelivery:
    def __init__(self, message_id: str, headers: dict[str, Any]) -> None:
        self.message_id = message_id
        self.headers = headers
        self.body = b"body"
        self.content_type = "application/json"
        self.priority = 3
        self.acked = False
        self.alive = True
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def ack(self) -> None:
        assert not self.acked
        self.acked = True
        self.alive = False


class Recorder:
    def __init__(self, fail: dict[str, BaseException] | None = None) -> None:
        self.sent: list[tuple[float, str, str, str, dict[str, Any]]] = []
        self.fail = dict(fail or {})

    async def __call__(
        self, exchange: str, routing_key: str, body: bytes, props: Any, what: str
    ) -> None:
        error = self.fail.pop(routing_key, None)
        if error is not None:
            raise error
        self.sent.append((time.time(), exchange, routing_key, what, dict(props.headers or {})))


LADDER = Ladder.build("t.delay", mode="hold", queue_type="quorum")


async def _feed(items: list[FakeDelivery], gate: asyncio.Event) -> AsyncIterator[AMQPDelivery]:
    for item in items:
        yield cast(AMQPDelivery, item)
    await gate.wait()


async def _run(items: list[FakeDelivery], publish: Recorder, until: Any) -> DelayHold:
    gate = asyncio.Event()
    hold = DelayHold(_feed(items, gate), publish, LADDER, failed_queue="failed", worker_name="w")
    task = asyncio.create_task(hold.run())
    await waiting.until(lambda: until(hold), 30, "the hold to move them")
    gate.set()
    await task
    return hold


def _at(delay_ms: int, queue: str = "tasks") -> dict[str, Any]:
    return due_headers({"x-other": 1}, queue, int(time.time() * 1000) + delay_ms)


async def test_messages_move_in_due_order_never_before_they_are_due() -> None:
    items = [FakeDelivery(f"m{d}", _at(d)) for d in (120, 10, 60, 0, 30)]
    due = {item.message_id: item.headers[DUE_HEADER] / 1000 for item in items}
    publish = Recorder()
    await _run(items, publish, lambda h: h.moved == 5)
    assert [what.split()[-1] for _, _, _, what, _ in publish.sent] == [
        "m0",
        "m10",
        "m30",
        "m60",
        "m120",
    ]
    for sent_at, exchange, key, what, headers in publish.sent:
        assert sent_at >= due[what.split()[-1]] - 0.001
        assert (exchange, key) == ("", "tasks")
        assert headers == {"x-other": 1}  # the hold's own headers removed, the rest kept
    assert all(item.acked for item in items)


async def test_a_message_whose_channel_closed_is_left_to_its_redelivery() -> None:
    item = FakeDelivery("gone", _at(20))
    item.alive = False
    publish = Recorder()
    gate = asyncio.Event()
    hold = DelayHold(_feed([item], gate), publish, LADDER, failed_queue="f", worker_name="w")
    task = asyncio.create_task(hold.run())
    # due after 20 ms: a move, if there were one, would happen in this pause
    await asyncio.sleep(0.1)  # sleep-ok: quiet
    gate.set()
    await task
    assert publish.sent == [] and not item.acked


async def test_messages_that_cannot_be_moved_are_parked_with_the_reason() -> None:
    now = int(time.time() * 1000)
    untargeted = FakeDelivery("untargeted", {DUE_HEADER: now})
    bad = FakeDelivery("bad", {DUE_HEADER: now, TARGET_HEADER: 42})
    missing = FakeDelivery("missing", due_headers(None, "nowhere", now))
    returned = PublishError("returned")
    returned.__cause__ = AiormqPublishError.__new__(AiormqPublishError)  # what a return raises
    publish = Recorder(fail={"nowhere": returned})
    hold = await _run([untargeted, bad, missing], publish, lambda h: h.parked == 3)
    parked = {what.split()[-1]: (key, headers) for _, _, key, what, headers in publish.sent}
    assert {key for key, _ in parked.values()} == {"failed"}
    assert parked["untargeted"][1]["x-paota-reason"] == "bad-headers"
    assert parked["bad"][1]["x-paota-reason"] == "bad-headers"
    assert "42" in parked["bad"][1]["x-paota-error"]
    assert parked["missing"][1]["x-paota-reason"] == "unroutable"
    assert parked["missing"][1]["x-paota-origin-queue"] == "nowhere"
    assert DUE_HEADER not in parked["missing"][1]
    assert hold.moved == 0 and all(d.acked for d in (untargeted, bad, missing))


async def test_a_message_due_far_later_goes_back_to_the_ladder_at_once() -> None:
    item = FakeDelivery("later", _at(3_600_000))
    publish = Recorder()
    await _run([item], publish, lambda h: h.relayed == 1)
    ((_, exchange, _key, _, headers),) = publish.sent
    assert exchange.startswith("t.delay.h") and int(exchange[-2:]) >= HOLD_BITS
    assert headers[TARGET_HEADER] == "tasks" and headers[DUE_HEADER] == item.headers[DUE_HEADER]
    assert item.acked


async def test_a_failed_publish_is_tried_again_while_held() -> None:
    item = FakeDelivery("retry", _at(0))
    publish = Recorder(fail={"tasks": PublishError("no connection")})
    hold = await _run([item], publish, lambda h: h.moved == 1)
    assert len(publish.sent) == 1 and item.acked and hold.holding == 0


@pytest.mark.parametrize("due", [None, "soon", True, -5])
async def test_a_due_time_that_is_missing_or_garbage_moves_at_once(due: Any) -> None:
    headers: dict[str, Any] = {TARGET_HEADER: "tasks"}
    if due is not None:
        headers[DUE_HEADER] = due
    publish = Recorder()
    await _run([FakeDelivery("x", headers)], publish, lambda h: h.moved == 1)
    assert publish.sent[0][2] == "tasks"


async def test_a_move_under_way_is_given_up_when_its_channel_closes() -> None:
    # (RabbitMQ redelivers the message to a worker that moves it; publishing this copy on a new
    # connection would run it twice)
    item = FakeDelivery("cut", _at(0))
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def stuck(exchange: str, key: str, body: bytes, props: Any, what: str) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    gate = asyncio.Event()
    hold = DelayHold(_feed([item], gate), stuck, LADDER, failed_queue="f", worker_name="w")
    task = asyncio.create_task(hold.run())
    await asyncio.wait_for(started.wait(), 30)
    item.alive = False
    item.closed.set_result(None)
    await asyncio.wait_for(cancelled.wait(), 30)
    gate.set()
    await task
    assert not item.acked and hold.moved == 0 and hold.holding == 0


async def test_a_due_time_beyond_any_delay_and_headers_that_do_not_encode_are_parked() -> None:
    years = FakeDelivery("years", _at(10 * 365 * 86_400_000))
    big = FakeDelivery("big", {**_at(0), "x-big": "a" * 300_000})
    publish = Recorder()
    await _run([years, big], publish, lambda h: h.parked == 2)
    parked = {what.split()[-1]: headers for _, _, _, what, headers in publish.sent}
    assert parked["years"]["x-paota-reason"] == "bad-headers"
    assert "days ahead" in parked["years"]["x-paota-error"]
    assert parked["big"]["x-paota-reason"] == "bad-headers"
    assert "x-big" not in parked["big"]  # parked with the reason's headers alone
    assert years.acked and big.acked


async def test_stop_lets_the_moves_under_way_finish_and_starts_no_more() -> None:
    first, later = FakeDelivery("first", _at(0)), FakeDelivery("later", _at(0))
    release = asyncio.Event()
    sent: list[str] = []

    async def slow(exchange: str, key: str, body: bytes, props: Any, what: str) -> None:
        await release.wait()
        sent.append(what.split()[-1])

    gate = asyncio.Event()
    hold = DelayHold(_feed([first], gate), slow, LADDER, failed_queue="f", worker_name="w")
    task = asyncio.create_task(hold.run())
    await waiting.until(lambda: hold.holding == 0 and len(hold._moving) == 1, 30, "a move")
    stopping = asyncio.create_task(hold.stop(30))
    await asyncio.sleep(0)
    hold._take(later)  # arrives after stop: not taken
    release.set()
    await stopping
    assert sent == ["first"] and first.acked and not later.acked and hold.holding == 0
    gate.set()
    await task


async def test_a_message_whose_queue_is_gone_is_parked_in_its_senders_failed_queue() -> None:
    # (another application's worker may hold it: the vhost shares one hold queue)
    now = int(time.time() * 1000)
    theirs = FakeDelivery("theirs", due_headers(None, "gone", now, "their_failed"))
    orphan = FakeDelivery("orphan", due_headers(None, "gone_too", now, "failed_gone"))

    def returned() -> PublishError:
        error = PublishError("returned")
        error.__cause__ = AiormqPublishError.__new__(AiormqPublishError)  # what a return raises
        return error

    publish = Recorder(fail={"gone": returned(), "gone_too": returned(), "failed_gone": returned()})
    await _run([theirs, orphan], publish, lambda h: h.parked == 1 and h.dropped == 1)
    ((_, _, key, what, headers),) = publish.sent
    assert (key, what.split()[-1]) == ("their_failed", "theirs")  # not this worker's "failed"
    assert headers["x-paota-reason"] == "unroutable" and "x-paota-delay-failed" not in headers
    assert theirs.acked and orphan.acked  # the orphan: its application's queues are all gone
