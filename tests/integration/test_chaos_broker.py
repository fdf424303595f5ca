"""Chaos on the broker (issue 7): every test breaks a RabbitMQ of its own, in a container, while
thousands of tasks (immediate and delayed) go through it, then counts what ran, what was lost (must
be 0) and what ran twice (see :mod:`tests.integration.chaos_helpers`).

- SIGKILL of the broker twice, mid-stream: every confirmed task runs, delayed ones included (the
  quorum delay ladder dead-letters at least once).
- a restart while producers publish: ``send_task`` never reports success for a message RabbitMQ did
  not confirm (every confirmed one runs), and a send that fails does so in time, with PublishError.
- the broker frozen (SIGSTOP) for longer than the heartbeat allows, then resumed: the clients give
  the dead connections up, reconnect, and nothing confirmed is lost.
- a memory or disk alarm: publishes wait, or fail within ``publish_timeout_s`` naming the alarm;
  nothing hangs, and every confirmed task runs once the alarm clears.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import pytest

from paota import Config, Signature, WorkerPool
from paota.core.errors import PaotaError, PublishError
from tests.integration.chaos_helpers import (
    ChaosCount,
    Runs,
    SendResult,
    bounded,
    chaos_config,
    in_thread,
    plan,
    send_all,
    wait_until,
)
from tests.integration.containers import RabbitNode

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

NodeFactory = Callable[..., RabbitNode]


def worker_pool(config: Config, runs: Runs, *, concurrency: int, sleep_s: float) -> WorkerPool:
    """A pool whose task ``work`` sleeps ``sleep_s`` (so faults land mid-stream), then counts
    its run."""
    pool = WorkerPool(config, concurrency=concurrency, name="chaos-worker")

    @pool.task
    async def work(sig: Signature) -> None:
        await asyncio.sleep(sleep_s)
        runs.record(sig.uuid)

    return pool


def with_amqp(config: Config, **changes: Any) -> Config:
    """``config`` with some AMQP settings changed (same names: the same queues)."""
    return dataclasses.replace(config, amqp=dataclasses.replace(config.amqp, **changes))


def check_failures(sent: SendResult, timeout_s: float, *, match: str = "") -> None:
    """Every failed send raised PublishError (naming ``match``), within the publish timeout."""
    for failure in sent.failed:
        assert isinstance(failure.error, PublishError), repr(failure.error)
        assert match in str(failure.error), str(failure.error)
        # publish_timeout_s bounds the send; the slack is for a loaded 2-core machine
        assert failure.elapsed_s < timeout_s + 5.0, (failure.task_id, failure.elapsed_s)


async def recovery(runs: Runs, fault_at: float, back_at: float, what: str) -> float:
    """Seconds from ``fault_at`` to the first task run after ``back_at`` (when the broker
    answered again)."""
    await wait_until(lambda: runs.first_after(back_at) is not None, 60, f"no task ran after {what}")
    first = runs.first_after(back_at)
    assert first is not None
    return first - fault_at


@pytest.mark.timeout(300)
async def test_broker_sigkill_twice_mid_stream_loses_nothing(
    rabbit_node: NodeFactory, running: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # given a broker of our own holding 4,000 confirmed tasks, half of them with ETAs 0.5-20 s
    # (waiting in the delay ladder), and a pool working through them
    node = await in_thread(rabbit_node)
    config = chaos_config(node.url, heartbeat_interval_s=5)
    total = 4000
    runs = Runs()
    async with WorkerPool(config, name="chaos-producer") as producer:
        sent = await send_all(producer, plan(total, delayed_fraction=0.5, delay_s=(0.5, 20.0)))
    assert len(sent.confirmed) == total
    await running(worker_pool(config, runs, concurrency=20, sleep_s=0.05))

    # when the broker is SIGKILLed twice while tasks run and delays wait (at a quarter done, then
    # 3 s after the pool recovered, once 1,000 more tasks, half of them with ETAs 3-30 s, are
    # confirmed: however long the first recovery took, delays wait in the ladder at both kills),
    # and started again on its data each time
    recover_s: list[float] = []
    down_s: list[float] = []
    waiting: list[int] = []
    done_at_kills: list[int] = []
    await runs.wait_for_count(total // 4, timeout_s=90)
    for kill in range(2):
        if kill:
            await asyncio.sleep(3.0)
            async with WorkerPool(config, name="chaos-producer") as producer:
                wave = plan(1000, delayed_fraction=0.5, delay_s=(3.0, 30.0), prefix="wave2")
                await send_all(producer, wave, result=sent)
            total += len(wave)
            assert len(sent.confirmed) == total
        assert runs.distinct() < total, "everything ran before the kill: make the tasks slower"
        waiting.append(sent.delayed_waiting())
        done_at_kills.append(runs.distinct())
        fault_at = time.monotonic()
        await in_thread(node.kill)
        await asyncio.sleep(1.0)
        await in_thread(node.start_again)
        back_at = time.monotonic()
        down_s.append(back_at - fault_at)
        recover_s.append(await recovery(runs, fault_at, back_at, "the broker came back"))

    # then every confirmed task runs, immediate and delayed alike
    await runs.wait_for_all(sent.confirmed, timeout_s=120)
    delayed_duplicates = sum(runs.counts[task_id] - 1 for task_id in sent.due)
    count = ChaosCount.of(
        "sigkill",
        sent.confirmed,
        runs.counts,
        recover_s,
        delayed=len(sent.due),
        delayed_waiting_at_kills=",".join(map(str, waiting)),
        done_at_kills=",".join(map(str, done_at_kills)),
        broker_down_s=",".join(f"{s:.1f}" for s in down_s),
        delayed_duplicates=delayed_duplicates,
    ).report(capsys)
    assert count.lost == 0
    assert min(waiting) > 0, "no delayed task was in the ladder at a kill"
    # an immediate task runs twice only if its delivery was unacked at a kill: at most a prefetch
    # window per kill
    assert count.duplicates - delayed_duplicates <= 2 * config.amqp.prefetch_count
    # a delayed one also when the kill came between a ladder hop's confirm and the settle of its
    # source (quorum queues dead-letter at least once, see paota.brokers.amqp.topology): at most
    # the tasks in the ladder at the kills, on top of the unacked windows
    assert delayed_duplicates <= sum(waiting) + 2 * config.amqp.prefetch_count


@pytest.mark.timeout(300)
async def test_broker_restart_while_producers_publish_confirms_only_what_it_keeps(
    rabbit_node: NodeFactory, running: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # given producers sending 4,000 tasks (a third delayed 0.5-4 s) at about 300/s, with a publish
    # timeout shorter than a broker restart, and a pool working through them
    node = await in_thread(rabbit_node)
    config = chaos_config(node.url, heartbeat_interval_s=5)
    publish_timeout_s = 3.0
    producer_config = with_amqp(config, publish_timeout_s=publish_timeout_s)
    total = 4000
    runs = Runs()
    await running(worker_pool(config, runs, concurrency=20, sleep_s=0.02))
    sent = SendResult()
    async with WorkerPool(producer_config, name="chaos-producer") as producer:
        sending = asyncio.create_task(
            send_all(
                producer,
                plan(total, delayed_fraction=0.33, delay_s=(0.5, 4.0)),
                in_flight=30,
                rate_per_s=300,
                result=sent,
                tolerate=(PaotaError,),
            )
        )
        # when RabbitMQ restarts (a graceful stop, then a start) while they publish
        await wait_until(lambda: len(sent.confirmed) >= total // 4, 60, "sends did not start")
        fault_at = time.monotonic()
        started_before = sent.started
        await in_thread(node.restart)
        back_at = time.monotonic()
        started_during = sent.started - started_before
        await bounded(sending, 180, "the producers")

    # then every send either failed in time with PublishError, or was confirmed, and every
    # confirmed task runs
    check_failures(sent, publish_timeout_s)
    assert len(sent.confirmed) + len(sent.failed) == total
    assert started_during > 0, "no send was attempted during the restart"
    await runs.wait_for_all(sent.confirmed, timeout_s=120)
    publish_back = sent.first_confirmed_after(back_at)
    count = ChaosCount.of(
        "restart-while-publishing",
        sent.confirmed,
        runs.counts,
        [await recovery(runs, fault_at, back_at, "the restart")],
        send_failed=len(sent.failed),
        failed_but_ran=sum(1 for f in sent.failed if runs.counts[f.task_id]),
        sends_during_restart=started_during,
        broker_down_s=round(back_at - fault_at, 1),
        publish_recover_s=None if publish_back is None else round(publish_back - fault_at, 1),
    ).report(capsys)
    assert count.lost == 0
    assert count.duplicates <= config.amqp.prefetch_count


@pytest.mark.timeout(300)
async def test_broker_paused_longer_than_the_heartbeat_then_resumed(
    rabbit_node: NodeFactory,
    running: Any,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # given clients with a 1 s heartbeat (aiormq gives a silent server (1 + 1) * 3 = 6 s), 3,000
    # tasks (a third delayed 0.5-6 s) sent at about 250/s, and a pool working through them
    node = await in_thread(rabbit_node)
    publish_timeout_s = 5.0
    # connection_timeout_s 10: the first connection to a fresh container broker took over 3 s
    # under the stress session's CPU hog (the pool then never started)
    config = chaos_config(
        node.url, heartbeat_interval_s=1, connection_timeout_s=10.0, publish_timeout_s=30.0
    )
    total = 3000
    runs = Runs()
    await running(worker_pool(config, runs, concurrency=20, sleep_s=0.02))
    sent = SendResult()
    producer_config = with_amqp(config, publish_timeout_s=publish_timeout_s)
    async with WorkerPool(producer_config, name="chaos-producer") as producer:
        sending = asyncio.create_task(
            send_all(
                producer,
                plan(total, delayed_fraction=0.33, delay_s=(0.5, 6.0)),
                in_flight=25,
                rate_per_s=250,
                result=sent,
                tolerate=(PaotaError,),
            )
        )
        # when every broker process is frozen (SIGSTOP) for 10 s, then resumed
        await wait_until(lambda: len(sent.confirmed) >= total // 4, 60, "sends did not start")
        caplog.set_level("WARNING", logger="paota.brokers.amqp")
        pause_s = 10.0
        fault_at = time.monotonic()
        await in_thread(node.pause)
        try:
            await asyncio.sleep(pause_s)
        finally:
            await in_thread(node.resume)
        back_at = time.monotonic()
        await bounded(sending, 180, "the producers")

    # then the clients gave the silent connections up and reconnected
    lost = [r.getMessage() for r in caplog.records if "lost" in r.getMessage()]
    assert lost, "no connection was given up during the pause"
    assert any("re-established" in r.getMessage() for r in caplog.records)
    # and sends failed in time or were confirmed, and every confirmed task runs
    check_failures(sent, publish_timeout_s)
    await runs.wait_for_all(sent.confirmed, timeout_s=120)
    count = ChaosCount.of(
        "pause",
        sent.confirmed,
        runs.counts,
        [await recovery(runs, fault_at, back_at, "the broker was resumed")],
        pause_s=pause_s,
        connections_lost=len(lost),
        send_failed=len(sent.failed),
        failed_but_ran=sum(1 for f in sent.failed if runs.counts[f.task_id]),
    ).report(capsys)
    assert count.lost == 0
    assert count.duplicates <= 2 * config.amqp.prefetch_count


ALARMS = {
    # resource: (raise the alarm, clear it)
    "memory": (
        ("set_vm_memory_high_watermark", "0.00001"),
        ("set_vm_memory_high_watermark", "0.4"),
    ),
    # 1 PB free: more than any disk here has; 50MB is what the test brokers run with
    "disk": (("set_disk_free_limit", str(10**15)), ("set_disk_free_limit", "50MB")),
}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("resource", sorted(ALARMS))
async def test_resource_alarm_blocks_publishers_with_a_clear_error_and_loses_nothing(
    rabbit_node: NodeFactory, running: Any, resource: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # given 2,000 confirmed tasks (a quarter delayed 0.5-4 s) and a pool working through them
    node = await in_thread(rabbit_node)
    config = chaos_config(node.url)
    runs = Runs()
    async with WorkerPool(config, name="chaos-producer") as producer:
        sent = await send_all(producer, plan(2000, delayed_fraction=0.25, delay_s=(0.5, 4.0)))
    # (about 200 tasks/s: the backlog lasts through the alarm)
    await running(worker_pool(config, runs, concurrency=10, sleep_s=0.05))
    await runs.wait_for_count(200, timeout_s=60)

    raise_alarm, clear_alarm = ALARMS[resource]
    quick_timeout_s, patient_timeout_s = 2.0, 60.0
    async with (
        WorkerPool(with_amqp(config, publish_timeout_s=quick_timeout_s), name="quick") as quick,
        WorkerPool(
            with_amqp(config, publish_timeout_s=patient_timeout_s), name="patient"
        ) as patient,
    ):
        # when RabbitMQ raises a memory (or disk) alarm
        fault_at = time.monotonic()
        await in_thread(node.ctl, *raise_alarm)
        try:
            # then a producer with a 2 s publish timeout fails in time, naming the alarm
            failed = await bounded(
                send_all(
                    quick,
                    plan(100, delayed_fraction=0.25, prefix="quick"),
                    in_flight=100,
                    tolerate=(PaotaError,),
                ),
                quick_timeout_s + 30,
                "sends during the alarm",
            )
            assert len(failed.failed) == 100, f"{len(failed.confirmed)} sends confirmed in alarm"
            check_failures(failed, quick_timeout_s, match="is blocking publishers")
            assert "memory or disk alarm" in str(failed.failed[0].error)
            # and a producer with a long timeout waits for the alarm to clear
            waiting = SendResult()
            patient_sending = asyncio.create_task(
                send_all(
                    patient,
                    plan(1000, delayed_fraction=0.25, prefix="patient"),
                    result=waiting,
                    tolerate=(PaotaError,),
                )
            )
            await asyncio.sleep(3.0)
            assert not waiting.confirmed, "a send was confirmed while RabbitMQ blocked publishers"
            assert not patient_sending.done()
        finally:
            await in_thread(node.ctl, *clear_alarm)
        cleared_at = time.monotonic()
        # and meanwhile the pool kept consuming (RabbitMQ blocks publishing connections only)
        ran_in_alarm = runs.between(fault_at + 1.0, cleared_at)
        assert ran_in_alarm > 0, "no task ran during the alarm"
        # and once the alarm clears, the waiting sends are confirmed
        await bounded(patient_sending, patient_timeout_s + 30, "the patient producer")
    assert not waiting.failed, waiting.failed[:3]
    publish_back = waiting.first_confirmed_after(cleared_at)
    assert publish_back is not None

    # and every confirmed task runs (a send that failed on the alarm may still run: RabbitMQ
    # reads what was written once it unblocks the connection; counted as failed_but_ran)
    confirmed = sent.confirmed + waiting.confirmed
    await runs.wait_for_all(confirmed, timeout_s=120)
    count = ChaosCount.of(
        f"{resource}-alarm",
        confirmed,
        runs.counts,
        [publish_back - fault_at],
        send_failed=len(failed.failed),
        failed_but_ran=sum(1 for f in failed.failed if runs.counts[f.task_id]),
        ran_during_alarm=ran_in_alarm,
        alarm_s=round(cleared_at - fault_at, 1),
    ).report(capsys)
    assert count.lost == 0


@pytest.mark.timeout(300)
async def test_a_pool_that_must_publish_during_an_alarm_keeps_consuming(
    rabbit_node: NodeFactory, running: Any
) -> None:
    """RabbitMQ blocks a connection that publishes during a memory or disk alarm: it stops
    reading from its socket, and aiormq stops writing to it (acks included). The pool's
    consumer channel is opened on the same connection as its publishing channel (both on the
    first slot of the connection pool), so the first task that has to publish (a retry, an ETA
    deferral, a parked copy) stalls the whole pool: its acks no longer leave, the prefetch window
    fills, nothing else runs until the alarm clears. RabbitMQ's advice is separate connections
    for publishing and consuming; queues cannot drain (and a memory alarm cannot clear by
    consumption) while consumers stall."""
    node = await in_thread(rabbit_node)
    config = chaos_config(node.url, publish_timeout_s=5.0)
    runs = Runs()
    attempts = Runs()
    tasks = plan(3000, delayed_fraction=0.0)
    # three tasks that fail for good: parking them means publishing a copy
    failing = {t.task_id for t in tasks[600:603]}
    pool = WorkerPool(config, concurrency=10, name="chaos-worker")

    @pool.task
    async def work(sig: Signature) -> None:
        attempts.record(sig.uuid)
        await asyncio.sleep(0.05)
        if sig.uuid in failing:
            raise RuntimeError("fails for good: parked")
        runs.record(sig.uuid)

    async with WorkerPool(config, name="chaos-producer") as producer:
        await send_all(producer, tasks)
    await running(pool)
    await runs.wait_for_count(100, timeout_s=60)
    await in_thread(node.ctl, "set_vm_memory_high_watermark", "0.00001")
    try:
        # when the pool reaches the failing tasks during the alarm
        await wait_until(lambda: failing <= set(attempts.counts), 60, "failing tasks not reached")
        reached_at = time.monotonic()
        await asyncio.sleep(6.0)
        # then the other seven slots keep running tasks (about 140/s)
        ran = runs.between(reached_at + 1.0, time.monotonic())
    finally:
        await in_thread(node.ctl, "set_vm_memory_high_watermark", "0.4")
    assert ran >= 200, f"only {ran} tasks ran in the 5 s after a publish was blocked"
