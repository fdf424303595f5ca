"""The contract every :class:`~paota.core.protocols.Store` keeps, as one suite for all of them.

A test module subclasses :class:`StoreContract` and provides a ``store`` fixture that yields a
connected store, empty, for each test::

    class TestMemoryStore(StoreContract):
        @pytest.fixture
        async def store(self) -> AsyncIterator[MemoryStore]:
            async with MemoryStore() as store:
                yield store

Times in these tests are whole milliseconds: BSON dates (MongoDB) keep no finer precision.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from paota.core.errors import StoreError
from paota.core.protocols import ListCursor
from paota.core.state import ErrorInfo, TaskState, TaskStatus, may_replace

if TYPE_CHECKING:
    from paota.core.protocols import Store

__all__ = ["StoreContract", "make_state"]

T0 = datetime(2026, 3, 4, 5, 6, 7, 891000, tzinfo=UTC)

P, S, R = TaskStatus.PENDING, TaskStatus.STARTED, TaskStatus.RETRYING
OK, FAIL, TIMEOUT = TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.TIMED_OUT


def make_state(task_id: str, status: TaskStatus, attempts: int = 0, **changes: Any) -> TaskState:
    """A plausible record of ``task_id``: the times follow the status, all in whole milliseconds."""
    step = timedelta(milliseconds=attempts * 10 + status.rank)
    started = T0 + timedelta(milliseconds=5) + step if status is not P else None
    fields: dict[str, Any] = {
        "task_id": task_id,
        "name": "tasks.add",
        "status": status,
        "args": [{"Name": "x", "Type": "int64", "Value": 1}],
        "attempts": attempts,
        "worker": "worker-1",
        "created_at": T0,
        "started_at": started,
        "finished_at": T0 + timedelta(seconds=1) + step if status.is_final else None,
        "updated_at": T0 + timedelta(milliseconds=2) + step,
        "result": 2 if status is OK else None,
        "error": ErrorInfo("ValueError", "boom", "Traceback ...") if status is FAIL else None,
    }
    fields.update(changes)
    return TaskState(**fields)


def _key(state: TaskState) -> tuple[int, int]:
    return state.attempts, state.status.rank


class StoreContract:
    """Tests every store passes. Subclasses provide the ``store`` fixture (connected, empty)."""

    # --- record / get ---------------------------------------------------------------------------

    async def test_get_of_an_unknown_task_is_none(self, store: Store) -> None:
        assert await store.get("no-such-task") is None

    async def test_record_then_get_returns_every_field(self, store: Store) -> None:
        # given a failed record with every field set
        state = TaskState(
            task_id="t-round-trip",
            name="tasks.report",
            status=FAIL,
            args=[
                {"Name": "user", "Type": "string", "Value": "ada"},
                {"Name": "n", "Type": "int64", "Value": -7},
                {"Name": "ratio", "Type": "float64", "Value": 0.25},
                {"Name": "ok", "Type": "bool", "Value": True},
                {"Name": "tags", "Type": "[]string", "Value": ["a", "b"]},
                {
                    "Name": "opts",
                    "Type": "map[string]interface {}",
                    "Value": {"k": [1, {"z": None}]},
                },
            ],
            attempts=3,
            result={"partial": [1, 2.5, "three", None, True, {"nested": {"deep": []}}]},
            error=ErrorInfo("KeyError", "'missing'", "Traceback (most recent call last):\n  ..."),
            worker="host-a:1234",
            created_at=T0,
            started_at=T0 + timedelta(milliseconds=1),
            finished_at=T0 + timedelta(seconds=3, milliseconds=7),
            updated_at=T0 + timedelta(seconds=3, milliseconds=8),
        )
        # when it is recorded
        assert await store.record(state) is True
        # then it reads back equal, with aware UTC times
        got = await store.get("t-round-trip")
        assert got == state
        assert got is not None
        for when in (got.created_at, got.started_at, got.finished_at, got.updated_at):
            assert when is not None
            assert when.utcoffset() == timedelta(0)

    async def test_results_of_json_like_types_round_trip(self, store: Store) -> None:
        results: list[Any] = [
            None,
            0,
            -(2**62),
            1.5,
            "",
            "héllo ✓",
            True,
            [],
            [1, "a", None],
            {},
            {"a": {"b": [1, 2, {"c": "d"}]}},
        ]
        for i, result in enumerate(results):
            state = make_state(f"t-result-{i}", OK, result=result)
            assert await store.record(state) is True
            got = await store.get(state.task_id)
            assert got is not None
            assert got.result == result, result
            # isinstance: a bool must stay a bool; MongoDB hands back ints over 32 bits as
            # bson.Int64, a subclass of int
            assert isinstance(got.result, type(result)), result

    async def test_unset_optional_fields_round_trip(self, store: Store) -> None:
        state = TaskState(task_id="t-minimal", name="tasks.noop", status=P)
        assert await store.record(state) is True
        assert await store.get("t-minimal") == state

    async def test_a_long_traceback_keeps_its_last_4000_characters(self, store: Store) -> None:
        traceback = "".join(f"line {i}\n" for i in range(2000))  # far over 4,000 characters
        state = make_state("t-long-tb", FAIL, error=ErrorInfo("E", "m", traceback))
        assert await store.record(state) is True
        got = await store.get("t-long-tb")
        assert got is not None
        assert got.error == ErrorInfo("E", "m", traceback[-4000:])

    # --- transitions ----------------------------------------------------------------------------

    async def test_a_task_moves_forward_through_its_life(self, store: Store) -> None:
        path = [(P, 0), (S, 0), (R, 0), (S, 1), (OK, 1)]
        for status, attempts in path:
            state = make_state("t-life", status, attempts)
            assert await store.record(state) is True, (status, attempts)
            assert await store.get("t-life") == state

    async def test_nothing_replaces_a_final_record(self, store: Store) -> None:
        # given a task that succeeded on its second attempt
        for status, attempts in [(P, 0), (S, 0), (R, 0), (S, 1), (OK, 1)]:
            await store.record(make_state("t-final", status, attempts))
        final = make_state("t-final", OK, 1)
        # when late or duplicate states arrive, they are refused
        for status, attempts in [(S, 0), (S, 1), (S, 2), (R, 1), (P, 0), (FAIL, 1), (TIMEOUT, 2)]:
            refused = make_state("t-final", status, attempts, worker="late")
            assert await store.record(refused) is False, (status, attempts)
        # then the record is the success, unchanged
        assert await store.get("t-final") == final

    async def test_a_replay_starts_a_new_run_over_a_final_record(self, store: Store) -> None:
        # given a task that failed for good, then was moved back from the failed queue
        assert await store.record(make_state("t-replay", FAIL, 3))
        # when the replay starts, then it replaces the final record, and its own run goes forward
        assert await store.record(make_state("t-replay", S, 0, replays=1)) is True
        assert await store.record(make_state("t-replay", OK, 0, replays=1)) is True
        # and a late duplicate of the first run cannot come back
        assert await store.record(make_state("t-replay", S, 3)) is False
        got = await store.get("t-replay")
        assert got is not None and (got.status, got.replays) == (OK, 1)

    async def test_a_lower_attempt_is_refused(self, store: Store) -> None:
        current = make_state("t-attempts", R, 2)
        assert await store.record(current) is True
        assert await store.record(make_state("t-attempts", S, 1)) is False
        assert await store.record(make_state("t-attempts", R, 1)) is False
        assert await store.record(make_state("t-attempts", P, 0)) is False
        assert await store.get("t-attempts") == current

    async def test_the_same_state_twice_is_applied_twice(self, store: Store) -> None:
        state = make_state("t-twice", S, 1)
        assert await store.record(state) is True
        again = state.replace(worker="other-worker")
        assert await store.record(again) is True
        assert await store.get("t-twice") == again

    async def test_decisions_equal_may_replace_for_every_pair(self, store: Store) -> None:
        # Exhaustive over every status x attempts 0..1 x replays 0..1, twice: 576 pairs.
        states = [(st, a, r) for st in TaskStatus for a in range(2) for r in range(2)]
        for n, ((s1, a1, r1), (s2, a2, r2)) in enumerate(itertools.product(states, repeat=2)):
            task_id = f"t-pair-{n}"
            first = make_state(task_id, s1, a1, replays=r1)
            second = make_state(task_id, s2, a2, replays=r2, worker="second")
            case = (s1, a1, r1, s2, a2, r2)
            assert await store.record(first) is True
            expected = may_replace(first, second)
            applied = await store.record(second)
            assert applied is expected, case
            assert await store.get(task_id) == (second if expected else first), case

    async def test_a_random_sequence_follows_the_model(self, store: Store) -> None:
        rng = random.Random(20260304)
        for t in range(4):
            task_id = f"t-seq-{t}"
            model: TaskState | None = None
            for step in range(40):
                new = make_state(
                    task_id,
                    rng.choice(list(TaskStatus)),
                    rng.randrange(4),
                    replays=rng.choice((0, 0, 0, 1, 2)),
                    worker=f"w{step}",
                )
                expected = may_replace(model, new)
                assert await store.record(new) is expected, (model, new)
                if expected:
                    model = new
                assert await store.get(task_id) == model

    # --- races ----------------------------------------------------------------------------------

    async def test_concurrent_records_leave_a_consistent_maximum(self, store: Store) -> None:
        rng = random.Random(7)
        for round_ in range(5):
            task_id = f"t-race-{round_}"
            # 20 mixed states of one task, written at once
            states = [
                make_state(task_id, rng.choice(list(TaskStatus)), rng.randrange(3), worker=f"w{i}")
                for i in range(20)
            ]
            applied = await asyncio.gather(*(store.record(s) for s in states))
            stored = await store.get(task_id)
            assert stored is not None
            # the stored record is one that was applied ...
            winners = [s for s, ok in zip(states, applied, strict=True) if ok]
            assert stored in winners
            # ... every applied state is on the way to it (only the stored one may be final) ...
            for s in winners:
                assert s == stored or (not s.status.is_final and _key(s) <= _key(stored)), s
            # ... and every refused state really had to be refused by it.
            for s, ok in zip(states, applied, strict=True):
                if not ok:
                    assert not may_replace(stored, s), (s, stored)

    async def test_a_final_state_wins_a_race_to_create_the_record(self, store: Store) -> None:
        # PENDING and SUCCEEDED of a new task at once: whichever lands first, SUCCEEDED stays.
        for i in range(10):
            pending = make_state(f"t-create-{i}", P, 0)
            done = make_state(f"t-create-{i}", OK, 0)
            pair = (pending, done) if i % 2 else (done, pending)
            await asyncio.gather(*(store.record(s) for s in pair))
            assert await store.get(f"t-create-{i}") == done

    async def test_only_one_of_racing_final_states_is_applied(self, store: Store) -> None:
        await store.record(make_state("t-finals", S, 0))
        finals = [
            make_state("t-finals", st, 0, worker=f"w{i}")
            for i, st in enumerate([OK, FAIL, TIMEOUT] * 3)
        ]
        applied = await asyncio.gather(*(store.record(s) for s in finals))
        assert sum(applied) == 1
        assert await store.get("t-finals") == finals[applied.index(True)]

    # --- list / delete --------------------------------------------------------------------------

    async def _fill(self, store: Store) -> list[TaskState]:
        states = []
        for i in range(12):
            status = [P, S, OK, FAIL][i % 4]
            name = "tasks.even" if i % 2 == 0 else "tasks.odd"
            state = make_state(
                f"t-list-{i:02}", status, name=name, created_at=T0 + timedelta(seconds=i)
            )
            states.append(state)
        # recorded out of order, so the order of the answer comes from created_at
        for state in random.Random(3).sample(states, len(states)):
            await store.record(state)
        return states

    async def test_list_returns_newest_first_with_limit(self, store: Store) -> None:
        states = await self._fill(store)
        newest_first = sorted(states, key=lambda s: s.created_at or T0, reverse=True)
        assert await store.list() == newest_first
        assert await store.list(limit=3) == newest_first[:3]
        assert await store.list(limit=0) == []

    async def test_list_filters_by_status_and_by_name(self, store: Store) -> None:
        states = await self._fill(store)
        newest_first = sorted(states, key=lambda s: s.created_at or T0, reverse=True)
        assert await store.list(status=OK) == [s for s in newest_first if s.status is OK]
        assert await store.list(name="tasks.odd") == [
            s for s in newest_first if s.name == "tasks.odd"
        ]
        assert await store.list(status=P, name="tasks.even") == [
            s for s in newest_first if s.status is P and s.name == "tasks.even"
        ]
        assert await store.list(status=P, name="tasks.odd") == []
        assert await store.list(status=TIMEOUT) == []
        assert (
            await store.list(name="tasks.odd", limit=2)
            == [s for s in newest_first if s.name == "tasks.odd"][:2]
        )

    async def test_list_puts_records_without_created_at_last(self, store: Store) -> None:
        dated = make_state("t-dated", P, created_at=T0)
        undated = make_state("t-undated", P, created_at=None)
        await store.record(undated)
        await store.record(dated)
        assert await store.list() == [dated, undated]

    async def test_list_filters_by_queue_and_by_creation_time(self, store: Store) -> None:
        states = await self._fill(store)
        newest_first = sorted(states, key=lambda s: s.created_at or T0, reverse=True)
        await store.record(make_state("t-list-emails", P, queue="emails", created_at=T0))
        assert [s.task_id for s in await store.list(queue="emails")] == ["t-list-emails"]
        assert await store.list(queue="nowhere") == []
        # created_after is inclusive, created_before exclusive
        window = await store.list(
            created_after=T0 + timedelta(seconds=3), created_before=T0 + timedelta(seconds=7)
        )
        assert window == [s for s in newest_first if 3 <= (s.created_at - T0).seconds < 7]
        assert await store.list(created_before=T0) == []
        assert [s.task_id for s in await store.list(status=OK, queue="", limit=1)] == [
            next(s.task_id for s in newest_first if s.status is OK)
        ]

    async def test_cursor_paging_sees_every_record_once_in_order(self, store: Store) -> None:
        # given records sharing creation times (ties are ordered by task id) and some without one
        states = [
            make_state(
                f"t-page-{i:02}", [P, S, OK, FAIL][i % 4], created_at=T0 + timedelta(seconds=i // 3)
            )
            for i in range(14)
        ]
        states += [make_state(f"t-page-undated-{i}", P, created_at=None) for i in range(3)]
        for state in random.Random(5).sample(states, len(states)):
            await store.record(state)
        expected = sorted(
            states,
            key=lambda s: (s.created_at is not None, s.created_at or T0, s.task_id),
            reverse=True,
        )
        # when paging three at a time
        pages: list[list[TaskState]] = []
        cursor: ListCursor | None = None
        while True:
            page = await store.list(limit=3, cursor=cursor)
            if not page:
                break
            pages.append(page)
            cursor = ListCursor.of(page[-1])
        # then every record comes once, in list order, and a page after the last is empty
        assert [s for page in pages for s in page] == expected
        assert all(len(page) == 3 for page in pages[:-1])
        # and a cursor combines with the filters
        failed = [s for s in expected if s.status is FAIL]
        first = await store.list(status=FAIL, limit=2)
        rest = await store.list(status=FAIL, cursor=ListCursor.of(first[-1]))
        assert first + rest == failed

    async def test_delete_returns_whether_the_record_existed(self, store: Store) -> None:
        await store.record(make_state("t-delete", OK))
        assert await store.delete("t-delete") is True
        assert await store.get("t-delete") is None
        assert await store.delete("t-delete") is False
        # a deleted task may be recorded afresh
        assert await store.record(make_state("t-delete", P)) is True

    # --- lifecycle ------------------------------------------------------------------------------

    async def test_a_closed_store_raises_store_error_and_refuses_to_reopen(
        self, store: Store
    ) -> None:
        # Closing is final, for stores as for brokers: a closed object is never opened again.
        await store.record(make_state("t-life-cycle", S))
        await store.close()
        await store.close()  # idempotent
        with pytest.raises(StoreError):
            await store.get("t-life-cycle")
        with pytest.raises(StoreError):
            await store.record(make_state("t-life-cycle", OK))
        with pytest.raises(StoreError, match="closed"):
            await store.connect()
        with pytest.raises(StoreError, match="closed"):
            await store.get("t-life-cycle")
        await store.close()  # still idempotent
