"""The worker pool: registers tasks, sends them, and runs them from any :class:`Broker`.

Outcomes, the same on every broker (see "Delivery semantics" in DESIGN.md); a delivery is acked only
once its outcome is durable (the retry or parked copy published, the final state recorded):

- success: the store records SUCCEEDED with the result, then ack;
- exception: while ``retries_done < retry_count``, republish with ``retries_done + 1`` after a
  Fibonacci backoff (1, 1, 2, 3, 5, 8 ... s, capped by ``Config.retry_backoff_cap_s``), then ack;
  once exhausted, park in the failed queue (reason ``retries-exhausted``), then ack;
- start deadline (``task_timeout > 0`` and the task waited longer than that since it was due):
  park in the timeout queue (``start-deadline``) without running it;
- execution longer than ``Config.max_task_execution_duration_s``: an async task is cancelled, a
  sync one is abandoned (a thread cannot be killed: it runs on, but its result is ignored); the
  attempt counts as a failure and, when no retry is left, is parked in the timeout queue
  (``exec-timeout``);
- unknown task: with ``ignore_when_task_not_registered``, ack and drop with a WARNING; otherwise
  republish it (header ``x-paota-returns``) for a worker that knows it, and after
  ``Config.unknown_task_max_returns`` returns park it in the failed queue (``unknown-task``);
- undecodable body: park in the failed queue (``undecodable``); the pool keeps running;
- ``eta`` in the future: republished with the remaining delay, never run early.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import signal
import socket
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar, overload

from paota.core.clock import Clock, SystemClock
from paota.core.config import Config
from paota.core.errors import (
    BrokerError,
    ConfigError,
    DecodeError,
    PaotaError,
    ResultTimeoutError,
    StoreError,
    TaskFailedError,
    TaskTimeoutError,
)
from paota.core.factory import make_broker, make_store
from paota.core.protocols import (
    MAX_DELAY_S,
    REPLAYS_HEADER,
    RETURNS_HEADER,
    Broker,
    Delivery,
    ParkInfo,
    ParkQueue,
    ParkReason,
    Store,
    header_int,
)
from paota.core.registry import RegisteredTask, TaskFunc, TaskRegistry
from paota.core.signature import Signature, decode_message
from paota.core.state import ErrorInfo, TaskState, TaskStatus
from paota.core.threads import DaemonThreads

__all__ = ["PoolStats", "TaskHandle", "WorkerPool", "fibonacci_backoff_s"]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=TaskFunc)

_TRACEBACK_LIMIT = 4000


def fibonacci_backoff_s(attempt: int, cap_s: float) -> float:
    """The retry delay before retry number ``attempt`` (1-based): 1, 1, 2, 3, 5, 8 ... capped."""
    a, b = 1, 1
    for _ in range(max(0, attempt - 1)):
        a, b = b, a + b
        if a >= cap_s:
            return cap_s
    return float(min(a, cap_s))


@dataclass
class PoolStats:
    """Counters of what this pool did since it was created: deliveries received; tasks that
    succeeded, were retried, failed for good or timed out; unknown tasks returned for another
    worker or dropped; deliveries deferred to their ETA; duplicates of finished runs skipped."""

    received: int = 0
    succeeded: int = 0
    retried: int = 0
    failed: int = 0
    timed_out: int = 0
    returned: int = 0
    dropped: int = 0
    deferred: int = 0
    duplicates: int = 0


@dataclass(frozen=True)
class TaskHandle:
    """What ``send_task`` returns: the task's id and signature, and a way to its state and result."""

    id: str
    signature: Signature
    _pool: WorkerPool

    async def result(self, timeout: float | None = 30.0) -> Any:
        """The task's result; raises :class:`TaskFailedError` or :class:`ResultTimeoutError`."""
        return await self._pool.result(self.id, timeout=timeout)

    async def state(self) -> TaskState | None:
        """The task's current record in the store (None when the store has none yet)."""
        return await self._pool._require_store().get(self.id)


class WorkerPool:
    """Runs registered tasks from a broker, at most ``concurrency`` at once.

    The constructor does no I/O: ``async with pool`` (or ``await pool.connect()``) opens the broker
    and store; ``await pool.start()`` also consumes until :meth:`stop` or SIGINT/SIGTERM. The broker
    and store come from ``config`` unless passed explicitly.
    """

    def __init__(
        self,
        config: Config | None = None,
        concurrency: int = 10,
        name: str = "",
        *,
        broker: Broker | None = None,
        store: Store | None = None,
        clock: Clock | None = None,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError(f"concurrency={concurrency!r} is not valid: expected an integer >= 1")
        self.config = config or Config()
        self.concurrency = concurrency
        self.name = name or f"paota@{socket.gethostname()}:{os.getpid()}"
        self.clock: Clock = clock or getattr(broker, "clock", None) or SystemClock()
        self._broker = broker
        self._store = store
        self._store_given = store is not None
        self._registry = TaskRegistry()
        self.stats = PoolStats()
        self._connected = False
        self._stopping: asyncio.Event | None = None
        self._stopped: asyncio.Event | None = None
        self._consumer: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._threads: DaemonThreads | None = None
        self._slots: asyncio.Semaphore | None = None

    # registration ----------------------------------------------------------------------------

    def register_tasks(self, tasks: Mapping[str, TaskFunc]) -> None:
        """Register ``{"Name": fn, ...}``; raises :class:`RegistrationError` on a bad entry."""
        self._registry.register_many(tasks)

    def register_task(self, name: str, func: TaskFunc) -> None:
        """Register one task under ``name``."""
        self._registry.register(name, func)

    @overload
    def task(self, func: F) -> F: ...

    @overload
    def task(self, *, name: str | None = None) -> Callable[[F], F]: ...

    def task(self, func: Any = None, *, name: str | None = None) -> Any:
        """Decorator registering a task; the name defaults to the function's ``__name__``.

        Use it bare (``@pool.task``) or with a name (``@pool.task(name="Print")``).
        """

        def register(fn: TaskFunc) -> TaskFunc:
            self._registry.register(name or str(getattr(fn, "__name__", "")), fn)
            return fn

        return register(func) if func is not None else register

    def is_task_registered(self, name: str) -> bool:
        """Whether a task is registered under ``name`` in this pool."""
        return name in self._registry

    # lifecycle -------------------------------------------------------------------------------

    @property
    def broker(self) -> Broker:
        """The broker (created from the config on first use)."""
        if self._broker is None:
            self._broker = make_broker(self.config, worker_name=self.name, clock=self.clock)
        return self._broker

    @property
    def store(self) -> Store | None:
        """The store, or None when none is configured."""
        if self._store is None and not self._store_given:
            self._store = make_store(self.config)
            self._store_given = True
        return self._store

    async def connect(self) -> None:
        """Connect the broker and the store. Idempotent."""
        if self._connected:
            return
        await self.broker.connect()
        if self.store is not None:
            try:
                await self.store.connect()
            except BaseException:
                await self.broker.close()
                raise
        self._connected = True

    async def close(self) -> None:
        """Stop consuming (if running) and close the broker and store. Idempotent."""
        await self.stop()
        if self._broker is not None:
            await self._broker.close()
        if self._store is not None:
            await self._store.close()
        if self._threads is not None:
            self._threads.close()
            self._threads = None
        self._connected = False

    async def __aenter__(self) -> WorkerPool:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # producing -------------------------------------------------------------------------------

    async def send_task(self, sig: Signature) -> TaskHandle:
        """Publish ``sig``; fills ``uuid`` (``task_<uuid4>``) and ``created_at`` when empty.

        Returns once the broker has the message. With a store, a PENDING record is written first.
        A future ``eta`` is honoured by a broker-side delay.
        """
        if not self._connected:
            await self.connect()
        now = self.clock.now()
        changes: dict[str, Any] = {}
        if not sig.uuid:
            changes["uuid"] = _task_id()
        if sig.created_at is None:
            changes["created_at"] = now
        if changes:
            sig = sig.replace(**changes)
        if self._store is not None:
            await self._store.record(self._state(sig, TaskStatus.PENDING))
        delay_s = _until(sig.eta, now) if sig.eta is not None else 0.0
        await self.broker.publish(sig, delay_s=delay_s)
        return TaskHandle(sig.uuid, sig, self)

    def _require_store(self) -> Store:
        if self.store is None:
            raise ConfigError(
                "results need a store: set Config(store='memory' | 'mongodb') "
                "(PAOTA_STORE) or pass WorkerPool(store=...)"
            )
        return self.store

    async def result(self, task_id: str, timeout: float | None = 30.0) -> Any:
        """Wait for ``task_id`` to finish and return its result.

        Polls the store with backoff. Raises :class:`TaskFailedError` when the task ended FAILED or
        TIMED_OUT, :class:`ResultTimeoutError` when it has not finished within ``timeout`` seconds.
        """
        store = self._require_store()
        await self.connect()
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

    # consuming -------------------------------------------------------------------------------

    async def start(self, *, install_signal_handlers: bool = True) -> None:
        """Consume and run tasks until :meth:`stop` is called or SIGINT/SIGTERM arrives."""
        if self._stopped is not None and not self._stopped.is_set():
            raise PaotaError(f"worker pool {self.name} is already running")
        self._stopping = stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        try:
            if install_signal_handlers:
                for signum in (signal.SIGINT, signal.SIGTERM):
                    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                        loop.add_signal_handler(signum, self._on_signal, signum)
                        installed.append(signum)
            await self.connect()
            if stopping.is_set():  # stopped while connecting
                return
            if not len(self._registry):
                logger.warning("worker pool %s starts with no task registered", self.name)
            self._slots = asyncio.Semaphore(self.concurrency)
            prefetch = self.config.amqp.prefetch_count
            if prefetch < self.concurrency:
                logger.warning(
                    "worker pool %s: prefetch %d < concurrency %d: at most %d tasks run at once",
                    self.name,
                    prefetch,
                    self.concurrency,
                    prefetch,
                )
            logger.info(
                "worker pool %s consuming (concurrency %d, prefetch %d, tasks: %s)",
                self.name,
                self.concurrency,
                prefetch,
                ", ".join(sorted(self._registry)) or "none",
            )
            self._consumer = asyncio.create_task(
                self._consume(prefetch), name=f"{self.name}-consumer"
            )
            self._consumer.add_done_callback(self._consumer_done)
            await stopping.wait()
            await self._drain()
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
            self._consumer = None
            self._stopped.set()
            logger.info("worker pool %s stopped", self.name)

    def _on_signal(self, signum: signal.Signals) -> None:
        logger.info("worker pool %s: %s received, stopping", self.name, signum.name)
        if self._stopping is not None:
            self._stopping.set()

    async def stop(self) -> None:
        """Stop gracefully: take no new deliveries, let running tasks finish within
        ``Config.shutdown_grace_s``, return the rest to the broker unacked. Idempotent."""
        if self._stopping is None or self._stopped is None:
            return
        self._stopping.set()
        await self._stopped.wait()

    async def _drain(self) -> None:
        consumer = self._consumer
        if consumer is not None:
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
        if self._inflight:
            _, pending = await asyncio.wait(
                set(self._inflight), timeout=self.config.shutdown_grace_s
            )
            if pending:
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

    async def _consume(self, prefetch: int) -> None:
        slots = self._slots
        assert slots is not None
        backoff_s = 0.5
        while self._stopping is not None and not self._stopping.is_set():
            deliveries = self.broker.consume(prefetch=prefetch)
            try:
                async for delivery in deliveries:
                    backoff_s = 0.5
                    try:
                        await slots.acquire()
                    except asyncio.CancelledError:
                        await _quietly(delivery.reject(requeue=True))
                        raise
                    self.stats.received += 1
                    task = asyncio.create_task(self._run_delivery(delivery))
                    self._inflight.add(task)
                    task.add_done_callback(self._task_done)
                return
            except BrokerError as exc:
                logger.error(
                    "worker pool %s: consuming failed (%s); retrying in %.1fs",
                    self.name,
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
        # The consumer ended without being asked to (the broker was closed, or a bug): stop the
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

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if self._slots is not None:
            self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "worker pool %s: delivery handler crashed", self.name, exc_info=task.exception()
            )

    async def _run_delivery(self, delivery: Delivery) -> None:
        try:
            await self._handle(delivery)
        except asyncio.CancelledError:
            await _quietly(delivery.reject(requeue=True))
            raise
        except (BrokerError, StoreError) as exc:
            # The outcome could not be made durable: leave the message to the broker, which
            # redelivers it (at-least-once).
            logger.error("worker pool %s: %s; returning the message to the broker", self.name, exc)
            await _quietly(delivery.reject(requeue=True))

    async def _handle(self, delivery: Delivery) -> None:
        try:
            sig = decode_message(delivery.body, delivery.headers)
        except DecodeError as exc:
            logger.error("worker pool %s: undecodable message parked: %s", self.name, exc)
            await self._park(delivery, None, ParkQueue.FAILED, ParkReason.UNDECODABLE, exc)
            return
        task = self._registry.get(sig.name)
        if task is None:
            await self._unknown_task(delivery, sig)
            return
        now = self.clock.now()
        if sig.eta is not None and sig.eta > now:
            self.stats.deferred += 1
            await self.broker.publish(
                sig, delay_s=_until(sig.eta, now), headers=_extra_headers(delivery)
            )
            await delivery.ack()
            return
        if sig.task_timeout > 0:
            due = sig.created_at or now
            if sig.eta is not None and sig.eta > due:
                due = sig.eta
            waited_s = (now - due).total_seconds()
            if waited_s > sig.task_timeout:
                logger.warning(
                    "task %s (%s) waited %.1fs to start, over its %ss start deadline: parked",
                    sig.uuid,
                    sig.name,
                    waited_s,
                    sig.task_timeout,
                )
                error = TaskTimeoutError(
                    f"waited {waited_s:.3f}s to start, over the {sig.task_timeout}s start deadline"
                )
                await self._park(delivery, sig, ParkQueue.TIMEOUT, ParkReason.START_DEADLINE, error)
                return
        await self._execute(delivery, sig, task)

    async def _execute(self, delivery: Delivery, sig: Signature, task: RegisteredTask) -> None:
        store = self._store
        started_at = self.clock.now()
        if store is not None:
            started = self._state(sig, TaskStatus.STARTED, started_at=started_at, delivery=delivery)
            if not await self._record(started):
                # The store has this run finished, or a later attempt: a redelivered duplicate.
                logger.info(
                    "task %s (%s) attempt %d already finished or moved on; duplicate skipped",
                    sig.uuid,
                    sig.name,
                    sig.retries_done,
                )
                self.stats.duplicates += 1
                await delivery.ack()
                return
        try:
            result = await self._call(task, sig)
        except Exception as exc:
            await self._failed(delivery, sig, exc, started_at)
            return
        except asyncio.CancelledError as exc:
            if _being_cancelled() or (self._stopping is not None and self._stopping.is_set()):
                raise  # the pool is stopping: the message goes back to the broker
            # The task's own code let a CancelledError out: a failure like any other.
            await self._failed(delivery, sig, exc, started_at)
            return
        self.stats.succeeded += 1
        if store is not None:
            await self._record(
                self._state(
                    sig,
                    TaskStatus.SUCCEEDED,
                    result=result,
                    started_at=started_at,
                    finished_at=self.clock.now(),
                    delivery=delivery,
                )
            )
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("task %s (%s) succeeded", sig.uuid, sig.name)
        await delivery.ack()

    async def _call(self, task: RegisteredTask, sig: Signature) -> Any:
        limit_s = self.config.max_task_execution_duration_s
        if not task.is_async:
            return await self._call_in_thread(task, sig, limit_s)
        if limit_s <= 0:
            return await task.func(sig)
        running = asyncio.ensure_future(task.func(sig))
        try:
            done, _ = await asyncio.wait({running}, timeout=limit_s)
        except asyncio.CancelledError:
            running.cancel()
            raise
        if done:
            return running.result()
        running.cancel()
        await asyncio.wait({running}, timeout=1.0)  # let it unwind, but never wait on a task
        raise TaskTimeoutError(
            f"ran longer than the {limit_s}s maximum execution duration and was cancelled"
        )

    async def _call_in_thread(self, task: RegisteredTask, sig: Signature, limit_s: float) -> Any:
        if self._threads is None:
            self._threads = DaemonThreads(self.concurrency, "paota-task")
        job = self._threads.submit(task.func, sig)
        if limit_s > 0:
            await job.started  # the limit counts from when a thread runs it, not from the queue
            done, _ = await asyncio.wait({job.done}, timeout=limit_s)
            if not done:
                self._threads.abandon(job)
                raise TaskTimeoutError(
                    f"ran longer than the {limit_s}s maximum execution duration (a sync task "
                    "cannot be stopped: its thread runs on, its result is ignored)"
                )
        result = await job.done
        if inspect.isawaitable(result):
            # an async function behind a plain decorator: run the coroutine here, on the loop
            result = await result
        return result

    async def _failed(
        self, delivery: Delivery, sig: Signature, exc: BaseException, started_at: datetime
    ) -> None:
        timed_out = isinstance(exc, TaskTimeoutError)
        if sig.retries_done < sig.retry_count:
            attempt = sig.retries_done + 1
            delay_s = fibonacci_backoff_s(attempt, self.config.retry_backoff_cap_s)
            logger.warning(
                "task %s (%s) failed (%s: %s); retry %d of %d in %gs",
                sig.uuid,
                sig.name,
                _type_name(exc),
                exc,
                attempt,
                sig.retry_count,
                delay_s,
            )
            retry = sig.replace(
                retries_done=attempt,
                retry_timeout=int(delay_s),
                eta=self.clock.now() + timedelta(seconds=delay_s),
            )
            # The retry copy first: once it is on the broker, a redelivery of this attempt is a
            # duplicate, and the store may say so.
            await self.broker.publish(retry, delay_s=delay_s, headers=_extra_headers(delivery))
            if self._store is not None:
                await self._record(
                    self._state(
                        sig,
                        TaskStatus.RETRYING,
                        error=_error_info(exc),
                        started_at=started_at,
                        delivery=delivery,
                    )
                )
            self.stats.retried += 1
            await delivery.ack()
            return
        if timed_out:
            queue, reason = ParkQueue.TIMEOUT, ParkReason.EXEC_TIMEOUT
        else:
            queue, reason = ParkQueue.FAILED, ParkReason.RETRIES_EXHAUSTED
        logger.error(
            "task %s (%s) failed for good after %d retries (%s: %s): parked in the %s queue",
            sig.uuid,
            sig.name,
            sig.retries_done,
            _type_name(exc),
            exc,
            queue.value,
        )
        await self._park(delivery, sig, queue, reason, exc, started_at=started_at)

    async def _unknown_task(self, delivery: Delivery, sig: Signature) -> None:
        if sig.ignore_when_task_not_registered:
            logger.warning(
                "task %s: no task %r registered in pool %s; dropped (ignore_when_task_not_registered)",
                sig.uuid,
                sig.name,
                self.name,
            )
            self.stats.dropped += 1
            await delivery.ack()
            return
        returns = header_int(delivery.headers.get(RETURNS_HEADER))
        if returns < self.config.unknown_task_max_returns:
            logger.warning(
                "task %s: no task %r registered in pool %s; returned for another worker (%d/%d)",
                sig.uuid,
                sig.name,
                self.name,
                returns + 1,
                self.config.unknown_task_max_returns,
            )
            headers = {**_extra_headers(delivery), RETURNS_HEADER: returns + 1}
            await self.broker.publish(sig, delay_s=float(returns + 1), headers=headers)
            self.stats.returned += 1
            await delivery.ack()
            return
        error = LookupError(
            f"no worker has a task named {sig.name!r} (returned {returns} times; "
            f"this pool knows: {', '.join(sorted(self._registry)) or 'nothing'})"
        )
        logger.error("task %s: %s; parked", sig.uuid, error)
        await self._park(delivery, sig, ParkQueue.FAILED, ParkReason.UNKNOWN_TASK, error)

    async def _park(
        self,
        delivery: Delivery,
        sig: Signature | None,
        queue: ParkQueue,
        reason: ParkReason,
        exc: BaseException,
        *,
        started_at: datetime | None = None,
    ) -> None:
        now = self.clock.now()
        error = _error_info(exc)
        info = ParkInfo(
            reason=reason,
            error_type=error.type,
            error_message=error.message,
            worker=self.name,
            parked_at=now,
            traceback=error.traceback,
        )
        await self.broker.park(delivery, queue, info)
        status = TaskStatus.TIMED_OUT if queue is ParkQueue.TIMEOUT else TaskStatus.FAILED
        if status is TaskStatus.TIMED_OUT:
            self.stats.timed_out += 1
        else:
            self.stats.failed += 1
        if sig is not None and self._store is not None:
            await self._record(
                self._state(
                    sig,
                    status,
                    error=error,
                    started_at=started_at,
                    finished_at=now,
                    delivery=delivery,
                )
            )
        await delivery.ack()

    async def _record(self, state: TaskState) -> bool:
        """Write a state, waiting out a store outage (the delivery stays unacked meanwhile).

        Returns whether the store applied it (False: its record is final or further along)."""
        store = self._store
        assert store is not None
        delay_s = 0.1
        while True:
            try:
                return await store.record(state)
            except StoreError as exc:
                if self._stopping is not None and self._stopping.is_set():
                    raise
                logger.warning(
                    "task %s: store write (%s) failed: %s; retrying in %.1fs",
                    state.task_id,
                    state.status.value,
                    exc,
                    delay_s,
                )
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 5.0)

    def _state(
        self,
        sig: Signature,
        status: TaskStatus,
        *,
        result: Any = None,
        error: ErrorInfo | None = None,
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
        delivery: Delivery | None = None,
    ) -> TaskState:
        replays = 0 if delivery is None else header_int(delivery.headers.get(REPLAYS_HEADER))
        return TaskState(
            task_id=sig.uuid,
            name=sig.name,
            status=status,
            args=[{"Name": a.name, "Type": a.type, "Value": a.value} for a in sig.args],
            attempts=sig.retries_done,
            replays=replays,
            result=result,
            error=error,
            worker="" if status is TaskStatus.PENDING else self.name,
            created_at=sig.created_at,
            started_at=started_at,
            finished_at=finished_at,
            updated_at=self.clock.now(),
        )


def _task_id() -> str:
    """``task_`` and a random (version 4) UUID, as ``f"task_{uuid4()}"`` but twice as fast."""
    h = os.urandom(16).hex()
    return f"task_{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def _until(eta: datetime, now: datetime) -> float:
    """Seconds from ``now`` to ``eta``, within what a broker delays (a later ETA is deferred again
    when the message comes back early)."""
    return min(max(0.0, (eta - now).total_seconds()), float(MAX_DELAY_S))


def _being_cancelled() -> bool:
    """Whether the current asyncio task has a cancellation request pending (Python >= 3.11)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return bool(cancelling()) if cancelling is not None else False


async def _quietly(awaitable: Any) -> None:
    try:
        await awaitable
    except Exception as exc:
        logger.debug("ignored while returning a delivery: %r", exc)


def _type_name(exc: BaseException) -> str:
    return type(exc).__name__


def _error_info(exc: BaseException) -> ErrorInfo:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return ErrorInfo(_type_name(exc), str(exc), tb[-_TRACEBACK_LIMIT:])


def _extra_headers(delivery: Delivery) -> dict[str, Any]:
    """Headers to carry over to a republished copy: paota's own control headers only."""
    headers = delivery.headers
    return {k: headers[k] for k in (RETURNS_HEADER, REPLAYS_HEADER) if k in headers}
