"""The kernel's worker pool: a client that also consumes queues and runs tasks.

The public :class:`paota.WorkerPool` (:mod:`paota.pool`) is this pool with the built-in
middleware composed around the user's; the kernel knows no feature by name.

For each delivery, in one direction (see "The path of one task" in DESIGN.md):

decode -> registry lookup -> :func:`~paota.core.outcome.admit` (unknown task, ETA, start deadline)
-> middleware ``admit`` hooks -> STARTED in the store (a duplicate of a finished run stops here) ->
middleware ``execute`` hooks around the :class:`~paota.core.runner.Runner` ->
:func:`~paota.core.outcome.decide` -> :meth:`~paota.core.settle.Settler.settle` (publish, record,
``after_outcome`` hooks, ack).

Only :class:`~paota.BrokerError` and :class:`~paota.StoreError` interrupt that path; the delivery
then goes back to the broker unacked, which redelivers it (at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from paota.core.bounds import check_headers, check_size
from paota.core.client import BaseClient
from paota.core.clock import Clock
from paota.core.config import Config
from paota.core.consuming import (
    check_concurrency,
    check_queue,
    delivery_task,
    give_back,
    prefetch_for,
)
from paota.core.context import TaskContext, reset_current, set_current, task_log_extra
from paota.core.errors import BrokerError, DecodeError, PaotaError, StoreError
from paota.core.message import Signature, decode_message
from paota.core.message.binding import go_style_entry
from paota.core.middleware import Middleware, MiddlewareChain
from paota.core.outcome import Duplicate, Outcome, admit, decide, internal_error, unreadable
from paota.core.protocols import (
    Broker,
    Delivery,
    Store,
)
from paota.core.registry import TaskFunc
from paota.core.runner import Runner
from paota.core.services import WorkerServices
from paota.core.settle import Settler, result_lifetimes
from paota.core.state import TaskStatus
from paota.core.tasks import Task

__all__ = ["BaseWorkerPool"]

logger = logging.getLogger(__name__)


#: Bodies over this many bytes are decoded in a thread (a 35 MiB body of 700,000 args takes about
#: 4 s of CPU; one of 256 KiB about 5 ms, less than the thread hop is worth below that).
DECODE_OFF_LOOP_BYTES = 256 * 1024


class BaseWorkerPool(BaseClient):
    """Runs registered tasks from a broker's queues; sends tasks too (it is a client).

    ``concurrency`` is how many tasks of one queue run at once; ``queues`` names the queues to
    consume, each with its own concurrency (``{"paota_tasks": 50, "emails": 5}``; a list of
    names, or None as a concurrency, takes ``concurrency``). Without ``queues`` the pool consumes
    the config's task queue and every queue a registered task names. Its middleware are those
    :meth:`compose` returns (the user's, here; the public pool adds the built-in ones).
    The constructor does no I/O: ``async with pool`` (or ``await pool.connect()``) opens the
    broker and store; ``await pool.start()`` also consumes until :meth:`stop` or SIGINT/SIGTERM.
    """

    def __init__(
        self,
        config: Config | None = None,
        concurrency: int = 10,
        name: str = "",
        *,
        queues: Mapping[str, int | None] | Sequence[str] | None = None,
        broker: Broker | None = None,
        store: Store | None = None,
        clock: Clock | None = None,
        middleware: Sequence[Middleware] = (),
    ) -> None:
        self.concurrency = check_concurrency(concurrency, "concurrency")
        super().__init__(
            config, name=name, broker=broker, store=store, clock=clock, middleware=middleware
        )
        self.queues = queues
        self._stopping: asyncio.Event | None = None
        self._stopped: asyncio.Event | None = None
        self._hurry: asyncio.Event | None = None  # a second signal: stop without the grace
        self._consumers: list[asyncio.Task[None]] = []
        self._inflight: set[asyncio.Task[None]] = set()
        self._runner: Runner | None = None
        self._settler: Settler | None = None
        self._run_chain = MiddlewareChain()

    # registration ----------------------------------------------------------------------------

    def register_tasks(self, tasks: Mapping[str, TaskFunc | Callable[..., Any]]) -> None:
        """Register ``{"Name": fn, ...}`` (Go style); nothing is registered if one entry is bad.

        A function taking one parameter (``fn(sig)``) receives the :class:`~paota.Signature`; a
        typed function is bound to the message's args. Raises :class:`~paota.RegistrationError`.
        """
        from paota.core.errors import RegistrationError

        if not isinstance(tasks, Mapping):
            raise RegistrationError(
                f"register_tasks expects a mapping of name to function, got {type(tasks).__name__}"
            )
        made = []
        for name, func in tasks.items():
            if not isinstance(name, str) or not name:
                raise RegistrationError(f"task name must be a non-empty string, got {name!r}")
            made.append(self._make_task(func, name, go_style=go_style_entry(func)))
        self._registry.add_all(made)

    def register_task(self, name: str, func: TaskFunc | Callable[..., Any]) -> Task[Any, Any]:
        """Register one task under ``name`` (see :meth:`register_tasks`)."""
        return self._add_task(func, name, go_style=go_style_entry(func))

    def is_task_registered(self, name: str) -> bool:
        """Whether a task is registered under ``name`` in this pool."""
        return name in self._registry

    def consumed_queues(self) -> dict[str, int]:
        """The queues this pool consumes, each with its concurrency."""
        queues = self.queues
        if queues is None:
            names = [self.broker.default_queue, *sorted(self._registry.queues())]
            return dict.fromkeys(names, self.concurrency)
        if isinstance(queues, Mapping):
            return {
                check_queue(q): self.concurrency
                if c is None
                else check_concurrency(c, f"queues[{q!r}]")
                for q, c in queues.items()
            }
        if isinstance(queues, str):
            queues = [q.strip() for q in queues.split(",") if q.strip()]
        return {check_queue(q): self.concurrency for q in queues}

    # lifecycle -------------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop consuming (if running) and close the broker and store. Idempotent."""
        await self.stop()
        await super().close()
        if self._runner is not None:
            self._runner.close()
            self._runner = None

    # consuming -------------------------------------------------------------------------------

    async def start(self, *, install_signal_handlers: bool = True) -> None:
        """Consume and run tasks until :meth:`stop` is called or SIGINT/SIGTERM arrives."""
        if self._stopped is not None and not self._stopped.is_set():
            raise PaotaError(f"worker pool {self.name} is already running")
        self._stopping = stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._hurry = asyncio.Event()
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        started = False
        try:
            if install_signal_handlers:
                for signum in (signal.SIGINT, signal.SIGTERM):
                    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                        loop.add_signal_handler(signum, self._on_signal, signum)
                        installed.append(signum)
            await self.connect()
            if stopping.is_set():  # stopped while connecting
                return
            queues = self.consumed_queues()
            self._prepare(queues)
            services = self.services(queues)
            await self._run_chain.startup(services)
            started = True
            if not len(self._registry):
                logger.warning("worker pool %s starts with no task registered", self.name)
            for queue, concurrency in queues.items():
                prefetch = prefetch_for(self.broker, queue, concurrency, self.name)
                consumer = asyncio.create_task(
                    self._consume(queue, asyncio.Semaphore(concurrency), prefetch),
                    name=f"{self.name}-consumer-{queue}",
                )
                consumer.add_done_callback(self._consumer_done)
                self._consumers.append(consumer)
            logger.info(
                "worker pool %s consuming %s (tasks: %s)",
                self.name,
                ", ".join(f"{q} (concurrency {c})" for q, c in queues.items()),
                ", ".join(sorted(self._registry)) or "none",
            )
            await stopping.wait()
            await self._drain()
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
            self._consumers = []
            if started:
                await self._run_chain.shutdown(services)
            self._stopped.set()
            logger.info("worker pool %s stopped", self.name)

    def services(self, queues: Mapping[str, int]) -> WorkerServices:
        """What this pool gives its middleware in ``startup`` and ``shutdown`` (see
        :class:`~paota.core.services.WorkerServices`), consuming ``queues``."""
        runner = self._runner
        assert runner is not None
        return WorkerServices(
            name=self.name,
            config=self.config,
            broker=self.broker,
            store=self.store,
            clock=self.clock,
            registry=self._registry,
            runner=runner,
            consumed=dict(queues),
            client=self,
            running=lambda: len(self._inflight),
            stop=self.stop,
            _pool=self,
        )

    def compose(self) -> list[Middleware]:
        """The middleware a run goes through, in order, when the pool starts: the user's here;
        the public :class:`paota.WorkerPool` puts the built-in ones around them."""
        return list(self.middleware.items)

    def _prepare(self, queues: Mapping[str, int]) -> None:
        self._run_chain = MiddlewareChain(self.compose())
        if self._runner is None:
            self._runner = Runner(sum(queues.values()))
        self._settler = Settler(
            broker=self.broker,
            store=self.store,
            clock=self.clock,
            worker=self.name,
            middleware=self._run_chain,
            stopping=self._is_stopping,
            result_ttl=result_lifetimes(self._registry),
        )

    def _is_stopping(self) -> bool:
        return self._stopping is not None and self._stopping.is_set()

    def _on_signal(self, signum: signal.Signals) -> None:
        if self._stopping is None:
            return
        running = len(self._inflight)
        if not self._stopping.is_set():
            logger.info(
                "worker pool %s: %s received, stopping: no new tasks; %s (%s again to stop at "
                "once)",
                self.name,
                signum.name,
                f"waiting for {running} running task(s), at most {self.config.shutdown_grace_s:g} s"
                if running
                else "none running",
                "Ctrl-C" if signum is signal.SIGINT else signum.name,
            )
            self._stopping.set()
        elif self._hurry is not None and not self._hurry.is_set():
            logger.warning(
                "worker pool %s: %s received again: stopping now, %d running task(s) go back to "
                "the broker",
                self.name,
                signum.name,
                running,
            )
            self._hurry.set()

    async def stop(self) -> None:
        """Stop gracefully: take no new deliveries, let running tasks finish within
        ``Config.shutdown_grace_s``, return the rest to the broker unacked. Idempotent."""
        if self._stopping is None or self._stopped is None:
            return
        self._stopping.set()
        await self._stopped.wait()

    async def _drain(self) -> None:
        for consumer in self._consumers:
            consumer.cancel()
        for consumer in self._consumers:
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
        if self._inflight:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.config.shutdown_grace_s
            hurry = self._hurry
            hurried = asyncio.ensure_future(hurry.wait()) if hurry is not None else None
            try:
                while self._inflight and not (hurry is not None and hurry.is_set()):
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    waiting: set[asyncio.Future[Any]] = set(self._inflight)
                    if hurried is not None:
                        waiting.add(hurried)
                    await asyncio.wait(
                        waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                    )
            finally:
                if hurried is not None:
                    hurried.cancel()
            pending = set(self._inflight)
            if pending:
                if hurry is None or not hurry.is_set():
                    logger.warning(
                        "worker pool %s: %d task(s) still running after the %.1fs grace period; "
                        "returning them to the broker",
                        self.name,
                        len(pending),
                        self.config.shutdown_grace_s,
                    )
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending, timeout=5.0)

    async def _consume(self, queue: str, slots: asyncio.Semaphore, prefetch: int) -> None:
        backoff_s = 0.5
        while not self._is_stopping():
            deliveries = self.broker.consume(queue, prefetch=prefetch)
            try:
                async for delivery in deliveries:
                    backoff_s = 0.5
                    try:
                        await slots.acquire()
                    except asyncio.CancelledError:
                        await give_back(delivery)
                        raise
                    if self._is_stopping():
                        # Asked to stop while waiting for the slot (a signal, or a middleware
                        # such as a supervised child's recycling): no new run starts.
                        slots.release()
                        await give_back(delivery)
                        return
                    task = asyncio.create_task(self._run_delivery(delivery, slots))
                    self._inflight.add(task)
                    task.add_done_callback(self._inflight.discard)
                return
            except BrokerError as exc:
                logger.error(
                    "worker pool %s: consuming %s failed (%s); retrying in %.1fs",
                    self.name,
                    queue,
                    exc,
                    backoff_s,
                )
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 30.0)
            finally:
                with contextlib.suppress(Exception):
                    await deliveries.aclose()  # type: ignore[attr-defined]

    def _consumer_done(self, task: asyncio.Task[None]) -> None:
        stopping = self._stopping
        if stopping is None or stopping.is_set():
            return
        # A consumer ended without being asked to (the broker was closed, or a bug): stop the
        # pool rather than sit idle looking alive.
        if task.cancelled():
            logger.error("worker pool %s: consumer cancelled; stopping", self.name)
        elif task.exception() is not None:
            logger.error(
                "worker pool %s: consumer crashed; stopping", self.name, exc_info=task.exception()
            )
        else:
            logger.warning("worker pool %s: the broker closed the consumer; stopping", self.name)
        stopping.set()

    async def _run_delivery(self, delivery: Delivery, slots: asyncio.Semaphore) -> None:
        try:
            await self._handle(delivery)
        except asyncio.CancelledError:
            await give_back(delivery)
            raise
        except (BrokerError, StoreError) as exc:
            # The outcome could not be made durable: leave the message to the broker, which
            # redelivers it (at-least-once).
            task_id, name = delivery_task(delivery)
            logger.error(
                "worker pool %s: task %s (%s): %s; returning the message to the broker",
                self.name,
                task_id,
                name,
                exc,
                extra=task_log_extra(task_id, name),
            )
            await give_back(delivery)
        except Exception as exc:
            # A bug of paota's (or of a seam's), not of the message: park it with the traceback
            # rather than send it round again, so it can be looked at and replayed.
            task_id, name = delivery_task(delivery)
            logger.exception(
                "worker pool %s: handling the delivery of task %s (%s) failed; parking it",
                self.name,
                task_id,
                name,
                extra=task_log_extra(task_id, name),
            )
            await self._park_internal_error(delivery, exc)
        finally:
            slots.release()

    async def _park_internal_error(self, delivery: Delivery, exc: Exception) -> None:
        settler = self._settler
        assert settler is not None
        outcome = internal_error(exc)
        placeholder = Signature("", uuid=delivery.message_id or "")
        ctx = TaskContext(
            placeholder, queue=delivery.queue, headers=delivery.headers, worker=self.name
        )
        try:
            await settler.settle(delivery, None, outcome, ctx)
        except Exception as park_exc:
            logger.error(
                "worker pool %s: parking it failed too (%s); returning it to the broker",
                self.name,
                park_exc,
            )
            await give_back(delivery)

    async def _handle(self, delivery: Delivery) -> None:
        settler = self._settler
        assert settler is not None
        try:
            check_size(delivery.body, self.config.max_message_bytes)
            check_headers(delivery.headers)
            if len(delivery.body) > DECODE_OFF_LOOP_BYTES:
                # seconds of work for the largest bodies: in a thread, so that the event loop
                # (heartbeats, other deliveries) gets the interpreter every switch interval
                sig = await asyncio.to_thread(decode_message, delivery.body, delivery.headers)
            else:
                sig = decode_message(delivery.body, delivery.headers)
        except DecodeError as exc:
            placeholder = Signature("", uuid=delivery.message_id or "")
            ctx = TaskContext(
                placeholder, queue=delivery.queue, headers=delivery.headers, worker=self.name
            )
            await settler.settle(delivery, None, unreadable(exc), ctx)
            return
        ctx = TaskContext(sig, queue=delivery.queue, headers=delivery.headers, worker=self.name)
        token = set_current(ctx)
        try:
            await settler.settle(delivery, sig, await self._outcome(delivery, sig, ctx), ctx)
        finally:
            reset_current(token)

    async def _outcome(self, delivery: Delivery, sig: Signature, ctx: TaskContext) -> Outcome:
        registry = self._registry
        task = registry.get(sig.name)
        outcome = admit(
            sig,
            now=self.clock.now(),
            registered=task is not None,
            returns=ctx.info.returns,
            max_returns=self.config.unknown_task_max_returns,
            known=", ".join(sorted(registry)),
        )
        if outcome is not None:
            return outcome
        assert task is not None
        chain = self._run_chain
        if chain._admit:
            outcome = await chain.admit(ctx)
            if outcome is not None:
                return outcome
        settler = self._settler
        assert settler is not None
        ctx.started_at = self.clock.now()
        if self.store is not None:
            started = settler.state(sig, TaskStatus.STARTED, ctx, started_at=ctx.started_at)
            if not await settler.record(started):
                # The store has this run finished, or a later attempt: a redelivered duplicate
                # (or it was cancelled: the settle step tells them apart, reading the record).
                return Duplicate()
            ctx._record = started  # progress reports rewrite it (paota.middleware.progress)
        runner = self._runner
        assert runner is not None
        limit_s = (
            task.time_limit_s
            if task.time_limit_s is not None
            else self.config.max_task_execution_duration_s
        )

        async def run() -> Any:
            args, kwargs = task.bind(sig)
            return await runner.run(task, args, kwargs, limit_s, ctx)

        try:
            result = await (chain.execute(ctx, run) if chain._execute else run())
        except Exception as exc:
            return decide(sig, exc, retry_backoff_cap_s=self.config.retry_backoff_cap_s)
        except asyncio.CancelledError as exc:
            current = asyncio.current_task()
            if (current is not None and current.cancelling()) or self._is_stopping():
                raise  # the pool is stopping: the message goes back to the broker
            # The task's own code let a CancelledError out: a failure like any other.
            return decide(sig, exc, retry_backoff_cap_s=self.config.retry_backoff_cap_s)
        return decide(sig, None, result, retry_backoff_cap_s=self.config.retry_backoff_cap_s)
