"""The paota headers of one delivery, read once: :class:`DeliveryInfo`.

A delivery's headers hold what paota itself carries between runs: how often the task was
requeued by hand (``x-paota-replays``), how often it was returned by workers that do not know it
(``x-paota-returns``), and a workflow step's links. The pool, the settle step, the runner and the
features read them from :attr:`TaskContext.info <paota.TaskContext.info>`, parsed on first use
and kept for the delivery, instead of each parsing the header again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from paota.core.protocols import (
    PARENT_HEADER,
    REPLAYS_HEADER,
    RETURNS_HEADER,
    WORKFLOW_HEADER,
    header_int,
    header_text,
)

__all__ = ["DeliveryInfo"]


@dataclass(frozen=True, slots=True)
class DeliveryInfo:
    """What a delivery's paota headers say (every field 0 or ``""`` when its header is absent or
    malformed)."""

    #: Times the task was requeued from a parking queue (a new run each time).
    replays: int = 0
    #: Times workers that have no such task returned the message (never below 0).
    returns: int = 0
    #: The workflow the task is a step of.
    workflow_id: str = ""
    #: The step's parent in its workflow.
    parent_id: str = ""

    @classmethod
    def of(cls, headers: Mapping[str, Any]) -> DeliveryInfo:
        """The info in ``headers`` (one lookup per header)."""
        if not headers:
            return _NONE
        get = headers.get
        replays, returns, workflow = get(REPLAYS_HEADER), get(RETURNS_HEADER), get(WORKFLOW_HEADER)
        linked = workflow is not None or WORKFLOW_HEADER in headers
        if replays is None and returns is None and not linked:
            return _NONE
        return cls(
            header_int(replays),
            max(0, header_int(returns)),
            header_text(workflow),
            header_text(get(PARENT_HEADER)) if linked else "",
        )


_NONE = DeliveryInfo()
