"""When a schedule fires: :class:`Cron` (a cron expression in a time zone) and :class:`Every` (a
fixed interval). Both turn into the same thing, an ordered stream of *slots*: the real instants
(aware UTC) at which the schedule fires.

Cron expressions are parsed and matched by cronsim (the ``paota[schedules]`` extra), a maintained
parser that follows Debian cron: five fields ``minute hour day-of-month month day-of-week``, or
six with seconds first; ``*``, lists, ranges, steps, names (``MON``, ``JAN``), ``L``, ``LW``,
``W#n``. cronsim is imported only when a cron schedule is made.

Time zones and daylight saving time. An expression is matched against the wall clock of its zone
(an IANA name, e.g. ``Europe/Berlin``), never against a fixed UTC offset, so ``0 9 * * *`` stays at
09:00 local time across every change. Each wall time a cron expression matches becomes one slot,
by three rules:

1. A wall time that exists once is that instant.
2. **Spring forward** (a gap, e.g. 02:00 -> 03:00): a matched wall time inside the gap does not
   exist; it fires once, at the first instant after the gap (03:00 local). Several matched times
   in one gap, and a match at the gap's end itself, are the same slot: it fires once. So a daily
   ``30 2 * * *`` runs at 03:00 on that day, and an hourly job runs 23 times.
3. **Fall back** (a repeated hour, e.g. 01:00-02:00 twice in New York, 02:00-03:00 twice in
   Berlin): an expression whose hour field is ``*`` (it fires every hour: ``0 * * * *``,
   ``*/5 * * * *``) fires at both instants of a repeated wall time, so an hourly job runs at both
   01:00s and 25 times that day; an expression that names its hours (``30 1 * * *``,
   ``0 1-3 * * *``) fires at the first instant only, so a daily job runs once a day.

:class:`Every` counts elapsed time: slots are ``anchor + k * interval`` (the anchor defaults to the
Unix epoch, so every 3600 s fires on the hour, UTC), and DST changes nothing.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from paota.core.errors import ConfigError

__all__ = ["EPOCH", "Cron", "Every", "Trigger", "slot_iso", "zone"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# A change of UTC offset closer than this to an instant makes the slot search start earlier
# (repeated hours can put later instants at earlier wall times). No zone moves its clock by more.
_NEAR_CHANGE = timedelta(hours=3)
# Seconds in a cron search without a match before giving up (cronsim itself stops after 50 years).
_MAX_STEPS = 2_000_000


class Trigger(Protocol):
    """What a schedule's timing must offer: its slots after an instant, and how to store it."""

    @property
    def tz(self) -> str:
        """The IANA time zone the slots are shown (and, for cron, matched) in."""
        ...

    def slots_after(self, after: datetime) -> Iterator[datetime]:
        """The slots strictly after ``after`` (aware), in order, as aware UTC datetimes."""
        ...

    def describe(self) -> str:
        """A short human description (``cron '*/5 * * * *' Europe/Berlin``)."""
        ...

    def to_doc(self) -> dict[str, Any]:
        """The JSON-like form stored in schedule documents."""
        ...


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; :class:`~paota.ConfigError` naming it when it does not exist."""
    if not isinstance(name, str) or not name:
        raise ConfigError(
            f"tz={name!r} is not valid: expected an IANA time zone name such as 'UTC'"
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"tz={name!r} is not a known time zone: expected an IANA name such as 'UTC', "
            "'Europe/Berlin' or 'America/New_York' (on Windows, pip install tzdata)"
        ) from exc


def slot_iso(slot: datetime, tz: tzinfo | None = None) -> str:
    """``slot`` as ISO 8601: in UTC with a ``Z`` (the form in keys and task ids), or local to
    ``tz`` with its offset (the form a task reads)."""
    if tz is None:
        utc = slot.astimezone(UTC)
        spec = "microseconds" if utc.microsecond else "seconds"
        return utc.replace(tzinfo=None).isoformat(timespec=spec) + "Z"
    local = slot.astimezone(tz)
    return local.isoformat(timespec="microseconds" if local.microsecond else "seconds")


def _aware(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (e.g. datetime.now(UTC)), got {value!r}")
    return value


# --- cron ------------------------------------------------------------------------------------------


def _cronsim() -> Any:
    try:
        import cronsim
    except ImportError as exc:
        raise ConfigError(
            "cron schedules need the cronsim parser, which is not installed; install it with: "
            "pip install 'paota[schedules]' (or use an interval: every=...)"
        ) from exc
    return cronsim


@dataclass(frozen=True)
class Cron:
    """A cron expression matched against the wall clock of ``tz`` (see the module docs for the
    DST rules). Raises :class:`~paota.ConfigError` for a bad expression or zone."""

    expression: str
    tz: str = "UTC"
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)
    _every_hour: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.expression, str) or not self.expression.strip():
            raise ConfigError(
                f"cron expression {self.expression!r} is not valid: expected 5 fields "
                "'minute hour day-of-month month day-of-week' (or 6, seconds first), e.g. '*/5 * * * *'"
            )
        expression = " ".join(self.expression.split())
        object.__setattr__(self, "expression", expression)
        object.__setattr__(self, "_zone", zone(self.tz))
        cronsim = _cronsim()
        try:
            parsed = cronsim.CronSim(expression, datetime(2000, 1, 1))
        except cronsim.CronSimError as exc:
            raise ConfigError(
                f"cron expression {expression!r} is not valid ({exc}): expected 5 fields "
                "'minute hour day-of-month month day-of-week' (or 6, seconds first), with *, "
                "lists, ranges, steps and names, e.g. '*/5 * * * *' or '0 9 * * MON-FRI'"
            ) from None
        hours = getattr(parsed, "hours", None)
        fields = expression.split()
        hour_field = fields[-4]
        every_hour = set(hours) == set(range(24)) if hours is not None else hour_field == "*"
        object.__setattr__(self, "_every_hour", every_hour)

    def describe(self) -> str:
        """``cron '*/5 * * * *' Europe/Berlin``."""
        return f"cron {self.expression!r} {self.tz}"

    def to_doc(self) -> dict[str, Any]:
        """``{"cron": expression, "tz": tz}``."""
        return {"cron": self.expression, "tz": self.tz}

    def slots_after(self, after: datetime) -> Iterator[datetime]:
        """The slots strictly after ``after``, in order (aware UTC)."""
        after = _aware(after, "after").astimezone(UTC)
        tz = self._zone
        if _offset(tz, after - _NEAR_CHANGE) == _offset(tz, after + _NEAR_CHANGE):
            start = after
        else:
            start = after - _NEAR_CHANGE
        start_wall = start.astimezone(tz).replace(tzinfo=None, fold=0)
        for instant in self._instants(start_wall):
            if instant > after:
                yield instant

    def _instants(self, start_wall: datetime) -> Iterator[datetime]:
        """Instants of every wall time matched after ``start_wall``, in order, each once.

        First occurrences of wall times are in the order of the wall times (a gap maps several
        wall times to one instant, never backwards); second occurrences in a repeated hour come
        after every first occurrence of that hour and before the first of any later wall time.
        So an instant may be given out once the first occurrence of the wall time being looked
        at is not earlier than it.
        """
        cronsim = _cronsim()
        pending: list[datetime] = []
        last: datetime | None = None
        for steps, wall in enumerate(cronsim.CronSim(self.expression, start_wall)):
            if steps > _MAX_STEPS:  # pragma: no cover - no expression matches this sparsely
                return
            instants = self._resolve(wall)
            for instant in instants:
                heapq.heappush(pending, instant)
            bound = instants[0]
            while pending and pending[0] <= bound:
                instant = heapq.heappop(pending)
                if instant != last:
                    last = instant
                    yield instant
        while pending:
            instant = heapq.heappop(pending)
            if instant != last:
                last = instant
                yield instant

    def _resolve(self, wall: datetime) -> list[datetime]:
        """The instants of a matched wall time (rules 1-3 of the module docs), first one first."""
        tz = self._zone
        first = wall.replace(tzinfo=tz, fold=0)
        second = wall.replace(tzinfo=tz, fold=1)
        if first.utcoffset() == second.utcoffset():
            return [first.astimezone(UTC)]
        if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall:
            # a repeated wall time: both instants exist
            if self._every_hour:
                return [first.astimezone(UTC), second.astimezone(UTC)]
            return [first.astimezone(UTC)]
        return [_gap_end(tz, wall)]


def _offset(tz: ZoneInfo, instant: datetime) -> timedelta | None:
    """The UTC offset of ``tz`` at ``instant`` (``tz.utcoffset`` would read it as a wall time)."""
    return instant.astimezone(tz).utcoffset()


def _gap_end(tz: ZoneInfo, wall: datetime) -> datetime:
    """The first instant after the gap that swallowed ``wall`` (the moment of the change).

    ``wall`` read with the offset before the change (fold=0) lands after it, read with the offset
    after the change (fold=1) before it; the change is found between the two by bisection.
    """
    late = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    early = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if early > late:
        early, late = late, early
    offset = _offset(tz, late)
    lo, hi = early, late  # offset(lo) != offset, offset(hi) == offset
    while hi - lo > timedelta(microseconds=1):
        mid = lo + (hi - lo) / 2
        if _offset(tz, mid) == offset:
            hi = mid
        else:
            lo = mid
    return hi.replace(microsecond=0) + (timedelta(seconds=1) if hi.microsecond else timedelta())


# --- intervals -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Every:
    """A slot every ``interval_s`` seconds: ``anchor + k * interval_s`` (anchor: the Unix epoch
    unless given). ``tz`` only says in which zone a task sees its slot time."""

    interval_s: float | timedelta
    tz: str = "UTC"
    anchor: datetime = EPOCH
    _step_us: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        value: Any = self.interval_s
        if isinstance(value, timedelta):
            value = value.total_seconds()
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(
                f"every={self.interval_s!r} is not valid: expected a number of seconds or a "
                "timedelta, at least 0.001 s"
            )
        if not math.isfinite(value) or value < 0.001:
            raise ConfigError(
                f"every={self.interval_s!r} is not valid: expected at least 0.001 s (and finite)"
            )
        object.__setattr__(self, "interval_s", float(value))
        # Whole microseconds, so that every process computes the same instants.
        object.__setattr__(self, "_step_us", round(value * 1_000_000))
        zone(self.tz)
        try:
            anchor = _aware(self.anchor, "anchor").astimezone(UTC)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"anchor={self.anchor!r} is not valid: {exc}") from None
        object.__setattr__(self, "anchor", anchor)

    def describe(self) -> str:
        """``every 30s``."""
        return f"every {self.interval_s:g}s"

    def to_doc(self) -> dict[str, Any]:
        """``{"every_s": ..., "tz": ..., "anchor": ISO}``."""
        return {"every_s": self.interval_s, "tz": self.tz, "anchor": self.anchor.isoformat()}

    def slots_after(self, after: datetime) -> Iterator[datetime]:
        """``anchor + k * interval_s`` for every k whose slot is after ``after``."""
        after = _aware(after, "after").astimezone(UTC)
        step_us = self._step_us
        elapsed_us = (after - self.anchor) // timedelta(microseconds=1)
        k = elapsed_us // step_us + 1
        while True:
            yield self.anchor + timedelta(microseconds=k * step_us)
            k += 1


def trigger_from_doc(doc: dict[str, Any]) -> Cron | Every:
    """The trigger stored as :meth:`Cron.to_doc` / :meth:`Every.to_doc` (ConfigError if neither)."""
    tz = doc.get("tz") or "UTC"
    if doc.get("cron"):
        return Cron(str(doc["cron"]), tz=tz)
    if doc.get("every_s") is not None:
        anchor_text = doc.get("anchor")
        anchor = datetime.fromisoformat(anchor_text) if anchor_text else EPOCH
        return Every(doc["every_s"], tz=tz, anchor=anchor)
    raise ConfigError(f"schedule document {doc!r} has neither 'cron' nor 'every_s'")
