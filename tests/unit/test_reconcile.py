"""``reconcile(outcome, facts)``, table-tested: every outcome with every fact the store can give
while a delivery is settled (paota/core/reconcile.py)."""

from __future__ import annotations

import pytest

from paota import (
    Cancelled,
    Defer,
    Drop,
    Duplicate,
    ErrorInfo,
    Outcome,
    Park,
    ParkQueue,
    ParkReason,
    Retry,
    Return,
    Succeeded,
    TaskStatus,
)
from paota.core.reconcile import Facts, reconcile

ERR = ErrorInfo("ValueError", "boom")
OUTCOMES: dict[str, Outcome] = {
    "succeeded": Succeeded(42),
    "retry": Retry(2.0, 1, ERR),
    "defer": Defer(1.0, "eta"),
    "return": Return(0.5, 1),
    "park": Park(ParkQueue.FAILED, ParkReason.RETRIES_EXHAUSTED, ERR, TaskStatus.FAILED),
    "drop": Drop("unknown task"),
    "duplicate": Duplicate(),
    "cancelled": Cancelled("by the user"),
}
FACTS: dict[str, Facts] = {
    "nothing": Facts(),
    "cancelled": Facts(cancelled="stop it"),
    "refused": Facts(refused=True),
    "refused+cancelled": Facts(cancelled="stop it", refused=True),
    "rejected": Facts(rejected="document too large"),
    "claim lost": Facts(claim_lost=True),
}
REJECTED = Park(
    ParkQueue.FAILED,
    ParkReason.STORE_REJECTED,
    ErrorInfo("StoreRejected", "the store refused the record: document too large"),
    TaskStatus.FAILED,
)
STOPPED = Cancelled("stop it")
SAME = object()  # the outcome is unchanged

#: outcome -> the result for each fact, in the order of FACTS.
TABLE: dict[str, tuple[object, ...]] = {
    #              nothing  cancelled  refused  refused+cancelled  rejected  claim lost
    "succeeded": (SAME, SAME, SAME, STOPPED, REJECTED, SAME),
    "retry": (SAME, STOPPED, SAME, STOPPED, SAME, SAME),
    "defer": (SAME, STOPPED, SAME, STOPPED, SAME, SAME),
    "return": (SAME, STOPPED, SAME, STOPPED, SAME, SAME),
    "park": (SAME, STOPPED, SAME, STOPPED, SAME, SAME),
    "drop": (SAME, SAME, SAME, SAME, REJECTED, SAME),
    "duplicate": (SAME, STOPPED, SAME, STOPPED, REJECTED, SAME),
    "cancelled": (SAME, SAME, SAME, SAME, REJECTED, Duplicate()),
}


def test_the_table_covers_every_outcome_and_fact() -> None:
    assert set(TABLE) == set(OUTCOMES)
    assert all(len(row) == len(FACTS) for row in TABLE.values())


@pytest.mark.parametrize(
    ("outcome", "fact"), [(o, f) for o in OUTCOMES for f in FACTS], ids=lambda v: str(v)
)
def test_reconcile(outcome: str, fact: str) -> None:
    expected = TABLE[outcome][list(FACTS).index(fact)]
    result = reconcile(OUTCOMES[outcome], FACTS[fact])
    assert result == (OUTCOMES[outcome] if expected is SAME else expected)


def test_a_cancellation_another_worker_settled_first_is_a_duplicate_here() -> None:
    # the two facts come in that order in the settle step: the store's CANCELLED, then the claim
    first = reconcile(Retry(1.0, 1, ERR), Facts(cancelled="stop it"))
    assert reconcile(first, Facts(claim_lost=True)) == Duplicate()


def test_a_long_rejection_is_cut_in_the_parked_error() -> None:
    park = reconcile(Succeeded(1), Facts(rejected="x" * 10_000))
    assert isinstance(park, Park) and park.reason is ParkReason.STORE_REJECTED
    assert len(park.error.message) < 2100
