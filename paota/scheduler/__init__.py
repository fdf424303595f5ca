"""Periodic tasks: schedules, their slots, and the scheduler that sends each slot once.

- :class:`Cron` and :class:`Every` say when (cron needs the ``paota[schedules]`` extra);
- :class:`Schedule` says what (``@pool.periodic(...)`` makes one per task);
- :class:`Scheduler` sends the slots (``paota scheduler MODULE:POOL``, or
  ``WorkerPool(..., scheduler=True)``), any number of them on a shared store;
- :class:`Schedules` adds, pauses, resumes, removes and lists schedules at run time
  (``paota schedules``).

Importing this package imports no cron parser; making a :class:`Cron` does.
"""

from paota.scheduler.manage import ScheduleInfo, Schedules
from paota.scheduler.schedule import DEFAULT_MISFIRE_GRACE_S, Schedule, slot_task_id
from paota.scheduler.scheduler import (
    ON_TIME_S,
    ExclusiveLock,
    ExclusiveLocks,
    Scheduler,
    SchedulerError,
    Sent,
)
from paota.scheduler.triggers import Cron, Every

__all__ = [
    "DEFAULT_MISFIRE_GRACE_S",
    "ON_TIME_S",
    "Cron",
    "Every",
    "ExclusiveLock",
    "ExclusiveLocks",
    "Schedule",
    "ScheduleInfo",
    "Scheduler",
    "SchedulerError",
    "Schedules",
    "Sent",
    "slot_task_id",
]
