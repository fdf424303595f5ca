"""What schedulers keep about schedules (:mod:`paota.scheduler.scheduler` sends their slots).

In the store, shared by every scheduler: the document kinds (:data:`SCHEDULE_KIND`,
:data:`STATE_KIND`), where a schedule stands (:func:`follow` reads it when a scheduler first sees
the schedule, :func:`mark_sent` moves it on) and which late slots no scheduler sent
(:func:`unsent`). In one scheduler's memory: a :class:`ScheduleEntry` per schedule and the
:class:`Sent` slots.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from paota.core.errors import StoreError
from paota.core.protocols import Coordination
from paota.scheduler.schedule import Schedule, slot_task_id
from paota.scheduler.triggers import slot_iso

__all__ = [
    "ON_TIME_S",
    "SCHEDULE_KIND",
    "STATE_KIND",
    "ScheduleEntry",
    "Sent",
    "follow",
    "log_skipped",
    "mark_sent",
    "parse_time",
    "unsent",
    "catch_up_window_s",
]

logger = logging.getLogger("paota.scheduler")

SCHEDULE_KIND = "schedule"
"""Coordination document kind of runtime schedules (and of pause overrides of code schedules)."""
STATE_KIND = "schedule-state"
"""Coordination document kind of a schedule's progress: first seen, last slot sent."""

ON_TIME_S = 5.0
"""A slot seen this many seconds after its time is still on time (``catch_up=False`` runs only
those)."""
_SKIP_COUNT_LIMIT = 10_000
#: How many late slots a scheduler looks up one by one before calling them missed.
_CLAIM_CHECK_LIMIT = 100


@dataclass
class ScheduleEntry:
    """What one scheduler knows about one schedule."""

    schedule: Schedule
    since: str  # when a scheduler first saw the schedule (ISO 8601)
    cursor: datetime  # every slot up to here was handled (sent, skipped or left to others)
    slots: Iterator[datetime]
    upcoming: datetime | None
    retry: set[datetime] = field(default_factory=set)  # due, not sent yet (busy or failed)

    def advance(self, now: datetime) -> list[datetime]:
        """The slots of the iterator up to ``now``; the cursor moves to ``now``."""
        due = []
        while self.upcoming is not None and self.upcoming <= now:
            due.append(self.upcoming)
            self.upcoming = next(self.slots, None)
        if now > self.cursor:
            self.cursor = now
        return due


@dataclass(frozen=True)
class Sent:
    """One slot this scheduler sent."""

    schedule_id: str
    slot: datetime
    task_id: str


async def follow(
    store: Coordination, schedule: Schedule, now: datetime, name: str
) -> ScheduleEntry:
    """An entry for ``schedule``, from where the store says it stands (scheduler ``name`` logs the
    slots too old to run)."""
    state = await store.get_doc(STATE_KIND, schedule.id)
    added = parse_time(schedule.extra.get("added_at"))
    cursor = now if added is None else min(added, now)
    since = cursor.isoformat()
    if state is None:
        await store.put_doc(STATE_KIND, schedule.id, {"since": since})
    else:
        since = str(state.get("since") or since)
        marks = [parse_time(state.get("since")), parse_time(state.get("last_slot"))]
        known = [m for m in marks if m is not None]
        if known:
            cursor = min(max(known), now)
    oldest = now - timedelta(seconds=catch_up_window_s(schedule))
    if cursor < oldest and not schedule.paused:
        # After downtime: name what is too old to run without walking through all of it.
        late: list[datetime] = []
        for slot in schedule.trigger.slots_after(cursor):
            if slot >= oldest or len(late) > _SKIP_COUNT_LIMIT:
                break
            late.append(slot)
        if late:
            log_skipped(name, schedule, late, more=len(late) > _SKIP_COUNT_LIMIT)
    if cursor < oldest:
        cursor = oldest - timedelta(microseconds=1)
    slots = schedule.trigger.slots_after(cursor)
    return ScheduleEntry(schedule, since, cursor, slots, next(slots, None))


async def unsent(store: Coordination, schedule: Schedule, late: list[datetime]) -> list[datetime]:
    """Of the ``late`` slots a scheduler saw too late, those no scheduler sent: a slot another one
    claimed, or one at or before the schedule's last sent slot, was not missed (that one only
    stalled). On a store error, all of them (the WARNING errs on the loud side)."""
    try:
        state = await store.get_doc(STATE_KIND, schedule.id)
        last = None if state is None else parse_time(state.get("last_slot"))
        candidates = [slot for slot in late if last is None or slot > last]
        found = [
            slot
            for slot in candidates[:_CLAIM_CHECK_LIMIT]
            if await store.get_claim(slot_task_id(schedule.id, slot)) is None
        ]
    except StoreError:
        return late
    return found + candidates[_CLAIM_CHECK_LIMIT:]


async def mark_sent(
    store: Coordination,
    entry: ScheduleEntry | None,
    schedule: Schedule,
    slot: datetime,
    task_id: str,
    name: str,
) -> None:
    """Record in the store that scheduler ``name`` sent ``slot`` of ``schedule`` as ``task_id``."""
    await store.put_doc(
        STATE_KIND,
        schedule.id,
        {
            "since": slot.isoformat() if entry is None else entry.since,
            "last_slot": slot.isoformat(),
            "last_task_id": task_id,
            "last_sent_by": name,
        },
    )


def log_skipped(name: str, schedule: Schedule, late: list[datetime], *, more: bool = False) -> None:
    """The WARNING of scheduler ``name`` that ``late`` slots of ``schedule`` were skipped."""
    logger.warning(
        "scheduler %s: schedule %r missed %s%d slot(s) from %s to %s, older than its "
        "catch-up window (%gs%s); skipped",
        name,
        schedule.id,
        "more than " if more else "",
        len(late),
        slot_iso(late[0]),
        slot_iso(late[-1]) + (" and later" if more else ""),
        catch_up_window_s(schedule),
        "" if schedule.catch_up else ", catch-up off",
    )


def catch_up_window_s(schedule: Schedule) -> float:
    """How late a slot of ``schedule`` may still be sent."""
    return max(schedule.misfire_grace_s, ON_TIME_S) if schedule.catch_up else ON_TIME_S


def parse_time(value: Any) -> datetime | None:
    """A time of a state document (a datetime or ISO 8601 text; naive means UTC), else None."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None
