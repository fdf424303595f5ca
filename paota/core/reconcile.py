"""What the store says about a run, applied to its outcome: :func:`reconcile`, pure.

:func:`~paota.core.outcome.decide` gives the outcome of a run from what the task did. While the
delivery is settled (:mod:`paota.core.settle`), the store may know more, and only these facts
change the outcome (:class:`Facts`):

- ``cancelled``: the store has this run as CANCELLED (:meth:`paota.Client.cancel` records it
  first). An outcome that would send the message on or skip it (retry, deferral, return, parking,
  a duplicate) becomes :class:`~paota.Cancelled`; so does a final outcome (succeeded, parked)
  whose record the store ``refused`` (the cancellation came while the task ran).
- ``rejected``: the store refused the outcome's record for good (too large, say). A retry,
  deferral or return stands (its copy carries the task on, the next record may fit); a parked
  outcome stands (it is recorded with its error cut); any other becomes a parked copy with reason
  ``store-rejected``.
- ``claim_lost``: another worker settled this run's cancellation first: a Cancelled outcome is a
  :class:`~paota.Duplicate` here (its hooks fire once, on the first worker).

The settle step gathers each fact with the I/O it needs, calls :func:`reconcile`, then publishes,
records and acks what it returns: an outcome changes nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

from paota.core.bounds import bounded_text
from paota.core.outcome import (
    Cancelled,
    Defer,
    Duplicate,
    Outcome,
    Park,
    Retry,
    Return,
    Succeeded,
)
from paota.core.protocols import ParkQueue, ParkReason
from paota.core.state import ErrorInfo, TaskStatus

__all__ = ["FINAL_RUN", "MAY_BE_CANCELLED", "Facts", "reconcile"]

#: Outcomes before which the settle step asks the store whether the run was cancelled.
MAY_BE_CANCELLED = frozenset({Duplicate, Park, Retry, Defer, Return})
#: Final outcomes whose refused record may mean that the run was cancelled meanwhile.
FINAL_RUN = frozenset({Succeeded, Park})
#: Outcomes that stand when the store refuses their record for good.
_CARRIED_ON = (Retry, Defer, Return)


@dataclass(frozen=True, slots=True)
class Facts:
    """What the store said about the run of a delivery while it was settled (see the module
    docs); the defaults say nothing."""

    #: The store has this run as CANCELLED, with this reason.
    cancelled: str | None = None
    #: The store did not apply the outcome's record (its record is final or further along).
    refused: bool = False
    #: The store refused the outcome's record for good, with this message.
    rejected: str | None = None
    #: Another worker settled this run's cancellation first.
    claim_lost: bool = False


def reconcile(outcome: Outcome, facts: Facts) -> Outcome:
    """The outcome of a delivery once ``facts`` are known (pure; see the module docs)."""
    kind = type(outcome)
    if facts.cancelled is not None and (
        kind in MAY_BE_CANCELLED or (facts.refused and kind in FINAL_RUN)
    ):
        outcome, kind = Cancelled(facts.cancelled), Cancelled
    elif facts.rejected is not None and not isinstance(outcome, (*_CARRIED_ON, Park)):
        error = ErrorInfo(
            "StoreRejected",
            bounded_text(f"the store refused the record: {facts.rejected}", 2000),
        )
        return Park(ParkQueue.FAILED, ParkReason.STORE_REJECTED, error, TaskStatus.FAILED)
    if kind is Cancelled and facts.claim_lost:
        return Duplicate()
    return outcome
