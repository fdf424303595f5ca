"""Time sources. The pool and the memory broker read time through a :class:`Clock`, so tests can
use a :class:`ManualClock` that the memory broker fast-forwards instead of sleeping."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    """Wall time (aware UTC) and a monotonic counter in seconds."""

    def now(self) -> datetime:
        """The current wall time, aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        """``datetime.now(timezone.utc)``."""
        return datetime.now(UTC)

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to (:meth:`advance`); starts at the real time."""

    def __init__(self, start: datetime | None = None) -> None:
        self._start = start or datetime.now(UTC)
        self._offset_s = 0.0

    def now(self) -> datetime:
        """The start time plus everything advanced so far."""
        return self._start + timedelta(seconds=self._offset_s)

    def monotonic(self) -> float:
        """Seconds advanced so far."""
        return self._offset_s

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (>= 0)."""
        if seconds < 0:
            raise ValueError(f"cannot move a clock backwards (seconds={seconds!r})")
        self._offset_s += seconds
