"""The scheduler on the memory broker and store with a virtual clock: each slot once across many
schedulers, the slot time a task reads, missed slots, runtime schedules, and when a scheduler
must refuse to start."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from paota import (
    Arg,
    Config,
    ConfigError,
    ManualClock,
    OutgoingMessage,
    RegistrationError,
    Signature,
    WorkerPool,
    current_task,
)
from paota.brokers.memory import MemoryBroker
from paota.scheduler import (
    Cron,
    Every,
    ExclusiveLock,
    Schedule,
    Scheduler,
    SchedulerError,
    Schedules,
    slot_task_id,
)
from paota.stores.memory import MemoryStore
from tests.waiting import until

START = datetime(2026, 5, 4, 8, 0, 0, tzinfo=UTC)  # a Monday, far from DST changes


class Interleaving:
    """A store whose every call first yields to the event loop a random number of times, as a
    network round trip would, so concurrent schedulers interleave between their steps."""

    def __init__(self, store: MemoryStore, rng: random.Random) -> None:
        self._store = store
        self._rng = rng

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._store, name)
        if not asyncio.iscoroutinefunction(target):
            return target

        async def call(*args: Any, **kwargs: Any) -> Any:
            for _ in range(self._rng.randrange(4)):
                await asyncio.sleep(0)
            return await target(*args, **kwargs)

        return call


class RecordingBroker(MemoryBroker):
    """The memory broker, remembering the id of every message published to it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sent_ids: list[str] = []

    async def publish(self, message: OutgoingMessage) -> None:
        self.sent_ids.append(message.message_id)
        await super().publish(message)


class World:
    """One virtual clock, one memory broker and one memory store shared by everything."""

    def __init__(self, start: datetime = START) -> None:
        self.clock = ManualClock(start)
        self.broker = RecordingBroker(clock=self.clock)
        self.store = MemoryStore(clock=self.clock)

    def pool(self, name: str = "p", store: Any = None, **kwargs: Any) -> WorkerPool:
        return WorkerPool(
            Config(),
            8,
            name,
            broker=self.broker,
            store=store if store is not None else self.store,
            clock=self.clock,
            **kwargs,
        )

    def published(self) -> list[str]:
        """The ids of every message published so far, in order."""
        return list(self.broker.sent_ids)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    w = World()
    yield w
    await w.broker.close()


async def test_five_schedulers_over_ten_virtual_minutes_send_each_slot_exactly_once(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # given five producer processes (five clients, one shared broker and store), each with the
    # same `* * * * *` schedule and its own scheduler, their store calls interleaving at random
    rng = random.Random(9)
    schedulers = []
    for i in range(5):
        client = world.pool(f"producer-{i}", store=Interleaving(world.store, rng))

        @client.periodic("* * * * *", tz="Europe/Berlin")
        async def report() -> None: ...

        schedulers.append(Scheduler(client, name=f"scheduler-{i}"))
    await world.store.connect()
    for scheduler in schedulers:
        await scheduler.start()
    # when ten virtual minutes pass in uneven steps, every scheduler ticking after each step
    # (all at once, in a random order), one of them stopping at 4 minutes and coming back at 7
    elapsed = 0.0
    while elapsed < 600:
        step = rng.uniform(0.2, 9.0)
        world.clock.advance(step)
        elapsed += step
        awake = [s for i, s in enumerate(schedulers) if i != 3 or not 240 <= elapsed < 420]
        rng.shuffle(awake)
        await asyncio.gather(*(s.tick() for s in awake))
    # then each of the ten slots was published exactly once, with the slot's task id
    slots = [START + timedelta(minutes=m) for m in range(1, 11)]
    published = world.published()
    assert Counter(published) == Counter(slot_task_id("report", s) for s in slots)
    # and the work was shared: several schedulers sent slots
    senders = Counter(sent.schedule_id + "@" + s.name for s in schedulers for sent in s.sent)
    assert sum(senders.values()) == 10
    assert len(senders) >= 2
    # and the scheduler that was away does not call the slots the others sent missed
    assert not [r.getMessage() for r in caplog.records if "missed" in r.getMessage()]


async def test_the_task_reads_its_slot_time_in_the_schedules_zone_on_every_attempt(
    world: World,
) -> None:
    pool = world.pool()
    seen: list[tuple[str, str, datetime | None, int]] = []

    @pool.periodic("30 9 * * *", tz="America/New_York", args=(5,))
    @pool.task(retry_count=1)
    async def digest(limit: int) -> int:
        ctx = current_task()
        seen.append((ctx.id, ctx.schedule_id, ctx.scheduled_at, ctx.attempt))
        if ctx.attempt == 0:
            raise RuntimeError("first attempt fails")
        return limit

    scheduler = Scheduler(pool)
    async with pool:
        worker = asyncio.create_task(pool.start(install_signal_handlers=False))
        await scheduler.start()
        world.clock.advance(6 * 3600)  # 14:00 UTC = 10:00 in New York: 09:30 is 30 minutes late
        assert await scheduler.tick() == []  # later than the 60 s window: skipped
        world.clock.advance(86400 - 30 * 60 - 1)  # the next day, one second before 09:30
        assert await scheduler.tick() == []
        world.clock.advance(1)
        [sent] = await scheduler.tick()
        await world.broker.run_until_idle()
        await pool.stop()
        await worker
        state = await world.store.get(sent.task_id)
    slot = datetime(2026, 5, 5, 9, 30, tzinfo=ZoneInfo("America/New_York"))
    assert sent.slot == slot
    assert sent.task_id == "sched:digest:2026-05-05T13:30:00Z"
    assert [s[3] for s in seen] == [0, 1]
    for task_id, schedule_id, scheduled_at, _ in seen:
        assert (task_id, schedule_id) == (sent.task_id, "digest")
        assert scheduled_at == slot
        assert scheduled_at is not None and scheduled_at.tzinfo == ZoneInfo("America/New_York")
    assert state is not None and state.result == 5


async def test_a_fast_job_cannot_make_its_slot_run_twice(world: World) -> None:
    # arq #196: a unique cron job ran twice when the job deleted its own key. Here the claim is
    # the scheduler's, not the job's, and outlives it.
    pool = world.pool()
    runs: list[str] = []

    @pool.periodic(every=60)
    async def quick() -> None:
        runs.append(current_task().id)

    first = Scheduler(pool, name="first")
    async with pool:
        worker = asyncio.create_task(pool.start(install_signal_handlers=False))
        await first.start()
        world.clock.advance(60)
        assert len(await first.tick()) == 1
        await world.broker.run_until_idle()  # the job ran and finished at once
        # a scheduler started after the job finished sees the slot within its catch-up window
        late = Scheduler(pool, name="late")
        await late.start()
        world.clock.advance(10)
        assert await late.tick() == []
        assert await first.tick() == []
        await world.broker.run_until_idle()
        await pool.stop()
        await worker
    assert runs == [slot_task_id("quick", START + timedelta(seconds=60))]


async def test_a_slot_sent_twice_after_a_crash_is_one_task_and_runs_once(world: World) -> None:
    # given a scheduler that dies after sending a slot and before claiming it
    pool = world.pool()
    runs: list[str] = []

    @pool.periodic(every=600, misfire_grace_s=300)
    async def job() -> None:
        runs.append(current_task().id)

    crashing = Scheduler(pool, name="crashing")
    real_claim = world.store.claim

    async def claim_then_die(key: str, owner: str, *, ttl_s: float | None = None) -> bool:
        if owner == "crashing" and key.startswith("sched:"):
            raise asyncio.CancelledError  # the process is gone
        return await real_claim(key, owner, ttl_s=ttl_s)

    async def release_never(key: str, owner: str) -> bool:
        if owner == "crashing":
            raise asyncio.CancelledError  # a dead process runs no finally: the lease stays
        return await real_release(key, owner)

    real_release = world.store.release_claim
    world.store.claim = claim_then_die  # type: ignore[method-assign]
    world.store.release_claim = release_never  # type: ignore[method-assign]
    async with pool:
        worker = asyncio.create_task(pool.start(install_signal_handlers=False))
        await crashing.start()
        world.clock.advance(600)
        with pytest.raises(asyncio.CancelledError):
            await crashing.tick()
        await world.broker.run_until_idle()
        # when another scheduler looks after the lease has expired
        other = Scheduler(pool, name="other")
        await other.start()
        world.clock.advance(30)
        assert await other.tick() == []  # the lease is still held by the dead scheduler
        world.clock.advance(60)  # the lease (70 s: twice the publish timeout, plus 10) is over
        [again] = await other.tick()
        await world.broker.run_until_idle()
        await pool.stop()
        await worker
    # then the slot was sent twice, as one task id, and ran once
    task_id = slot_task_id("job", START + timedelta(seconds=600))
    assert world.published() == [task_id, task_id]
    assert again.task_id == task_id
    assert runs == [task_id]
    assert pool.stats.duplicates == 1


async def test_after_downtime_slots_within_the_window_run_once_and_older_ones_are_skipped(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    pool = world.pool()

    @pool.periodic(every=60, misfire_grace_s=150)
    async def catch_up() -> None: ...

    @pool.periodic(every=60, catch_up=False)
    async def no_catch_up() -> None: ...

    first = Scheduler(pool, name="first")
    await pool.connect()
    await first.start()
    world.clock.advance(60)
    assert [s.schedule_id for s in await first.tick()] == ["catch_up", "no_catch_up"]
    # every scheduler is down for ten minutes
    world.clock.advance(600)
    caplog.set_level(logging.WARNING, logger="paota.scheduler")
    second = Scheduler(pool, name="second")
    await second.start()
    sent = await second.tick()
    # slots 9, 10 and 11 minutes are within 150 s, minutes 2..8 are skipped, and said so; without
    # catch-up only the slot of now (11) runs
    assert [(s.schedule_id, s.slot) for s in sent] == [
        *[("catch_up", START + timedelta(minutes=m)) for m in (9, 10, 11)],
        ("no_catch_up", START + timedelta(minutes=11)),
    ]
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert any(
        "'catch_up' missed 7 slot(s) from 2026-05-04T08:02:00Z to 2026-05-04T08:08:00Z" in m
        for m in skipped
    ), skipped
    assert any(
        "'no_catch_up' missed 9 slot(s) from 2026-05-04T08:02:00Z to 2026-05-04T08:10:00Z" in m
        and "catch-up off" in m
        for m in skipped
    ), skipped
    # and the next slot runs on time for both
    world.clock.advance(60)
    assert sorted(s.schedule_id for s in await second.tick()) == ["catch_up", "no_catch_up"]
    await pool.close()


async def test_a_new_schedule_starts_with_its_next_slot(world: World) -> None:
    pool = world.pool()

    @pool.periodic(every=60, misfire_grace_s=3600)
    async def fresh() -> None: ...

    world.clock.advance(30)  # the 08:00 slot is 30 s old, well within the window
    scheduler = Scheduler(pool)
    await pool.connect()
    await scheduler.start()
    assert await scheduler.tick() == []
    world.clock.advance(30)
    [sent] = await scheduler.tick()
    assert sent.slot == START + timedelta(minutes=1)
    await pool.close()


async def test_runtime_schedules_are_added_paused_resumed_and_removed(world: World) -> None:
    pool = world.pool()

    @pool.periodic(every=60)
    async def from_code() -> None: ...

    @pool.task(name="Print")
    def print_task(who: str) -> str:
        return f"hello {who}"

    scheduler = Scheduler(pool, refresh_s=1)
    await pool.connect()
    await scheduler.start()
    book = Schedules(world.store, code=pool.schedules, clock=world.clock)
    await book.add(
        Schedule(
            "greet",
            Cron("*/2 * * * *", tz="Europe/Berlin"),
            Signature("Print", args=(Arg("who", "string", "Ada"),)),
        )
    )
    [code_info, runtime_info] = await book.list(count=2)
    assert (code_info.schedule.id, code_info.schedule.source) == ("from_code", "code")
    assert runtime_info.schedule.source == "runtime"
    assert [t.isoformat() for t in runtime_info.next_slots] == [
        "2026-05-04T10:02:00+02:00",
        "2026-05-04T10:04:00+02:00",
    ]

    async def minutes(n: int) -> list[str]:
        sent = []
        for _ in range(n):
            world.clock.advance(60)
            sent += [f"{s.schedule_id}@{s.slot:%H:%M}" for s in await scheduler.tick()]
        return sent

    assert await minutes(2) == ["from_code@08:01", "from_code@08:02", "greet@08:02"]
    await book.pause("greet")
    await book.pause("from_code")  # a code schedule is paused by an override document
    assert await minutes(3) == []
    assert [i.next_slots for i in await book.list()] == [(), ()]
    await book.resume("greet")
    await book.resume("from_code")
    # slots of the pause are not caught up
    assert await minutes(2) == ["from_code@08:06", "greet@08:06", "from_code@08:07"]
    await book.remove("greet")
    assert await minutes(2) == ["from_code@08:08", "from_code@08:09"]
    [listed] = await book.list()
    assert listed.last_slot == datetime(2026, 5, 4, 8, 9, tzinfo=UTC)
    with pytest.raises(ConfigError, match="declared in code"):
        await book.remove("from_code")
    with pytest.raises(ConfigError, match="no schedule 'nope'"):
        await book.pause("nope")
    await book.add(Schedule("x", Every(5), Signature("Print")))
    with pytest.raises(ConfigError, match="exists already"):
        await book.add(Schedule("x", Every(5), Signature("Print")))
    await book.add(Schedule("x", Every(7), Signature("Print")), replace=True)
    assert [s.trigger for s in await book.all() if s.id == "x"] == [Every(7)]
    await pool.close()


async def test_a_periodic_task_is_checked_when_it_is_declared(world: World) -> None:
    pool = world.pool()

    @pool.task
    async def add(a: int, b: int) -> int:
        return a + b

    with pytest.raises(RegistrationError, match="args/kwargs do not fit the task"):
        pool.periodic(every=5, args=(1,))(add)
    pool.periodic(every=5, args=(1, 2))(add)
    with pytest.raises(RegistrationError, match="a schedule named 'add' exists already"):
        pool.periodic("* * * * *", kwargs={"a": 1, "b": 2})(add)
    pool.periodic("* * * * *", id="add-every-minute", kwargs={"a": 1, "b": 2})(add)
    assert [s.id for s in pool.schedules] == ["add", "add-every-minute"]
    with pytest.raises(ConfigError, match="exactly one of a cron expression"):
        pool.periodic()
    with pytest.raises(ConfigError, match="exactly one of a cron expression"):
        pool.periodic("* * * * *", every=5)
    with pytest.raises(ConfigError, match="schedule id 'a b' is not valid"):
        pool.periodic(every=5, id="a b", args=(1, 2))(add)


# --- without a shared store -------------------------------------------------------------------


class _Lock:
    def __init__(self) -> None:
        self.held = True

    async def release(self) -> None:
        self.held = False


class NetworkBroker:
    """A broker as another process sees it (not the in-process memory broker), with or without
    broker-held locks."""

    shared = True  # what the scheduler asks (paota.core.capabilities)

    def __init__(self, inner: MemoryBroker, *, locks: bool) -> None:
        self._inner = inner
        self.held: dict[str, _Lock] = {}
        if locks:
            self.exclusive_lock = self._exclusive_lock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def _exclusive_lock(self, name: str) -> ExclusiveLock | None:
        current = self.held.get(name)
        if current is not None and current.held:
            return None
        lock = self.held[name] = _Lock()
        return lock


async def test_without_a_shared_store_a_second_scheduler_refuses_to_start(world: World) -> None:
    broker = NetworkBroker(world.broker, locks=True)
    pools = [
        WorkerPool(
            Config(),
            2,
            f"p{i}",
            broker=broker,
            store=MemoryStore(clock=world.clock),
            clock=world.clock,
        )
        for i in range(2)
    ]
    for pool in pools:

        @pool.periodic(every=60)
        async def job() -> None: ...

    first, second = (Scheduler(p, name=f"s{i}") for i, p in enumerate(pools))
    await first.start()
    with pytest.raises(SchedulerError, match="another scheduler holds the broker lock") as info:
        await second.start()
    assert "paota_tasks.scheduler-lock" in str(info.value)
    assert "PAOTA_STORE=mongodb" in str(info.value)
    # when the first gives the lock back, a new one may start
    await first.close()
    await second.start()
    world.clock.advance(60)
    assert len(await second.tick()) == 1
    # a lost lock stops the sending until it is back
    broker.held["paota_tasks.scheduler-lock"].held = False
    broker.held["paota_tasks.scheduler-lock"] = _Lock()  # someone else took it
    world.clock.advance(60)
    assert await second.tick() == []


async def test_without_a_shared_store_or_a_lock_a_scheduler_refuses_to_start(world: World) -> None:
    pool = WorkerPool(
        Config(),
        2,
        "p",
        broker=NetworkBroker(world.broker, locks=False),
        store=None,
        clock=world.clock,
    )
    with pytest.raises(SchedulerError, match="no store is not shared between processes") as info:
        await Scheduler(pool).start()
    assert "offers no lock" in str(info.value)


async def test_in_one_process_the_memory_store_is_enough(world: World) -> None:
    # the memory broker lives in this process: no other process can send its slots
    pool = WorkerPool(Config(), 2, "p", broker=world.broker, store=None, clock=world.clock)

    @pool.periodic(every=60)
    async def job() -> None: ...

    scheduler = Scheduler(pool)
    await scheduler.start()
    world.clock.advance(60)
    assert len(await scheduler.tick()) == 1


# --- in a worker pool -------------------------------------------------------------------------


async def test_a_worker_pool_with_scheduler_true_runs_its_periodic_tasks() -> None:
    pool = WorkerPool(Config(store="memory"), 4, "scheduling-pool", scheduler=True)
    runs: list[datetime | None] = []

    @pool.periodic(every=0.05)
    async def often() -> None:
        runs.append(current_task().scheduled_at)

    async with pool:
        worker = asyncio.create_task(pool.start(install_signal_handlers=False))
        await until(lambda: len(runs) >= 3, timeout_s=30, what="three scheduled runs")
        await pool.stop()
        await asyncio.wait_for(worker, 10)
    assert len(runs) >= 3
    assert all(r is not None for r in runs)
    assert runs == sorted(runs)  # type: ignore[type-var]
    assert len(set(runs)) == len(runs)


async def test_a_runtime_schedule_runs_from_when_it_was_added_not_when_it_was_first_seen(
    world: World,
) -> None:
    pool = world.pool()
    scheduler = Scheduler(pool, refresh_s=30)
    await pool.connect()
    await scheduler.start()
    book = Schedules(pool.store, clock=world.clock)
    await book.add(Schedule("added", Every(60), Signature("Print")))  # at 08:00:00
    world.clock.advance(60)  # the scheduler reads runtime schedules at 08:00:30, 08:01:00 ...
    [sent] = await scheduler.tick()
    assert sent.slot == START + timedelta(minutes=1)
    await pool.close()


async def test_the_memory_store_forgets_expired_slot_claims(world: World) -> None:
    pool = world.pool()

    @pool.periodic(every=1, misfire_grace_s=0)
    async def each_second() -> None: ...

    scheduler = Scheduler(pool)
    await pool.connect()
    await scheduler.start()
    for _ in range(3000):  # 3000 slots, a claim each, kept for a day beyond the window
        world.clock.advance(1)
        await scheduler.tick()
    kept = len(world.store._claims)
    world.clock.advance(2 * 86400)
    for _ in range(1100):
        world.clock.advance(1)
        await scheduler.tick()
    assert kept >= 3000
    assert len(world.store._claims) <= 1100 + 1024
    await pool.close()


async def test_a_slot_that_cannot_be_sent_is_logged_and_the_others_go_on(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    pool = world.pool()

    @pool.periodic(every=60, id="a-broken")
    async def broken() -> None: ...

    @pool.periodic(every=60, id="b-fine")
    async def fine() -> None: ...

    real_send = pool.send_task

    async def send_task(sig: Signature, **kwargs: Any) -> Any:
        if sig.name == "broken":
            raise ValueError("cannot encode")
        return await real_send(sig, **kwargs)

    pool.send_task = send_task  # type: ignore[method-assign]
    scheduler = Scheduler(pool)
    await pool.connect()
    await scheduler.start()
    world.clock.advance(60)
    assert [s.schedule_id for s in await scheduler.tick()] == ["b-fine"]
    [record] = [r for r in caplog.records if "could not be sent" in r.getMessage()]
    assert "slot 2026-05-04T08:01:00Z of schedule 'a-broken'" in record.getMessage()
    assert record.exc_info is not None and "cannot encode" in str(record.exc_info[1])
    await pool.close()


@pytest.mark.parametrize(
    ("tz", "start", "expression", "hours", "expected_local"),
    [
        # New York falls back on 2026-11-01 (01:00-02:00 twice): an hourly job runs at both 01:00s
        (
            "America/New_York",
            datetime(2026, 11, 1, 3, 30, tzinfo=UTC),
            "0 * * * *",
            6,
            ["00:00 EDT", "01:00 EDT", "01:00 EST", "02:00 EST", "03:00 EST", "04:00 EST"],
        ),
        # Berlin falls back on 2026-10-25 (02:00-03:00 twice): a job naming its hour runs once
        (
            "Europe/Berlin",
            datetime(2026, 10, 24, 23, 30, tzinfo=UTC),
            "30 2 * * *",
            5,
            ["02:30 CEST"],
        ),
        # Berlin springs forward on 2026-03-29 (02:00 -> 03:00): the 02:30 job runs once, at 03:00
        (
            "Europe/Berlin",
            datetime(2026, 3, 28, 23, 30, tzinfo=UTC),
            "30 2 * * *",
            5,
            ["03:00 CEST"],
        ),
        # New York springs forward on 2026-03-08: an hourly job runs 23 times that day; over the
        # change 01:00 EST is followed by 03:00 EDT
        (
            "America/New_York",
            datetime(2026, 3, 8, 5, 30, tzinfo=UTC),
            "0 * * * *",
            3,
            ["01:00 EST", "03:00 EDT", "04:00 EDT"],
        ),
    ],
)
async def test_a_running_scheduler_sends_the_slots_of_a_dst_change_by_the_stated_rules(
    tz: str, start: datetime, expression: str, hours: int, expected_local: list[str]
) -> None:
    # given a worker with a scheduler (the virtual clock half an hour before the change's night)
    world = World(start)
    pool = world.pool()
    ran: list[str] = []

    @pool.periodic(expression, tz=tz)
    async def job() -> None:
        scheduled_at = current_task().scheduled_at
        assert scheduled_at is not None
        ran.append(scheduled_at.strftime("%H:%M %Z"))

    scheduler = Scheduler(pool)
    async with pool:
        worker = asyncio.create_task(pool.start(install_signal_handlers=False))
        await scheduler.start()
        # when the clock walks through the night a minute at a time, the scheduler ticking
        for _ in range(hours * 60):
            world.clock.advance(60)
            await scheduler.tick()
            await world.broker.run_until_idle()
        await pool.stop()
        await worker
    # then the slots sent, and run, are those the README's rules name, each once
    assert ran == expected_local
    assert len(world.published()) == len(set(world.published())) == len(expected_local)
    await world.broker.close()
