"""Helpers of the cluster tests (:mod:`tests.integration.test_cluster`): where a pool's connections
are, what the nodes say about the cluster and its queues, and the report line.

Every call into a node (``rabbitmqctl``) has a time limit; the ones a test makes while a node is
down go to a surviving node.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Sequence
from typing import Any

from paota import WorkerPool
from tests.integration.containers import RabbitNode

__all__ = [
    "QUEUE_COLUMNS",
    "cluster_running_nodes",
    "connections_by_node",
    "consumer_endpoints",
    "consumer_nodes",
    "ctl_json",
    "dlx_workers",
    "log_excerpt",
    "node_log",
    "publish_endpoint",
    "queue_rows",
    "queue_table",
    "ready_slots",
    "report",
    "slot_endpoints",
    "wait_for",
]

#: The ``list_queues`` columns the tests read and print (all exist on RabbitMQ 3.10 for classic
#: and quorum queues; ``leader``/``members``/``online`` are empty for classic ones).
QUEUE_COLUMNS = (
    "name",
    "type",
    "state",
    "messages",
    "messages_ready",
    "messages_unacknowledged",
    "consumers",
    "leader",
    "members",
    "online",
)


def ctl_json(node: RabbitNode, *args: str, timeout_s: float = 30.0) -> Any:
    """``rabbitmqctl ARGS --formatter json`` on ``node``, parsed (the banner lines skipped)."""
    out = node.ctl(*args, "--formatter", "json", timeout_s=timeout_s)
    starts = [i for i in (out.find("["), out.find("{")) if i >= 0]
    if not starts:
        raise ValueError(f"no JSON in the output of rabbitmqctl {' '.join(args)}: {out!r}")
    return json.loads(out[min(starts) :])


def cluster_running_nodes(node: RabbitNode) -> list[str]:
    """The running nodes of the cluster, as ``node`` sees them (``cluster_status``)."""
    status = ctl_json(node, "cluster_status")
    return sorted(status.get("running_nodes", []))


def queue_rows(node: RabbitNode, prefix: str = "") -> list[dict[str, Any]]:
    """``list_queues`` of the default vhost with :data:`QUEUE_COLUMNS`, names starting with
    ``prefix``, sorted by name."""
    rows = ctl_json(node, "list_queues", "--quiet", *QUEUE_COLUMNS)
    return sorted((r for r in rows if str(r.get("name", "")).startswith(prefix)), key=_name)


def _name(row: dict[str, Any]) -> str:
    return str(row.get("name", ""))


def queue_table(rows: Sequence[dict[str, Any]]) -> str:
    """``rows`` of :func:`queue_rows` as an aligned text table (for failure messages and logs)."""
    lines = ["\t".join(QUEUE_COLUMNS)]
    for row in rows:
        cells = []
        for column in QUEUE_COLUMNS:
            value = row.get(column, "")
            if isinstance(value, list):
                value = ",".join(str(v).split("@")[0] for v in value)
            elif column == "leader" and isinstance(value, str):
                value = value.split("@")[0]
            cells.append(str(value))
        lines.append("\t".join(cells))
    return "\n".join(lines)


def _server_port(name: Any) -> int | None:
    """The server port in a connection or channel name (``127.0.0.1:C -> 127.0.0.1:S (1)``)."""
    try:
        return int(str(name).split("->")[1].split()[0].rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


def _node_by_port(nodes: Sequence[RabbitNode], port: int | None) -> str:
    return next((n.node for n in nodes if n.port == port), f"port {port}")


def connections_by_node(
    ask: RabbitNode, nodes: Sequence[RabbitNode], name_prefix: str
) -> dict[str, int]:
    """``{node: connections}`` of the client connections whose name starts with ``name_prefix``
    (paota names them ``paota <worker> #<slot>``), as the cluster reports them (asked of node
    ``ask``). Each node listens on its own AMQP port, which the connection's name shows."""
    rows = ctl_json(ask, "list_connections", "--quiet", "name", "client_properties")
    counts: dict[str, int] = {}
    for row in rows:
        props = row.get("client_properties") or []
        names = [
            p[2] for p in props if isinstance(p, list) and len(p) == 3 and p[0] == "connection_name"
        ]
        if names and str(names[0]).startswith(name_prefix):
            where = _node_by_port(nodes, _server_port(row.get("name")))
            counts[where] = counts.get(where, 0) + 1
    return counts


def consumer_nodes(
    ask: RabbitNode, nodes: Sequence[RabbitNode], queue: str | None = None
) -> list[str]:
    """The nodes of every channel with a consumer (of ``queue``, when given), as the cluster
    reports them (asked of node ``ask``). A worker also consumes its control queue (cancellation
    broadcasts): pass the task queue to see only its task consumer."""
    rows = ctl_json(ask, "list_channels", "--quiet", "pid", "name", "consumer_count")
    if queue is not None:
        consumers = ctl_json(ask, "list_consumers", "--quiet", "queue_name", "channel_pid")
        wanted = {c.get("channel_pid") for c in consumers if c.get("queue_name") == queue}
        rows = [r for r in rows if r.get("pid") in wanted]
    return sorted(
        _node_by_port(nodes, _server_port(r.get("name")))
        for r in rows
        if int(r.get("consumer_count") or 0) > 0
    )


# --- the broker's own view of where a pool is connected ------------------------------------------


def _pool_of(pool: WorkerPool) -> Any:
    # Private access, on purpose: the test asks the pool which node each connection is on.
    connections = getattr(pool.broker, "_pool", None)
    if connections is None:
        raise RuntimeError(f"{pool.name}: the broker is not connected")
    return connections


def slot_endpoints(pool: WorkerPool) -> list[int]:
    """The URL index each connection slot of ``pool``'s broker is connected to (or tries next)."""
    return [slot.endpoint for slot in _pool_of(pool)._slots]


def ready_slots(pool: WorkerPool) -> list[int]:
    """The URL indexes of ``pool``'s usable connections (one entry per ready slot)."""
    return [slot.endpoint for slot in _pool_of(pool)._slots if slot.usable()]


def publish_endpoint(pool: WorkerPool) -> int:
    """The URL index of the connection ``pool`` publishes on now."""
    return int(_pool_of(pool)._publish_slot.endpoint)


def consumer_endpoints(pool: WorkerPool) -> list[int]:
    """The URL indexes of the connections ``pool``'s live task-queue consumer channels are on (not
    the hold queue's)."""
    connections = _pool_of(pool)
    broker: Any = pool.broker
    found = []
    for session in list(broker._sessions):
        if session.stopped or session.channel.is_closed:
            continue
        if session.queue == broker.topology.ladder.hold_queue:
            continue
        for slot in connections._slots:
            if slot.connection is not None and slot.connection is session.channel.connection:
                found.append(slot.endpoint)
    return sorted(found)


# --- waiting and reporting -----------------------------------------------------------------------


async def wait_for(what: str, check: Any, timeout_s: float, interval_s: float = 0.5) -> Any:
    """Call ``check()`` (sync, run in a thread) until it returns a true value; return it. Raises
    AssertionError naming ``what`` (and the last value or error) after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        try:
            last = await asyncio.to_thread(check)
        except (subprocess.CalledProcessError, ValueError, OSError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:g} s (last: {last!r})")
        await asyncio.sleep(interval_s)


def node_log(node: RabbitNode, lines: int = 20000) -> str:
    """The last ``lines`` lines of ``node``'s log file (RabbitMQ logs to a file in the container,
    not to its output); empty when the container is not running."""
    try:
        result = node._wrapped.exec_run(
            ["tail", "-n", str(lines), f"/var/log/rabbitmq/{node.node}.log"], demux=False
        )
    except Exception as exc:  # the container is not running
        return f"(no log: {type(exc).__name__})"
    return result.output.decode("utf-8", "replace") if result.output else ""


def log_excerpt(node: RabbitNode, words: Sequence[str], limit: int = 40) -> str:
    """The last ``limit`` lines of ``node``'s log that mention one of ``words`` (case-insensitive)."""
    lines = [
        line
        for line in node_log(node).splitlines()
        if any(word.lower() in line.lower() for word in words)
    ]
    return "\n".join(lines[-limit:])


#: ``rabbitmqctl eval`` of every at-least-once dead-letter worker on a node: its state (depth
#: limited), which shows the source queue and the messages it holds unconfirmed (``pendings``).
_DLX_WORKERS = (
    "lists:foreach(fun({_, P, _, _}) when is_pid(P) -> "
    'io:format("~P~n", [catch sys:get_state(P, 5000), 25]); (_) -> ok end, '
    "supervisor:which_children(rabbit_fifo_dlx_sup))."
)


def dlx_workers(node: RabbitNode) -> str:
    """The states of ``node``'s at-least-once dead-letter workers (one per quorum queue it leads
    with ``x-dead-letter-strategy: at-least-once``), as Erlang terms."""
    try:
        return node.ctl("eval", _DLX_WORKERS, timeout_s=30)
    except Exception as exc:
        return f"(rabbitmqctl eval failed: {exc})"


def report(scenario: str, **figures: Any) -> str:
    """Print ``CLUSTER <scenario>: k=v ...`` and append it as a JSON line to the file named by
    ``PAOTA_CHAOS_REPORT`` (when set). Returns the line."""
    shown = " ".join(
        f"{key}={value:.1f}" if isinstance(value, float) else f"{key}={value}"
        for key, value in figures.items()
    )
    line = f"CLUSTER {scenario}: {shown}"
    print(f"\n{line}")
    path = os.environ.get("PAOTA_CHAOS_REPORT")
    if path:
        # the keys of the chaos suite's records (tests/integration/chaos_helpers.py), and more
        record = {"test": f"cluster-{scenario}", **figures}
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(record, default=str) + "\n")
    return line
