"""The coordination contract: every store offering :class:`~paota.core.protocols.Coordination`
passes these tests (subclasses provide a connected ``store`` fixture on a fresh database and an
``advance(seconds)`` fixture that moves the store's clock, real or virtual)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from paota.core.protocols import Coordination

Advance = Callable[[float], Awaitable[None]]


class CoordinationContract:
    """Behaviour every coordinating store shows."""

    async def test_a_claim_is_won_once(self, store: Any) -> None:
        assert isinstance(store, Coordination)
        results = await asyncio.gather(*(store.claim("slot-1", f"s{i}") for i in range(10)))
        assert results.count(True) == 1
        winner = f"s{results.index(True)}"
        assert await store.get_claim("slot-1") == winner
        assert await store.claim("slot-1", winner) is False  # not even by the winner again
        assert await store.release_claim("slot-1", "someone-else") is False
        assert await store.release_claim("slot-1", winner) is True
        assert await store.get_claim("slot-1") is None
        assert await store.claim("slot-1", "later") is True

    async def test_an_expired_claim_can_be_taken(self, store: Any, advance: Advance) -> None:
        assert await store.claim("lease", "a", ttl_s=1) is True
        assert await store.claim("lease", "b", ttl_s=1) is False
        await advance(1.5)
        assert await store.get_claim("lease") is None
        assert await store.claim("lease", "b", ttl_s=1) is True
        assert await store.get_claim("lease") == "b"

    async def test_set_members_count_once(self, store: Any) -> None:
        assert await store.add_member("barrier", "m1") == (1, True)
        assert await store.add_member("barrier", "m1") == (1, False)
        added = await asyncio.gather(*(store.add_member("barrier", f"m{i}") for i in range(2, 6)))
        assert sorted(size for size, _ in added) == [2, 3, 4, 5]
        assert all(new for _, new in added)
        assert await store.members("barrier") == ["m1", "m2", "m3", "m4", "m5"] or sorted(
            await store.members("barrier")
        ) == ["m1", "m2", "m3", "m4", "m5"]
        assert await store.members("nothing") == []

    async def test_slots_bound_their_holders(self, store: Any, advance: Advance) -> None:
        taken = [await store.acquire_slot("limit", f"h{i}", 3, ttl_s=10) for i in range(5)]
        assert taken == [True, True, True, False, False]
        assert await store.acquire_slot("limit", "h1", 3, ttl_s=10) is True  # renewing
        await store.release_slot("limit", "h0")
        assert await store.acquire_slot("limit", "h3", 3, ttl_s=10) is True
        assert await store.acquire_slot("limit", "h4", 3, ttl_s=10) is False
        await advance(11)  # holders that never released: their slots expire
        assert await store.acquire_slot("limit", "h4", 3, ttl_s=10) is True

    async def test_start_reservations_are_spaced(self, store: Any) -> None:
        now = datetime.now(UTC)
        waits = [await store.reserve_start("rate", 0.1, now=now) for _ in range(5)]
        assert waits == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4], abs=0.002)
        later = now + timedelta(seconds=10)
        assert await store.reserve_start("rate", 0.1, now=later) == 0.0
        assert await store.reserve_start("other", 0.1, now=later) == 0.0

    async def test_concurrent_reservations_never_share_a_start(self, store: Any) -> None:
        now = datetime.now(UTC)
        waits = await asyncio.gather(
            *(store.reserve_start("burst", 0.05, now=now) for _ in range(20))
        )
        # BSON keeps milliseconds, so a store may round a reserved start up by < 1 ms: starts are
        # then never closer than the interval, only up to 1 ms later than the exact grid
        starts = sorted(waits)
        assert starts == pytest.approx([0.05 * i for i in range(20)], abs=0.002)
        assert all(b - a >= 0.05 - 1e-9 for a, b in itertools.pairwise(starts))

    async def test_documents_round_trip_in_insertion_order(
        self, store: Any, advance: Advance
    ) -> None:
        await store.put_doc("worker", "w1", {"host": "a", "tasks": [1, 2]})
        await store.put_doc("worker", "w2", {"host": "b"})
        await store.put_doc("worker", "w1", {"host": "a2"})  # keeps its place
        await store.put_doc("schedule", "s1", {"cron": "* * * * *"})
        await store.put_doc("worker", "short", {"host": "c"}, ttl_s=1)
        assert await store.get_doc("worker", "w1") == {"host": "a2", "_key": "w1"}
        assert [d["_key"] for d in await store.list_docs("worker")] == ["w1", "w2", "short"]
        await advance(1.5)
        assert await store.get_doc("worker", "short") is None
        assert [d["_key"] for d in await store.list_docs("worker")] == ["w1", "w2"]
        assert await store.delete_doc("worker", "w2") is True
        assert await store.delete_doc("worker", "w2") is False
        assert [d["_key"] for d in await store.list_docs("schedule")] == ["s1"]
