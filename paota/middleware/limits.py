"""Concurrency and rate limits per task that never use up retries: :class:`LimitsMiddleware`.

``@pool.task(max_concurrency=3, rate="10/s")`` lets at most 3 runs of the task be under way at
once and starts at most 10 per second. A pool installs this middleware by itself when one of its
tasks has a limit (:mod:`paota.middleware.builtin`); a pool without limits pays nothing.

Its ``admit`` hook decides before each run:

1. **Concurrency.** The run takes one of ``max_concurrency`` slots. With all of them taken, the
   delivery is deferred through the broker's delay (:class:`~paota.Defer` ``"throttled"``) and
   holds nothing while it waits. The slot is given back when the run ends, whatever its outcome
   (success, failure, timeout, cancellation, a duplicate that never ran). A sync task over its time
   limit gives its slot back when the limit fires, though its thread runs on (it cannot be
   stopped).
2. **Rate.** ``rate="N/s"`` (or ``/m``, ``/h``; ``N`` may be a decimal, ``"2.5/s"``) spaces starts
   at least ``period / N`` apart. A run that has its slot reserves the next start time: now, and it
   runs; later, and it gives its slot back and is deferred exactly to its reserved start, which the
   deferred copy carries in the ``x-paota-rate-reserved`` header, so that it starts without a
   second reservation when it comes back (a burst of throttled tasks comes back one interval
   apart, not all at once). A copy that comes back early waits again for its start; one that comes
   back more than one interval late (a worker too busy to take it in time) takes a new start, and
   so does one deferred meanwhile for another reason (all slots taken, the store out). So the
   starts granted are never closer than ``period / N`` (at most N in any period), and a copy is let
   through at most one interval after the start it was granted; the run itself follows after its
   slot's store calls and the pool's STARTED record. Over any longer time the runs keep within N
   per period; within one period they can bunch by the spread of those latencies (one late start
   next to on-time ones makes N + 1). When the broker usually delivers later than one interval (at
   high rates), the tolerance grows to twice that usual lateness, at most 1 s, so that copies do
   not miss their starts for ever; a period can then hold that many more starts.
   :data:`GRANTED_KEY` in the run's context data is the start it was granted.

A throttled delivery never counts as a retry (``retries_done`` is unchanged), is never parked for
throttling, and is logged at DEBUG only. Other tasks of the same queue keep flowing: a throttled
delivery is acknowledged and republished at once, so it keeps no place of the queue's concurrency.

Scope (``limit_scope``, a task option): ``"worker"`` (the default) counts in this pool's memory, so
each worker process has its own limits. ``"global"`` counts in the pool's store, which must have the
:class:`~paota.core.protocols.Coordination` capability, so every worker sharing the store (MongoDB)
shares the limits: slots are leases (:meth:`~paota.core.protocols.Coordination.acquire_slot` with a
time to live, renewed while a run lasts, so a crashed worker's slots come free after
``slot_ttl_s``) and starts are reserved in the store
(:meth:`~paota.core.protocols.Coordination.reserve_start`).

When the store is slow or down (a global limit), the limiter fails closed: it never lets a run
through that the store has not granted. A call that fails or takes longer than ``store_timeout_s``
starts an outage: one WARNING, then limited deliveries are deferred without asking the store,
spread over a backoff that doubles up to ``max_outage_backoff_s``; one probe at a time asks the
store again, and the first answer ends the outage with one INFO line. A start reserved before the
outage still runs (the store granted it) unless the task also needs a concurrency slot.

Throttled deliveries are spread so that they do not come back together: concurrency deferrals are
placed one after the other at the pace at which slots come free on this worker (the task's mean
run time divided by ``max_concurrency``), with 10% jitter; rate deferrals go to distinct reserved
starts.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from paota.core.context import TaskContext
from paota.core.errors import ConfigError
from paota.core.middleware import Middleware
from paota.core.outcome import Defer, Outcome
from paota.core.protocols import has_coordination
from paota.middleware import limit_options
from paota.middleware.limit_options import LIMIT_OPTIONS, SCOPES, Rate, check_limits, parse_rate
from paota.middleware.limit_state import DEFAULT_RUN_ESTIMATE_S as DEFAULT_RUN_ESTIMATE_S
from paota.middleware.limit_state import JITTER as JITTER
from paota.middleware.limit_state import MAX_GRACE_S as MAX_GRACE_S
from paota.middleware.limit_state import MIN_THROTTLE_DELAY_S as MIN_THROTTLE_DELAY_S
from paota.middleware.limit_state import Hold, TaskLimit
from paota.middleware.limit_store import GlobalLimits, Outage, StoreDown

if TYPE_CHECKING:
    from paota.core.clock import Clock
    from paota.core.pool import BaseWorkerPool as WorkerPool
    from paota.core.services import WorkerServices

__all__ = [
    "GRANTED_KEY",
    "RESERVED_HEADER",
    "SCOPES",
    "LimitStats",
    "LimitsMiddleware",
    "Rate",
    "check_limits",
    "install",
    "parse_rate",
]

logger = logging.getLogger("paota.middleware.limits")

RESERVED_HEADER = "x-paota-rate-reserved"
"""On a copy deferred by the rate limit: ``"<attempt>@<reserved start, RFC 3339>@<where>"``,
``where`` being ``global`` for a start reserved in the store, else the id of the worker's limiter
that reserved it (another worker's per-worker reservation is not this worker's)."""

GRANTED_KEY = "paota.limits.granted_at"
"""In :attr:`TaskContext.data <paota.TaskContext.data>` of a run of a rate-limited task: the start
the rate limit granted it (an aware datetime). The run itself begins when the broker delivers it,
a little later: ``current_task().started_at - granted`` is that latency."""

_HOLD = "paota.limits.hold"

#: A deferred copy may come back this much before its reserved start (float rounding) and start.
EARLY_TOLERANCE_S = 0.001


@dataclass
class LimitStats:
    """What the limiter did for one task since the pool started."""

    started: int = 0
    """Runs it let through."""
    throttled_concurrency: int = 0
    """Deliveries deferred because every slot was taken."""
    throttled_rate: int = 0
    """Deliveries deferred to a reserved start (or back to it, when they came early)."""
    throttled_store: int = 0
    """Deliveries deferred because the store did not answer (fail closed)."""
    missed_reservations: int = 0
    """Deliveries that came back too late after their reserved start (a worker too busy to take
    them in time) and reserved again."""
    lost_slots: int = 0
    """Global slots that expired while their run went on (the store was out longer than the
    slot's time to live); the limit may have been exceeded meanwhile."""


# --- the middleware ------------------------------------------------------------------------------


class LimitsMiddleware(Middleware):
    """Enforces the ``max_concurrency`` and ``rate`` options of a pool's tasks (see the module
    docs).

    A pool installs one by itself; pass your own in ``WorkerPool(middleware=[...])`` to tune it
    (the pool then installs none): ``store_timeout_s`` bounds each store call of a global limit,
    ``slot_ttl_s`` is the lease of a global slot (renewed every third of it while the run lasts),
    ``max_throttle_delay_s`` caps a concurrency deferral, ``outage_backoff_s`` and
    ``max_outage_backoff_s`` pace the probes of a store that does not answer; ``seed`` makes the
    jitter repeatable. :attr:`stats` counts what it did, per task name.
    """

    task_options = LIMIT_OPTIONS

    def __init__(
        self,
        *,
        store_timeout_s: float = 2.0,
        slot_ttl_s: float = 30.0,
        max_throttle_delay_s: float = 30.0,
        outage_backoff_s: float = 0.5,
        max_outage_backoff_s: float = 5.0,
        seed: int | None = None,
    ) -> None:
        for option, value in (
            ("store_timeout_s", store_timeout_s),
            ("slot_ttl_s", slot_ttl_s),
            ("max_throttle_delay_s", max_throttle_delay_s),
            ("outage_backoff_s", outage_backoff_s),
            ("max_outage_backoff_s", max_outage_backoff_s),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"{option}={value!r} is not valid: expected a number > 0")
        self.store_timeout_s = float(store_timeout_s)
        self.slot_ttl_s = float(slot_ttl_s)
        self.max_throttle_delay_s = float(max_throttle_delay_s)
        self._outage = Outage(
            float(outage_backoff_s), float(max_outage_backoff_s), self.store_timeout_s
        )
        self._rng = random.Random(seed)
        self._limits: dict[str, TaskLimit] = {}
        self._global: GlobalLimits | None = None  # the limits kept in the store
        self._clock: Clock | None = None
        self._worker = ""
        self._book = uuid.uuid4().hex[:12]  # whose per-worker reservations are this limiter's
        self._seq = itertools.count(1)

    @property
    def stats(self) -> Mapping[str, LimitStats]:
        """What the limiter did, per limited task name."""
        return {name: limit.stats for name, limit in self._limits.items()}

    def held(self, task_name: str) -> int:
        """How many runs of ``task_name`` hold a concurrency slot on this worker now."""
        limit = self._limits.get(task_name)
        return 0 if limit is None else sum(1 for hold in limit.holds if not hold.released)

    # --- set-up ----------------------------------------------------------------------------------

    def configure(self, pool: WorkerPool) -> None:
        """Read the limits of ``pool``'s tasks (when it starts). Raises
        :class:`~paota.ConfigError` when a task has a global limit and the pool's store cannot
        hold it."""
        registry = pool.registry
        limits: dict[str, TaskLimit] = {}
        for name in registry:
            task = registry.get(name)
            if task is None or not limit_options.has_limits(task):
                continue
            limits[name] = TaskLimit(task, LimitStats())
        store = pool.store
        global_names = sorted(n for n, limit in limits.items() if limit.is_global)
        if global_names and not has_coordination(store):
            has = "no store" if store is None else f"the store {type(store).__name__}"
            raise ConfigError(
                f"task(s) {', '.join(global_names)} have limit_scope='global', which needs a store "
                f"with the Coordination capability shared by the workers (Config(store='mongodb'), "
                f"or 'memory' within one process); this pool has {has}"
            )
        self._limits = limits
        self._global = None
        if global_names and has_coordination(store):
            self._global = GlobalLimits(
                store,
                pool.clock,
                self._outage,
                limits,
                timeout_s=self.store_timeout_s,
                slot_ttl_s=self.slot_ttl_s,
            )
        self._clock = pool.clock
        self._worker = pool.name
        self._book = uuid.uuid4().hex[:12]

    async def startup(self, services: WorkerServices) -> None:
        """Start renewing the leases of global slots, and say which limits apply."""
        for limit in self._limits.values():
            logger.info("task %s: limited to %s", limit.name, limit.describe())
        if self._global is not None:
            self._global.start_renewing(f"{self._worker}-limits-renewer")

    async def shutdown(self, services: WorkerServices) -> None:
        """Stop renewing; give back the global slots still held (best effort: they expire); say
        what the limits did."""
        if self._global is not None:
            await self._global.stop_renewing()
        for limit in self._limits.values():
            for hold in list(limit.holds):
                await self._release(hold)
            stats = limit.stats
            logger.info(
                "task %s: %d runs started; deferred %d times for concurrency, %d for the rate, %d "
                "while the store did not answer; %d reserved starts missed",
                limit.name,
                stats.started,
                stats.throttled_concurrency,
                stats.throttled_rate,
                stats.throttled_store,
                stats.missed_reservations,
            )

    # --- the hooks -------------------------------------------------------------------------------

    async def admit(self, task: TaskContext) -> Outcome | None:
        """Let the run through (holding its slot) or defer it, throttled."""
        limit = self._limits.get(task.name)
        if limit is None:
            return None
        clock = self._clock
        assert clock is not None
        arrived = clock.now()  # a reserved start's lateness does not count the slot's store call
        hold: Hold | None = None
        try:
            if limit.max_concurrency is not None:
                hold = await self._take_slot(limit, task)
                if hold is None:
                    limit.stats.throttled_concurrency += 1
                    delay_s = limit.concurrency_delay(
                        clock.monotonic(), self.max_throttle_delay_s, self._rng
                    )
                    self._debug(task, delay_s, f"all {limit.max_concurrency} slots taken")
                    return self._defer_dropping_reservation(task, delay_s)
            if limit.rate is not None:
                deferral = await self._check_rate(limit, task, arrived)
                if deferral is not None:
                    if hold is not None:
                        await self._release(hold)
                    return deferral
        except StoreDown:
            if hold is not None:
                await self._release(hold)
            limit.stats.throttled_store += 1
            delay_s = self._outage.delay(clock.monotonic(), self._rng)
            self._debug(task, delay_s, "the store does not answer")
            return self._defer_dropping_reservation(task, delay_s)
        if hold is not None:
            task.data[_HOLD] = hold
        limit.stats.started += 1
        return None

    async def execute(self, task: TaskContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        """Give the slot back as soon as the run ends (before its outcome is settled)."""
        hold: Hold | None = task.data.get(_HOLD)
        if hold is None:
            return await call_next()
        clock = self._clock
        assert clock is not None
        started = clock.monotonic()
        try:
            return await call_next()
        finally:
            hold.limit.observe(clock.monotonic() - started)
            if hold.limit.is_global:
                # shielded: a pool cancelling the run must not also cancel giving its slot back
                await asyncio.shield(self._release(hold))
            else:
                await self._release(hold)

    async def after_outcome(self, task: TaskContext, outcome: Outcome) -> None:
        """Give the slot back on the paths that never ran the task (a duplicate, a later
        middleware's outcome)."""
        hold: Hold | None = task.data.get(_HOLD)
        if hold is not None and not hold.released:
            await self._release(hold)

    def _defer_dropping_reservation(self, task: TaskContext, delay_s: float) -> Defer:
        # A copy deferred for another reason than its start will not come back at that start:
        # its reservation is void (it reserves again), and its lateness says nothing about the
        # broker's.
        if task.headers.get(RESERVED_HEADER):
            return Defer(delay_s, "throttled", headers={RESERVED_HEADER: ""})
        return Defer(delay_s, "throttled")

    # --- concurrency -----------------------------------------------------------------------------

    async def _take_slot(self, limit: TaskLimit, task: TaskContext) -> Hold | None:
        assert limit.max_concurrency is not None
        if len(limit.holds) >= limit.max_concurrency:
            return None  # this worker alone fills them: no need to ask the store
        hold = Hold(limit, f"{self._worker}/{task.id}/{next(self._seq)}")
        if limit.is_global:
            assert self._global is not None
            if not await self._global.take_slot(hold):
                return None
        limit.holds.add(hold)
        return hold

    async def _release(self, hold: Hold) -> None:
        if hold.released:
            return
        hold.released = True
        limit = hold.limit
        limit.holds.discard(hold)
        if limit.is_global:
            assert self._global is not None
            await self._global.give_back(hold)

    # --- rate ------------------------------------------------------------------------------------

    async def _check_rate(
        self, limit: TaskLimit, task: TaskContext, arrived: datetime
    ) -> Outcome | None:
        rate = limit.rate
        clock = self._clock
        assert rate is not None and clock is not None
        book = "global" if limit.is_global else self._book
        reserved = reservation(task.headers, task.attempt, book)
        if reserved is not None:
            early_s = (reserved - arrived).total_seconds()
            if early_s > EARLY_TOLERANCE_S:  # back before its start (a requeue): wait for it
                limit.stats.throttled_rate += 1
                self._debug(task, early_s, "waiting for its reserved start")
                return Defer(early_s, "throttled")
            limit.observe_lateness(-early_s)
            if -early_s <= limit.grace_s():
                task.data[GRANTED_KEY] = reserved
                return None
            # Much later than its start: starting now could crowd the starts reserved since.
            limit.stats.missed_reservations += 1
        now = clock.now()
        if limit.is_global:
            assert self._global is not None
            wait_s = await self._global.reserve_start(limit, now)
        else:
            wait_s = limit.reserve_local(now)
        start = now + timedelta(seconds=wait_s)
        if wait_s <= EARLY_TOLERANCE_S:
            task.data[GRANTED_KEY] = start
            return None
        limit.stats.throttled_rate += 1
        self._debug(task, wait_s, f"rate {rate.text}: next start reserved")
        return Defer(
            wait_s,
            "throttled",
            headers={RESERVED_HEADER: f"{task.attempt}@{start.isoformat()}@{book}"},
        )

    def _debug(self, task: TaskContext, delay_s: float, why: str) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "task %s (%s) throttled (%s); back in %.3fs",
                task.id,
                task.name,
                why,
                delay_s,
                extra=task.log_extra,
            )


def reservation(headers: Mapping[str, Any], attempt: int, book: str) -> datetime | None:
    """The start reserved for this attempt in ``book`` (``"global"``, or a limiter's id), from
    ``x-paota-rate-reserved``, or None. A retry is a new attempt: it reserves its own start."""
    raw = headers.get(RESERVED_HEADER)
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if not isinstance(raw, str):
        return None
    parts = raw.split("@")
    if len(parts) != 3 or parts[0] != str(attempt) or parts[2] != book:
        return None
    when = parts[1]
    try:
        start = datetime.fromisoformat(when)
    except ValueError:
        return None
    return start if start.tzinfo is not None else None


def install(pool: WorkerPool) -> list[Middleware]:
    """The limiter :mod:`paota.middleware.builtin` adds to ``pool`` when the pool uses limits (a
    task with a limit, or a :class:`LimitsMiddleware` of its own): none when the pool's own
    middleware has one (which is then configured)."""
    own = [m for m in pool.middleware if isinstance(m, LimitsMiddleware)]
    if own:
        for middleware in own:
            middleware.configure(pool)
        return []
    limiter = LimitsMiddleware()
    limiter.configure(pool)
    return [limiter]
