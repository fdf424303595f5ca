"""MemoryStore: the store contract, plus what is particular to the memory store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from paota.core.clock import ManualClock
from paota.core.errors import StoreError
from paota.core.state import TaskStatus
from paota.stores.memory import MemoryStore
from tests.contracts.coordination_contract import CoordinationContract
from tests.contracts.store_contract import StoreContract, make_state


class TestMemoryStore(StoreContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[MemoryStore]:
        async with MemoryStore() as store:
            yield store


async def test_an_unopened_store_raises_store_error() -> None:
    store = MemoryStore()
    with pytest.raises(StoreError, match="not connected"):
        await store.record(make_state("t-1", TaskStatus.PENDING))
    with pytest.raises(StoreError, match="not connected"):
        await store.list()


async def test_a_closed_store_refuses_to_reopen() -> None:
    # close() is final (as for brokers): the records do not come back through a new connect()
    store = MemoryStore()
    async with store:
        await store.record(make_state("t-1", TaskStatus.SUCCEEDED))
    with pytest.raises(StoreError, match="closed; create a new one"):
        await store.connect()
    with pytest.raises(StoreError, match="closed"):
        await store.get("t-1")


async def test_record_keeps_the_state_object_without_copying() -> None:
    # The hot path (two record() calls per task) must not copy: the frozen state is kept as is.
    async with MemoryStore() as store:
        state = make_state("t-1", TaskStatus.STARTED)
        await store.record(state)
        assert await store.get("t-1") is state


class TestMemoryCoordination(CoordinationContract):
    @pytest.fixture
    async def clock(self) -> ManualClock:
        return ManualClock()

    @pytest.fixture
    async def store(self, clock: ManualClock) -> AsyncIterator[MemoryStore]:
        async with MemoryStore(clock=clock) as store:
            yield store

    @pytest.fixture
    def advance(self, clock: ManualClock) -> Callable[[float], Awaitable[None]]:
        async def advance(seconds: float) -> None:
            clock.advance(seconds)

        return advance
