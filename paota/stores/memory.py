"""An in-process task-state store: a dict of :class:`~paota.core.state.TaskState` by task id.

It keeps the same contract as the MongoDB store (the contract suite in ``tests/contracts`` runs
against both), so it serves tests, demos and single-process deployments. Nothing survives the
process. A record whose ``expires_at`` has passed (a task's ``result_ttl_s``) is gone: reads do not
see it, and it is dropped.
"""

from __future__ import annotations

import builtins
import heapq
from datetime import UTC, datetime

from paota.core.clock import Clock, SystemClock
from paota.core.errors import StoreError
from paota.core.protocols import ListCursor
from paota.core.state import ErrorInfo, TaskState, TaskStatus, may_replace
from paota.stores.memory_coordination import MemoryCoordination

__all__ = ["MemoryStore"]

#: Stored tracebacks keep their last this many characters (the MongoDB store does the same).
TRACEBACK_LIMIT = 4000


class MemoryStore(MemoryCoordination):
    """A :class:`~paota.core.protocols.Store` kept in a dict, for one process.

    :meth:`record` checks :func:`~paota.core.state.may_replace` and writes with no ``await`` in
    between, so concurrent calls from tasks of one event loop are atomic. Records are stored as
    given, not copied: :class:`TaskState` is frozen, but its ``args`` list and ``result`` are shared
    with the caller, who must not mutate them afterwards. A traceback longer than 4,000 characters
    is cut to its last 4,000, as the MongoDB store does.

    ``close()`` is final, as for every store and broker: a closed store refuses to open again
    (:class:`~paota.StoreError`); create a new one. ``expires_at`` counts on ``clock``
    (``clock.now()``): pass the pool's :class:`~paota.ManualClock` in tests.
    """

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._coordination_init(clock or SystemClock())
        self._records: dict[str, TaskState] = {}
        # (expires_at, task_id) of records with an expiry, soonest first, to drop them unread.
        self._expiring: list[tuple[datetime, str]] = []
        self._writes_to_purge = 0
        self._open = False
        self._closed = False

    async def connect(self) -> None:
        """Open the store. Idempotent; raises :class:`~paota.StoreError` once it was closed."""
        if self._closed:
            raise StoreError("MemoryStore is closed; create a new one")
        self._open = True

    async def close(self) -> None:
        """Close the store. Idempotent and final."""
        self._open = False
        self._closed = True

    async def __aenter__(self) -> MemoryStore:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _check_open(self) -> None:
        if not self._open:
            if self._closed:
                raise StoreError("MemoryStore is closed")
            raise StoreError("MemoryStore is not connected: call connect() or use 'async with'")

    async def record(self, state: TaskState) -> bool:
        """Store ``state`` if :func:`~paota.core.state.may_replace` allows it; True if it did."""
        if not self._open:
            self._check_open()
        records = self._records
        current = records.get(state.task_id)
        # self._expiring is empty unless some record has an expiry: nothing to check then.
        if self._expiring and current is not None and self._expired(current):
            current = None  # gone: as good as absent
        if not may_replace(current, state):
            return False
        error = state.error
        if error is not None and len(error.traceback) > TRACEBACK_LIMIT:
            state = state.replace(
                error=ErrorInfo(error.type, error.message, error.traceback[-TRACEBACK_LIMIT:])
            )
        records[state.task_id] = state
        if state.expires_at is not None:
            heapq.heappush(self._expiring, (state.expires_at, state.task_id))
        if self._expiring:
            self._writes_to_purge -= 1
            if self._writes_to_purge <= 0:
                self._purge()
        return True

    def _expired(self, state: TaskState) -> bool:
        expires = state.expires_at
        return expires is not None and expires <= self._clock.now()

    def _purge(self) -> None:
        """Drop the records whose expiry has passed (every 256 writes, and on list)."""
        self._writes_to_purge = 256
        expiring, records = self._expiring, self._records
        if not expiring:
            return
        now = self._clock.now()
        while expiring and expiring[0][0] <= now:
            expires, task_id = heapq.heappop(expiring)
            state = records.get(task_id)
            if state is not None and state.expires_at == expires:
                del records[task_id]

    async def get(self, task_id: str) -> TaskState | None:
        """The record of ``task_id``, or None (also when it has expired)."""
        self._check_open()
        state = self._records.get(task_id)
        if state is not None and state.expires_at is not None and self._expired(state):
            del self._records[task_id]
            return None
        return state

    async def delete(self, task_id: str) -> bool:
        """Delete the record of ``task_id``; returns whether it existed."""
        self._check_open()
        return self._records.pop(task_id, None) is not None

    async def list(
        self,
        *,
        status: TaskStatus | None = None,
        name: str | None = None,
        limit: int = 100,
        queue: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        cursor: ListCursor | None = None,
    ) -> builtins.list[TaskState]:
        """Records filtered by ``status``, ``name``, ``queue`` and creation time, newest
        ``created_at`` first (ties by task id, descending; records without one last), after
        ``cursor``, at most ``limit`` (see :meth:`paota.core.protocols.Store.list`)."""
        self._check_open()
        if limit <= 0:
            return []
        self._purge()
        timed = created_after is not None or created_before is not None
        end = None if cursor is None else _newest_first(cursor)
        found = (
            s
            for s in self._records.values()
            if (status is None or s.status == status)
            and (name is None or s.name == name)
            and (queue is None or s.queue == queue)
            and (not timed or _created_within(s, created_after, created_before))
            and (end is None or _newest_first(s) < end)
        )
        # The page only, not a sorted copy of every record.
        return heapq.nlargest(limit, found, key=_newest_first)


def _created_within(state: TaskState, after: datetime | None, before: datetime | None) -> bool:
    created = state.created_at
    if created is None:
        return False
    return (after is None or created >= after) and (before is None or created < before)


def _newest_first(state: TaskState | ListCursor) -> tuple[bool, datetime, str]:
    # Sorted in reverse: records with a created_at come first, newest first (ties by task id);
    # those without go last.
    created = state.created_at
    if created is None:
        return (False, _EPOCH, state.task_id)
    return (True, created, state.task_id)


_EPOCH = datetime.min.replace(tzinfo=UTC)
