"""The store-backed half of the limits (:mod:`paota.middleware.limits`), for
``limit_scope="global"``: calls to the :class:`~paota.core.protocols.Coordination` store that
fail closed (:class:`StoreDown`), the outage a failed call starts and its probes
(:class:`Outage`), and the leases of global slots and reserved starts (:class:`GlobalLimits`).

It logs on the limiter's logger, ``paota.middleware.limits``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from paota.core.protocols import Coordination

if TYPE_CHECKING:
    from paota.core.clock import Clock
    from paota.middleware.limit_state import Hold, TaskLimit

__all__ = ["GlobalLimits", "Outage", "StoreDown"]

logger = logging.getLogger("paota.middleware.limits")

T = TypeVar("T")


class StoreDown(Exception):
    """A store call failed or timed out (the outage has been noted)."""


class Outage:
    """Whether the store is answering; while it is not, at most one probe at a time asks it."""

    def __init__(self, base_s: float, max_s: float, probe_s: float) -> None:
        self.base_s = base_s
        self.max_s = max_s
        self.probe_s = probe_s
        self.since: float | None = None
        self.failures = 0
        self.backoff_s = 0.0
        self.retry_at = 0.0
        self.probe_until = 0.0
        self.deferred = 0

    def blocked(self, now: float) -> bool:
        """True while the store is out and it is not this caller's turn to probe it."""
        if self.since is None:
            return False
        if now < self.retry_at or now < self.probe_until:
            return True
        self.probe_until = now + self.probe_s  # this caller probes; the others wait
        return False

    def delay(self, now: float, rng: random.Random) -> float:
        """Until the next probe, spread over one backoff so the deferred do not come back at
        once."""
        self.deferred += 1
        return max(0.0, self.retry_at - now) + rng.uniform(0.1, max(0.1, self.backoff_s))

    def failed(self, now: float, what: str, exc: BaseException) -> None:
        """Note a call that failed: the first starts the outage (one WARNING), each failed
        probe doubles the backoff."""
        if self.since is None:
            self.since = now
            self.failures = 1
            logger.warning(
                "limits: the store did not answer (%s: %s); tasks with a global limit are "
                "deferred until it does (fail closed)",
                what,
                _describe(exc),
            )
        elif now < self.retry_at:
            return  # a call already under way when the outage was noted: no new probe failed
        else:
            self.failures += 1
            logger.debug("limits: the store still does not answer (%s: %s)", what, _describe(exc))
        self.backoff_s = min(self.max_s, self.base_s * 2 ** (self.failures - 1))
        self.retry_at = now + self.backoff_s
        self.probe_until = 0.0

    def answered(self, now: float) -> None:
        """Note a call that the store answered: it ends the outage (one INFO line)."""
        if self.since is None:
            return
        logger.info(
            "limits: the store answers again after %.1fs; %d deliveries were deferred meanwhile",
            now - self.since,
            self.deferred,
        )
        self.since = None
        self.failures = 0
        self.deferred = 0
        self.probe_until = 0.0


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer within the timeout"
    return f"{type(exc).__name__}: {exc}"


class GlobalLimits:
    """The global limits of one limiter, kept in ``store``: a slot is a lease of ``slot_ttl_s``
    (renewed every third of it while its run lasts), a start is reserved in the store. Each call
    takes at most ``timeout_s``; one that fails raises :class:`StoreDown` and starts (or goes on
    with) ``outage``, during which calls raise it without asking the store, but for the probe."""

    def __init__(
        self,
        store: Coordination,
        clock: Clock,
        outage: Outage,
        limits: Mapping[str, TaskLimit],
        *,
        timeout_s: float,
        slot_ttl_s: float,
    ) -> None:
        self._store = store
        self._clock = clock
        self._outage = outage
        self._limits = limits
        self._timeout_s = timeout_s
        self._slot_ttl_s = slot_ttl_s
        self._renewer: asyncio.Task[None] | None = None

    async def take_slot(self, hold: Hold) -> bool:
        """Take a slot of ``hold``'s task for it: False when every slot is taken."""
        return await self._lease("taking a slot", hold)

    async def give_back(self, hold: Hold) -> None:
        """Give ``hold``'s slot back (best effort: a slot the store did not hear back about
        expires after its time to live)."""
        limit = hold.limit
        with contextlib.suppress(StoreDown):
            await self._call(
                "giving a slot back",
                functools.partial(self._store.release_slot, limit.slot_key, hold.holder),
            )

    async def reserve_start(self, limit: TaskLimit, now: datetime) -> float:
        """Reserve the next start of ``limit``'s task: how long from ``now`` it is."""
        rate = limit.rate
        assert rate is not None
        return await self._call(
            "reserving a start",
            functools.partial(self._store.reserve_start, limit.rate_key, rate.interval_s, now=now),
        )

    def start_renewing(self, name: str) -> None:
        """Renew the leases of the slots held, when a global limit has ``max_concurrency``."""
        if any(limit.is_global and limit.max_concurrency for limit in self._limits.values()):
            self._renewer = asyncio.create_task(self._renew_forever(), name=name)

    async def stop_renewing(self) -> None:
        """Stop the renewals (the leases not given back then expire)."""
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    async def _lease(self, what: str, hold: Hold) -> bool:
        limit = hold.limit
        assert limit.max_concurrency is not None
        return await self._call(
            what,
            functools.partial(
                self._store.acquire_slot,
                limit.slot_key,
                hold.holder,
                limit.max_concurrency,
                ttl_s=self._slot_ttl_s,
            ),
        )

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self._slot_ttl_s / 3)
            try:
                await self._renew()
            except Exception:  # a bug here must not stop the renewals for good
                logger.exception("limits: renewing the slots failed")

    async def _renew(self) -> None:
        for limit in self._limits.values():
            if not limit.is_global or limit.max_concurrency is None:
                continue
            for hold in list(limit.holds):
                if hold.released:
                    continue
                try:
                    kept = await self._lease("renewing a slot", hold)
                except StoreDown:
                    continue  # the outage is noted; the lease may run out meanwhile
                if not kept and not hold.released and not hold.lost:
                    hold.lost = True
                    limit.stats.lost_slots += 1
                    logger.warning(
                        "task %s: its concurrency slot (%s) expired while it ran and was taken by "
                        "another run: the store was out longer than the slot's %.0fs lease; "
                        "max_concurrency=%d may be exceeded until it ends",
                        limit.name,
                        hold.holder,
                        self._slot_ttl_s,
                        limit.max_concurrency,
                    )

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        clock = self._clock
        if self._outage.blocked(clock.monotonic()):
            raise StoreDown(what)
        try:
            result = await asyncio.wait_for(call(), self._timeout_s)
        except Exception as exc:  # any failure of the store: fail closed
            self._outage.failed(clock.monotonic(), what, exc)
            raise StoreDown(what) from exc
        self._outage.answered(clock.monotonic())
        return result
