"""The producing side: :class:`Client` sends tasks and reads their results, and runs nothing.

A web application that only sends tasks uses a ``Client`` (or a :class:`~paota.WorkerPool` it never
starts): no consumer is started, and no handler needs to be registered for a task it only sends:
``client.send_task(Signature("Print", ...))`` sends by name, and ``@client.task`` on a typed
function makes a task object to send it with (the body runs only where a worker registered it).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import (
    Any,
    ParamSpec,
    Protocol,
    Self,
    TypeVar,
    overload,
)

from paota.core.batch import batch_jobs, new_task_id, send_batch
from paota.core.clock import Clock, SystemClock
from paota.core.config import Config
from paota.core.errors import ConfigError
from paota.core.factory import make_broker, make_store
from paota.core.message import Signature
from paota.core.message.model import make_signature
from paota.core.message.outgoing import outgoing
from paota.core.middleware import (
    Middleware,
    MiddlewareChain,
    PublishContext,
    TaskOptionSpec,
)
from paota.core.outcome import until
from paota.core.protocols import (
    PARENT_HEADER,
    WORKFLOW_HEADER,
    Broker,
    ParkQueue,
    Store,
    check_seconds,
    header_text,
)
from paota.core.registry import TaskRegistry
from paota.core.replay import requeue
from paota.core.replies import REPLY_HEADER, ReplyInbox, ReplyPath
from paota.core.results import cancel_task, wait_result
from paota.core.state import TaskStatus, task_state
from paota.core.steps import TaskSignature
from paota.core.tasks import (
    AsyncTask,
    FailureCallback,
    SuccessCallback,
    SyncTask,
    Task,
    TaskHandle,
    TaskOptions,
    make_task,
)

#: How many sends of a batch (``send_many``) are in flight at once by default.
SEND_MANY_WINDOW = 1000

__all__ = ["BaseClient", "TaskDecorator", "new_task_id"]

P = ParamSpec("P")
R = TypeVar("R")


class TaskDecorator(Protocol):
    """What ``client.task(name=...)`` returns: a decorator making a typed task."""

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> AsyncTask[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R]) -> SyncTask[P, R]: ...

    def __call__(self, fn: Callable[P, Any]) -> Task[P, Any]: ...


class BaseClient:
    """Sends tasks to a broker and reads results from a store.

    The constructor does no I/O: ``async with client`` (or ``await client.connect()``) opens the
    broker and the store, and the first send connects by itself. The broker and the store come
    from ``config`` unless passed explicitly. ``middleware`` hooks run around every send (see
    :mod:`paota.core.middleware`).
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        name: str = "",
        broker: Broker | None = None,
        store: Store | None = None,
        clock: Clock | None = None,
        middleware: Sequence[Middleware] = (),
    ) -> None:
        self.config = config or Config()
        self.name = name or f"paota@{socket.gethostname()}:{os.getpid()}"
        self.clock: Clock = clock or getattr(broker, "clock", None) or SystemClock()
        self._broker = broker
        self._store = store
        self._store_given = store is not None
        self._registry = TaskRegistry()
        self.middleware = MiddlewareChain(middleware)
        self._connected = False
        self._connect_lock: asyncio.Lock | None = None
        self._inbox: ReplyInbox | None = None  # replies to sends with reply=True

    # --- components ------------------------------------------------------------------------------

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

    def require_store(self) -> Store:
        """The store; raises :class:`~paota.ConfigError` when there is none."""
        store = self.store
        if store is None:
            raise ConfigError(
                "results need a store: set Config(store='memory' | 'mongodb') "
                "(PAOTA_STORE) or pass store=..."
            )
        return store

    # --- lifecycle -------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect the broker and the store. Idempotent."""
        if self._connected:
            return
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
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
        """Close the broker and the store. Idempotent."""
        if self._inbox is not None:
            await self._inbox.close()
            self._inbox = None
        if self._broker is not None:
            await self._broker.close()
        if self._store is not None:
            await self._store.close()
        self._connected = False

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- tasks -----------------------------------------------------------------------------------

    @overload
    def task(  # type: ignore[overload-overlap]
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> AsyncTask[P, R]: ...

    @overload
    def task(self, fn: Callable[P, R]) -> SyncTask[P, R]: ...

    @overload
    def task(
        self,
        *,
        name: str | None = None,
        queue: str | None = None,
        retry_count: int | None = None,
        task_timeout: int | None = None,
        priority: int | None = None,
        time_limit_s: float | None = None,
        on_success: SuccessCallback | None = None,
        on_failure: FailureCallback | None = None,
        result_ttl_s: float | None = None,
        **options: Any,
    ) -> TaskDecorator: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        queue: str | None = None,
        retry_count: int | None = None,
        task_timeout: int | None = None,
        priority: int | None = None,
        time_limit_s: float | None = None,
        on_success: SuccessCallback | None = None,
        on_failure: FailureCallback | None = None,
        result_ttl_s: float | None = None,
        **options: Any,
    ) -> Any:
        """Make a task of a function: bare (``@pool.task``) or with options
        (``@pool.task(name="Print", queue="emails", retry_count=3)``).

        The name defaults to the function's ``__name__``; ``queue`` is the task's default queue
        (else the config's ``task_queue_name``); ``retry_count``, ``task_timeout`` (Go's start
        deadline, seconds) and ``priority`` are defaults for every send; ``time_limit_s``
        overrides ``Config.max_task_execution_duration_s`` for this task; ``on_success(task,
        result)`` and ``on_failure(task, error)`` are called once per run at its final outcome;
        ``result_ttl_s`` is how long the finished record and result are kept. Other keyword
        options are read by middleware, which declare them (:attr:`Middleware.task_options`):
        ``max_concurrency``, ``rate`` and ``limit_scope`` by the limits
        (:mod:`paota.middleware.limits`); an option no installed middleware declares raises
        :class:`~paota.RegistrationError`. A function taking one ``sig: Signature`` parameter
        is a Go-style task: it receives the signature itself.
        """
        defaults = TaskOptions(
            queue=queue, priority=priority, retry_count=retry_count, task_timeout=task_timeout
        )

        def register(func: Callable[..., Any]) -> Task[Any, Any]:
            return self._add_task(
                func,
                name or str(getattr(func, "__name__", "")),
                defaults=defaults,
                on_success=on_success,
                on_failure=on_failure,
                time_limit_s=time_limit_s,
                result_ttl_s=result_ttl_s,
                options=options,
            )

        return register(fn) if fn is not None else register

    def task_option_specs(self) -> tuple[TaskOptionSpec, ...]:
        """The task options this client accepts: those its middleware declare (see
        :class:`~paota.core.middleware.TaskOptionSpec`)."""
        return tuple(m.task_options for m in self.middleware if m.task_options is not None)

    def _add_task(
        self,
        func: Callable[..., Any],
        name: str,
        *,
        defaults: TaskOptions | None = None,
        on_success: SuccessCallback | None = None,
        on_failure: FailureCallback | None = None,
        time_limit_s: float | None = None,
        go_style: bool | None = None,
        result_ttl_s: float | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Task[Any, Any]:
        task = self._make_task(
            func,
            name,
            defaults=defaults,
            on_success=on_success,
            on_failure=on_failure,
            time_limit_s=time_limit_s,
            go_style=go_style,
            result_ttl_s=result_ttl_s,
            options=options,
        )
        return self._registry.add(task)

    def _make_task(self, func: Callable[..., Any], name: str, **fields: Any) -> Task[Any, Any]:
        return make_task(self, func, name, specs=self.task_option_specs(), **fields)

    @property
    def registry(self) -> TaskRegistry:
        """The registered tasks, by name (and the queues they name)."""
        return self._registry

    def registered_task(self, name: str) -> Task[Any, Any] | None:
        """The task registered under ``name``, or None."""
        return self._registry.get(name)

    @property
    def task_names(self) -> list[str]:
        """The names of the registered tasks, in registration order."""
        return list(self._registry)

    # --- sending ---------------------------------------------------------------------------------

    async def send_task(
        self,
        sig: Signature,
        *,
        queue: str | None = None,
        delay_s: float | None = None,
        headers: Mapping[str, Any] | None = None,
        reply: bool = False,
    ) -> TaskHandle[Any]:
        """Publish ``sig``; fills ``uuid`` (``task_<uuid4>``) and ``created_at`` when empty.

        ``queue`` defaults to the registered task's queue, else the config's task queue;
        ``delay_s`` sets the ETA that many seconds from now (a future ``eta`` is honoured by a
        broker-side delay); ``headers`` are extra message headers; ``reply=True`` asks the worker
        to send the final outcome back to this process, so that :meth:`result` works without a
        store (see :mod:`paota.core.replies`; a ConfigError before anything is sent when the
        broker has no reply path). Returns once the broker has the message (confirmed). With a
        store, a PENDING record is written first.
        """
        if not self._connected:
            await self.connect()
        if reply:
            address = await self._reply_address()
            headers = {**(headers or {}), REPLY_HEADER: address}
        now = self.clock.now()
        changes: dict[str, Any] = {}
        if not sig.uuid:
            changes["uuid"] = new_task_id()
        if sig.created_at is None:
            changes["created_at"] = now
        if delay_s is not None:
            try:
                changes["eta"] = now + timedelta(seconds=check_seconds(delay_s))
            except OverflowError:
                raise ValueError(f"delay_s={delay_s!r} is too far in the future") from None
        if changes:
            if "eta" in changes:
                sig = sig.replace(**changes)
            else:
                # A fresh id and the current time (aware UTC) need no validation.
                fields = sig.__dict__.copy()
                fields.update(changes)
                sig = make_signature(fields)
        if queue is None:
            task = self._registry.get(sig.name)
            queue = (task.defaults.queue if task is not None else None) or self.broker.default_queue
        store = self._store
        if store is not None:
            await store.record(
                task_state(
                    sig.uuid,
                    sig.name,
                    TaskStatus.PENDING,
                    args=[{"Name": a.name, "Type": a.type, "Value": a.value} for a in sig.args],
                    attempts=sig.retries_done,
                    replays=0,
                    worker="",
                    created_at=sig.created_at,
                    updated_at=now,
                    queue=queue,
                    # A workflow step's links (paota.workflows), as the worker records them too.
                    parent_id=header_text(headers.get(PARENT_HEADER)) if headers else "",
                    workflow_id=header_text(headers.get(WORKFLOW_HEADER)) if headers else "",
                )
            )
        message = PublishContext(
            sig,
            queue,
            until(sig.eta, now) if sig.eta is not None else 0.0,
            dict(headers) if headers else {},
        )
        if self.middleware._publish:
            await self.middleware.publish(message, self._publish)
        else:
            await self._publish(message)
        if reply and self._inbox is not None:
            self._inbox.expect(message.signature.uuid, address)
        return TaskHandle(message.signature.uuid, message.signature, message.queue, self)

    async def _reply_address(self) -> str:
        if self._inbox is None:
            broker = self.broker
            if not isinstance(broker, ReplyPath):
                raise ConfigError(
                    f"reply=True: the {type(broker).__name__} broker carries no replies; read "
                    "results from a store (PAOTA_STORE=mongodb) instead. Nothing was sent"
                )
            self._inbox = ReplyInbox(broker)
        return await self._inbox.address()

    async def _publish(self, message: PublishContext) -> None:
        sig = message.signature
        await self.broker.publish(
            outgoing(
                sig,
                message.queue,
                headers=message.headers,
                delay_s=message.delay_s,
                routing_key=sig.routing_key,
            )
        )

    def handle(self, task_id: str, queue: str = "") -> TaskHandle[Any]:
        """A handle on a task sent earlier (by id), to read its state and result."""
        return TaskHandle(task_id, Signature("", uuid=task_id), queue, self)

    # --- sending many ----------------------------------------------------------------------------

    @overload
    async def send_many(
        self, signatures: Iterable[TaskSignature[R]], *, window: int = SEND_MANY_WINDOW
    ) -> list[TaskHandle[R]]: ...

    @overload
    async def send_many(
        self,
        signatures: Iterable[Signature | TaskSignature[Any]],
        *,
        window: int = SEND_MANY_WINDOW,
    ) -> list[TaskHandle[Any]]: ...

    async def send_many(
        self,
        signatures: Iterable[Signature | TaskSignature[Any]],
        *,
        window: int = SEND_MANY_WINDOW,
    ) -> list[TaskHandle[Any]]:
        """Send many tasks at once: ``await pool.send_many([add.signature(1, 2), ...])``, or Go
        :class:`~paota.Signature` objects (as :meth:`send_task` sends them); returns their
        handles in the order given.

        Up to ``window`` sends are in flight together, so their publishes and RabbitMQ's confirms
        overlap instead of costing one round trip each. Every item is checked (and every task id
        assigned) before the first is published: a bad item raises TypeError (or
        :class:`~paota.ArgumentError`) naming its index, and nothing is sent. Returns once the
        broker confirmed every task. When some could not be sent, raises
        :class:`~paota.SendManyError` after the others were: ``.sent`` has the handles of the
        confirmed ones, ``.failed`` the index, signature and error of each other one. The queue
        may receive the tasks in a slightly different order than given (sends overlap).
        """
        return await send_batch(self, batch_jobs(signatures), window)

    # --- results ---------------------------------------------------------------------------------

    async def result(self, task_id: str, timeout: float | None = 30.0) -> Any:
        """Wait for ``task_id`` to finish and return its result.

        A task this client sent with ``reply=True`` is waited for on its reply (no store
        needed); any other is read from the store, polled with backoff. Raises
        :class:`~paota.TaskFailedError` when the task ended FAILED, TIMED_OUT or CANCELLED,
        :class:`~paota.ResultTimeoutError` when it has not finished within ``timeout`` seconds,
        :class:`~paota.core.replies.ReplyLostError` when its reply path was lost (a reconnection)
        and there is no store, and :class:`~paota.ConfigError` when neither can give it.
        """
        return await wait_result(self, task_id, timeout, self._inbox)

    # --- cancelling ------------------------------------------------------------------------------

    async def cancel(self, task_id: str, *, reason: str | None = None) -> bool:
        """Cancel task ``task_id``, queued, delayed or running; True when it is now cancelled,
        False when it had finished already (its record is final and stays as it is).

        The cancellation is durable first: the store's record of the task's current run becomes
        CANCELLED (a record is made if the store has none). A worker that receives the message
        later, even one that starts after this call, acknowledges it without running it. Then
        it is broadcast on the broker's control channel (when it has one): a running async task
        receives ``CancelledError``, a running sync task sees ``current_task().cancelled``. A
        cancelled run is never retried; its ``on_failure`` callback fires once, with
        ``ErrorInfo("Cancelled", reason)``; ``result()`` raises :class:`~paota.TaskFailedError`
        with status CANCELLED. ``reason`` defaults to ``"cancelled by <this client's name>"``.

        Raises :class:`~paota.ConfigError` without a store, :class:`~paota.StoreError` when the
        record cannot be written, and :class:`~paota.BrokerError` when the broadcast fails (the
        cancellation is recorded then: a running task runs to its end and is recorded as
        cancelled; calling ``cancel`` again is harmless).
        """
        return await cancel_task(self, task_id, reason)

    # --- parked messages -------------------------------------------------------------------------

    async def requeue_parked(
        self,
        queue: ParkQueue,
        *,
        reason: str | None = None,
        limit: int | None = None,
        task_ids: Iterable[str] | None = None,
    ) -> int:
        """Move parked messages (only those with ``x-paota-reason == reason``, when given, and
        only the messages of ``task_ids``, when given) back to the queue each came from, as new
        runs with their retries reset; returns how many moved.

        A message whose origin is unknown (parked by the Go library) goes to the config's task
        queue. A message that does not decode moves unchanged (it is parked again as
        undecodable if it still is).
        """
        if limit is not None and limit <= 0:
            return 0
        if not self._connected:
            await self.connect()
        return await requeue(
            self.broker, queue, now=self.clock.now, reason=reason, limit=limit, task_ids=task_ids
        )
