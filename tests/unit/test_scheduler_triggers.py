"""When schedules fire: cron in a time zone across both DST changes of the year (Europe/Berlin and
America/New_York), intervals, and bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise
from zoneinfo import ZoneInfo

import pytest

from paota import ConfigError
from paota.scheduler import Cron, Every
from paota.scheduler.triggers import slot_iso

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"

# The 2026 changes: (zone, spring-forward day, fall-back day, the wall hour that is skipped in
# spring, the wall hour that repeats in autumn).
CHANGES = [
    pytest.param(BERLIN, datetime(2026, 3, 29), datetime(2026, 10, 25), 2, 2, id="Europe/Berlin"),
    pytest.param(
        NEW_YORK, datetime(2026, 3, 8), datetime(2026, 11, 1), 2, 1, id="America/New_York"
    ),
]


def local_day(tz: str, day: datetime) -> tuple[datetime, datetime]:
    """The real instants (UTC) where ``day`` starts and ends in ``tz``."""
    zone = ZoneInfo(tz)
    start = day.replace(tzinfo=zone).astimezone(UTC)
    end = (day + timedelta(days=1)).replace(tzinfo=zone).astimezone(UTC)
    return start, end


def slots_on(expression: str, tz: str, day: datetime) -> list[datetime]:
    """The slots of ``expression`` on the local ``day``, as local times of ``tz``."""
    start, end = local_day(tz, day)
    found = []
    for slot in Cron(expression, tz).slots_after(start - timedelta(microseconds=1)):
        if slot >= end:
            break
        found.append(slot.astimezone(ZoneInfo(tz)))
    return found


def wall(times: list[datetime]) -> list[str]:
    return [t.strftime("%H:%M") + ("(2nd)" if t.fold else "") for t in times]


@pytest.mark.parametrize(("tz", "spring", "autumn", "skipped", "repeated"), CHANGES)
def test_a_daily_job_in_the_skipped_hour_runs_once_when_the_gap_ends(
    tz: str, spring: datetime, autumn: datetime, skipped: int, repeated: int
) -> None:
    # given a daily job at a wall time that does not exist on the spring-forward day
    expression = f"30 {skipped} * * *"
    # then it runs once that day, at the first instant after the gap (03:00 local) ...
    [slot] = slots_on(expression, tz, spring)
    assert (slot.hour, slot.minute) == (skipped + 1, 0)
    assert slot.utcoffset() == slots_on(expression, tz, spring + timedelta(days=1))[0].utcoffset()
    # ... and at its own time the days before and after
    for day in (spring - timedelta(days=1), spring + timedelta(days=1)):
        [other] = slots_on(expression, tz, day)
        assert (other.hour, other.minute) == (skipped, 30)


@pytest.mark.parametrize(("tz", "spring", "autumn", "skipped", "repeated"), CHANGES)
def test_an_hourly_job_runs_every_real_hour_through_both_changes(
    tz: str, spring: datetime, autumn: datetime, skipped: int, repeated: int
) -> None:
    # spring: 23 real hours, the skipped one is not invented
    spring_slots = slots_on("0 * * * *", tz, spring)
    assert len(spring_slots) == 23
    assert f"{skipped:02d}:00" not in wall(spring_slots)
    # autumn: 25 real hours, the repeated wall hour runs at both of its instants
    autumn_slots = slots_on("0 * * * *", tz, autumn)
    assert len(autumn_slots) == 25
    twice = [t for t in autumn_slots if t.hour == repeated]
    assert wall(twice) == [f"{repeated:02d}:00", f"{repeated:02d}:00(2nd)"]
    first, second = (t.astimezone(UTC) for t in twice)
    assert second - first == timedelta(hours=1)
    # every slot of both days is exactly one hour after the one before
    for slots in (spring_slots, autumn_slots):
        gaps = {b.astimezone(UTC) - a.astimezone(UTC) for a, b in pairwise(slots)}
        assert gaps == {timedelta(hours=1)}


@pytest.mark.parametrize(("tz", "spring", "autumn", "skipped", "repeated"), CHANGES)
def test_nine_am_stays_at_nine_local_across_both_changes(
    tz: str, spring: datetime, autumn: datetime, skipped: int, repeated: int
) -> None:
    for change in (spring, autumn):
        offsets = set()
        for delta in range(-2, 3):
            [slot] = slots_on("0 9 * * *", tz, change + timedelta(days=delta))
            assert (slot.hour, slot.minute) == (9, 0)
            offsets.add(slot.utcoffset())
        assert len(offsets) == 2  # the UTC time moved by an hour; the local one did not


@pytest.mark.parametrize(("tz", "spring", "autumn", "skipped", "repeated"), CHANGES)
def test_a_daily_job_in_the_repeated_hour_runs_once_at_its_first_instant(
    tz: str, spring: datetime, autumn: datetime, skipped: int, repeated: int
) -> None:
    [slot] = slots_on(f"30 {repeated} * * *", tz, autumn)
    assert (slot.hour, slot.minute, slot.fold) == (repeated, 30, 0)
    # named hours around it: once each, the repeated one at its first instant
    hours = slots_on(f"0 {repeated - 1}-{repeated + 1} * * *", tz, autumn)
    assert wall(hours) == [f"{h:02d}:00" for h in (repeated - 1, repeated, repeated + 1)]


def test_several_times_in_one_gap_and_the_gap_end_are_one_slot() -> None:
    # 02:00, 02:15, 02:30, 02:45 do not exist in Berlin on 2026-03-29, and 03:00 is a slot itself
    slots = slots_on("*/15 * * * *", BERLIN, datetime(2026, 3, 29))
    assert wall(slots)[6:10] == ["01:30", "01:45", "03:00", "03:15"]
    assert len(slots) == 23 * 4
    assert len(set(slots)) == len(slots)


def test_a_seconds_schedule_and_slot_names() -> None:
    cron = Cron("*/10 * * * * *", "UTC")
    start = datetime(2026, 5, 1, 12, 0, 3, tzinfo=UTC)
    slots = list(islice(cron.slots_after(start), 3))
    assert [slot_iso(s) for s in slots] == [
        "2026-05-01T12:00:10Z",
        "2026-05-01T12:00:20Z",
        "2026-05-01T12:00:30Z",
    ]
    assert slot_iso(slots[0], ZoneInfo(NEW_YORK)) == "2026-05-01T08:00:10-04:00"


def test_slots_are_strictly_after_the_instant_given() -> None:
    cron = Cron("* * * * *")
    at = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    assert next(cron.slots_after(at)) == at + timedelta(minutes=1)
    assert next(cron.slots_after(at - timedelta(microseconds=1))) == at


def test_intervals_are_anchored_so_every_process_computes_the_same_slots() -> None:
    every = Every(300)
    a = list(islice(every.slots_after(datetime(2026, 5, 1, 12, 1, 7, tzinfo=UTC)), 2))
    b = list(islice(every.slots_after(datetime(2026, 5, 1, 12, 3, 59, tzinfo=UTC)), 2))
    assert (
        a
        == b
        == [datetime(2026, 5, 1, 12, 5, tzinfo=UTC), datetime(2026, 5, 1, 12, 10, tzinfo=UTC)]
    )
    anchored = Every(timedelta(hours=1), anchor=datetime(2026, 1, 1, 0, 30, tzinfo=UTC))
    assert next(anchored.slots_after(datetime(2026, 5, 1, 12, 0, tzinfo=UTC))).minute == 30
    # an interval counts elapsed time: DST changes nothing
    spring = list(
        islice(Every(3600, tz=BERLIN).slots_after(datetime(2026, 3, 28, 23, tzinfo=UTC)), 4)
    )
    assert {b - a for a, b in pairwise(spring)} == {timedelta(hours=1)}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: Cron("61 * * * *"),
            r"cron expression '61 \* \* \* \*' is not valid \(Bad minute\)",
        ),
        (lambda: Cron("* * *"), "expected 5 fields"),
        (lambda: Cron(""), "expected 5 fields"),
        (
            lambda: Cron("* * * * *", tz="Mars/Olympus"),
            "tz='Mars/Olympus' is not a known time zone",
        ),
        (lambda: Every(0), r"every=0 is not valid: expected at least 0.001 s"),
        (lambda: Every("5"), r"every='5' is not valid: expected a number of seconds"),  # type: ignore[arg-type]
        (lambda: Every(5, anchor=datetime(2026, 1, 1)), "must be timezone-aware"),
    ],
)
def test_bad_triggers_are_refused_naming_what_is_wrong(make: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make()  # type: ignore[operator]
