"""The :class:`~paota.core.protocols.Coordination` operations for one process (MemoryStore's).

Every operation runs without an ``await`` in between its read and its write, so concurrent calls
from tasks of one event loop are atomic. Time to live counts on the store's clock
(``clock.monotonic()``), so a :class:`~paota.ManualClock` expires entries in tests.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from paota.core.clock import Clock

__all__ = ["MemoryCoordination"]

_SWEEP_EVERY = 1024  # claims made between two sweeps of the expired ones


class MemoryCoordination:
    """Claims, sets, slots, start reservations and documents kept in dicts."""

    #: In this process only: no other process sees what it holds (paota.core.capabilities).
    shared = False

    _clock: Clock

    def _coordination_init(self, clock: Clock) -> None:
        self._clock = clock
        self._claims: dict[str, tuple[str, float | None]] = {}
        self._claims_made = 0
        self._sets: dict[str, tuple[list[str], float | None]] = {}
        self._slots: dict[str, dict[str, float]] = {}
        self._starts: dict[str, datetime] = {}
        self._docs: dict[tuple[str, str], tuple[dict[str, Any], float | None, int]] = {}
        self._doc_seq = 0

    def _check_open(self) -> None:  # provided by the store
        raise NotImplementedError

    def _expiry(self, ttl_s: float | None) -> float | None:
        return None if ttl_s is None else self._clock.monotonic() + ttl_s

    def _alive(self, expires: float | None) -> bool:
        return expires is None or expires > self._clock.monotonic()

    async def claim(self, key: str, owner: str, *, ttl_s: float | None = None) -> bool:
        """Create ``key`` for ``owner`` unless a live claim exists."""
        self._check_open()
        held = self._claims.get(key)
        if held is not None and self._alive(held[1]):
            return False
        self._claims[key] = (owner, self._expiry(ttl_s))
        self._claims_made += 1
        if self._claims_made % _SWEEP_EVERY == 0:
            # A scheduler makes a claim per slot, each expiring a day later: without a sweep a
            # long-lived process would keep every one of them.
            self._claims = {k: v for k, v in self._claims.items() if self._alive(v[1])}
        return True

    async def get_claim(self, key: str) -> str | None:
        """The owner of a live claim of ``key``, or None."""
        self._check_open()
        held = self._claims.get(key)
        return held[0] if held is not None and self._alive(held[1]) else None

    async def release_claim(self, key: str, owner: str) -> bool:
        """Delete ``owner``'s claim of ``key``."""
        self._check_open()
        held = self._claims.get(key)
        if held is None or held[0] != owner or not self._alive(held[1]):
            return False
        del self._claims[key]
        return True

    async def add_member(
        self, key: str, member: str, *, ttl_s: float | None = None
    ) -> tuple[int, bool]:
        """Add ``member`` to the set ``key``."""
        self._check_open()
        entry = self._sets.get(key)
        if entry is None or not self._alive(entry[1]):
            entry = self._sets[key] = ([], self._expiry(ttl_s))
        members = entry[0]
        if member in members:
            return len(members), False
        members.append(member)
        return len(members), True

    async def members(self, key: str) -> list[str]:
        """The members of the set ``key``."""
        self._check_open()
        entry = self._sets.get(key)
        return list(entry[0]) if entry is not None and self._alive(entry[1]) else []

    async def acquire_slot(self, key: str, holder: str, limit: int, *, ttl_s: float) -> bool:
        """Take (or renew) one of ``limit`` slots of ``key``."""
        self._check_open()
        now = self._clock.monotonic()
        held = {h: t for h, t in self._slots.get(key, {}).items() if t > now}
        if holder not in held and len(held) >= limit:
            self._slots[key] = held
            return False
        held[holder] = now + ttl_s
        self._slots[key] = held
        return True

    async def release_slot(self, key: str, holder: str) -> None:
        """Give back ``holder``'s slot of ``key``."""
        self._check_open()
        self._slots.get(key, {}).pop(holder, None)

    async def reserve_start(self, key: str, interval_s: float, *, now: datetime) -> float:
        """Reserve the next start, ``interval_s`` after the last one reserved (or now)."""
        self._check_open()
        last = self._starts.get(key)
        start = (
            now
            if last is None or last + timedelta(seconds=interval_s) <= now
            else (last + timedelta(seconds=interval_s))
        )
        self._starts[key] = start
        return max(0.0, (start - now).total_seconds())

    async def put_doc(
        self, kind: str, key: str, doc: Mapping[str, Any], *, ttl_s: float | None = None
    ) -> None:
        """Store a copy of ``doc`` as ``(kind, key)``."""
        self._check_open()
        old = self._docs.get((kind, key))
        seq = old[2] if old is not None else self._next_seq()
        self._docs[(kind, key)] = (copy.deepcopy(dict(doc)), self._expiry(ttl_s), seq)

    def _next_seq(self) -> int:
        self._doc_seq += 1
        return self._doc_seq

    async def get_doc(self, kind: str, key: str) -> dict[str, Any] | None:
        """A copy of ``(kind, key)``, or None."""
        self._check_open()
        entry = self._docs.get((kind, key))
        if entry is None or not self._alive(entry[1]):
            return None
        return {**copy.deepcopy(entry[0]), "_key": key}

    async def list_docs(self, kind: str, *, limit: int = 1000) -> list[dict[str, Any]]:
        """Live documents of ``kind``, oldest first."""
        self._check_open()
        found = [
            (seq, key, doc)
            for (k, key), (doc, expires, seq) in self._docs.items()
            if k == kind and self._alive(expires)
        ]
        found.sort(key=lambda item: item[0])
        return [{**copy.deepcopy(doc), "_key": key} for _, key, doc in found[:limit]]

    async def delete_doc(self, kind: str, key: str) -> bool:
        """Delete ``(kind, key)``."""
        self._check_open()
        return self._docs.pop((kind, key), None) is not None
