"""Fuzzing what a producer with publish rights can send (issue 16), with hypothesis.

- the decoder: any bytes, any JSON shape, any headers, decode to a Signature or raise DecodeError
  (nothing else), each within a time budget per message;
- the pool on the memory backends: a batch of hostile messages and good tasks reaches an outcome
  for every delivery (nothing left ready or unacked), every good task runs, and every message that
  did not run is parked with a reason or dropped as asked.

The budgets are of CPU time (``time.process_time``: what the decode itself costs, whatever else
the machine runs), with room to spare (linear decoding takes a few hundred microseconds per KB at
worst; the quadratic path this guards against took 37 s for 20,000 args). The
figures (messages tried, slowest decode, per KB) go to ``.nox/report/figures.jsonl``, which
``.ci/report.py`` prints at the end of a CI run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paota import Config, ManualClock, ParkQueue, Signature, WorkerPool
from paota.brokers.memory import MemoryBroker
from paota.core.bounds import check_headers, check_size
from paota.core.errors import DecodeError
from paota.core.message import decode_message
from paota.core.protocols import OutgoingMessage
from paota.stores.memory import MemoryStore

# One xdist process runs the module, so that its figures are gathered in one place.
pytestmark = pytest.mark.xdist_group("fuzz")

#: A decode may take this long plus this much per KB, on a loaded machine.
BUDGET_S = 1.0
BUDGET_PER_KB_S = 0.005

KEYS = [
    "UUID", "uuid", "Name", "name", "Args", "args", "RetryCount", "retrycount", "RetryTimeout",
    "ETA", "eta", "Priority", "RoutingKey", "GroupUUID", "ChordCallback", "OnSuccess", "OnError",
    "IgnoreWhenTaskNotRegistered", "CreatedAt", "TaskTimeout", "Headers", "RawArgs", "Colour",
]  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(st.sampled_from(KEYS), inner, max_size=6)
    ),
    max_leaves=30,
)
arg = st.tuples(
    st.sampled_from(["Name", "name", "NAME"]),
    st.text(max_size=8),
    st.sampled_from(["Type", "type"]),
    st.sampled_from(["int", "string", "float64", "[]int", "bool"]),
    st.sampled_from(["Value", "value"]),
    json_values,
).map(lambda t: {t[0]: t[1], t[2]: t[3], t[4]: t[5]})
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"Name": st.sampled_from(["work", "nobody"]), "UUID": st.text(min_size=1, max_size=12)},
        optional={
            "Args": st.lists(arg, max_size=200),
            "RetryCount": json_values,
            "ETA": json_values,
            "Priority": json_values,
            "IgnoreWhenTaskNotRegistered": st.booleans(),
        },
    ).map(lambda d: json.dumps(d).encode()),
)
header_values = st.one_of(
    scalars,
    st.binary(max_size=20),
    st.text(max_size=30),
    st.just("x" * 9000),
    st.just("99999999999999999999"),
)
headers = st.dictionaries(
    st.sampled_from(
        [
            "x-paota-replays",
            "x-paota-returns",
            "x-paota-workflow-id",
            "x-paota-origin-queue",
            "uuid",
            "task_name",
            "retry_count",
            "eta",
            "x-other",
        ]
    ),
    header_values,
    max_size=4,
)

FIGURES: dict[str, float] = {"messages": 0, "slowest_s_per_kb": 0.0, "slowest_s": 0.0}
#: Where CI's timing report (``.ci/report.py``) picks the figures up, when it exists.
REPORT_DIR = Path(__file__).resolve().parents[2] / ".nox" / "report"


@pytest.fixture(scope="module", autouse=True)
def figures() -> Iterator[None]:
    """Write the module's figures for ``.ci/report.py`` once its tests ran."""
    yield
    if FIGURES["messages"] and REPORT_DIR.is_dir():
        line = {
            "figure": "fuzz",
            "text": f"{int(FIGURES['messages'])} random messages decoded, slowest "
            f"{FIGURES['slowest_s'] * 1e3:.2f} ms, at most {FIGURES['slowest_s_per_kb'] * 1e6:.0f} "
            f"us/KB; 25,000 lowercase args ({FIGURES.get('wide_kb', 0):.0f} KB): "
            f"{FIGURES.get('wide_s', 0) * 1e3:.0f} ms",
        }
        with (REPORT_DIR / "figures.jsonl").open("a") as out:
            out.write(json.dumps(line) + "\n")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies, hdrs=headers)
def test_the_decoder_ends_every_message_in_time_and_raises_only_decode_errors(
    body: bytes, hdrs: dict[str, Any]
) -> None:
    started = time.process_time()
    try:
        check_size(body, 32 * 1024 * 1024)
        check_headers(hdrs)
        decode_message(body, hdrs)
    except DecodeError:
        pass
    took = time.process_time() - started
    kb = max(len(body) / 1024, 1.0)
    FIGURES["messages"] += 1
    FIGURES["slowest_s"] = max(FIGURES["slowest_s"], took)
    FIGURES["slowest_s_per_kb"] = max(FIGURES["slowest_s_per_kb"], took / kb)
    assert took < BUDGET_S + BUDGET_PER_KB_S * kb, f"{took:.3f} s for {len(body)} bytes"


def test_a_large_wide_message_decodes_within_its_budget() -> None:
    # the worst shape found: many args with lowercase keys (the careful path), 1 MB
    args = [{"name": f"a{i}", "type": "int", "value": i} for i in range(25_000)]
    body = json.dumps({"UUID": "wide", "Name": "work", "Args": args}).encode()
    started = time.process_time()
    decode_message(body)
    took = time.process_time() - started
    kb = len(body) / 1024
    assert took < BUDGET_S + BUDGET_PER_KB_S * kb, f"{took:.2f} s for {kb:.0f} KB"
    FIGURES["wide_s"], FIGURES["wide_kb"] = took, kb


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile=st.lists(st.tuples(bodies, headers), min_size=1, max_size=12))
async def test_every_hostile_delivery_reaches_an_outcome_and_good_tasks_run(
    hostile: list[tuple[bytes, dict[str, Any]]],
) -> None:
    clock = ManualClock()
    broker = MemoryBroker(clock=clock)
    pool = WorkerPool(
        Config(unknown_task_max_returns=1, max_message_bytes=64 * 1024),
        4,
        "fuzz",
        broker=broker,
        store=MemoryStore(clock=clock),
    )
    ran: list[str] = []

    @pool.task(name="work")
    async def work(sig: Signature) -> None:
        ran.append(sig.uuid)

    await pool.connect()
    import asyncio

    worker = asyncio.create_task(pool.start(install_signal_handlers=False))
    try:
        good = [f"good-{i}" for i in range(5)]
        for i, (body, hdrs) in enumerate(hostile):
            await broker.publish(
                OutgoingMessage(body, broker.default_queue, headers=hdrs, message_id=f"h{i}")
            )
            if i < len(good):
                payload = json.dumps({"UUID": good[i], "Name": "work"}).encode()
                await broker.publish(OutgoingMessage(payload, broker.default_queue))
        for task_id in good[len(hostile) :]:
            payload = json.dumps({"UUID": task_id, "Name": "work"}).encode()
            await broker.publish(OutgoingMessage(payload, broker.default_queue))
        await broker.run_until_idle(timeout_s=60)
        # every delivery ended: nothing ready, nothing unacked, every good task ran
        assert broker.ready_count == 0 and broker.unacked_count == 0
        assert set(good) <= set(ran)
        # and each delivery had one outcome: run, retried, returned, deferred, a duplicate,
        # dropped as asked, or parked with its reason
        stats = pool.stats
        outcomes = (
            stats.succeeded + stats.failed + stats.timed_out + stats.cancelled + stats.retried
            + stats.returned + stats.dropped + stats.deferred + stats.duplicates
        )  # fmt: skip
        assert stats.received == outcomes, stats
        parked = broker.parked(ParkQueue.FAILED) + broker.parked(ParkQueue.TIMEOUT)
        assert len(parked) == stats.failed + stats.timed_out
        assert all(p.headers.get("x-paota-reason") for p in parked)
    finally:
        await pool.stop()
        await worker
        await pool.close()
