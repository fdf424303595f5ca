"""``paota worker MODULE:POOL``: run a pool defined in your code until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import contextlib
import logging
from contextlib import AbstractAsyncContextManager
from typing import Any

from paota.cli._common import int_in, load_pool, parse_queues
from paota.core.errors import ConfigError
from paota.core.pool import WorkerPool

NAME = "worker"
HELP = "run the worker pool defined in a module"
DESCRIPTION = (
    "Run a WorkerPool defined in your code until SIGINT/SIGTERM. TARGET is MODULE:POOL, "
    "where POOL is a WorkerPool object (or a function returning one) in MODULE."
)

logger = logging.getLogger("paota.cli")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    parser.add_argument("target", metavar="MODULE:POOL")
    parser.add_argument(
        "--concurrency", type=int_in(1), default=None, help="override the pool's concurrency"
    )
    parser.add_argument(
        "--queues",
        type=parse_queues,
        default=None,
        metavar="QUEUE[=N],...",
        help="consume these queues (comma-separated); a name alone takes the pool's concurrency, "
        "NAME=N runs at most N of that queue at once (default: the pool's queues)",
    )
    parser.add_argument(
        "--scheduler",
        action="store_true",
        help="also send the pool's periodic tasks (@pool.periodic); any number of workers may on "
        "a shared store (PAOTA_STORE=mongodb), each slot is sent once",
    )
    parser.add_argument(
        "--metrics-port",
        type=int_in(0, 65535),
        default=None,
        metavar="N",
        help="serve Prometheus metrics on http://HOST:N/metrics (needs paota[metrics]); with "
        "PROMETHEUS_MULTIPROC_DIR set, the workers of a machine share N and report their sum",
    )
    parser.add_argument(
        "--metrics-host",
        default="0.0.0.0",
        metavar="HOST",
        help="the address the metrics are served on (default 0.0.0.0)",
    )


async def run(args: argparse.Namespace) -> int:
    pool = load_pool(args.target)
    if args.concurrency is not None:
        pool.concurrency = args.concurrency
    if args.queues is not None:
        pool.queues = args.queues
    if args.scheduler:
        pool.run_scheduler = True
    if pool.config.broker == "memory":
        logger.warning(
            "worker %s runs on the in-memory broker: only tasks sent from this same process will "
            "reach it. Set PAOTA_BROKER=amqp and PAOTA_AMQP_URL to share a queue across processes.",
            pool.name,
        )
    metrics = _metrics(pool, args)
    async with pool, metrics:
        await pool.start()
    return 0


def _metrics(pool: WorkerPool, args: argparse.Namespace) -> AbstractAsyncContextManager[Any]:
    """The metrics server ``--metrics-port`` asks for (the pool's PrometheusMiddleware, added if
    it has none), or nothing."""
    if args.metrics_port is None:
        return contextlib.nullcontext()
    try:
        from paota.middleware.metrics import install, serve_metrics
    except ImportError as exc:
        raise ConfigError(
            f"--metrics-port needs prometheus-client ({exc}): pip install 'paota[metrics]'"
        ) from exc
    return serve_metrics(install(pool), port=args.metrics_port, host=args.metrics_host)
