"""Delay ladders on a vhost, for operators: what each holds and when it was last used
(:func:`inspect_ladder`), and deleting an unused one safely (:func:`delete_ladder_queues`).

AMQP cannot list a vhost's queues, so ladders are looked up by name: the names a config implies
(:func:`candidate_ladders`) and any given. A ladder's queues are read with passive declares
(messages ready, consumers); its last use is the record its uses queue keeps (:func:`note_use`,
written by every producer and worker that declares it). Deleting goes one queue at a time with
``if-empty`` (RabbitMQ refuses to delete a queue that has messages), so a message that arrives
meanwhile is never dropped, and a pause between the deletes keeps an at-least-once ladder's
dead-letter workers from ending all at once (rabbitmq-server#16652).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from paota.brokers.amqp.ladder import DEFAULT_HOLD_LADDER, DELAY_MODES, DELAY_QUEUE_TYPES, Ladder
from paota.core.errors import BrokerError

if TYPE_CHECKING:
    from aiormq.abc import AbstractChannel, AbstractConnection

    from paota.brokers.amqp.topology import Topology
    from paota.core.config import Config

__all__ = [
    "LadderInUse",
    "LadderState",
    "candidate_ladders",
    "delete_ladder_queues",
    "inspect_ladder",
    "note_use",
    "use_record",
]

logger = logging.getLogger("paota.brokers.amqp")


def use_record(worker: str, task_queue: str) -> bytes:
    """The body a producer or worker leaves in the uses queue when it declares the ladder: when,
    who (worker name, host, process) and for which task queue (JSON)."""
    import json
    import os
    import socket
    from datetime import UTC, datetime

    return json.dumps(
        {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "worker": worker,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "task_queue": task_queue,
        }
    ).encode()


async def note_use(connection: AbstractConnection, topology: Topology, worker: str) -> None:
    """Leave the ladder's last use in its uses queue (one record, unconfirmed, best effort: a
    uses queue on a node that is down just misses it; nothing fails for it)."""
    from paota.brokers.amqp.calls import call_aiormq, close_quietly

    record = use_record(worker, topology.task_queue)
    try:
        channel = await call_aiormq(connection.channel(publisher_confirms=False), 5.0)
        try:
            await channel.basic_publish(record, exchange="", routing_key=topology.ladder.uses_queue)
        finally:
            await close_quietly(channel)
    except Exception as exc:  # a use record is not worth failing a connection for
        logger.debug("the ladder's use record was not written: %r", exc)


class LadderInUse(BrokerError):
    """A ladder still holds messages or has a worker on its hold queue: not deleted."""


@dataclass
class LadderState:
    """What one ladder holds now: its queues present (of ``total``), the messages ready in them,
    the consumers of its hold queue (the workers that hold its last stretch) and its last use
    (the uses queue's record, None when there is none)."""

    ladder: Ladder
    present: int
    total: int
    waiting: int
    consumers: int
    last_use: dict[str, Any] | None = None
    per_queue: dict[str, int] = field(default_factory=dict)

    @property
    def exists(self) -> bool:
        """Whether any queue of the ladder exists."""
        return self.present > 0

    @property
    def in_use(self) -> bool:
        """Whether deleting it would drop or strand something: messages wait, or a worker
        consumes its hold queue."""
        return self.waiting > 0 or self.consumers > 0

    def as_dict(self) -> dict[str, Any]:
        """The state as JSON-ready values."""
        return {
            "name": self.ladder.name,
            "mode": self.ladder.mode,
            "queue_type": self.ladder.queue_type,
            "queues": self.present,
            "of": self.total,
            "waiting": self.waiting,
            "consumers": self.consumers,
            "last_use": self.last_use,
        }


def candidate_ladders(config: Config, names: list[str] | None = None) -> list[Ladder]:
    """Every ladder (each mode and queue type) of the names ``config`` implies: ``paota.delay``,
    ``amqp.delay_ladder`` and ``amqp.delayed_queue``, then ``names``; each name once."""
    amqp = config.amqp
    wanted = [DEFAULT_HOLD_LADDER, amqp.delay_ladder, amqp.delayed_queue, *(names or [])]
    return [
        Ladder.build(name, mode=mode, queue_type=kind)
        for name in dict.fromkeys(n for n in wanted if n)
        for mode in DELAY_MODES
        for kind in DELAY_QUEUE_TYPES
    ]


async def _passive(channel: AbstractChannel, name: str) -> tuple[AbstractChannel, Any]:
    """``(channel, declare-ok)`` of queue ``name``, or ``(new channel, None)`` when it is missing
    (a missing queue closes the channel)."""
    import aiormq

    try:
        return channel, await channel.queue_declare(name, passive=True)
    except aiormq.ChannelNotFoundEntity:
        return await channel.connection.channel(), None


async def inspect_ladder(connection: AbstractConnection, ladder: Ladder) -> LadderState:
    """The state of ``ladder`` (passive declares of its queues; its last-use record)."""
    state = LadderState(ladder, 0, len(ladder.queue_names), 0, 0)
    channel = await connection.channel()
    try:
        await _inspect(channel, ladder, state)
    finally:
        await _close(channel)
    return state


async def _close(channel: AbstractChannel) -> None:
    if not channel.is_closed:
        await channel.close()


async def _inspect(channel: AbstractChannel, ladder: Ladder, state: LadderState) -> None:
    for name in ladder.queue_names:
        channel, declared = await _passive(channel, name)
        if declared is None:
            continue
        state.present += 1
        if name == ladder.uses_queue:
            state.last_use = await _last_use(channel, name)
            continue
        ready = int(declared.message_count or 0)
        state.per_queue[name] = ready
        state.waiting += ready
        if name == ladder.hold_queue:
            state.consumers = int(declared.consumer_count or 0)


async def _last_use(channel: AbstractChannel, name: str) -> dict[str, Any] | None:
    """The record in the uses queue, left there (read and given back)."""
    message = await channel.basic_get(name, no_ack=False)
    if message.delivery_tag is None or message.body is None:
        return None
    await channel.basic_reject(message.delivery_tag, requeue=True)
    try:
        record = json.loads(message.body)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


async def delete_ladder_queues(
    connection: AbstractConnection, ladder: Ladder, *, force: bool = False, pause_s: float = 0.2
) -> int:
    """Delete ``ladder``'s queues, one at a time ``pause_s`` apart, then its exchanges; the number
    of queues deleted. Missing ones are skipped.

    Unless ``force``: raises :class:`LadderInUse` before deleting anything when messages wait in
    it or a worker consumes its hold queue, and checks each queue again just before its delete
    (classic ones are deleted ``if-empty``; quorum queues do not support that): a queue that has
    received a message meanwhile stops the deletion, with the queues not deleted yet intact. Stop
    the ladder's producers first: a message published into a quorum level between its check and
    its delete is lost. ``force`` deletes what waits too: those delayed messages are lost.
    """
    if not force:
        state = await inspect_ladder(connection, ladder)
        if state.in_use:
            raise LadderInUse(_in_use(state))
    channel = await connection.channel()
    try:
        return await _delete(channel, ladder, force=force, pause_s=pause_s)
    finally:
        await _close(channel)


async def _delete(channel: AbstractChannel, ladder: Ladder, *, force: bool, pause_s: float) -> int:
    import aiormq

    deleted = 0
    # the top of the ladder first: a message moving down meets an existing level
    order = [ladder.uses_queue, *reversed(ladder.levels), *filter(None, [ladder.hold_queue])]
    # classic queues are deleted if-empty; quorum queues do not support it: each is checked empty
    # just before its delete instead (a message published into the ladder in between is lost)
    if_empty = not force and ladder.queue_type == "classic"
    for name in order:
        if deleted:
            await asyncio.sleep(pause_s)
        if not force and name != ladder.uses_queue:
            channel, declared = await _passive(channel, name)
            if declared is None:
                continue
            if declared.message_count or (name == ladder.hold_queue and declared.consumer_count):
                raise LadderInUse(
                    f"ladder {ladder.name!r}: queue {name!r} has messages or a worker again; "
                    f"{deleted} queue(s) deleted, the rest left in place"
                )
        try:
            await channel.queue_delete(name, if_empty=if_empty and name != ladder.uses_queue)
            deleted += 1
        except aiormq.ChannelNotFoundEntity:
            channel = await channel.connection.channel()
        except aiormq.ChannelPreconditionFailed as exc:
            raise LadderInUse(
                f"ladder {ladder.name!r}: queue {name!r} received messages while it was being "
                f"deleted ({exc}); {deleted} queue(s) deleted, the rest left in place"
            ) from exc
    exchanges = list(ladder.levels)
    if ladder.hold_queue or not await _twin_exists(channel.connection, ladder):
        # a "ladder" mode delivery exchange is shared by both queue types of the name
        exchanges.append(ladder.bottom)
    for name in exchanges:
        try:
            await channel.exchange_delete(name)
        except aiormq.ChannelNotFoundEntity:
            channel = await channel.connection.channel()
    return deleted


async def _twin_exists(connection: AbstractConnection, ladder: Ladder) -> bool:
    """Whether the ladder of the other queue type (same name and mode) has queues."""
    other = next(k for k in DELAY_QUEUE_TYPES if k != ladder.queue_type)
    twin = Ladder.build(ladder.name, mode=ladder.mode, queue_type=other)
    probe = await connection.channel()
    try:
        probe, declared = await _passive(probe, twin.levels[0])
        return declared is not None
    finally:
        await _close(probe)


def _in_use(state: LadderState) -> str:
    ladder = state.ladder
    why = []
    if state.waiting:
        busy = ", ".join(f"{q} {n}" for q, n in state.per_queue.items() if n)
        why.append(f"{state.waiting} delayed message(s) wait in it ({busy})")
    if state.consumers:
        why.append(f"{state.consumers} worker(s) consume its hold queue {ladder.hold_queue!r}")
    return (
        f"ladder {ladder.name!r} ({ladder.mode}, {ladder.queue_type}) is in use: "
        + "; ".join(why)
        + ". Deleting it would lose them: wait until it is empty and no worker uses this ladder, "
        "or force it (--force)"
    )
