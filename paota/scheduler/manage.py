"""Schedules at run time: add, pause, resume, remove and list them (``paota schedules``).

Runtime schedules are Coordination documents of kind ``"schedule"`` in the store, so every
scheduler sharing the store sees a change within its ``refresh_s`` (5 s by default). A schedule
declared in code (``@pool.periodic``) cannot be added or removed here, but can be paused and
resumed: that stores a small override document (``{"source": "code", "paused": true}``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any

from paota.core.clock import Clock, SystemClock
from paota.core.errors import ConfigError
from paota.core.protocols import Coordination, has_coordination
from paota.scheduler.schedule import Schedule, check_id
from paota.scheduler.scheduler import SCHEDULE_KIND, STATE_KIND
from paota.scheduler.triggers import zone

__all__ = ["ScheduleInfo", "Schedules"]


@dataclass(frozen=True)
class ScheduleInfo:
    """A schedule as :meth:`Schedules.list` shows it: its next slots (aware, in its zone) and
    the last slot any scheduler sent."""

    schedule: Schedule
    next_slots: tuple[datetime, ...]
    last_slot: datetime | None
    last_sent_by: str

    @property
    def next_slot(self) -> datetime | None:
        """The next slot, or None (paused, or a cron expression that never matches again)."""
        return self.next_slots[0] if self.next_slots else None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``paota schedules --json``)."""
        s = self.schedule
        return {
            "id": s.id,
            "task": s.task,
            "trigger": s.trigger.to_doc(),
            "source": s.source,
            "paused": s.paused,
            "queue": s.queue,
            "misfire_grace_s": s.misfire_grace_s,
            "catch_up": s.catch_up,
            "next": [t.isoformat() for t in self.next_slots],
            "last_slot": None if self.last_slot is None else self.last_slot.isoformat(),
            "last_sent_by": self.last_sent_by,
        }


class Schedules:
    """The schedules of one store: the runtime ones it holds, plus ``code`` (the schedules a
    pool declares with ``@pool.periodic``, for listing and pausing)."""

    def __init__(
        self, store: object, *, code: Sequence[Schedule] = (), clock: Clock | None = None
    ) -> None:
        if not has_coordination(store):
            raise ConfigError(
                f"runtime schedules need a store with the Coordination capability (memory or "
                f"mongodb), got {type(store).__name__}"
            )
        self.store: Coordination = store
        self.code = {s.id: s for s in code}
        self.clock = clock or SystemClock()

    async def add(self, schedule: Schedule, *, replace: bool = False) -> None:
        """Store a runtime schedule (``replace=True`` overwrites one with the same id).
        ConfigError when the id is a code schedule's, or exists and ``replace`` is False."""
        if schedule.id in self.code:
            raise ConfigError(
                f"schedule {schedule.id!r} is declared in code (@periodic); give the runtime "
                "schedule another id"
            )
        current = await self.store.get_doc(SCHEDULE_KIND, schedule.id)
        if current is not None and not replace:
            raise ConfigError(
                f"schedule {schedule.id!r} exists already; remove it first or replace it "
                "(replace=True, paota schedules add --replace)"
            )
        doc = schedule.replace(source="runtime").to_doc()
        # Its slots start from now, even for a scheduler that first sees it a while later.
        doc["added_at"] = self.clock.now().isoformat()
        await self.store.put_doc(SCHEDULE_KIND, schedule.id, doc)

    async def pause(self, schedule_id: str) -> None:
        """Pause a schedule: no slot is sent while it is paused (they are not caught up later)."""
        await self._set_paused(schedule_id, True)

    async def resume(self, schedule_id: str) -> None:
        """Resume a paused schedule, from its next slot on."""
        await self._set_paused(schedule_id, False)

    async def _set_paused(self, schedule_id: str, paused: bool) -> None:
        check_id(schedule_id)
        if schedule_id in self.code:
            await self.store.put_doc(
                SCHEDULE_KIND, schedule_id, {"source": "code", "paused": paused}
            )
            return
        doc = await self.store.get_doc(SCHEDULE_KIND, schedule_id)
        if doc is None or doc.get("source") == "code":
            raise self._unknown(schedule_id)
        doc.pop("_key", None)
        await self.store.put_doc(SCHEDULE_KIND, schedule_id, {**doc, "paused": paused})

    async def remove(self, schedule_id: str) -> None:
        """Remove a runtime schedule (its slots' claims stay until they expire)."""
        check_id(schedule_id)
        if schedule_id in self.code:
            raise ConfigError(
                f"schedule {schedule_id!r} is declared in code (@periodic): remove it from the "
                "code, or pause it"
            )
        doc = await self.store.get_doc(SCHEDULE_KIND, schedule_id)
        if doc is None or doc.get("source") == "code":
            raise self._unknown(schedule_id)
        await self.store.delete_doc(SCHEDULE_KIND, schedule_id)

    async def get(self, schedule_id: str) -> Schedule | None:
        """The schedule ``schedule_id`` as schedulers see it (pause overrides applied), or None."""
        return next((s for s in await self.all() if s.id == schedule_id), None)

    async def all(self) -> list[Schedule]:
        """Every schedule: the code ones first (pause overrides applied), then the runtime ones."""
        docs = {str(d["_key"]): d for d in await self.store.list_docs(SCHEDULE_KIND)}
        found = []
        for schedule in self.code.values():
            doc = docs.get(schedule.id)
            if doc is not None and doc.get("source") == "code":
                schedule = schedule.replace(paused=bool(doc.get("paused")))
            found.append(schedule)
        for key, doc in docs.items():
            if doc.get("source") != "code" and key not in self.code:
                found.append(Schedule.from_doc(key, doc))
        return found

    async def list(self, *, count: int = 1, now: datetime | None = None) -> list[ScheduleInfo]:
        """Every schedule with its next ``count`` slots after ``now`` (none while paused)."""
        now = now or self.clock.now()
        infos = []
        for schedule in await self.all():
            tz = zone(schedule.tz)
            upcoming: tuple[datetime, ...] = ()
            if not schedule.paused:
                upcoming = tuple(
                    t.astimezone(tz) for t in islice(schedule.trigger.slots_after(now), count)
                )
            state = await self.store.get_doc(STATE_KIND, schedule.id) or {}
            last_text = state.get("last_slot")
            last = datetime.fromisoformat(last_text).astimezone(tz) if last_text else None
            infos.append(
                ScheduleInfo(schedule, upcoming, last, str(state.get("last_sent_by") or ""))
            )
        return infos

    def _unknown(self, schedule_id: str) -> ConfigError:
        return ConfigError(
            f"no schedule {schedule_id!r} (runtime schedules are in the store; code schedules "
            "need the pool: paota schedules --target MODULE:POOL)"
        )
