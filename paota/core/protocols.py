"""The contracts the worker depends on: :class:`Broker`, :class:`Delivery`, :class:`Store`.

The pool, the CLI and the tests know these Protocols only; every AMQP or MongoDB detail stays inside
its own package. Brokers move bytes: a broker publishes an :class:`OutgoingMessage` (body, headers,
content type, message id, priority, target queue, delay) and yields :class:`Delivery` objects from
the queues it is asked to consume. It never sees a :class:`~paota.Signature`: the wire codec lives
in the core (:mod:`paota.core.message`), so every broker carries exactly the same bytes.

Lifecycle, for every implementation: the constructor does no I/O; ``connect()`` (or ``async with``)
opens; ``close()`` is idempotent and final: a closed object cannot be opened again, and using a
closed or unopened object raises the library's error (:class:`~paota.BrokerError` /
:class:`~paota.StoreError`).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from paota.core.headers import (
    ORIGIN_HEADER,
    PARENT_HEADER,
    PARKING_HEADERS,
    REPLAYS_HEADER,
    RETURNS_HEADER,
    WORKFLOW_HEADER,
    ParkInfo,
    ParkQueue,
    ParkReason,
    header_int,
    header_text,
)
from paota.core.state import TaskState, TaskStatus

if TYPE_CHECKING:
    from typing_extensions import TypeIs

__all__ = [
    "MAX_DELAY_S",
    "ORIGIN_HEADER",
    "PARENT_HEADER",
    "PARKING_HEADERS",
    "REPLAYS_HEADER",
    "RETURNS_HEADER",
    "WORKFLOW_HEADER",
    "Broker",
    "ControlChannel",
    "Coordination",
    "Delivery",
    "ListCursor",
    "Message",
    "OutgoingMessage",
    "ParkInfo",
    "ParkQueue",
    "ParkReason",
    "QueueDepths",
    "QueueStat",
    "QueueStats",
    "Rewrite",
    "Store",
    "check_seconds",
    "has_control_channel",
    "has_coordination",
    "has_queue_depths",
    "has_queue_stats",
    "header_int",
    "header_text",
]


MAX_DELAY_S = 7 * 24 * 3600
"""The longest ``delay_s`` a broker must accept (7 days); the pool reaches later ETAs by deferring
again when a message arrives before its ETA."""


class OutgoingMessage:
    """One message for a broker to publish: bytes and where they go.

    ``queue`` is the target queue's name (a task queue, or a parking queue of
    :meth:`Broker.parking_queue`). ``routing_key``, when not empty, is an explicit AMQP routing key
    on the task exchange (Go's ``Signature.RoutingKey``); otherwise the broker routes to ``queue``.
    ``delay_s`` > 0 makes the message deliverable only after that many seconds (at most
    :data:`MAX_DELAY_S`). Construction validates the delay and the priority (ValueError / TypeError
    naming the field); instances are not to be changed afterwards.
    """

    __slots__ = (
        "body",
        "content_type",
        "delay_s",
        "headers",
        "message_id",
        "priority",
        "queue",
        "routing_key",
    )

    def __init__(
        self,
        body: bytes,
        queue: str,
        *,
        headers: Mapping[str, Any] | None = None,
        content_type: str | None = None,
        message_id: str = "",
        priority: int = 0,
        delay_s: float = 0.0,
        routing_key: str = "",
    ) -> None:
        if type(delay_s) is not float or not 0.0 <= delay_s <= MAX_DELAY_S:
            delay_s = _check_delay(delay_s)
        if type(priority) is not int or not 0 <= priority <= 255:
            if isinstance(priority, bool) or not isinstance(priority, int):
                raise TypeError(f"priority must be an int, not {type(priority).__name__}")
            raise ValueError(f"priority must be in 0..255, got {priority}")
        self.body = body
        self.queue = queue
        self.headers: Mapping[str, Any] = headers if headers is not None else {}
        self.content_type = content_type
        self.message_id = message_id
        self.priority = priority
        self.delay_s = delay_s
        self.routing_key = routing_key

    def __repr__(self) -> str:
        return (
            f"<OutgoingMessage id={self.message_id!r} queue={self.queue!r} "
            f"delay_s={self.delay_s:g} {len(self.body)} bytes>"
        )


def check_seconds(value: Any, name: str = "delay_s") -> float:
    """``value`` as float seconds: TypeError unless a number, ValueError unless finite and >= 0
    (both naming ``name``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _check_delay(delay_s: Any) -> float:
    delay_s = check_seconds(delay_s)
    if delay_s > MAX_DELAY_S:
        raise ValueError(
            f"delay_s={delay_s:g} is longer than the longest supported delay, {MAX_DELAY_S} s "
            "(7 days); the pool defers later ETAs in steps"
        )
    return float(delay_s)


@runtime_checkable
class Message(Protocol):
    """A message as it sits in a queue: body, headers and the AMQP properties paota uses."""

    @property
    def body(self) -> bytes:
        """The message body, unchanged."""
        ...

    @property
    def headers(self) -> Mapping[str, Any]:
        """The message headers (AMQP table), possibly empty; broker bookkeeping removed."""
        ...

    @property
    def content_type(self) -> str | None:
        """The content type it was published with."""
        ...

    @property
    def priority(self) -> int | None:
        """The priority it was published with."""
        ...

    @property
    def message_id(self) -> str | None:
        """The message id it was published with (paota: the task id)."""
        ...


@runtime_checkable
class Delivery(Message, Protocol):
    """One message handed to a consumer. Exactly one of ``ack`` / ``reject`` must be called.

    ``ack`` and ``reject`` on a delivery whose connection is gone do not raise: the broker will
    redeliver the message (at-least-once), which is the correct outcome. Settling a delivery twice
    raises :class:`~paota.BrokerError` and sends nothing.
    """

    @property
    def queue(self) -> str:
        """The queue it was consumed from."""
        ...

    @property
    def redelivered(self) -> bool:
        """True when the broker delivered this message before (to this or another consumer)."""
        ...

    async def ack(self) -> None:
        """Acknowledge: the broker forgets the message."""
        ...

    async def reject(self, *, requeue: bool) -> None:
        """Reject: back to its queue (``requeue=True``, redelivered later) or dropped."""
        ...


@dataclass(frozen=True)
class ListCursor:
    """Where a page of :meth:`Store.list` ended: the last record's ``created_at`` and task id.

    :meth:`Store.list` orders records newest ``created_at`` first, ties by task id (descending),
    records without a ``created_at`` last; ``list(cursor=ListCursor.of(last))`` continues right
    after ``last``, so paging sees every record once, however many are added meanwhile (new ones
    are newer: they come before the first page).
    """

    created_at: datetime | None
    task_id: str

    @classmethod
    def of(cls, state: TaskState) -> ListCursor:
        """The cursor right after ``state`` in list order."""
        return cls(state.created_at, state.task_id)


Rewrite = Callable[[Message], "OutgoingMessage | None"]
"""What :meth:`Broker.replay_parked` asks of the core for each parked message: the message to
publish in its place, or None to leave it parked."""


@runtime_checkable
class Broker(Protocol):
    """Holds task messages between producers and workers, in named queues."""

    @property
    def default_queue(self) -> str:
        """The task queue used when a task names none (``Config.task_queue_name``)."""
        ...

    def parking_queue(self, queue: ParkQueue) -> str:
        """The name of the failed or timeout parking queue."""
        ...

    async def connect(self) -> None:
        """Open connections and declare the topology. Idempotent."""
        ...

    async def close(self) -> None:
        """Close everything. Idempotent; unacked deliveries go back to their queue."""
        ...

    async def __aenter__(self) -> Broker: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def publish(self, message: OutgoingMessage) -> None:
        """Publish ``message`` durably: returns once the broker has it (confirmed).

        Delays keep their own order (a 1 s delay published after a 60 s one is delivered first) and
        always end in ``message.queue``. Headers are sent exactly as given. A queue that does not
        exist yet is created (with the task queue's arguments).
        """
        ...

    def consume(self, queue: str, *, prefetch: int) -> AsyncIterator[Delivery]:
        """Deliveries from ``queue``, at most ``prefetch`` unacked at a time.

        The iterator survives reconnections and ends when the broker is closed. Closing it
        (``aclose()``) cancels the consumer; deliveries it received and did not yield go back to
        the queue.
        """
        ...

    async def replay_parked(
        self, queue: ParkQueue, rewrite: Rewrite, *, limit: int | None = None
    ) -> int:
        """Move parked messages back: for each message of the parking queue, publish what
        ``rewrite`` returns (confirmed), then remove the parked original; a message for which
        ``rewrite`` returns None stays parked. At most ``limit`` moves; returns how many moved."""
        ...


@runtime_checkable
class Store(Protocol):
    """Records every task's state and result."""

    async def connect(self) -> None:
        """Open the store (and create indexes). Idempotent. Raises ``StoreError`` when unreachable
        or closed."""
        ...

    async def close(self) -> None:
        """Close the store. Idempotent and final."""
        ...

    async def __aenter__(self) -> Store: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def record(self, state: TaskState) -> bool:
        """Write ``state`` atomically if :func:`paota.core.state.may_replace` allows it.

        Returns whether it was applied (False: the stored record is final or further along).
        Raises ``StoreError`` when the write could not be made.
        """
        ...

    async def get(self, task_id: str) -> TaskState | None:
        """The record of ``task_id``, or None."""
        ...

    async def list(
        self,
        *,
        status: TaskStatus | None = None,
        name: str | None = None,
        limit: int = 100,
        queue: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        cursor: ListCursor | None = None,
    ) -> list[TaskState]:
        """Records filtered by status, name and/or queue, newest (``created_at``) first (ties by
        task id, descending; records without ``created_at`` last), at most ``limit``.

        ``created_after`` / ``created_before`` keep records created at or after / before those
        times (records without ``created_at`` are left out when either is given); ``cursor``
        continues after the record it was made of (:meth:`ListCursor.of`).
        """
        ...

    async def delete(self, task_id: str) -> bool:
        """Delete a record; returns whether it existed."""
        ...


@runtime_checkable
class Coordination(Protocol):
    """Atomic operations a store offers to features that span workers (optional capability).

    Schedules claim each slot once (:meth:`claim`), workflow barriers count finished members
    (:meth:`add_member`), limits hold slots and reserve start times (:meth:`acquire_slot`,
    :meth:`reserve_start`), and workers, schedules and webhook events keep small documents
    (:meth:`put_doc`). Every operation is atomic on its own; ``ttl_s`` makes an entry expire (an
    expired entry is as good as absent). The memory store implements them for one process, the
    MongoDB store for every process sharing the database. Raise :class:`~paota.StoreError` when
    the store cannot answer.
    """

    async def claim(self, key: str, owner: str, *, ttl_s: float | None = None) -> bool:
        """Create ``key`` for ``owner`` unless it exists (and has not expired): True when this
        call created it. Claiming a key one already owns again returns False."""
        ...

    async def get_claim(self, key: str) -> str | None:
        """The owner of ``key``, or None (absent or expired)."""
        ...

    async def release_claim(self, key: str, owner: str) -> bool:
        """Delete ``key`` if ``owner`` holds it; returns whether it did."""
        ...

    async def add_member(
        self, key: str, member: str, *, ttl_s: float | None = None
    ) -> tuple[int, bool]:
        """Add ``member`` to the set ``key``: ``(size after, whether it was new)``."""
        ...

    async def members(self, key: str) -> list[str]:
        """The members of the set ``key``, in the order they were added."""
        ...

    async def acquire_slot(self, key: str, holder: str, limit: int, *, ttl_s: float) -> bool:
        """Take one of ``limit`` slots of ``key`` for ``holder`` for ``ttl_s`` seconds (or renew
        the one ``holder`` has): False when all are held. Expired slots are free."""
        ...

    async def release_slot(self, key: str, holder: str) -> None:
        """Give back ``holder``'s slot of ``key`` (if it has one)."""
        ...

    async def reserve_start(self, key: str, interval_s: float, *, now: datetime) -> float:
        """Reserve the next start of ``key``, starts being at least ``interval_s`` apart:
        the seconds from ``now`` until the reserved start (0: start now)."""
        ...

    async def put_doc(
        self, kind: str, key: str, doc: Mapping[str, Any], *, ttl_s: float | None = None
    ) -> None:
        """Store ``doc`` (JSON-like values) as ``(kind, key)``, replacing what was there."""
        ...

    async def get_doc(self, kind: str, key: str) -> dict[str, Any] | None:
        """The document ``(kind, key)``, or None."""
        ...

    async def list_docs(self, kind: str, *, limit: int = 1000) -> list[dict[str, Any]]:
        """Documents of ``kind`` (each with its key under ``"_key"``), oldest first."""
        ...

    async def delete_doc(self, kind: str, key: str) -> bool:
        """Delete ``(kind, key)``; returns whether it existed."""
        ...


@runtime_checkable
class QueueDepths(Protocol):
    """How many messages wait in a broker's queues (optional capability; metrics read it).

    Both built-in brokers have it. A broker without it is simply not asked: queue depths are then
    missing from the metrics, nothing else changes.
    """

    async def queue_depths(self, queues: Iterable[str] | None = None) -> dict[str, int]:
        """``{queue: messages ready}`` for the task queue, both parking queues and ``queues``;
        a queue that does not exist counts 0. Messages delivered and not yet acknowledged, and
        delayed messages not yet due, are not ready."""
        ...


@dataclass(frozen=True)
class QueueStat:
    """One queue as the broker sees it: messages ready, and consumers subscribed."""

    ready: int
    consumers: int


@runtime_checkable
class QueueStats(Protocol):
    """Messages ready and consumers per queue (optional broker capability; the management API
    reads it). Both built-in brokers have it."""

    async def queue_stats(self, queues: Iterable[str]) -> dict[str, QueueStat | None]:
        """``{queue: QueueStat}`` for each of ``queues``; None for a queue that does not exist.
        Raises :class:`~paota.BrokerError` when the broker cannot answer."""
        ...


@runtime_checkable
class ControlChannel(Protocol):
    """Broadcasts small control messages (a cancellation, say) to every listening process on the
    broker (optional broker capability; the memory broker reaches its own process only).

    Control messages are not durable: one broadcast while a listener is not subscribed (a
    reconnection) is not delivered to it. A listener therefore gets ``None`` right after each
    subscription, the first one included: messages may have been missed up to that point, and it
    should check the durable state it cares about (the store) then. The core encodes what the
    bytes mean; the broker moves them.
    """

    async def broadcast_control(self, body: bytes) -> None:
        """Send ``body`` to every listener subscribed now; returns once the broker has it.
        Raises :class:`~paota.BrokerError` when it cannot."""
        ...

    def listen_control(self) -> AsyncIterator[bytes | None]:
        """The control messages broadcast from now on, with ``None`` after each (re)subscription.

        The iterator survives reconnections and ends when the broker is closed; closing it
        (``aclose()``) unsubscribes.
        """
        ...


# --- capability checks -----------------------------------------------------------------------------
#
# isinstance() against a runtime-checkable Protocol looks attributes up statically since Python
# 3.12 (inspect.getattr_static), so a proxy that forwards through __getattr__ (a wrapper adding
# latency or logging around a store, say) stops counting as having the capability on 3.12 and
# 3.13, and a feature silently turns off. These checks look each method up with getattr, the same
# on every Python.


def _methods(protocol: type) -> tuple[str, ...]:
    return tuple(
        name for name, value in vars(protocol).items() if callable(value) and name[0] != "_"
    )


_COORDINATION = _methods(Coordination)
_QUEUE_DEPTHS = _methods(QueueDepths)
_QUEUE_STATS = _methods(QueueStats)
_CONTROL_CHANNEL = _methods(ControlChannel)


def _has(obj: object, names: tuple[str, ...]) -> bool:
    return obj is not None and all(callable(getattr(obj, name, None)) for name in names)


def has_coordination(obj: object) -> TypeIs[Coordination]:
    """Whether ``obj`` (a store) offers :class:`Coordination`."""
    return _has(obj, _COORDINATION)


def has_queue_depths(obj: object) -> TypeIs[QueueDepths]:
    """Whether ``obj`` (a broker) offers :class:`QueueDepths`."""
    return _has(obj, _QUEUE_DEPTHS)


def has_queue_stats(obj: object) -> TypeIs[QueueStats]:
    """Whether ``obj`` (a broker) offers :class:`QueueStats`."""
    return _has(obj, _QUEUE_STATS)


def has_control_channel(obj: object) -> TypeIs[ControlChannel]:
    """Whether ``obj`` (a broker) offers :class:`ControlChannel`."""
    return _has(obj, _CONTROL_CHANNEL)
