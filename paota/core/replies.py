"""Results over the broker: a sender awaits its task's outcome with nothing but the broker.

A store records every task's state for anyone to read; without one, the sender of a task can
still have its result, as Celery's ``rpc://`` backend gives it: the send asks for a reply
(``reply=True``), the message carries the sender's reply address in ``x-paota-reply-to``, and the
worker that settles the task for good (succeeded, failed, timed out, cancelled) sends the outcome
there. The broker provides the path (:class:`ReplyPath`): on RabbitMQ, an exclusive, auto-deleted
queue per sending process (it goes away with the process's connection); on the memory broker, an
in-process queue.

What it does not do: a reply is for the process that sent, while it is connected. A sender that
reconnects (or restarts) before the reply arrives loses it, and ``result()`` says so instead of
waiting out its timeout; a worker that cannot deliver the reply (the sender is gone) drops it with
a DEBUG line. Go workers do not send replies (they ignore the header): wait for a Go worker's
results through a store. Retries are not replies: only the final outcome is sent.

The reply is JSON: ``{"UUID", "Status", "Result", "Error": {"Type", "Message"} | null}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable

from paota.core.context import TaskContext
from paota.core.errors import BrokerError, ReplyLostError, ResultTimeoutError, TaskFailedError
from paota.core.middleware import Middleware
from paota.core.outcome import Cancelled, Outcome, Park, Succeeded
from paota.core.protocols import header_text
from paota.core.state import TaskStatus

__all__ = [
    "REPLY_HEADER",
    "ReplyInbox",
    "ReplyLostError",
    "ReplyMiddleware",
    "ReplyPath",
    "decode_reply",
    "encode_reply",
    "has_reply_path",
]

logger = logging.getLogger("paota.replies")

REPLY_HEADER = "x-paota-reply-to"
"""The header that asks the worker to send the task's final outcome to an address."""

#: Replies kept for tasks nobody awaits yet (``result()`` called after the reply came).
KEPT_REPLIES = 10_000


@runtime_checkable
class ReplyPath(Protocol):
    """A broker that carries a task's outcome back to its sender (see the module docs)."""

    async def open_replies(self) -> tuple[str, AsyncIterator[bytes]]:
        """A reply address of this process and the replies sent to it; the iterator ends when
        the address is lost (the connection that held it, or the broker, closed)."""
        ...

    async def send_reply(self, address: str, body: bytes) -> None:
        """Send ``body`` to ``address``; raises :class:`~paota.BrokerError` when it cannot."""
        ...


def has_reply_path(broker: object) -> bool:
    """Whether ``broker`` can carry replies."""
    return isinstance(broker, ReplyPath)


def encode_reply(
    task_id: str, status: TaskStatus, result: Any, error: tuple[str, str] | None
) -> bytes:
    """The reply body for a task that ended with ``status``."""
    fields: dict[str, Any] = {
        "UUID": task_id,
        "Status": status.value,
        "Result": result,
        "Error": {"Type": error[0], "Message": error[1]} if error else None,
    }
    try:
        return json.dumps(fields).encode()
    except (TypeError, ValueError):  # a result JSON cannot hold: its repr, as the logs show it
        fields["Result"] = repr(result)
        return json.dumps(fields, default=repr).encode()


def decode_reply(body: bytes) -> tuple[str, TaskStatus, Any, tuple[str, str] | None]:
    """``(task_id, status, result, (error type, message) or None)``; ValueError when ``body`` is
    not a reply."""
    fields = json.loads(body)
    if not isinstance(fields, dict) or not isinstance(fields.get("UUID"), str):
        raise ValueError("not a paota reply")
    status = TaskStatus(fields.get("Status"))
    error = fields.get("Error")
    found = None
    if isinstance(error, dict):
        found = (str(error.get("Type", "")), str(error.get("Message", "")))
    return fields["UUID"], status, fields.get("Result"), found


class ReplyMiddleware(Middleware):
    """Worker side: after a delivery's final outcome, send it to the address the message asked
    for. A reply that cannot be sent is dropped (DEBUG): the task's outcome does not depend on
    it."""

    def __init__(self, broker: ReplyPath) -> None:
        self._broker = broker

    async def after_outcome(self, task: TaskContext, outcome: Outcome) -> None:
        address = header_text(task.headers.get(REPLY_HEADER))
        if not address:
            return
        if isinstance(outcome, Succeeded):
            body = encode_reply(task.id, TaskStatus.SUCCEEDED, outcome.result, None)
        elif isinstance(outcome, Park):
            error = (outcome.error.type, outcome.error.message)
            body = encode_reply(task.id, outcome.status, None, error)
        elif isinstance(outcome, Cancelled):
            body = encode_reply(task.id, TaskStatus.CANCELLED, None, ("Cancelled", outcome.reason))
        else:  # a retry, a deferral, a return: not the end yet
            return
        try:
            await self._broker.send_reply(address, body)
        except BrokerError as exc:
            logger.debug("task %s: reply to %s not sent (%s)", task.id, address, exc)


class ReplyInbox:
    """Sender side: this process's reply address, opened on first use, and the replies that
    came to it, by task id."""

    def __init__(self, broker: ReplyPath) -> None:
        self._broker = broker
        self._address = ""
        self._opening = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[str, asyncio.Future[tuple[TaskStatus, Any, Any]]] = {}
        self._came: OrderedDict[str, tuple[TaskStatus, Any, Any]] = OrderedDict()
        self._asked: dict[str, str] = {}  # task id -> the address its reply goes to

    async def address(self) -> str:
        """The reply address (opened when there is none)."""
        if self._address:
            return self._address
        async with self._opening:
            if not self._address:
                address, replies = await self._broker.open_replies()
                self._address = address
                self._reader = asyncio.get_running_loop().create_task(
                    self._read(address, replies), name="paota-replies"
                )
        return self._address

    def expect(self, task_id: str, address: str) -> None:
        """A task was sent asking for a reply to ``address``."""
        self._asked[task_id] = address

    def expects(self, task_id: str) -> bool:
        """Whether ``task_id`` was sent from here asking for a reply."""
        return task_id in self._asked or task_id in self._came

    async def _read(self, address: str, replies: AsyncIterator[bytes]) -> None:
        try:
            async for body in replies:
                try:
                    task_id, status, result, error = decode_reply(body)
                except ValueError:
                    logger.warning("a message on the reply address %s is not a reply", address)
                    continue
                self._asked.pop(task_id, None)
                outcome = (status, result, error)
                future = self._waiting.pop(task_id, None)
                if future is not None and not future.done():
                    future.set_result(outcome)
                else:
                    self._came[task_id] = outcome
                    while len(self._came) > KEPT_REPLIES:
                        self._came.popitem(last=False)
        finally:
            if self._address == address:
                self._address = ""
            lost = [t for t, a in self._asked.items() if a == address]
            for task_id in lost:
                self._asked.pop(task_id, None)
                future = self._waiting.pop(task_id, None)
                if future is not None and not future.done():
                    future.set_exception(
                        ReplyLostError(
                            f"task {task_id}: the reply address {address} was lost (the "
                            "connection that held it closed) before the reply came; the result "
                            "is only in a store, if the workers write one"
                        )
                    )

    async def wait(self, task_id: str, timeout: float | None) -> Any:
        """The result of ``task_id``; raises :class:`~paota.TaskFailedError` when it failed,
        :class:`~paota.ResultTimeoutError` after ``timeout`` s, :class:`ReplyLostError`."""
        outcome = self._came.pop(task_id, None)
        if outcome is None:
            future = self._waiting.get(task_id)
            if future is None:
                future = asyncio.get_running_loop().create_future()
                self._waiting[task_id] = future
            try:
                outcome = await asyncio.wait_for(asyncio.shield(future), timeout)
            except TimeoutError:
                raise ResultTimeoutError(
                    f"task {task_id} has no result after {timeout}s (no reply yet)", task_id
                ) from None
            self._waiting.pop(task_id, None)
        status, result, error = outcome
        if status is TaskStatus.SUCCEEDED:
            return result
        error_type, message = error or ("Unknown", "no error in the reply")
        raise TaskFailedError(task_id, status.value, error_type, message, "")

    async def close(self) -> None:
        """Stop reading replies."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
