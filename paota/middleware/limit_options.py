"""The options of the limits (:mod:`paota.middleware.limits`) that a task declares:
``max_concurrency``, ``rate`` and ``limit_scope``, checked when the task is made
(:data:`LIMIT_OPTIONS`). A module of its own, so that checking them loads nothing of the limiter.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from paota.core.middleware import TaskOptionSpec
from paota.core.protocols import MAX_DELAY_S

if TYPE_CHECKING:
    from paota.core.tasks import Task

__all__ = ["LIMIT_OPTIONS", "SCOPES", "Rate", "check_limits", "has_limits", "parse_rate"]

SCOPES = ("worker", "global")
"""The values of the ``limit_scope`` task option."""

_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*/\s*([smh])\s*")


@dataclass(frozen=True)
class Rate:
    """A start rate: at most ``count`` starts per ``period_s`` seconds, evenly spaced."""

    count: float
    period_s: float
    text: str

    @property
    def interval_s(self) -> float:
        """The least time between two starts, rounded up to the microsecond (so that rounding
        never lets ``count + 1`` starts into one period)."""
        return math.ceil(self.period_s * 1_000_000 / self.count) / 1_000_000


def parse_rate(value: Any) -> Rate:
    """``"10/s"``, ``"100/m"``, ``"5/h"``, ``"2.5/s"`` as a :class:`Rate`; TypeError or ValueError
    naming the value and the forms allowed otherwise."""
    if not isinstance(value, str):
        raise TypeError(
            f"rate must be a string such as '10/s', '100/m' or '5/h', got "
            f"{type(value).__name__} {value!r}"
        )
    match = _RATE.fullmatch(value)
    if match is None:
        raise ValueError(
            f"rate={value!r} is not valid: expected '<number>/s', '<number>/m' or '<number>/h' "
            "(starts per second, minute or hour), e.g. '10/s', '100/m', '2.5/s'"
        )
    count = float(match.group(1))
    period_s = _PERIODS[match.group(2)]
    if count <= 0:
        raise ValueError(f"rate={value!r} is not valid: the number of starts must be > 0")
    if period_s / count > MAX_DELAY_S:
        raise ValueError(
            f"rate={value!r} is not valid: it allows fewer than one start per 7 days "
            "(the longest delay a broker keeps)"
        )
    return Rate(count, period_s, value.strip())


def check_limits(max_concurrency: Any, rate: Any, limit_scope: Any) -> None:
    """Validate the limit options of a task (at registration): TypeError / ValueError naming the
    option, the value and what is allowed."""
    if max_concurrency is not None and (
        isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int)
    ):
        raise TypeError(
            f"max_concurrency must be an integer >= 1 (or None: no limit), got "
            f"{type(max_concurrency).__name__} {max_concurrency!r}"
        )
    if max_concurrency is not None and max_concurrency < 1:
        raise ValueError(
            f"max_concurrency={max_concurrency!r} is not valid: expected an integer >= 1 "
            "(or None: no limit)"
        )
    if rate is not None:
        parse_rate(rate)
    if limit_scope not in SCOPES:
        raise ValueError(
            f"limit_scope={limit_scope!r} is not valid: expected 'worker' (limits of each "
            "worker) or 'global' (shared by the workers of a store)"
        )


def has_limits(task: Task[Any, Any]) -> bool:
    """Whether ``task`` has a concurrency or a rate limit."""
    options = task.options
    return options.get("max_concurrency") is not None or options.get("rate") is not None


def _check(options: Mapping[str, Any]) -> None:
    check_limits(options["max_concurrency"], options["rate"], options["limit_scope"] or "worker")


LIMIT_OPTIONS = TaskOptionSpec(
    "limits (paota.middleware.limits)",
    {"max_concurrency": None, "rate": None, "limit_scope": "worker"},
    _check,
)
"""``max_concurrency`` (at most this many runs at once), ``rate`` (at most this many starts per
period, ``"10/s"``) and ``limit_scope`` (``"worker"``: each pool its own; ``"global"``: every
worker sharing the store)."""
