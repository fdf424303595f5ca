"""The scheduler: sends each slot of each schedule once, however many schedulers run.

Any number of schedulers (``paota scheduler`` processes, or worker pools started with
``scheduler=True``) may run against one shared store. For each slot that is due, a scheduler:

1. skips it if the slot's claim ``sched:{id}:{slot}`` exists (someone sent it);
2. takes the slot's lease ``sched-lease:{id}:{slot}`` (an insert-if-absent that expires after
   :data:`LEASE_S`), so at most one scheduler at a time tries to send it, and checks the claim
   again under the lease;
3. sends the task, with the task id ``sched:{id}:{slot}``: even a second send of one slot (see
   below) is the same task, which a worker skips once the first has finished;
4. creates the claim (insert-if-absent, kept for a day beyond the catch-up window: the claim
   outlives the job and no task can delete it), then gives the lease back.

A scheduler that dies between 3 and 4 leaves the lease to expire; another scheduler then sends
the slot again, with the same task id. A send that fails (broker or store down) gives the lease
back and is tried again on the next tick, while the slot is within its catch-up window.

Missed slots: when a scheduler starts (or first sees a schedule), it reads the schedule's last
sent slot from the store; slots since then that are within ``misfire_grace_s`` run (once each),
older ones are skipped with one WARNING naming them (only those no other scheduler sent: a
scheduler that stalled while others sent its late slots says nothing). A schedule nobody ever ran
starts with the next slot. ``catch_up=False`` runs only slots seen within :data:`ON_TIME_S` of
their time.

Without a shared store: the memory store (or none) is one process's own, so two schedulers in two
processes would both send every slot. A scheduler then needs the broker to be in-process too
(the memory broker), or to hold a broker-held lock (the AMQP broker's exclusive queue, see
:class:`ExclusiveLocks`); a second scheduler that cannot take the lock refuses to start with a
:class:`SchedulerError` that says so. A scheduler whose lock is lost (its connection dropped)
stops sending until it takes the lock again.

What schedulers keep about each schedule, in the store and in memory, is in
:mod:`paota.scheduler.state`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from paota.core.capabilities import is_shared
from paota.core.context import SCHEDULE_HEADER, SCHEDULE_TZ_HEADER, SCHEDULED_AT_HEADER
from paota.core.errors import BrokerError, PaotaError, StoreError
from paota.core.protocols import Coordination, has_coordination
from paota.scheduler.schedule import Schedule, slot_task_id
from paota.scheduler.state import (
    ON_TIME_S,
    SCHEDULE_KIND,
    STATE_KIND,
    ScheduleEntry,
    Sent,
    catch_up_window_s,
    follow,
    log_skipped,
    mark_sent,
    unsent,
)
from paota.scheduler.triggers import slot_iso, zone

if TYPE_CHECKING:
    from paota.core.client import BaseClient as Client

__all__ = [
    "CLAIM_MARGIN_S",
    "LEASE_S",
    "ON_TIME_S",
    "SCHEDULE_KIND",
    "STATE_KIND",
    "ExclusiveLock",
    "ExclusiveLocks",
    "Scheduler",
    "SchedulerError",
    "Sent",
]

logger = logging.getLogger("paota.scheduler")

LEASE_S = 60.0
"""How long a scheduler may take to send a slot before another may try (at least; longer when
the broker's publish timeout is)."""
CLAIM_MARGIN_S = 86400.0
"""How long a slot's claim is kept beyond the catch-up window (a day: clocks of schedulers may
disagree by far less than that)."""


class SchedulerError(PaotaError):
    """A scheduler cannot run as asked (another one holds the lock, no shared store...)."""


class ExclusiveLock(Protocol):
    """A lock held on the broker for as long as its holder lives (or until :meth:`release`)."""

    @property
    def held(self) -> bool:
        """False once the lock was released or lost (its connection closed)."""
        ...

    async def release(self) -> None:
        """Give the lock back. Idempotent."""
        ...


@runtime_checkable
class ExclusiveLocks(Protocol):
    """An optional broker capability: locks the broker holds (the AMQP broker: an exclusive
    queue, which RabbitMQ deletes when the connection that declared it goes away)."""

    async def exclusive_lock(self, name: str) -> ExclusiveLock | None:
        """Take the lock ``name``: the lock, or None when another connection holds it."""
        ...


class Scheduler:
    """Sends the slots of ``client``'s schedules (its :meth:`~paota.Client.periodic` ones, plus
    the runtime schedules in the store) through ``client``.

    ``name`` identifies this scheduler in claims and logs (default: the client's name plus
    ``/scheduler``). ``poll_s`` is the longest sleep between two looks at the clock,
    ``refresh_s`` how often runtime schedules are read from the store. :meth:`tick` does one
    round (tests drive it with a :class:`~paota.ManualClock`); :meth:`run` loops until
    :meth:`stop`.
    """

    def __init__(
        self,
        client: Client,
        *,
        name: str = "",
        schedules: Sequence[Schedule] | None = None,
        poll_s: float = 1.0,
        refresh_s: float = 5.0,
    ) -> None:
        self.client = client
        self.name = name or f"{client.name}/scheduler"
        self.clock = client.clock
        self._code = list(getattr(client, "schedules", ()) if schedules is None else schedules)
        self.poll_s = poll_s
        self.refresh_s = refresh_s
        self._entries: dict[str, ScheduleEntry] = {}
        self._coord: Coordination | None = None
        self._lock: ExclusiveLock | None = None
        self._lock_name = ""
        self._standing_by = False
        self._refreshed_at: float | None = None
        self._started = False
        self._stopping: asyncio.Event | None = None
        self.sent: list[Sent] = []
        """Every slot this scheduler sent, in order (kept for tests and ``paota scheduler``'s
        report; the last 10,000)."""

    def __repr__(self) -> str:
        return f"<Scheduler {self.name} ({len(self._entries)} schedules)>"

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect the client, make sure this scheduler may run (see the module docs: a shared
        store, or an in-process broker, or the broker-held lock), and read the schedules.

        Raises :class:`SchedulerError` when it may not run.
        """
        if self._started:
            return
        await self.client.connect()
        store = self.client.store
        if has_coordination(store) and is_shared(store):
            self._coord = store
        else:
            if has_coordination(store):
                self._coord = store
            else:  # no store at all: the claims live in this process
                from paota.stores.memory import MemoryStore

                private = MemoryStore(clock=self.clock)
                await private.connect()
                self._coord = private
            await self._exclusive()
        self._started = True
        await self.refresh()
        logger.info(
            "scheduler %s started with %d schedule(s): %s",
            self.name,
            len(self._entries),
            "; ".join(e.schedule.describe() for e in self._entries.values()) or "none",
        )

    async def _exclusive(self) -> None:
        broker = self.client.broker
        if not is_shared(broker):
            return  # the broker lives in this process: no other process can send its slots
        what = _describe_store(self.client.store)
        if not isinstance(broker, ExclusiveLocks):
            raise SchedulerError(
                f"scheduler {self.name}: {what} is not shared between processes, and broker "
                f"{type(broker).__name__} offers no lock, so a second scheduler would send every "
                "slot again. Use a shared store (PAOTA_STORE=mongodb) to run any number of "
                "schedulers."
            )
        self._lock_name = f"{broker.default_queue}.scheduler-lock"
        self._lock = await broker.exclusive_lock(self._lock_name)
        if self._lock is None:
            raise SchedulerError(
                f"scheduler {self.name}: another scheduler holds the broker lock "
                f"{self._lock_name!r}, and {what} is not shared between processes, so only one "
                "scheduler may run. Stop the other one, or use a shared store "
                "(PAOTA_STORE=mongodb) to run any number of schedulers."
            )
        logger.info(
            "scheduler %s holds the broker lock %r (no shared store: it is the only scheduler)",
            self.name,
            self._lock_name,
        )

    async def close(self) -> None:
        """Give back the broker lock (if any). The client stays open (it is the caller's)."""
        lock, self._lock = self._lock, None
        if lock is not None:
            with contextlib.suppress(Exception):
                await lock.release()
        self._started = False

    async def __aenter__(self) -> Scheduler:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def run(self) -> None:
        """Start, then tick until :meth:`stop`; an unexpected error in a tick is logged and the
        loop goes on. Closes (gives the lock back) at the end."""
        self._stopping = stopping = asyncio.Event()
        await self.start()
        try:
            while not stopping.is_set():
                try:
                    await self.tick()
                except (BrokerError, StoreError) as exc:
                    logger.warning("scheduler %s: %s; trying again", self.name, exc)
                except Exception:
                    logger.exception("scheduler %s: tick failed; trying again", self.name)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), self._wait_s())
        finally:
            await self.close()

    async def stop(self) -> None:
        """Make :meth:`run` return after the current tick."""
        if self._stopping is not None:
            self._stopping.set()

    def _wait_s(self) -> float:
        now = self.clock.now()
        upcoming = [e.upcoming for e in self._entries.values() if e.upcoming is not None]
        if not upcoming:
            return self.poll_s
        wait_s = (min(upcoming) - now).total_seconds()
        return min(self.poll_s, max(0.001, wait_s))

    # --- schedules -------------------------------------------------------------------------------

    def _store(self) -> Coordination:
        if self._coord is None:
            raise SchedulerError(f"scheduler {self.name} is not started: call start() first")
        return self._coord

    async def refresh(self) -> None:
        """Read runtime schedules and pause overrides from the store, and start following new
        schedules (reading where they stand)."""
        store = self._store()
        docs = {str(d["_key"]): d for d in await store.list_docs(SCHEDULE_KIND)}
        wanted: dict[str, Schedule] = {}
        for schedule in self._code:
            doc = docs.get(schedule.id)
            if doc is not None and doc.get("source") == "code":
                schedule = schedule.replace(paused=bool(doc.get("paused")))
            wanted[schedule.id] = schedule
        for key, doc in docs.items():
            if doc.get("source") == "code" or key in wanted:
                continue
            try:
                wanted[key] = Schedule.from_doc(key, doc)
            except PaotaError as exc:
                logger.error("scheduler %s: schedule %r ignored: %s", self.name, key, exc)
        for key in list(self._entries):
            if key not in wanted:
                logger.info("scheduler %s: schedule %r removed", self.name, key)
                del self._entries[key]
        now = self.clock.now()
        for key, schedule in wanted.items():
            entry = self._entries.get(key)
            if entry is None:
                self._entries[key] = await follow(self._store(), schedule, now, self.name)
            elif entry.schedule != schedule:
                if entry.schedule.trigger != schedule.trigger:
                    entry.slots = schedule.trigger.slots_after(entry.cursor)
                    entry.upcoming = next(entry.slots, None)
                    entry.retry.clear()
                if entry.schedule.paused != schedule.paused:
                    logger.info(
                        "scheduler %s: schedule %r %s",
                        self.name,
                        key,
                        "paused" if schedule.paused else "resumed",
                    )
                entry.schedule = schedule
        self._refreshed_at = self.clock.monotonic()

    # --- one round -------------------------------------------------------------------------------

    async def tick(self) -> list[Sent]:
        """Send every due slot (see the module docs); returns what this call sent."""
        if not self._started:
            await self.start()
        if (
            self._refreshed_at is None
            or self.clock.monotonic() - self._refreshed_at >= self.refresh_s
        ):
            await self.refresh()
        if not await self._may_send():
            return []
        now = self.clock.now()
        sent: list[Sent] = []
        for entry in list(self._entries.values()):
            sent.extend(await self._run(entry, now))
        return sent

    async def _may_send(self) -> bool:
        if not self._lock_name:
            return True
        if self._lock is not None and self._lock.held:
            return True
        broker = self.client.broker
        assert isinstance(broker, ExclusiveLocks)
        try:
            self._lock = await broker.exclusive_lock(self._lock_name)
        except BrokerError as exc:
            self._lock = None
            if not self._standing_by:
                logger.error(
                    "scheduler %s lost the broker lock %r (%s); sending nothing until it is back",
                    self.name,
                    self._lock_name,
                    exc,
                )
            self._standing_by = True
            return False
        if self._lock is None:
            if not self._standing_by:
                logger.error(
                    "scheduler %s lost the broker lock %r and another scheduler took it; this "
                    "one sends nothing while that one runs",
                    self.name,
                    self._lock_name,
                )
            self._standing_by = True
            return False
        if self._standing_by:
            logger.info("scheduler %s holds the broker lock %r again", self.name, self._lock_name)
        self._standing_by = False
        return True

    async def _run(self, entry: ScheduleEntry, now: datetime) -> list[Sent]:
        schedule = entry.schedule
        due = sorted(entry.retry | set(entry.advance(now)))
        entry.retry.clear()
        if schedule.paused or not due:
            return []
        window_s = catch_up_window_s(schedule)
        oldest = now - timedelta(seconds=window_s)
        late = [slot for slot in due if slot < oldest]
        if late:
            missed = await unsent(self._store(), schedule, late)
            if missed:
                log_skipped(self.name, schedule, missed)
        sent = []
        for slot in due:
            if slot < oldest:
                continue
            result = await self._send_slot(schedule, slot, window_s)
            if result is None:
                entry.retry.add(slot)
            elif isinstance(result, Sent):
                sent.append(result)
        return sent

    async def _send_slot(
        self, schedule: Schedule, slot: datetime, window_s: float
    ) -> Sent | bool | None:
        """Send one slot: the :class:`Sent`, False when another scheduler has it, None when it
        must be tried again (another scheduler holds its lease, or the send failed)."""
        store = self._store()
        task_id = slot_task_id(schedule.id, slot)
        lease = f"sched-lease:{task_id[len('sched:') :]}"
        try:
            if await store.get_claim(task_id) is not None:
                return False
            if not await store.claim(lease, self.name, ttl_s=self._lease_s()):
                return None
            try:
                if await store.get_claim(task_id) is not None:
                    return False
                await self._publish(schedule, slot, task_id)
                claimed = await store.claim(task_id, self.name, ttl_s=window_s + CLAIM_MARGIN_S)
            finally:
                with contextlib.suppress(StoreError):
                    await store.release_claim(lease, self.name)
            if not claimed:
                logger.warning(
                    "scheduler %s: slot %s of schedule %r was sent by another scheduler too "
                    "(this one took longer than the %gs lease); the task id is the same, %s",
                    self.name,
                    slot_iso(slot),
                    schedule.id,
                    self._lease_s(),
                    task_id,
                    extra={"task_id": task_id, "task_name": schedule.task},
                )
            entry = self._entries.get(schedule.id)
            await mark_sent(store, entry, schedule, slot, task_id, self.name)
        except (BrokerError, StoreError) as exc:
            logger.warning(
                "scheduler %s: slot %s of schedule %r not sent (%s); trying again",
                self.name,
                slot_iso(slot),
                schedule.id,
                exc,
                extra={"task_id": task_id, "task_name": schedule.task},
            )
            return None
        except Exception:
            # A slot that cannot be sent at all (its arguments do not encode, a publish hook
            # bug...) would fail the same way again: say so once, and go on with the others.
            logger.exception(
                "scheduler %s: slot %s of schedule %r could not be sent; skipped",
                self.name,
                slot_iso(slot),
                schedule.id,
                extra={"task_id": task_id, "task_name": schedule.task},
            )
            return False
        done = Sent(schedule.id, slot, task_id)
        self.sent.append(done)
        if len(self.sent) > 10_000:
            del self.sent[: len(self.sent) - 10_000]
        return done

    async def _publish(self, schedule: Schedule, slot: datetime, task_id: str) -> None:
        headers = {
            SCHEDULE_HEADER: schedule.id,
            SCHEDULED_AT_HEADER: slot_iso(slot, zone(schedule.tz)),
            SCHEDULE_TZ_HEADER: schedule.tz,
        }
        sig = schedule.template.replace(uuid=task_id, created_at=None)
        await self.client.send_task(sig, queue=schedule.queue, headers=headers)
        logger.info(
            "scheduler %s: sent slot %s of schedule %r as task %s",
            self.name,
            headers[SCHEDULED_AT_HEADER],
            schedule.id,
            task_id,
            extra={"task_id": task_id, "task_name": schedule.task},
        )

    def _lease_s(self) -> float:
        publish_timeout_s = float(getattr(self.client.config.amqp, "publish_timeout_s", 0) or 0)
        return max(LEASE_S, 2 * publish_timeout_s + 10)


def _describe_store(store: object) -> str:
    return "no store" if store is None else f"the store ({type(store).__name__})"
