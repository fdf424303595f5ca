"""Middleware: code that runs around every publish and every run, and after every outcome.

Subclass :class:`Middleware` and override the hooks you need; the others cost nothing (a chain
skips hooks a middleware does not override). Pass instances to a pool or client
(``WorkerPool(..., middleware=[A(), B()])``). Hooks run in list order going in and in reverse
coming out: ``A.execute`` wraps ``B.execute``, which wraps the task; ``after_outcome`` runs B's,
then A's.

- :meth:`Middleware.publish` wraps the publishing of a new task (a send): change
  ``message.headers`` (trace context, say) before ``await call_next()``.
- :meth:`Middleware.admit` runs on a worker before a task runs; returning an
  :data:`~paota.core.outcome.Outcome` settles the delivery that way instead of running it (a
  :class:`~paota.core.outcome.Defer` throttles without using up a retry,
  :class:`~paota.core.outcome.Cancelled` honours a cancellation).
- :meth:`Middleware.execute` wraps the run of a task: time it, trace it, catch what it raises.
- :meth:`Middleware.after_outcome` runs once the outcome is durable (copies published, state
  recorded) and before the message is acknowledged.
- :meth:`Middleware.startup` / :meth:`Middleware.shutdown` run when a worker starts and stops.

A middleware that reads options of a task (``@pool.task(max_concurrency=3)``) declares them in
:attr:`Middleware.task_options` (a :class:`TaskOptionSpec`): ``@task`` accepts the options that
the installed middleware declare, checks them when the task is made, and keeps them in
``task.options``; an option nobody declares is a :class:`~paota.RegistrationError` there.

A hook that raises is logged with the task id and changes nothing: the delivery goes on as if the
middleware were not there (a failed ``execute`` hook runs the task anyway, or keeps the task's own
result or error). Only :class:`~paota.BrokerError` and :class:`~paota.StoreError` escape a hook;
the message then goes back to the broker, as for any broker or store failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from paota.core.context import TaskContext
from paota.core.errors import BrokerError, StoreError

if TYPE_CHECKING:
    from paota.core.message import Signature
    from paota.core.outcome import Outcome
    from paota.core.services import WorkerServices

__all__ = ["Middleware", "MiddlewareChain", "PublishContext", "TaskOptionSpec", "task_options"]

logger = logging.getLogger("paota.middleware")

_ESCAPES = (BrokerError, StoreError)


@dataclass(slots=True)
class PublishContext:
    """A new task on its way to the broker: middleware may change ``headers`` (and replace
    ``signature`` with a changed copy) before calling the next hook."""

    signature: Signature
    queue: str
    delay_s: float = 0.0
    headers: dict[str, Any] = field(default_factory=dict)

    @property
    def log_extra(self) -> Mapping[str, Any]:
        """The task's ``extra`` for log records."""
        return {"task_id": self.signature.uuid, "task_name": self.signature.name}


def _accept(options: Mapping[str, Any]) -> None:
    """The check of a :class:`TaskOptionSpec` that gives none."""


@dataclass(frozen=True, eq=False)
class TaskOptionSpec:
    """Task options a feature reads: their names with their defaults, and one check of their
    values together (raising TypeError or ValueError that names the option, the value and what
    is allowed). ``feature`` names the feature in errors (``"limits (paota.middleware.limits)"``).
    """

    feature: str
    defaults: Mapping[str, Any]
    check: Callable[[Mapping[str, Any]], None] = _accept


def task_options(
    task: str, given: Mapping[str, Any], specs: Sequence[TaskOptionSpec]
) -> dict[str, Any]:
    """The options of ``task``: every declared option with its default, ``given`` (None values
    mean "the default") on top, each spec's check run on its own options when one of them is
    given. Raises TypeError for an option no spec declares (naming the declared ones)."""
    declared = {name: spec for spec in specs for name in spec.defaults}
    unknown = sorted(name for name in given if name not in declared)
    if unknown:
        known = ", ".join(f"{', '.join(sorted(spec.defaults))} ({spec.feature})" for spec in specs)
        raise TypeError(
            f"unknown task option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: the "
            f"installed middleware read {known or 'no option'}"
        )
    options = {name: value for spec in specs for name, value in spec.defaults.items()}
    for spec in specs:
        mine = {name: given[name] for name in spec.defaults if given.get(name) is not None}
        if mine:
            options.update(mine)
            spec.check({name: options[name] for name in spec.defaults})
    return options


class Middleware:
    """The base of every middleware: each hook does nothing (or calls the next one)."""

    #: The task options this middleware reads (None: none); see :class:`TaskOptionSpec`.
    task_options: ClassVar[TaskOptionSpec | None] = None

    async def publish(
        self, message: PublishContext, call_next: Callable[[], Awaitable[None]]
    ) -> None:
        """Around the publishing of a new task."""
        await call_next()

    async def admit(self, task: TaskContext) -> Outcome | None:
        """Before a task runs on a worker: None lets it run, an outcome replaces the run."""
        return None

    async def execute(self, task: TaskContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        """Around the run of a task; returns (or raises) what the task did."""
        return await call_next()

    async def after_outcome(self, task: TaskContext, outcome: Outcome) -> None:
        """After the outcome of a delivery is durable, before the ack."""

    async def startup(self, services: WorkerServices) -> None:
        """When a worker pool starts consuming: ``services`` are its parts (name, config, broker,
        store, clock, registry, runner, queues, a client to send with; see
        :class:`~paota.core.services.WorkerServices`)."""

    async def shutdown(self, services: WorkerServices) -> None:
        """When a worker pool has stopped (the same ``services`` as at startup)."""


def _overrides(middleware: Middleware, hook: str) -> bool:
    return getattr(type(middleware), hook) is not getattr(Middleware, hook)


def _describe(middleware: Middleware) -> str:
    return type(middleware).__qualname__


class MiddlewareChain:
    """The middleware of a pool or client, with each hook's chain built once."""

    def __init__(self, middleware: Sequence[Middleware] = ()) -> None:
        items = list(middleware)
        for item in items:
            if not isinstance(item, Middleware):
                raise TypeError(
                    f"middleware must be paota.Middleware instances, got {type(item).__name__} "
                    f"{item!r}"
                )
        self.items: tuple[Middleware, ...] = tuple(items)
        self._publish = [m for m in items if _overrides(m, "publish")]
        self._admit = [m for m in items if _overrides(m, "admit")]
        self._execute = [m for m in items if _overrides(m, "execute")]
        self._after = [m for m in reversed(items) if _overrides(m, "after_outcome")]

    def __bool__(self) -> bool:
        return bool(self.items)

    def __iter__(self) -> Any:
        return iter(self.items)

    # --- publish ---------------------------------------------------------------------------------

    async def publish(
        self, message: PublishContext, publish: Callable[[PublishContext], Awaitable[None]]
    ) -> None:
        """Run the publish hooks around ``publish(message)``."""
        hooks = self._publish
        if not hooks:
            await publish(message)
            return
        await self._publish_from(0, hooks, message, publish)

    async def _publish_from(
        self,
        index: int,
        hooks: list[Middleware],
        message: PublishContext,
        publish: Callable[[PublishContext], Awaitable[None]],
    ) -> None:
        if index == len(hooks):
            await publish(message)
            return
        inner = _Inner(self._publish_from, (index + 1, hooks, message, publish))
        try:
            await hooks[index].publish(message, inner)
        except BaseException as exc:
            await _recover(exc, inner, hooks[index], "publish", message.log_extra)

    # --- admit -----------------------------------------------------------------------------------

    async def admit(self, task: TaskContext) -> Outcome | None:
        """The first outcome an admit hook returns, or None."""
        for middleware in self._admit:
            try:
                outcome = await middleware.admit(task)
            except _ESCAPES:
                raise
            except Exception:
                logger.exception(
                    "task %s: middleware %s.admit failed; ignored",
                    task.id,
                    _describe(middleware),
                    extra=task.log_extra,
                )
                continue
            if outcome is not None:
                return outcome
        return None

    # --- execute ---------------------------------------------------------------------------------

    async def execute(self, task: TaskContext, run: Callable[[], Awaitable[Any]]) -> Any:
        """Run the execute hooks around ``run()``."""
        hooks = self._execute
        if not hooks:
            return await run()
        return await self._execute_from(0, hooks, task, run)

    async def _execute_from(
        self,
        index: int,
        hooks: list[Middleware],
        task: TaskContext,
        run: Callable[[], Awaitable[Any]],
    ) -> Any:
        if index == len(hooks):
            return await run()
        inner = _Inner(self._execute_from, (index + 1, hooks, task, run))
        try:
            return await hooks[index].execute(task, inner)
        except BaseException as exc:
            return await _recover(exc, inner, hooks[index], "execute", task.log_extra)

    # --- after_outcome, lifecycle ----------------------------------------------------------------

    async def after_outcome(self, task: TaskContext, outcome: Outcome) -> None:
        """Every after_outcome hook, last middleware first; failures are logged."""
        for middleware in self._after:
            try:
                await middleware.after_outcome(task, outcome)
            except _ESCAPES:
                raise
            except Exception:
                logger.exception(
                    "task %s: middleware %s.after_outcome failed; ignored",
                    task.id,
                    _describe(middleware),
                    extra=task.log_extra,
                )

    async def startup(self, services: WorkerServices) -> None:
        """Every startup hook, in order; a failure is logged."""
        for middleware in self.items:
            if _overrides(middleware, "startup"):
                try:
                    await middleware.startup(services)
                except Exception:
                    logger.exception("middleware %s.startup failed", _describe(middleware))

    async def shutdown(self, services: WorkerServices) -> None:
        """Every shutdown hook, in reverse order; a failure is logged."""
        for middleware in reversed(self.items):
            if _overrides(middleware, "shutdown"):
                try:
                    await middleware.shutdown(services)
                except Exception:
                    logger.exception("middleware %s.shutdown failed", _describe(middleware))


class _Inner:
    """The ``call_next`` a hook gets: runs the rest of the chain once and remembers how it went."""

    __slots__ = ("args", "called", "error", "finished", "result", "step")

    def __init__(self, step: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        self.step = step
        self.args = args
        self.called = False
        self.finished = False
        self.result: Any = None
        self.error: BaseException | None = None

    async def __call__(self) -> Any:
        if self.called:
            raise RuntimeError("call_next() was called twice by one middleware hook")
        self.called = True
        try:
            self.result = await self.step(*self.args)
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self.finished = True
        return self.result


async def _recover(
    exc: BaseException,
    inner: _Inner,
    middleware: Middleware,
    hook: str,
    extra: Mapping[str, Any],
) -> Any:
    """After a hook raised ``exc``: make its own failure change nothing.

    The error of the step itself (the task's exception, say) passes through; a different error
    raised by the hook is logged, and the step's outcome stands (the step runs now if the hook
    failed before calling it).
    """
    if exc is inner.error or isinstance(exc, _ESCAPES):
        raise exc
    if isinstance(exc, asyncio.CancelledError):
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise exc
    if not isinstance(exc, Exception):
        raise exc
    logger.error(
        "task %s: middleware %s.%s failed (%s: %s); ignored",
        extra.get("task_id", ""),
        _describe(middleware),
        hook,
        type(exc).__name__,
        exc,
        exc_info=exc,
        extra=dict(extra),
    )
    if not inner.called:
        return await inner()
    if not inner.finished:  # pragma: no cover - the hook raised while the step ran
        raise exc
    if inner.error is not None:
        raise inner.error from None
    return inner.result
