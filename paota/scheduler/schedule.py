"""A :class:`Schedule`: which task to send, with which arguments, when, and what to do with slots
that were missed. ``@pool.periodic(...)`` makes one for a typed task; runtime schedules are the
same thing stored as documents (see :mod:`paota.scheduler.manage`).

A schedule's ``id`` is its identity across processes: every scheduler builds the claim of a slot,
and the id of the task it sends, from it (``sched:{id}:{slot in UTC}``). Keep it stable.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, overload

from paota.core.errors import ConfigError
from paota.core.message import Arg, Signature
from paota.scheduler.triggers import Cron, Every, slot_iso, trigger_from_doc

if TYPE_CHECKING:
    from paota.core.tasks import AsyncTask, SyncTask, Task

__all__ = [
    "DEFAULT_MISFIRE_GRACE_S",
    "PeriodicDecorator",
    "Schedule",
    "periodic_decorator",
    "slot_task_id",
]

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_MISFIRE_GRACE_S = 60.0
"""How late a slot may still run by default (the catch-up window), in seconds."""

_ID = re.compile(r"^[A-Za-z0-9_.@/\-]+$")


def slot_task_id(schedule_id: str, slot: datetime) -> str:
    """The task id (and claim key) of ``slot`` of schedule ``schedule_id``:
    ``sched:{id}:{slot, UTC, ISO 8601}``."""
    return f"sched:{schedule_id}:{slot_iso(slot)}"


def check_id(value: Any) -> str:
    """A schedule id: letters, digits and ``_ . @ / -``; ConfigError otherwise."""
    if not isinstance(value, str) or not _ID.match(value):
        raise ConfigError(
            f"schedule id {value!r} is not valid: expected a non-empty string of letters, digits "
            "and _ . @ / - (no spaces or colons), e.g. 'nightly-report'"
        )
    return value


def _check_grace(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"misfire_grace_s={value!r} is not valid: expected seconds >= 0")
    if value < 0:
        raise ConfigError(f"misfire_grace_s={value!r} is not valid: expected seconds >= 0")
    return float(value)


@dataclass(frozen=True)
class Schedule:
    """A task sent once per slot of ``trigger``.

    ``template`` is the signature each slot sends (its ``uuid`` is replaced by the slot's task id),
    ``queue`` the queue (None: the task's own, else the default queue). A slot later than
    ``misfire_grace_s`` when a scheduler first sees it (after downtime) is skipped and logged;
    ``catch_up=False`` runs a slot only when a scheduler sees it on time (within
    :data:`~paota.scheduler.scheduler.ON_TIME_S`). ``source`` is ``"code"`` (``@periodic``) or
    ``"runtime"`` (added through :class:`~paota.scheduler.Schedules` or ``paota schedules add``).
    ``extra`` keeps what a runtime schedule's document says beyond that (``added_at``).
    """

    id: str
    trigger: Cron | Every
    template: Signature
    queue: str | None = None
    misfire_grace_s: float = DEFAULT_MISFIRE_GRACE_S
    catch_up: bool = True
    paused: bool = False
    source: str = "code"
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_id(self.id)
        object.__setattr__(self, "misfire_grace_s", _check_grace(self.misfire_grace_s))
        if not isinstance(self.catch_up, bool):
            raise ConfigError(f"catch_up={self.catch_up!r} is not valid: expected True or False")
        if self.queue is not None and (not isinstance(self.queue, str) or not self.queue):
            raise ConfigError(f"queue={self.queue!r} is not valid: expected a non-empty string")
        if not self.template.name:
            raise ConfigError(f"schedule {self.id!r}: the task needs a name")

    @property
    def task(self) -> str:
        """The name of the task it sends."""
        return self.template.name

    @property
    def tz(self) -> str:
        """The schedule's time zone."""
        return self.trigger.tz

    def replace(self, **changes: Any) -> Schedule:
        """A copy with ``changes``."""
        return replace(self, **changes)

    def describe(self) -> str:
        """``nightly: report, cron '0 2 * * *' Europe/Berlin``."""
        return f"{self.id}: {self.task}, {self.trigger.describe()}"

    # --- documents -------------------------------------------------------------------------------

    def to_doc(self) -> dict[str, Any]:
        """The document a runtime schedule is stored as (kind ``"schedule"``)."""
        sig = self.template
        return {
            **self.trigger.to_doc(),
            "task": sig.name,
            "args": [{"Name": a.name, "Type": a.type, "Value": a.value} for a in sig.args],
            "queue": self.queue,
            "priority": sig.priority,
            "retry_count": sig.retry_count,
            "task_timeout": sig.task_timeout,
            "misfire_grace_s": self.misfire_grace_s,
            "catch_up": self.catch_up,
            "paused": self.paused,
            "source": self.source,
        }

    @classmethod
    def from_doc(cls, schedule_id: str, doc: Mapping[str, Any]) -> Schedule:
        """A runtime schedule from its document; ConfigError naming what is wrong."""
        try:
            args = tuple(
                Arg(str(a.get("Name") or ""), str(a["Type"]), a.get("Value"))
                for a in doc.get("args") or []
            )
            template = Signature(
                str(doc["task"]),
                args=args,
                priority=int(doc.get("priority") or 0),
                retry_count=int(doc.get("retry_count") or 0),
                task_timeout=int(doc.get("task_timeout") or 0),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"schedule {schedule_id!r}: document {dict(doc)!r}: {exc}") from exc
        grace = doc.get("misfire_grace_s")
        return cls(
            schedule_id,
            trigger_from_doc(dict(doc)),
            template,
            queue=doc.get("queue") or None,
            misfire_grace_s=DEFAULT_MISFIRE_GRACE_S if grace is None else grace,
            catch_up=bool(doc.get("catch_up", True)),
            paused=bool(doc.get("paused", False)),
            source=str(doc.get("source") or "runtime"),
            extra={k: doc[k] for k in ("added_at",) if doc.get(k)},
        )


def make_trigger(
    cron: str | None, every: float | timedelta | None, tz: str, anchor: datetime | None
) -> Cron | Every:
    """``Cron(cron, tz)`` or ``Every(every, tz, anchor)``: exactly one of the two."""
    if (cron is None) == (every is None):
        raise ConfigError(
            "a periodic task needs exactly one of a cron expression ('*/5 * * * *') or an "
            f"interval (every=30), got cron={cron!r}, every={every!r}"
        )
    if cron is not None:
        if anchor is not None:
            raise ConfigError("anchor= applies to intervals (every=...), not to cron expressions")
        return Cron(cron, tz=tz)
    assert every is not None
    return Every(every, tz=tz) if anchor is None else Every(every, tz=tz, anchor=anchor)


class PeriodicDecorator(Protocol):
    """What ``pool.periodic(...)`` returns: a decorator taking a task (or a function, which it
    makes a task first) and returning that task."""

    @overload
    def __call__(self, fn: AsyncTask[P, R]) -> AsyncTask[P, R]: ...  # type: ignore[overload-overlap]

    @overload
    def __call__(self, fn: SyncTask[P, R]) -> SyncTask[P, R]: ...  # type: ignore[overload-overlap]

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> AsyncTask[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R]) -> SyncTask[P, R]: ...

    def __call__(self, fn: Callable[P, Any]) -> Task[P, Any]: ...


def _go_style_template(
    task: Task[Any, Any], args: Sequence[Any], kwargs: Mapping[str, Any] | None
) -> Signature:
    """A Go-style task (``fn(sig)``) is sent its args as given: :class:`~paota.Arg` values."""
    if kwargs:
        raise TypeError("a Go-style task takes args=[Arg(...), ...], not kwargs")
    bad = [a for a in args if not isinstance(a, Arg)]
    if bad:
        raise TypeError(f"a Go-style task takes args=[Arg(...), ...], got {bad[0]!r}")
    defaults = task.defaults
    return Signature(
        task.name,
        args=tuple(args),
        priority=defaults.priority or 0,
        retry_count=defaults.retry_count or 0,
        task_timeout=defaults.task_timeout or 0,
    )


class ScheduleOwner(Protocol):
    """What :func:`periodic_decorator` needs of a client: making a task and keeping a schedule
    (:class:`paota.Client`)."""

    def task(self, fn: Any) -> Any: ...

    def add_schedule(self, schedule: Schedule) -> None: ...


def periodic_decorator(
    client: ScheduleOwner,
    cron: str | None,
    *,
    every: float | timedelta | None,
    tz: str,
    id: str | None,
    args: Sequence[Any],
    kwargs: Mapping[str, Any] | None,
    queue: str | None,
    misfire_grace_s: float,
    catch_up: bool,
    anchor: datetime | None,
) -> PeriodicDecorator:
    """The body of :meth:`paota.Client.periodic` (see there)."""
    from paota.core.errors import RegistrationError
    from paota.core.tasks import Task

    trigger = make_trigger(cron, every, tz, anchor)

    def decorate(fn: Any) -> Any:
        task: Task[Any, Any] = fn if isinstance(fn, Task) else client.task(fn)
        try:
            if task.go_style:
                template = _go_style_template(task, args, kwargs)
            else:
                # The wire signature, with the task's defaults (Task.signature() is the
                # workflow-facing form).
                template = task.wire_signature(tuple(args), dict(kwargs or {}), task.defaults)
        except TypeError as exc:
            raise RegistrationError(
                f"periodic task {task.name!r}: its args/kwargs do not fit the task: {exc}"
            ) from exc
        schedule = Schedule(
            id if id is not None else task.name,
            trigger,
            template,
            queue=queue,
            misfire_grace_s=misfire_grace_s,
            catch_up=catch_up,
        )
        client.add_schedule(schedule)
        return task

    return decorate
