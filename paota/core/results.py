"""Reading a task's end and cancelling a task, for :class:`~paota.core.client.BaseClient`:
:func:`wait_result` (its reply, else the store, polled with backoff) and :func:`cancel_task`
(recorded in the store first, then broadcast on the control channel).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from paota.core.errors import BrokerError, ConfigError, ResultTimeoutError, TaskFailedError
from paota.core.protocols import has_control_channel
from paota.core.replies import ReplyInbox, ReplyLostError
from paota.core.state import ErrorInfo, TaskStatus, task_state

if TYPE_CHECKING:
    from paota.core.client import BaseClient

__all__ = ["cancel_task", "wait_result"]


async def wait_result(
    client: BaseClient, task_id: str, timeout: float | None, inbox: ReplyInbox | None
) -> Any:
    """The body of :meth:`BaseClient.result <paota.Client.result>` (see there); ``inbox`` holds
    the replies to the client's sends with ``reply=True``."""
    if inbox is not None and inbox.expects(task_id):
        try:
            return await inbox.wait(task_id, timeout)
        except ReplyLostError:
            if client.store is None:
                raise
    if client.store is None:
        raise ConfigError(
            f"the result of task {task_id} needs a store the workers write "
            "(PAOTA_STORE=mongodb), or a send from this client with reply=True "
            "(task.with_options(reply=True).send(...))"
        )
    store = client.require_store()
    await client.connect()
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    delay_s = 0.002
    while True:
        state = await store.get(task_id)
        if state is not None and state.status.is_final:
            if state.status is TaskStatus.SUCCEEDED:
                return state.result
            error = state.error or ErrorInfo("Unknown", "no error recorded")
            raise TaskFailedError(
                task_id, state.status.value, error.type, error.message, error.traceback
            )
        if deadline is not None and loop.time() >= deadline:
            status = state.status.value if state is not None else "unknown to the store"
            raise ResultTimeoutError(
                f"task {task_id} has no result after {timeout}s (status: {status})", task_id
            )
        wait_s = delay_s if deadline is None else min(delay_s, deadline - loop.time())
        await asyncio.sleep(max(0.0, wait_s))
        delay_s = min(delay_s * 1.5, 0.5)


async def cancel_task(client: BaseClient, task_id: str, reason: str | None) -> bool:
    """The body of :meth:`BaseClient.cancel <paota.Client.cancel>` (see there)."""
    from paota.core.control import encode_cancel

    if not isinstance(task_id, str) or not task_id:
        raise ValueError(f"task_id must be a non-empty string, got {task_id!r}")
    if reason is None:
        reason = f"cancelled by {client.name}"
    elif not isinstance(reason, str):
        raise TypeError(f"reason must be a str, not {type(reason).__name__}")
    store = client.store
    if store is None:
        raise ConfigError(
            "cancelling a task needs a store, to record the cancellation durably: set "
            "Config(store='memory' | 'mongodb') (PAOTA_STORE) or pass store=..."
        )
    await client.connect()
    while True:
        current = await store.get(task_id)
        if current is not None and current.status.is_final:
            return False
        now = client.clock.now()
        error = ErrorInfo("Cancelled", reason)
        if current is None:
            state = task_state(
                task_id,
                "",
                TaskStatus.CANCELLED,
                args=[],
                attempts=0,
                replays=0,
                worker="",
                created_at=None,
                updated_at=now,
                error=error,
                finished_at=now,
            )
        else:
            registered = client.registered_task(current.name)
            ttl_s = None if registered is None else registered.result_ttl_s
            # The same run (replays) and attempt: may_replace accepts a final state there.
            state = current.replace(
                status=TaskStatus.CANCELLED,
                result=None,
                error=error,
                finished_at=now,
                updated_at=now,
                expires_at=None if ttl_s is None else now + timedelta(seconds=ttl_s),
            )
        if await store.record(state):
            break
        # Refused: the record moved on meanwhile (a retry, or it finished): look again.
    broker = client.broker
    if has_control_channel(broker):
        try:
            await broker.broadcast_control(encode_cancel(task_id, state.replays, reason))
        except BrokerError as exc:
            raise BrokerError(
                f"task {task_id} is recorded as CANCELLED, but telling running workers "
                f"failed: {exc} (a running task runs to its end and is then recorded as "
                "cancelled; cancel again to retry)"
            ) from exc
    return True
