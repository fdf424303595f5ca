"""Prometheus metrics, as a middleware: :class:`PrometheusMiddleware` and :func:`serve_metrics`.

Needs ``prometheus-client`` (``pip install 'paota[metrics]'``); ``import paota`` never imports it,
only importing this module does. Every metric is ``paota_``-prefixed and labelled by ``queue`` and
``task``:

================================== ========= ===================================================
``paota_tasks_total``              counter   deliveries settled, by ``outcome``: succeeded,
                                             retried, failed, timed_out, cancelled, duplicate,
                                             throttled, deferred (ETA), returned, dropped
``paota_tasks_parked_total``       counter   parked copies, by ``reason`` (``x-paota-reason``)
``paota_task_duration_seconds``    histogram how long each run took (every attempt)
``paota_task_queue_wait_seconds``  histogram from when a run was due (the later of
                                             ``created_at`` and ``eta``) to its start
``paota_tasks_in_progress``        gauge     runs going on now
``paota_messages_published_total`` counter   new tasks sent (``send``, ``send_task``)
``paota_publish_errors_total``     counter   sends that raised
``paota_queue_messages_ready``     gauge     messages ready in each consumed queue (the broker's
                                             count, read at scrape time; label ``queue`` only)
``paota_parked_messages_ready``    gauge     messages in each parking queue (labels ``queue``
                                             and ``parking``: failed / timeout)
================================== ========= ===================================================

A parked delivery counts once in ``paota_tasks_total`` (``failed`` or ``timed_out``, the status
recorded) and once in ``paota_tasks_parked_total`` (its reason). Task names that a worker does not
have registered (unknown tasks from the wire) are labelled ``(unregistered)`` and undecodable
messages ``(undecodable)``, so a stray producer cannot grow the number of series without bound.

Several worker processes on one machine: with ``PROMETHEUS_MULTIPROC_DIR`` set (to an empty
directory, the same for every process, before they start), prometheus-client keeps each process's
values in files there and every process serves the sum of all of them: the workers can all listen
on the same port (``SO_REUSEPORT``), and whichever answers a scrape reports the machine's totals.
Without it, each process serves its own values and needs its own port.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from paota.core.extras import missing_extra

try:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
    from prometheus_client.core import GaugeMetricFamily, Metric
    from prometheus_client.exposition import choose_encoder
    from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
except ModuleNotFoundError as exc:
    raise missing_extra(exc, "Prometheus metrics (paota.middleware.metrics)") from None

from paota.core.context import TaskContext
from paota.core.errors import ConfigError
from paota.core.middleware import Middleware, MiddlewareChain, PublishContext
from paota.core.outcome import Outcome, Park
from paota.core.protocols import ParkQueue, QueueDepths, has_queue_depths
from paota.middleware._outcomes import outcome_label

if TYPE_CHECKING:
    from paota.core.client import BaseClient as Client
    from paota.core.services import WorkerServices

__all__ = [
    "DURATION_BUCKETS_S",
    "WAIT_BUCKETS_S",
    "MetricsServer",
    "PrometheusMiddleware",
    "install",
    "multiprocess_dir",
    "serve_metrics",
]

logger = logging.getLogger("paota.middleware.metrics")

DURATION_BUCKETS_S = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip
"""Buckets of ``paota_task_duration_seconds``: Prometheus's defaults, and a tail for long tasks."""
WAIT_BUCKETS_S = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
    21600.0, 86400.0,
)  # fmt: skip
"""Buckets of ``paota_task_queue_wait_seconds``: a backlog can last hours."""

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNREGISTERED = "(unregistered)"
UNDECODABLE = "(undecodable)"


def multiprocess_dir() -> str | None:
    """The shared directory of prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``),
    or None. ConfigError when it is set but is not a directory."""
    path = os.environ.get(MULTIPROC_ENV)
    if not path:
        return None
    if not os.path.isdir(path):
        raise ConfigError(
            f"{MULTIPROC_ENV}={path!r} is not a directory: create it (empty) before the worker "
            "processes start, or unset it to serve each process's own metrics"
        )
    if not getattr(values.ValueClass, "_multiprocess", False):
        # prometheus-client chooses where values live when it is first imported.
        raise ConfigError(
            f"{MULTIPROC_ENV} was set after prometheus_client was imported, so this process "
            "keeps its values in memory where the other processes cannot see them: set it in "
            "the environment before the process starts"
        )
    return path


class PrometheusMiddleware(Middleware):
    """Counts outcomes, times runs and waits, gauges runs in progress and counts publishes.

    ``registry`` is the registry to serve (default: a new one of this middleware's own, so two
    pools in one process never collide; pass ``prometheus_client.REGISTRY`` to add paota's
    metrics to an exporter you already run). In multiprocess mode (see the module docs) the
    metrics live in the shared directory and ``registry`` gets a collector reading all of it.
    Queue depths are read from the broker of the pool this middleware runs in, at scrape time,
    waiting at most ``depth_timeout_s``.
    """

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        duration_buckets_s: Sequence[float] = DURATION_BUCKETS_S,
        wait_buckets_s: Sequence[float] = WAIT_BUCKETS_S,
        depth_timeout_s: float = 5.0,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.multiprocess_dir = multiprocess_dir()
        # In multiprocess mode the values are read back from the files: registering the metric
        # objects as well would report this process twice.
        own = None if self.multiprocess_dir else self.registry
        labels = ("queue", "task")
        self.tasks = Counter(
            "paota_tasks",
            "Deliveries settled, by outcome.",
            (*labels, "outcome"),
            registry=own,
        )
        self.parked = Counter(
            "paota_tasks_parked",
            "Messages parked, by reason (x-paota-reason).",
            (*labels, "reason"),
            registry=own,
        )
        self.duration = Histogram(
            "paota_task_duration_seconds",
            "How long each run of a task took.",
            labels,
            buckets=tuple(duration_buckets_s),
            registry=own,
        )
        self.wait = Histogram(
            "paota_task_queue_wait_seconds",
            "From when a run was due (created_at or eta) to its start.",
            labels,
            buckets=tuple(wait_buckets_s),
            registry=own,
        )
        self.in_progress = Gauge(
            "paota_tasks_in_progress",
            "Runs going on now.",
            labels,
            registry=own,
            multiprocess_mode="livesum",
        )
        self.published = Counter(
            "paota_messages_published", "New tasks sent.", labels, registry=own
        )
        self.publish_errors = Counter(
            "paota_publish_errors", "Sends that raised.", labels, registry=own
        )
        if self.multiprocess_dir:
            MultiProcessCollector(self.registry, self.multiprocess_dir)  # type: ignore[no-untyped-call]
        self.depth_timeout_s = depth_timeout_s
        self._depths = _QueueDepthCollector(self)
        self.registry.register(self._depths)
        self._registered: Callable[[str], bool] | None = None
        self._series: dict[tuple[str, str], _Series] = {}
        self._outcomes: dict[tuple[str, str, str], Any] = {}

    # --- the hooks -------------------------------------------------------------------------------

    async def startup(self, services: WorkerServices) -> None:
        """Remember the pool: its registry (for task labels) and its broker (for depths)."""
        self._registered = services.registry.__contains__
        self._depths.attach(services)

    async def shutdown(self, services: WorkerServices) -> None:
        """Stop reading depths from this pool. (A stopped pool has no run in progress: its gauges
        are 0, and the files of a process that exited are dropped at the next scrape.)"""
        self._depths.detach(services)

    async def publish(
        self, message: PublishContext, call_next: Callable[[], Awaitable[None]]
    ) -> None:
        """Count a send (or its failure)."""
        series = self._for(message.queue, message.signature.name)
        try:
            await call_next()
        except BaseException:
            series.publish_errors.inc()
            raise
        series.published.inc()

    async def execute(self, task: TaskContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        """Observe the wait before the run and the run's duration; gauge it while it runs."""
        series = self._for(task.queue, self._task_label(task.name))
        wait_s = _waited_s(task)
        if wait_s is not None:
            series.wait.observe(wait_s)
        series.in_progress.inc()
        started = time.perf_counter()
        try:
            return await call_next()
        finally:
            series.duration.observe(time.perf_counter() - started)
            series.in_progress.dec()

    async def after_outcome(self, task: TaskContext, outcome: Outcome) -> None:
        """Count the outcome (and the parking reason)."""
        name = self._task_label(task.name)
        label = outcome_label(outcome)
        key = (task.queue, name, label)
        counter = self._outcomes.get(key)
        if counter is None:
            counter = self._outcomes[key] = self.tasks.labels(task.queue, name, label)
        counter.inc()
        if isinstance(outcome, Park):
            self.parked.labels(task.queue, name, outcome.reason.value).inc()

    # --- helpers ---------------------------------------------------------------------------------

    def _task_label(self, name: str) -> str:
        registered = self._registered
        if not name:
            return UNDECODABLE
        if registered is None or registered(name):
            return name
        return UNREGISTERED

    def _for(self, queue: str, task: str) -> _Series:
        key = (queue, task)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(self, queue, task)
        return series

    def scrape(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition (body, content type) for an ``Accept`` header; blocking: call it from a
        thread (it waits for the broker's queue depths)."""
        if self.multiprocess_dir:
            _prune_dead_processes(self.multiprocess_dir)
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


class _Series:
    """The children of one (queue, task), looked up once."""

    __slots__ = ("duration", "in_progress", "publish_errors", "published", "wait")

    def __init__(self, metrics: PrometheusMiddleware, queue: str, task: str) -> None:
        self.duration = metrics.duration.labels(queue, task)
        self.wait = metrics.wait.labels(queue, task)
        self.in_progress = metrics.in_progress.labels(queue, task)
        self.published = metrics.published.labels(queue, task)
        self.publish_errors = metrics.publish_errors.labels(queue, task)


def _waited_s(task: TaskContext) -> float | None:
    started = task.started_at
    sig = task.signature
    due: datetime | None = sig.created_at
    if sig.eta is not None and (due is None or sig.eta > due):
        due = sig.eta
    if started is None or due is None:
        return None
    try:
        return max(0.0, (started - due).total_seconds())
    except TypeError:  # a naive time from a foreign producer: not comparable, not observed
        return None


def _prune_dead_processes(path: str) -> None:
    """Drop the live gauges of processes that died without saying so (a crash, a SIGKILL), so
    ``paota_tasks_in_progress`` does not count their runs forever; counters are kept (they sum
    what every process did)."""
    for file in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        try:
            pid = int(os.path.basename(file).rsplit("_", 1)[1][: -len(".db")])
        except ValueError:
            continue
        if not _alive(pid):
            mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process of that pid: alive
        return True
    return True


class _QueueDepthCollector:
    """Reads the broker's queue depths when the registry is collected (a scrape)."""

    def __init__(self, metrics: PrometheusMiddleware) -> None:
        self._metrics = metrics
        self._pool: WorkerServices | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failing = False

    def attach(self, pool: WorkerServices) -> None:
        self._pool = pool
        self._loop = asyncio.get_running_loop()

    def detach(self, pool: WorkerServices) -> None:
        if self._pool is pool:
            self._pool = None
            self._loop = None

    def describe(self) -> Iterable[Metric]:
        # Nothing to check at registration (the names are fixed); collect() is called per scrape.
        return ()

    def collect(self) -> Iterator[Metric]:
        depths = self._read()
        if depths is None:
            return
        pool, ready = depths
        broker = pool.broker
        parking = {broker.parking_queue(q): q.value for q in ParkQueue}
        queues = GaugeMetricFamily(
            "paota_queue_messages_ready", "Messages ready in a task queue.", labels=("queue",)
        )
        parked = GaugeMetricFamily(
            "paota_parked_messages_ready",
            "Messages in a parking queue.",
            labels=("queue", "parking"),
        )
        for name, count in sorted(ready.items()):
            if name in parking:
                parked.add_metric((name, parking[name]), count)
            else:
                queues.add_metric((name,), count)
        yield queues
        yield parked

    def _read(self) -> tuple[WorkerServices, dict[str, int]] | None:
        pool, loop = self._pool, self._loop
        if pool is None or loop is None or loop.is_closed():
            return None
        broker = pool.broker
        if not has_queue_depths(broker):
            return None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            # Collected on the loop itself (an ASGI exporter calling generate_latest inline):
            # waiting for the loop here would deadlock it. Serve depths from a thread instead.
            logger.debug("queue depths skipped: the registry was collected on the event loop")
            return None
        future = asyncio.run_coroutine_threadsafe(_depths(pool, broker), loop)
        try:
            ready = future.result(timeout=self._metrics.depth_timeout_s)
        except Exception as exc:
            future.cancel()
            if not self._failing:
                logger.warning("queue depths not read from the broker (%s); left out", exc)
            self._failing = True
            return None
        if self._failing:
            logger.info("queue depths read from the broker again")
        self._failing = False
        return pool, ready


async def _depths(pool: WorkerServices, broker: QueueDepths) -> dict[str, int]:
    return await broker.queue_depths(dict(pool.consumed))


def install(client: Client, middleware: PrometheusMiddleware | None = None) -> PrometheusMiddleware:
    """The :class:`PrometheusMiddleware` of ``client`` (a pool): the one it has, else
    ``middleware`` (or a new one) added first, before the pool starts. What ``paota worker
    --metrics-port`` does."""
    for existing in client.middleware:
        if isinstance(existing, PrometheusMiddleware):
            return existing
    added = middleware if middleware is not None else PrometheusMiddleware()
    client.middleware = MiddlewareChain([added, *client.middleware])
    return added


class MetricsServer:
    """A minimal HTTP server for the Prometheus text format (``GET /metrics``), on the event
    loop; each scrape is encoded in a thread. Use :func:`serve_metrics`."""

    def __init__(self, metrics: PrometheusMiddleware, server: asyncio.Server) -> None:
        self.metrics = metrics
        self._server = server

    @property
    def port(self) -> int:
        """The port it listens on (useful with port 0)."""
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening. Idempotent."""
        self._server.close()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()


@contextlib.asynccontextmanager
async def serve_metrics(
    metrics: PrometheusMiddleware, *, port: int, host: str = "0.0.0.0"
) -> AsyncIterator[MetricsServer]:
    """Serve ``metrics`` on ``http://host:port/metrics`` while the block runs.

    In multiprocess mode the socket is opened with ``SO_REUSEPORT``, so every worker process of
    the machine can listen on the same port and any of them answers with everyone's totals.
    Otherwise a port in use is a :class:`~paota.ConfigError` saying so.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"metrics port {port!r} is not valid: expected an integer in 0..65535")
    shared = metrics.multiprocess_dir is not None

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _answer(metrics, reader, writer)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the scraper went away, stalled or sent garbage: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    try:
        server = await asyncio.start_server(
            handle, host, port, reuse_port=shared or None, reuse_address=True
        )
    except OSError as exc:
        hint = (
            "set PROMETHEUS_MULTIPROC_DIR to share one port between the worker processes of a "
            "machine, or give each process its own --metrics-port"
            if not shared
            else "another program holds it"
        )
        raise ConfigError(
            f"metrics port {port} on {host} cannot be opened ({exc}): {hint}"
        ) from exc
    served = MetricsServer(metrics, server)
    logger.info(
        "serving Prometheus metrics on http://%s:%d/metrics%s",
        host,
        served.port,
        f" (multiprocess, {metrics.multiprocess_dir})" if shared else "",
    )
    try:
        yield served
    finally:
        await served.close()


_REQUEST_TIMEOUT_S = 10.0


async def _answer(
    metrics: PrometheusMiddleware, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    async with asyncio.timeout(_REQUEST_TIMEOUT_S):
        head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, _, rest = lines[0].partition(" ")
    path = rest.partition(" ")[0].partition("?")[0]
    accept = ""
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "accept":
            accept = value.strip()
    if method not in ("GET", "HEAD"):
        status, content_type, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
    elif path not in ("/metrics", "/"):
        status, content_type, body = "404 Not Found", "text/plain", b"see /metrics\n"
    else:
        body, content_type = await asyncio.to_thread(metrics.scrape, accept)
        status = "200 OK"
    writer.write(
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("latin-1")
    )
    if method != "HEAD":
        writer.write(body)
    await writer.drain()
