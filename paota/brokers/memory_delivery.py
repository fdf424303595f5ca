"""The queues, consumers and deliveries of the in-process broker (:mod:`paota.brokers.memory`).

A :class:`MemoryQueue` holds ready messages by priority, then publish order; a
:class:`MemoryConsumer` holds the deliveries it was handed and not yet settled; a
:class:`MemoryDelivery` is one of them, and settling it (ack, reject with or without requeue)
goes through its consumer, which returns a requeued message to its place in the queue.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from paota.core.errors import BrokerError

__all__ = ["MemoryConsumer", "MemoryDelivery", "MemoryMessage", "MemoryQueue"]


@dataclass
class MemoryMessage:
    """A message held by the memory broker: body, headers, properties and AMQP-like flags."""

    body: bytes
    headers: dict[str, Any]
    priority: int = 0
    redelivered: bool = False
    seq: int = 0
    content_type: str | None = None
    message_id: str | None = None


@dataclass(eq=False)
class MemoryQueue:
    """One named queue: ready messages by (priority desc, publish order), and its consumers."""

    name: str
    ready: list[tuple[int, int, MemoryMessage]] = field(default_factory=list)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def push(self, message: MemoryMessage) -> None:
        """Make ``message`` ready and wake the queue's consumers."""
        heapq.heappush(self.ready, (-message.priority, message.seq, message))
        self.wakeup.set()


@dataclass(eq=False)
class MemoryConsumer:
    """One consumer of a :class:`MemoryQueue` and the deliveries it holds, not yet settled.

    ``release(consumer)`` runs when a cancelled consumer has settled its last delivery (the broker
    forgets it); a requeue returns the message to the queue only while ``requeues()`` is true
    (the broker is open).
    """

    queue: MemoryQueue
    release: Callable[[MemoryConsumer], None]
    requeues: Callable[[], bool]
    cancelled: bool = False
    deliveries: set[MemoryDelivery] = field(default_factory=set)

    def settle(self, delivery: MemoryDelivery, *, requeue: bool) -> None:
        """Forget ``delivery``; with ``requeue`` its message returns to the queue, redelivered."""
        if delivery in self.deliveries:
            self.deliveries.discard(delivery)
            if self.cancelled and not self.deliveries:
                self.release(self)
            if requeue and self.requeues():
                delivery.message.redelivered = True
                self.queue.push(delivery.message)
            else:
                self.queue.wakeup.set()

    def return_unacked(self) -> None:
        """Return every unsettled delivery's message to the queue, redelivered (the broker
        closes); settling one of them afterwards fails."""
        for delivery in list(self.deliveries):
            delivery._done = True
            delivery.message.redelivered = True
            self.queue.push(delivery.message)
        self.deliveries.clear()


class MemoryDelivery:
    """A message handed to a consumer of the memory broker."""

    __slots__ = ("_consumer", "_done", "message")

    def __init__(self, consumer: MemoryConsumer, message: MemoryMessage) -> None:
        self._consumer = consumer
        self._done = False
        self.message = message

    @property
    def body(self) -> bytes:
        """The message body, unchanged."""
        return self.message.body

    @property
    def headers(self) -> Mapping[str, Any]:
        """The message headers."""
        return self.message.headers

    @property
    def content_type(self) -> str | None:
        """The content type it was published with."""
        return self.message.content_type

    @property
    def priority(self) -> int | None:
        """The priority it was published with."""
        return self.message.priority

    @property
    def message_id(self) -> str | None:
        """The message id it was published with."""
        return self.message.message_id

    @property
    def queue(self) -> str:
        """The queue it was consumed from."""
        return self._consumer.queue.name

    @property
    def redelivered(self) -> bool:
        """True when this message was delivered before."""
        return self.message.redelivered

    async def ack(self) -> None:
        """Acknowledge; the broker forgets the message."""
        self._settle(requeue=False)

    async def reject(self, *, requeue: bool) -> None:
        """Reject; with ``requeue`` the message returns to its place in the queue, marked redelivered."""
        self._settle(requeue=requeue)

    def _settle(self, *, requeue: bool) -> None:
        if self._done:
            raise BrokerError(
                "delivery already acknowledged or rejected (AMQP would close the channel: "
                "PRECONDITION_FAILED unknown delivery tag)"
            )
        self._done = True
        self._consumer.settle(self, requeue=requeue)
