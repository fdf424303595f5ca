"""Tasks as typed Python functions: :class:`Task` ``[P, R]``, per-send options, :class:`TaskHandle`.

``@pool.task`` (or ``@client.task``) on ``async def add(a: int, b: int) -> int`` gives an
:class:`AsyncTask` ``[(a: int, b: int), int]``: ``await add.send(2, 3)`` publishes and returns a
:class:`TaskHandle` ``[int]`` whose ``await handle.result()`` is an ``int`` to the type checker;
``add.with_options(queue="emails", delay_s=5).send(2, 3)`` sets per-send options through a builder,
so option names never collide with the task's own parameters; ``add(2, 3)`` still calls the
function itself (for unit tests).

Arguments travel as Go ``Args``: one ``{Name, Type, Value}`` per parameter, named after it, with the
Go type of the annotation where it is a plain one (``int`` → ``int``, ``float`` → ``float64``,
``str`` → ``string``, ``bool`` → ``bool``, ``list[str]`` → ``[]string`` ...) and otherwise the type
:meth:`paota.Arg.of` infers from the value. Defaults are sent too, so the worker runs exactly what
the producer meant. A worker binds by name when the message's args have names and by position when
they have none (Go's example producer sends unnamed args), so a message produced by Go's encoder
runs a typed Python task.

Wrong arguments fail before anything is published: a missing, extra or wrongly named argument
raises :class:`TypeError` (as calling the function would), a value that cannot travel as JSON
raises :class:`ArgumentError`. On a worker, args that cannot be bound (missing, extra, or a value
of the wrong plain type) raise :class:`BindError`, and the delivery is parked with reason
``bad-arguments`` without retries.
"""

from __future__ import annotations

import functools
import inspect
import math
import types
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    Generic,
    ParamSpec,
    TypeVar,
    cast,
    overload,
)

from paota.core.errors import ArgumentError, BindError
from paota.core.message import Signature
from paota.core.message.binding import Binder, is_go_style
from paota.core.middleware import TaskOptionSpec, task_options
from paota.core.steps import TaskSignature

if TYPE_CHECKING:
    from paota.core.client import BaseClient as Client
    from paota.core.context import TaskContext
    from paota.core.state import ErrorInfo, TaskState

__all__ = [
    "ArgumentError",
    "AsyncTask",
    "BindError",
    "Binder",
    "FailureCallback",
    "SuccessCallback",
    "SyncTask",
    "Task",
    "TaskHandle",
    "TaskOptions",
    "TaskSender",
    "is_go_style",
    "make_task",
]

P = ParamSpec("P")
P2 = ParamSpec("P2")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

SuccessCallback = Callable[["TaskContext", Any], Any]
"""``on_success(task, result)``, sync or async: called once when a run succeeded."""
FailureCallback = Callable[["TaskContext", "ErrorInfo"], Any]
"""``on_failure(task, error)``, sync or async: called once when a run ended failed, timed out or
cancelled (after its last retry)."""


# --- per-send options ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskOptions:
    """How one send publishes a task. ``None`` means "the task's default".

    ``queue`` is the target queue's name, ``priority`` 0..255, ``eta`` an aware datetime or
    ``delay_s`` seconds from now (not both), ``retry_count`` the retries allowed after a failure,
    ``task_timeout`` Go's ``TaskTimeOut``: a start deadline in seconds, counted from when the task
    was due; ``headers`` extra message headers; ``reply`` asks the worker to send the outcome
    back to this process (results without a store, see :mod:`paota.core.replies`).
    """

    queue: str | None = None
    priority: int | None = None
    eta: datetime | None = None
    delay_s: float | None = None
    retry_count: int | None = None
    task_timeout: int | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    reply: bool | None = None

    def merged(self, other: TaskOptions) -> TaskOptions:
        """These options with ``other``'s set values on top."""
        changes = {
            f: getattr(other, f)
            for f in (
                "queue",
                "priority",
                "eta",
                "delay_s",
                "retry_count",
                "task_timeout",
                "reply",
            )
            if getattr(other, f) is not None
        }
        if other.eta is not None:
            changes["delay_s"] = None
        elif other.delay_s is not None:
            changes["eta"] = None
        if other.headers:
            changes["headers"] = {**self.headers, **other.headers}
        return replace(self, **changes)


# --- handles -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskHandle(Generic[R_co]):
    """A sent task: its ``id``, the ``signature`` published and the ``queue``; a way to its state
    and result (the state needs a store; the result a store, or a send with ``reply=True``)."""

    id: str
    signature: Signature
    queue: str
    _client: Client = field(repr=False, compare=False)

    async def result(self, timeout: float | None = 30.0) -> R_co:
        """The task's result; raises :class:`~paota.TaskFailedError` (failed, timed out or
        cancelled) or :class:`~paota.ResultTimeoutError`."""
        return cast(R_co, await self._client.result(self.id, timeout=timeout))

    async def state(self) -> TaskState | None:
        """The task's current record in the store (None when the store has none yet, or the
        record expired): status, attempts, result or error, and while it runs its ``progress``
        and ``progress_message``."""
        store = self._client.require_store()
        await self._client.connect()
        return await store.get(self.id)

    async def cancel(self, reason: str | None = None) -> bool:
        """Cancel the task, queued, delayed or running (see :meth:`paota.Client.cancel`): True
        when it is now cancelled, False when it had finished already. Needs a store."""
        return await self._client.cancel(self.id, reason=reason)


def check_result_ttl(value: Any) -> float | None:
    """``result_ttl_s``: None, or a finite number of seconds > 0 (ValueError / TypeError)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"result_ttl_s must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"result_ttl_s must be a finite number of seconds > 0, got {value!r}")
    return float(value)


# --- the task objects ----------------------------------------------------------------------------


class TaskSender(Generic[P, R]):
    """A task with per-send options (from :meth:`Task.with_options`)."""

    __slots__ = ("_options", "_task")

    def __init__(self, task: Task[P, R], options: TaskOptions) -> None:
        self._task = task
        self._options = options

    def with_options(
        self,
        *,
        queue: str | None = None,
        priority: int | None = None,
        eta: datetime | None = None,
        delay_s: float | None = None,
        retry_count: int | None = None,
        task_timeout: int | None = None,
        headers: Mapping[str, Any] | None = None,
        reply: bool | None = None,
    ) -> TaskSender[P, R]:
        """More options on top of these."""
        more = _options(queue, priority, eta, delay_s, retry_count, task_timeout, headers, reply)
        return TaskSender(self._task, self._options.merged(more))

    async def send(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[R]:
        """Publish the task with these options; returns once the broker has it."""
        return await self._task._send(args, kwargs, self._options)

    async def send_many(self, calls: Iterable[Any], *, window: int = 1000) -> list[TaskHandle[R]]:
        """Send the task once per item of ``calls``, with these options (see
        :meth:`Task.send_many`)."""
        return await self._task._send_many(calls, self._options, window)

    @overload
    def signature(self, *args: P.args, **kwargs: P.kwargs) -> TaskSignature[R]: ...

    @overload
    def signature(
        self: TaskSender[Concatenate[Any, P2], R], *args: P2.args, **kwargs: P2.kwargs
    ) -> TaskSignature[R]: ...

    def signature(self, *args: Any, **kwargs: Any) -> TaskSignature[R]:
        """This call with these options, for a workflow (see :meth:`Task.signature`)."""
        return TaskSignature(self._task, args, kwargs, self._options)


def _options(
    queue: str | None,
    priority: int | None,
    eta: datetime | None,
    delay_s: float | None,
    retry_count: int | None,
    task_timeout: int | None,
    headers: Mapping[str, Any] | None,
    reply: bool | None = None,
) -> TaskOptions:
    if eta is not None and delay_s is not None:
        raise TypeError("give eta or delay_s, not both")
    if delay_s is not None:
        from paota.core.protocols import check_seconds

        delay_s = check_seconds(delay_s)
    if queue is not None and (not isinstance(queue, str) or not queue):
        raise TypeError(f"queue must be a non-empty string, got {queue!r}")
    return TaskOptions(
        queue, priority, eta, delay_s, retry_count, task_timeout, dict(headers or {}), reply
    )


class Task(Generic[P, R]):
    """A registered task: a function, its name and its default options.

    Calling it calls the function (``R`` for a plain function, a coroutine of ``R`` for an
    ``async def``: see :class:`SyncTask` and :class:`AsyncTask`). :meth:`send` publishes it.
    """

    def __init__(
        self,
        fn: Callable[P, Any],
        *,
        name: str,
        client: Client,
        defaults: TaskOptions | None = None,
        on_success: SuccessCallback | None = None,
        on_failure: FailureCallback | None = None,
        time_limit_s: float | None = None,
        go_style: bool | None = None,
        is_async: bool = False,
        result_ttl_s: float | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.fn = fn
        self.name = name
        self._client = client
        self.defaults = defaults or TaskOptions()
        self.on_success = on_success
        self.on_failure = on_failure
        self.time_limit_s = time_limit_s
        #: The options the installed middleware read, checked when the task was made (every
        #: declared option, with its default where none was given): ``task.options["rate"]``.
        self.options: Mapping[str, Any] = types.MappingProxyType(dict(options or {}))
        #: How long a finished record (and its result) is kept, in seconds (None: the store's).
        self.result_ttl_s = check_result_ttl(result_ttl_s)
        self.go_style = is_go_style(fn) if go_style is None else go_style
        self.is_async = is_async
        self._binder = None if self.go_style else Binder(fn, name)
        functools.update_wrapper(self, fn)

    @property
    def client(self) -> Client:
        """The client (or pool) the task was made on: its sends go through it."""
        return self._client

    def parameter_go_types(self) -> dict[str, str | None]:
        """The function's parameters with the Go type of each annotation (None: none), in order;
        empty for a Go-style task (it takes the :class:`Signature`)."""
        return {} if self._binder is None else self._binder.go_types()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} of {self.fn!r}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Call the function directly (no broker involved)."""
        return self.fn(*args, **kwargs)

    def with_options(
        self,
        *,
        queue: str | None = None,
        priority: int | None = None,
        eta: datetime | None = None,
        delay_s: float | None = None,
        retry_count: int | None = None,
        task_timeout: int | None = None,
        headers: Mapping[str, Any] | None = None,
        reply: bool | None = None,
    ) -> TaskSender[P, R]:
        """A sender with per-send options: ``task.with_options(queue="emails").send(...)``;
        ``reply=True``: the outcome comes back to this process, for ``result()`` without a
        store."""
        more = _options(queue, priority, eta, delay_s, retry_count, task_timeout, headers, reply)
        return TaskSender(self, self.defaults.merged(more))

    async def send(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[R]:
        """Publish the task with these arguments; returns once the broker has it.

        Raises TypeError (missing, extra or unknown arguments) or :class:`ArgumentError` (a value
        that cannot travel) before anything is published.
        """
        return await self._send(args, kwargs, self.defaults)

    async def send_many(self, calls: Iterable[Any], *, window: int = 1000) -> list[TaskHandle[R]]:
        """Send the task once per item of ``calls`` and return the handles in that order:
        ``await add.send_many([(1, 2), (3, 4)])``.

        An item is a tuple of positional arguments, or a dict of keyword arguments; for a task of
        one parameter, any item that is not a tuple is that argument (``square.send_many([1, 2,
        3])``; a tuple value goes in a tuple of its own: ``[((1, 2),)]``). For calls checked by the
        type checker, send ``[add.signature(1, 2), ...]`` with :meth:`paota.Client.send_many`.
        Every item is bound before anything is published (TypeError or :class:`ArgumentError`
        naming the item's index); up to ``window`` sends are in flight together; raises
        :class:`~paota.SendManyError` when some tasks could not be sent (see
        :meth:`paota.Client.send_many`).
        """
        return await self._send_many(calls, self.defaults, window)

    @overload
    def signature(self, *args: P.args, **kwargs: P.kwargs) -> TaskSignature[R]: ...

    @overload
    def signature(
        self: Task[Concatenate[Any, P2], R], *args: P2.args, **kwargs: P2.kwargs
    ) -> TaskSignature[R]: ...

    def signature(self, *args: Any, **kwargs: Any) -> TaskSignature[R]:
        """This call as a workflow step (:class:`~paota.TaskSignature`): ``inc.signature(1)``
        is complete; ``inc.signature()`` leaves the first parameter for the previous step's
        result (in :func:`paota.chain`). ``.send()`` sends a complete one as a task,
        ``.to_signature()`` gives the Go :class:`~paota.Signature`. Raises TypeError for
        arguments that bind neither way, :class:`ArgumentError` for a value that cannot travel.
        """
        return TaskSignature(self, args, kwargs, self.defaults)

    def bind(self, sig: Signature) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The call arguments for a received ``sig`` (raises :class:`BindError`)."""
        if self._binder is None:
            return (sig,), {}
        return self._binder.from_args(sig)

    def wire_signature(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any], options: TaskOptions
    ) -> Signature:
        """The Go :class:`~paota.Signature` of this call with ``options`` (no id yet): what a
        send publishes. Raises TypeError for arguments that do not bind, and for a Go-style
        task (it takes a Signature of its own)."""
        if self._binder is None:
            raise TypeError(
                f"task {self.name!r} takes a Signature (Go style): send it with "
                "send_task(Signature(...))"
            )
        return Signature(
            self.name,
            args=self._binder.to_args(args, kwargs),
            priority=options.priority or 0,
            retry_count=options.retry_count or 0,
            task_timeout=options.task_timeout or 0,
            eta=options.eta,
        )

    async def _send_many(
        self, calls: Iterable[Any], options: TaskOptions, window: int
    ) -> list[TaskHandle[R]]:
        single = self._binder is not None and self._binder.single_parameter
        jobs = []
        headers = options.headers or None
        for index, call in enumerate(calls):
            args: tuple[Any, ...]
            kwargs: Mapping[str, Any] = {}
            if isinstance(call, tuple):
                args = call
            elif single:
                args = (call,)
            elif isinstance(call, list):
                args = tuple(call)
            elif isinstance(call, Mapping):
                args, kwargs = (), call
            else:
                raise TypeError(
                    f"task {self.name!r}: send_many item #{index} is a {type(call).__name__}; "
                    "expected a tuple (or list) of positional arguments or a dict of keyword "
                    "arguments"
                )
            try:
                sig = self.wire_signature(args, kwargs, options)
            except ArgumentError as exc:
                raise ArgumentError(f"send_many item #{index}: {exc}") from None
            except TypeError as exc:
                raise TypeError(f"send_many item #{index}: {exc}") from None
            jobs.append((sig, options.queue, options.delay_s, headers))
        from paota.core.batch import send_batch

        handles = await send_batch(self._client, jobs, window)
        return cast("list[TaskHandle[R]]", handles)

    async def _send(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any], options: TaskOptions
    ) -> TaskHandle[R]:
        sig = self.wire_signature(args, kwargs, options)
        handle = await self._client.send_task(
            sig,
            queue=options.queue,
            delay_s=options.delay_s,
            headers=options.headers or None,
            reply=bool(options.reply),
        )
        return cast(TaskHandle[R], handle)


class SyncTask(Task[P, R]):
    """A task whose function is a plain function: calling it returns ``R``."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the function directly (no broker involved)."""
        return cast(R, self.fn(*args, **kwargs))


class AsyncTask(Task[P, R]):
    """A task whose function is an ``async def``: calling it returns a coroutine of ``R``."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        """Call the function directly (no broker involved): a coroutine to await."""
        return cast(Coroutine[Any, Any, R], self.fn(*args, **kwargs))


def is_async_callable(func: Callable[..., Any]) -> bool:
    """Whether calling ``func`` gives a coroutine (async functions, partials of them, callable
    objects with an ``async def __call__``)."""
    while isinstance(func, functools.partial):
        func = func.func
    if inspect.iscoroutinefunction(func):
        return True
    call = getattr(func, "__call__", None)  # noqa: B004 - callable objects with async __call__
    return call is not None and inspect.iscoroutinefunction(call)


def make_task(
    client: Client,
    func: Callable[..., Any],
    name: str,
    *,
    specs: Sequence[TaskOptionSpec] = (),
    options: Mapping[str, Any] | None = None,
    **fields: Any,
) -> Task[Any, Any]:
    """A :class:`SyncTask` or :class:`AsyncTask` of ``func`` named ``name`` for ``client``, its
    ``options`` checked against the declared ``specs``; ``fields`` are :class:`Task`'s other
    keyword arguments. Raises :class:`~paota.RegistrationError` naming the task."""
    from paota.core.errors import RegistrationError

    if not callable(func):
        raise RegistrationError(
            f"task {name!r}: expected a callable fn(sig) or a typed function, got "
            f"{type(func).__name__} {func!r}"
        )
    is_async = is_async_callable(func)
    cls: type[Task[Any, Any]] = AsyncTask if is_async else SyncTask
    try:
        checked = task_options(name, options or {}, specs)
        return cls(func, name=name, client=client, is_async=is_async, options=checked, **fields)
    except (TypeError, ValueError) as exc:
        raise RegistrationError(f"task {name!r}: {exc}") from exc
