"""Sending many tasks at once (:meth:`~paota.Client.send_many`): the items checked and given
their ids first, then sent through a sliding window of confirmed sends.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from paota.core.message import Signature
from paota.core.steps import TaskSignature
from paota.core.tasks import TaskHandle

if TYPE_CHECKING:
    from paota.core.client import BaseClient

__all__ = ["Job", "batch_jobs", "new_task_id", "send_batch"]

Job = tuple[Signature, str | None, float | None, Mapping[str, Any] | None]
"""One send of a batch: the signature, its queue, delay and headers (None: the defaults)."""


def batch_jobs(signatures: Iterable[Signature | TaskSignature[Any]]) -> list[Job]:
    """The sends of ``signatures`` (raises TypeError naming the index of an item that cannot be
    sent on its own)."""

    jobs: list[Job] = []
    for index, item in enumerate(signatures):
        if isinstance(item, Signature):
            jobs.append((item, None, None, None))
            continue
        if not isinstance(item, TaskSignature):
            raise TypeError(
                f"send_many: item #{index} is a {type(item).__name__}, expected a "
                "paota.Signature or a task's signature (task.signature(...))"
            )
        if item.takes_previous:
            raise TypeError(
                f"send_many: item #{index} {item!r} leaves its first parameter for a previous "
                "step's result (a workflow step): give every argument"
            )
        options = item.options
        jobs.append((item.to_signature(), options.queue, options.delay_s, options.headers or None))
    return jobs


def new_task_id() -> str:
    """``task_`` and a random (version 4) UUID, as ``f"task_{uuid4()}"`` but twice as fast."""
    h = os.urandom(16).hex()
    return f"task_{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def _identified(sig: Signature, now: datetime) -> Signature:
    """``sig`` with a task id and a creation time (``now``) where it has none."""
    if sig.uuid and sig.created_at is not None:
        return sig
    return sig.replace(
        uuid=sig.uuid or new_task_id(),
        created_at=now if sig.created_at is None else sig.created_at,
    )


async def send_batch(
    client: BaseClient,
    jobs: Sequence[tuple[Signature, str | None, float | None, Mapping[str, Any] | None]],
    window: int,
) -> list[TaskHandle[Any]]:
    """Send ``jobs`` (signature, queue, delay_s, headers), ``window`` at a time; see
    :meth:`~paota.Client.send_many`."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window={window!r} is not valid: expected an integer >= 1")
    if not jobs:
        return []
    # Ids first: a failure can name every task, and sending a failed one again keeps its id.
    # The creation time too, in the same copy (send_task would make a second one for it).
    now = client.clock.now()
    jobs = [
        (_identified(sig, now), queue, delay_s, headers) for sig, queue, delay_s, headers in jobs
    ]
    if not client._connected:
        await client.connect()
    results: list[TaskHandle[Any] | Exception | None] = [None] * len(jobs)
    # Each lane takes the next job when its send is confirmed: a sliding window, in order.
    upcoming = iter(range(len(jobs)))

    async def lane() -> None:
        for index in upcoming:
            sig, queue, delay_s, headers = jobs[index]
            try:
                results[index] = await client.send_task(
                    sig, queue=queue, delay_s=delay_s, headers=headers
                )
            except Exception as exc:
                results[index] = exc

    await asyncio.gather(*(lane() for _ in range(min(window, len(jobs)))))
    failed = [
        (index, jobs[index][0], result)
        for index, result in enumerate(results)
        if isinstance(result, Exception)
    ]
    if failed:
        from paota.core.errors import SendManyError

        handles = [r if isinstance(r, TaskHandle) else None for r in results]
        raise SendManyError(handles, failed) from failed[0][2]
    return cast("list[TaskHandle[Any]]", results)
