"""Times on the wire: RFC 3339 as Go writes and reads it, and Unix seconds for header mode.

JSON mode carries ``CreatedAt`` and ``ETA`` as RFC 3339 in UTC (:func:`format_time`,
:func:`parse_time`, which follow Go's ``time.RFC3339Nano``); header mode carries them as whole Unix
seconds (:func:`unix_seconds`, floored like Go's ``Time.Unix()``). Decoded times are in UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

from paota.core.message._common import DIGITS, show

__all__ = ["format_time", "parse_time", "unix_seconds"]

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_SECOND: Final = timedelta(seconds=1)


def format_time(dt: datetime) -> str:
    """RFC 3339 in UTC as Go writes it: ``2026-11-27T10:30:15.123456Z``.

    The fraction has no trailing zeros and is left out when zero. ``dt`` must be aware (ValueError
    otherwise).
    """
    if dt.tzinfo is UTC:
        text = dt.isoformat()[:-6]
    else:
        offset = dt.utcoffset()
        if offset is None:
            raise ValueError(f"cannot format naive datetime {dt.isoformat()}: it has no time zone")
        try:
            text = (dt.replace(tzinfo=None) - offset).isoformat()
        except OverflowError as exc:
            raise ValueError(f"{dt.isoformat()} is out of range in UTC") from exc
    if len(text) > 19:
        text = text.rstrip("0")
    return text + "Z"


_fromisoformat = datetime.fromisoformat


def parse_time(text: str) -> datetime:
    """Parse RFC 3339 (as Go's ``time.RFC3339Nano``) into an aware datetime in UTC.

    Accepts ``Z`` (or ``z``) and ``±hh:mm`` offsets and 0..9 fraction digits, truncated to
    microseconds. Raises ValueError for anything else.
    """
    if type(text) is not str:
        raise TypeError(f"parse_time() needs a str, not {type(text).__name__}")
    n = len(text)
    # Fast path for what Go writes: "YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z". fromisoformat() does the digit
    # and range checks; the fraction is cut or padded to the 6 digits every Python takes.
    if (
        n >= 20
        and text[-1] == "Z"
        and text[4] == "-"
        and text[7] == "-"
        and text[10] == "T"
        and text[13] == ":"
        and text[16] == ":"
        and not (text[11] == "2" and text[12] == "4")  # some Pythons take 24:00 as next day
    ):
        if n == 20:
            iso = text[:19] + "+00:00"
        elif 22 <= n <= 30 and text[19] == "." and DIGITS.issuperset(frac := text[20:-1]):
            iso = text[:20] + (frac + "00000")[:6] + "+00:00"
        else:
            iso = ""
        if iso:
            try:
                return _fromisoformat(iso)
            except ValueError:
                pass  # reported by the general path
    return _parse_time_general(text)


def _parse_time_general(text: str) -> datetime:
    bad = ValueError(f"not an RFC 3339 time: {show(text)}")
    n = len(text)
    if n < 20 or not (
        text[4] == "-"
        and text[7] == "-"
        and text[10] in "Tt"
        and text[13] == ":"
        and text[16] == ":"
        and DIGITS.issuperset(text[0:4] + text[5:7] + text[8:10])
        and DIGITS.issuperset(text[11:13] + text[14:16] + text[17:19])
    ):
        raise bad
    pos = 19
    frac = ""
    if text[19] == ".":
        pos = 20
        while pos < n and text[pos] in DIGITS:
            pos += 1
        frac = text[20:pos]
        if not 1 <= len(frac) <= 9:
            raise bad
    zone = text[pos:]
    if zone in ("Z", "z"):
        minutes = 0
    elif (
        len(zone) == 6
        and zone[0] in "+-"
        and zone[3] == ":"
        and DIGITS.issuperset(zone[1:3] + zone[4:6])
    ):
        hh = int(zone[1:3])
        mm = int(zone[4:6])
        if hh > 23 or mm > 59:
            raise bad
        minutes = hh * 60 + mm
        if zone[0] == "-":
            minutes = -minutes
    else:
        raise bad
    year, month, day = int(text[0:4]), int(text[5:7]), int(text[8:10])
    hour, minute, second = int(text[11:13]), int(text[14:16]), int(text[17:19])
    micro = int((frac + "00000")[:6]) if frac else 0
    try:
        dt = datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)
        if minutes:
            dt -= timedelta(minutes=minutes)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"not an RFC 3339 time: {show(text)} ({exc})") from None
    return dt


def unix_seconds(dt: datetime) -> int:
    """Whole seconds since the Unix epoch, floored like Go's ``Time.Unix()`` (``dt`` aware)."""
    return (dt - EPOCH) // _ONE_SECOND
