"""The three contracts the worker pool depends on: :class:`Broker`, :class:`Delivery`, :class:`Store`.

The pool, the CLI and the tests know these Protocols only; every AMQP or MongoDB detail stays inside
its own package. A broker encodes and decodes the wire format with :mod:`paota.core.signature`
(``encode_message`` / ``decode_message``), so the memory broker exercises the same codec as AMQP.

Lifecycle, for every implementation: the constructor does no I/O; ``connect()`` (or ``async with``)
opens; ``close()`` is idempotent; using a closed or unopened object raises the library's error.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from paota.core.signature import Signature
from paota.core.state import TaskState, TaskStatus

__all__ = [
    "MAX_DELAY_S",
    "PARKING_HEADERS",
    "REPLAYS_HEADER",
    "RETURNS_HEADER",
    "header_int",
    "replay_headers",
    "Broker",
    "Delivery",
    "ParkInfo",
    "ParkQueue",
    "ParkReason",
    "Store",
]


MAX_DELAY_S = 7 * 24 * 3600
"""The longest ``delay_s`` a broker must accept (7 days); the pool reaches later ETAs by deferring
again when a message arrives before its ETA."""


RETURNS_HEADER = "x-paota-returns"
"""How many times workers that did not know the task returned it (see the pool's unknown-task rule)."""
REPLAYS_HEADER = "x-paota-replays"
"""How many times the message was moved back from a parking queue (``requeue_parked``)."""
PARKING_HEADERS = (
    "x-paota-reason",
    "x-paota-error",
    "x-paota-traceback",
    "x-paota-worker",
    "x-paota-parked-at",
)
"""The headers a parked copy carries to say why it was parked."""


def header_int(value: Any) -> int:
    """An integer header as AMQP libraries hand it over (int of any width, or digits), else 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, (bytes, str)):
        try:
            return int(value)
        except ValueError:
            return 0
    return 0


def replay_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """The headers of a parked message moved back for replay: the parking and return headers
    dropped, :data:`REPLAYS_HEADER` one higher (so the store records the replay as a new run)."""
    clean = {k: v for k, v in headers.items() if k not in PARKING_HEADERS and k != RETURNS_HEADER}
    clean[REPLAYS_HEADER] = header_int(headers.get(REPLAYS_HEADER)) + 1
    return clean


class ParkQueue(str, enum.Enum):
    """The named queues where messages that cannot run end up."""

    FAILED = "failed"
    TIMEOUT = "timeout"


class ParkReason(str, enum.Enum):
    """Why a message was parked; sent as the ``x-paota-reason`` header."""

    UNDECODABLE = "undecodable"
    UNKNOWN_TASK = "unknown-task"
    RETRIES_EXHAUSTED = "retries-exhausted"
    START_DEADLINE = "start-deadline"
    EXEC_TIMEOUT = "exec-timeout"


@dataclass(frozen=True)
class ParkInfo:
    """Why and when a message was parked, and by which worker.

    Brokers attach it to the parked copy as headers: ``x-paota-reason``, ``x-paota-error``
    (``"Type: message"``), ``x-paota-traceback`` (truncated), ``x-paota-worker``,
    ``x-paota-parked-at`` (RFC 3339).
    """

    reason: ParkReason
    error_type: str
    error_message: str
    worker: str
    parked_at: datetime
    traceback: str = ""

    def headers(self) -> dict[str, Any]:
        """The ``x-paota-*`` headers for the parked copy."""
        return {
            "x-paota-reason": self.reason.value,
            "x-paota-error": f"{self.error_type}: {self.error_message}",
            "x-paota-traceback": self.traceback[-4000:],
            "x-paota-worker": self.worker,
            "x-paota-parked-at": self.parked_at.isoformat(),
        }


@runtime_checkable
class Delivery(Protocol):
    """One message handed to a consumer. Exactly one of ``ack`` / ``reject`` must be called.

    ``ack`` and ``reject`` on a delivery whose connection is gone do not raise: the broker will
    redeliver the message (at-least-once), which is the correct outcome.
    """

    @property
    def body(self) -> bytes:
        """The message body, unchanged."""
        ...

    @property
    def headers(self) -> Mapping[str, Any]:
        """The message headers (AMQP table), possibly empty."""
        ...

    @property
    def redelivered(self) -> bool:
        """True when the broker delivered this message before (to this or another consumer)."""
        ...

    async def ack(self) -> None:
        """Acknowledge: the broker forgets the message."""
        ...

    async def reject(self, *, requeue: bool) -> None:
        """Reject: back to its queue (``requeue=True``, redelivered later) or dropped / dead-lettered."""
        ...


@runtime_checkable
class Broker(Protocol):
    """Holds task messages between producers and worker pools."""

    async def connect(self) -> None:
        """Open connections and declare the topology. Idempotent."""
        ...

    async def close(self) -> None:
        """Close everything. Idempotent; unacked deliveries go back to their queue."""
        ...

    async def __aenter__(self) -> Broker: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def publish(
        self,
        sig: Signature,
        *,
        delay_s: float = 0.0,
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        """Publish ``sig`` to the task queue, durably (returns once the broker has it).

        ``delay_s > 0`` (up to :data:`MAX_DELAY_S`) makes it deliverable only after that many
        seconds; delays keep their own order (a 1 s delay published after a 60 s one is
        delivered first). ``headers`` are extra message headers carried alongside the encoded
        signature.
        """
        ...

    def consume(self, *, prefetch: int) -> AsyncIterator[Delivery]:
        """Deliveries from the task queue, at most ``prefetch`` unacked at a time.

        Closing the iterator (``aclose()``) cancels the consumer; deliveries it received and did not
        yield go back to the queue.
        """
        ...

    async def park(self, delivery: Delivery, queue: ParkQueue, info: ParkInfo) -> None:
        """Copy ``delivery`` (original body and headers, plus ``info.headers()``) to a parking queue.

        Returns once the copy is durable; the caller then acks the delivery.
        """
        ...

    async def requeue_parked(
        self, queue: ParkQueue, *, reason: str | None = None, limit: int | None = None
    ) -> int:
        """Move parked messages (optionally only those with ``x-paota-reason == reason``) back to the
        task queue with their retries reset and headers from :func:`replay_headers`; returns how
        many moved."""
        ...


@runtime_checkable
class Store(Protocol):
    """Records every task's state and result."""

    async def connect(self) -> None:
        """Open the store (and create indexes). Idempotent. Raises ``StoreError`` when unreachable."""
        ...

    async def close(self) -> None:
        """Close the store. Idempotent."""
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
    ) -> list[TaskState]:
        """Records filtered by status and/or name, newest (``created_at``) first, at most ``limit``."""
        ...

    async def delete(self, task_id: str) -> bool:
        """Delete a record; returns whether it existed."""
        ...
