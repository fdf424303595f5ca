"""The public :class:`Client`: the kernel's producing side (:class:`~paota.core.client.BaseClient`)
with the features a user reaches from it composed in: periodic tasks (:mod:`paota.scheduler`)
and the task options of the built-in middleware (the limits).

A web application that only sends tasks uses a ``Client`` (or a :class:`~paota.WorkerPool` it never
starts): no consumer is started, and no handler needs to be registered for a task it only sends:
``client.send_task(Signature("Print", ...))`` sends by name, and ``@client.task`` on a typed
function makes a task object to send it with (the body runs only where a worker registered it).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar, overload

from paota.core.client import BaseClient, TaskDecorator
from paota.core.errors import RegistrationError
from paota.core.middleware import TaskOptionSpec
from paota.core.tasks import AsyncTask, FailureCallback, SuccessCallback, SyncTask
from paota.middleware.limit_options import LIMIT_OPTIONS

if TYPE_CHECKING:
    from paota.scheduler.schedule import PeriodicDecorator, Schedule

__all__ = ["BUILTIN_TASK_OPTIONS", "Client"]

P = ParamSpec("P")
R = TypeVar("R")

#: The task options of the middleware a worker pool installs by itself.
BUILTIN_TASK_OPTIONS: tuple[TaskOptionSpec, ...] = (LIMIT_OPTIONS,)


class Client(BaseClient):
    """Sends tasks to a broker and reads results from a store.

    The constructor does no I/O: ``async with client`` (or ``await client.connect()``) opens the
    broker and the store, and the first send connects by itself. The broker and the store come
    from ``config`` unless passed explicitly. ``middleware`` hooks run around every send (see
    :mod:`paota.core.middleware`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._schedules: dict[str, Schedule] = {}

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
        max_concurrency: int | None = None,
        rate: str | None = None,
        limit_scope: Literal["worker", "global"] | None = None,
        **options: Any,
    ) -> TaskDecorator: ...

    def task(self, fn: Callable[..., Any] | None = None, **options: Any) -> Any:
        """Make a task of a function (see :meth:`BaseClient.task
        <paota.core.client.BaseClient.task>`), with the built-in middleware's options typed:
        ``max_concurrency`` and ``rate`` (``"10/s"``, ``"100/m"``, ``"5/h"``) limit runs without
        using up retries, in each worker (``limit_scope="worker"``, the default) or across every
        worker sharing the store (``limit_scope="global"``; see :mod:`paota.middleware.limits`).
        """
        return super().task(fn, **options) if fn is not None else super().task(**options)

    def task_option_specs(self) -> tuple[TaskOptionSpec, ...]:
        """The task options this client accepts: those of the built-in middleware (the limits'
        ``max_concurrency``, ``rate``, ``limit_scope``) and those its own middleware declare."""
        return tuple(dict.fromkeys((*BUILTIN_TASK_OPTIONS, *super().task_option_specs())))

    def periodic(
        self,
        cron: str | None = None,
        *,
        every: float | timedelta | None = None,
        tz: str = "UTC",
        id: str | None = None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        queue: str | None = None,
        misfire_grace_s: float = 60.0,
        catch_up: bool = True,
        anchor: datetime | None = None,
    ) -> PeriodicDecorator:
        """Send a task once per slot of a schedule: ``@pool.periodic("*/5 * * * *",
        tz="Europe/Berlin")`` on a task (or on a function, which becomes a task), or
        ``@pool.periodic(every=30)``.

        ``cron`` is a cron expression matched on the wall clock of ``tz`` (an IANA zone; needs
        ``paota[schedules]``), ``every`` an interval in seconds (slots at ``anchor + k * every``,
        the anchor defaulting to the Unix epoch). ``args`` / ``kwargs`` are the task's arguments
        for every slot; ``id`` names the schedule (default: the task's name) and must be stable
        across processes; ``misfire_grace_s`` is how late a missed slot may still run after
        downtime (``catch_up=False``: only slots seen on time run). A
        :class:`paota.scheduler.Scheduler` (``paota scheduler``, or ``WorkerPool(...,
        scheduler=True)``) sends the slots;
        the task reads its slot's time as ``current_task().scheduled_at``. Raises
        :class:`~paota.ConfigError` for a bad expression, zone or interval.
        """
        from paota.scheduler.schedule import periodic_decorator

        return periodic_decorator(
            self,
            cron,
            every=every,
            tz=tz,
            id=id,
            args=args,
            kwargs=kwargs,
            queue=queue,
            misfire_grace_s=misfire_grace_s,
            catch_up=catch_up,
            anchor=anchor,
        )

    @property
    def schedules(self) -> list[Schedule]:
        """The schedules declared with :meth:`periodic`, in order."""
        return list(self._schedules.values())

    def add_schedule(self, schedule: Schedule) -> None:
        """Add a schedule made by :meth:`periodic` (raises RegistrationError for an id taken)."""
        if schedule.id in self._schedules:
            raise RegistrationError(
                f"a schedule named {schedule.id!r} exists already; give this one its own id=..."
            )
        self._schedules[schedule.id] = schedule
