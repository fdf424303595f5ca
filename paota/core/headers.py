"""The headers paota writes on a message, and the vocabulary of parking: the ``x-paota-*`` header
names, :class:`ParkQueue`, :class:`ParkReason` and :class:`ParkInfo` (the headers of a parked
copy), and how a header's value is read whatever an AMQP library hands over
(:func:`header_int`, :func:`header_text`). Re-exported by :mod:`paota.core.protocols`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from paota.core.bounds import MAX_ERROR_HEADER, MAX_TRACEBACK_HEADER, bounded_text

__all__ = [
    "ORIGIN_HEADER",
    "PARENT_HEADER",
    "PARKING_HEADERS",
    "ParkInfo",
    "ParkQueue",
    "ParkReason",
    "REPLAYS_HEADER",
    "RETURNS_HEADER",
    "WORKFLOW_HEADER",
    "header_int",
    "header_text",
]


RETURNS_HEADER = "x-paota-returns"
"""How many times workers that did not know the task returned it (see the unknown-task rule)."""
REPLAYS_HEADER = "x-paota-replays"
"""How many times the message was moved back from a parking queue (a replay starts a new run)."""
ORIGIN_HEADER = "x-paota-origin-queue"
"""The queue a parked message was consumed from; a replay returns it there."""
WORKFLOW_HEADER = "x-paota-workflow-id"
"""The workflow a task is a step of (see :mod:`paota.workflows`); the store records it as the
task's ``workflow_id``."""
PARENT_HEADER = "x-paota-parent-id"
"""The workflow node (chain or group) a step belongs to; the store records it as ``parent_id``."""
PARKING_HEADERS = (
    "x-paota-reason",
    "x-paota-error",
    "x-paota-traceback",
    "x-paota-worker",
    "x-paota-parked-at",
    ORIGIN_HEADER,
)
"""The headers a parked copy carries to say why it was parked and where from."""


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


def header_text(value: Any) -> str:
    """A text header as AMQP libraries hand it over (str, or UTF-8 bytes), else ``""``."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return ""


class ParkQueue(str, enum.Enum):
    """The named queues where messages that cannot run end up."""

    FAILED = "failed"
    TIMEOUT = "timeout"


class ParkReason(str, enum.Enum):
    """Why a message was parked; sent as the ``x-paota-reason`` header."""

    UNDECODABLE = "undecodable"
    UNKNOWN_TASK = "unknown-task"
    BAD_ARGUMENTS = "bad-arguments"
    RETRIES_EXHAUSTED = "retries-exhausted"
    START_DEADLINE = "start-deadline"
    EXEC_TIMEOUT = "exec-timeout"
    INTERNAL_ERROR = "internal-error"
    TOO_LARGE = "too-large"
    """The body is over ``Config.max_message_bytes``; it was not decoded."""
    BAD_HEADERS = "bad-headers"
    """An ``x-paota-*`` header is of the wrong type or out of range (:mod:`paota.core.bounds`)."""
    UNROUTABLE = "unroutable"
    """A delayed message was due and no queue of its target's name existed to take it."""
    STORE_REJECTED = "store-rejected"
    """The store refused the task's record for good (too large, not encodable): retrying cannot
    help. A smaller FAILED record is written where the store takes one."""


@dataclass(frozen=True)
class ParkInfo:
    """Why and when a message was parked, by which worker, and which queue it came from.

    The core adds it to the parked copy as headers: ``x-paota-reason``, ``x-paota-error``
    (``"Type: message"``, at most :data:`~paota.core.bounds.MAX_ERROR_HEADER` characters),
    ``x-paota-traceback`` (its last :data:`~paota.core.bounds.MAX_TRACEBACK_HEADER`),
    ``x-paota-worker``, ``x-paota-parked-at`` (RFC 3339) and ``x-paota-origin-queue``. Cut text
    says so in a marker; the store, if there is one, keeps the whole error.
    """

    reason: ParkReason
    error_type: str
    error_message: str
    worker: str
    parked_at: datetime
    traceback: str = ""
    origin_queue: str = ""

    def headers(self) -> dict[str, Any]:
        """The ``x-paota-*`` headers for the parked copy."""
        headers = {
            "x-paota-reason": self.reason.value,
            "x-paota-error": bounded_text(
                f"{self.error_type}: {self.error_message}", MAX_ERROR_HEADER
            ),
            "x-paota-traceback": bounded_text(self.traceback, MAX_TRACEBACK_HEADER, keep="end"),
            "x-paota-worker": bounded_text(self.worker, 200),
            "x-paota-parked-at": self.parked_at.isoformat(),
        }
        if self.origin_queue:
            headers[ORIGIN_HEADER] = self.origin_queue
        return headers
