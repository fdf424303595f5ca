"""Cancelling running tasks: the worker's side of :meth:`paota.Client.cancel`.

``cancel`` records CANCELLED in the store first; that alone stops a queued or delayed task (the
settle step acknowledges it on arrival, see :mod:`paota.core.settle`). For a task that is running,
``cancel`` then broadcasts a request on the broker's control channel
(:class:`~paota.core.protocols.ControlChannel`). :class:`CancellationMiddleware` listens there
while the pool runs and hands each request to the pool's runner (:meth:`paota.core.runner.Runner.
cancel`), which cancels an async task's code and sets the flag a sync task polls.

Control messages are not durable: one broadcast while the listener was not subscribed (RabbitMQ
away, a reconnection) does not reach it. After every subscription the listener therefore reads the
store's record of each run in progress here and cancels those recorded CANCELLED. It only has
``startup`` and ``shutdown`` hooks: a pool pays nothing per task for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from paota.core.control import decode_control
from paota.core.errors import StoreError
from paota.core.middleware import Middleware
from paota.core.protocols import ControlChannel, Store, has_control_channel
from paota.core.runner import Runner
from paota.core.services import WorkerServices
from paota.core.state import TaskStatus

__all__ = ["CancellationMiddleware"]

logger = logging.getLogger("paota.middleware.cancel")


class CancellationMiddleware(Middleware):
    """Listens to the control channel while the pool consumes; cancels the runs requests name."""

    def __init__(self) -> None:
        self._listener: asyncio.Task[None] | None = None
        self._runner: Runner | None = None

    async def startup(self, services: WorkerServices) -> None:
        """Start listening (the pool's broker has a control channel)."""
        broker = services.broker
        runner = services.runner
        if not has_control_channel(broker) or not isinstance(runner, Runner):
            return
        self._runner = runner
        runner.loop = asyncio.get_running_loop()  # its async runs can be interrupted now
        self._listener = asyncio.create_task(
            self._listen(broker, runner, services.store, services.name),
            name=f"{services.name}-control",
        )

    async def shutdown(self, services: WorkerServices) -> None:
        """Stop listening."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.loop = None
        listener, self._listener = self._listener, None
        if listener is None:
            return
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener

    async def _listen(
        self, broker: ControlChannel, runner: Runner, store: Store | None, name: str
    ) -> None:
        messages = broker.listen_control()
        try:
            async for body in messages:
                if body is None:
                    await self._sweep(runner, store)
                    continue
                request = decode_control(body)
                if request is None:
                    logger.debug("worker pool %s: control message not understood: %r", name, body)
                    continue
                count = runner.cancel(request.task_id, request.reason, replays=request.replays)
                if count:
                    logger.info(
                        "task %s: cancelling %d run(s) in worker pool %s (%s)",
                        request.task_id,
                        count,
                        name,
                        request.reason,
                        extra={"task_id": request.task_id, "task_name": ""},
                    )
        except asyncio.CancelledError:
            raise
        except Exception:
            # Without the listener, running tasks are not interrupted; queued ones still are.
            logger.exception("worker pool %s: the control channel listener failed", name)
        finally:
            aclose = getattr(messages, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    async def _sweep(self, runner: Runner, store: Store | None) -> None:
        """Cancel the runs in progress whose record says CANCELLED (requests may have been
        broadcast while the listener was not subscribed)."""
        if store is None:
            return
        for task_id in runner.running_ids():
            try:
                state = await store.get(task_id)
            except StoreError as exc:
                logger.warning("cannot check running tasks for cancellations: %s", exc)
                return
            if state is not None and state.status is TaskStatus.CANCELLED:
                reason = state.error.message if state.error is not None else "cancelled"
                runner.cancel(task_id, reason, replays=state.replays)
