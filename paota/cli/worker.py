"""``paota worker MODULE:POOL``: run a pool defined in your code until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from contextlib import AbstractAsyncContextManager
from typing import Any

from paota.cli._common import add_include, include_modules, int_in, load_pool, parse_queues
from paota.cli._logging import levels_text
from paota.core.errors import ConfigError
from paota.pool import WorkerPool

NAME = "worker"
HELP = "run the worker pool defined in a module"
DESCRIPTION = (
    "Run a WorkerPool defined in your code until SIGINT/SIGTERM. TARGET is MODULE:POOL, "
    "where POOL is a WorkerPool object (or a function returning one) in MODULE. With "
    "--processes (or --max-tasks-per-child, --max-memory-per-child, --reload) a supervisor runs "
    "that many worker processes and keeps them running: SIGTERM or SIGINT drains them all, a "
    "second SIGINT stops at once."
)

#: The children's copy of the supervisor's options (JSON), beside PAOTA_SUPERVISOR_FD.
ARGS_ENV = "PAOTA_SUPERVISOR_ARGS"
#: Options of the supervisor alone: a child gets the others.
_SUPERVISOR_ONLY = ("processes", "reload", "reload_dirs", "supervised", "command")

logger = logging.getLogger("paota.cli")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    parser.add_argument("target", metavar="MODULE:POOL")
    add_include(parser)
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
        help="the address the metrics are served on (default 0.0.0.0, every interface, as "
        "Prometheus exporters do: the scraper is usually on another machine; 127.0.0.1 keeps "
        "them local). They hold task and queue names and counts, no args or results",
    )
    parser.add_argument(
        "--processes",
        type=_processes,
        nargs="?",
        const="auto",
        default=None,
        metavar="N",
        help="run N worker processes under a supervisor that restarts any that dies (--processes "
        "alone: one per core); without it, this process is the worker",
    )
    parser.add_argument(
        "--max-tasks-per-child",
        type=int_in(1),
        default=None,
        metavar="N",
        help="a worker process that started N tasks stops taking work, finishes them and is "
        "replaced (implies a supervisor)",
    )
    parser.add_argument(
        "--max-memory-per-child",
        type=_memory,
        default=None,
        metavar="SIZE",
        help="a worker process holding more than SIZE (200 = 200 MiB, 512MB, 1.5GiB) is "
        "replaced the same way; looked at every second (implies a supervisor)",
    )
    parser.add_argument(
        "--reload",
        action="store_true",
        help="replace the worker processes when a .py file changes, for development (needs "
        "paota[reload]; implies a supervisor)",
    )
    parser.add_argument(
        "--reload-dir",
        dest="reload_dirs",
        action="append",
        default=None,
        metavar="DIR",
        help="with --reload: watch DIR (repeatable; default: the current directory)",
    )
    parser.add_argument("--supervised", action="store_true", help=argparse.SUPPRESS)


def _processes(text: str) -> int:
    if text == "auto":
        return _cores()
    return int_in(1, 1024)(text)


def _cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _memory(text: str) -> int:
    from paota.supervisor import parse_memory

    try:
        return parse_memory(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--max-memory-per-child ")) from None


def _supervised(args: argparse.Namespace) -> bool:
    return bool(
        args.processes is not None
        or args.max_tasks_per_child is not None
        or args.max_memory_per_child is not None
        or args.reload
    )


async def run(args: argparse.Namespace) -> int:
    if args.supervised:
        return await _run_child(args)
    if _supervised(args):
        return await _supervise(args)
    return await _run_pool(args)


async def _run_pool(args: argparse.Namespace, child: Any = None) -> int:
    pool = load_pool(args.target)
    include_modules(args.include)
    if not pool.task_names:
        raise ConfigError(
            f"{args.target} has no tasks registered: every task delivered would be returned as "
            "unknown. Register them on this pool (@pool.task) in the module, or name the modules "
            "that do with --include MODULE"
        )
    if child is not None:
        from paota.core.middleware import MiddlewareChain

        pool.middleware = MiddlewareChain([*pool.middleware, child])
    if args.concurrency is not None:
        pool.concurrency = args.concurrency
    if args.queues is not None:
        pool.queues = args.queues
    if args.scheduler:
        pool.run_scheduler = True
    if pool.config.broker == "memory":
        if os.environ.get("PAOTA_BROKER", "").strip().lower() == "amqp":
            because = (
                f"{args.target} builds its Config with broker='memory' in code, which wins over "
                "PAOTA_BROKER=amqp; leave broker out of the Config to take the environment's"
            )
        else:
            because = "set PAOTA_BROKER=amqp and PAOTA_AMQP_URL to share a queue across processes"
        logger.warning(
            "worker %s runs on the in-memory broker: only tasks sent from this same process will "
            "reach it (%s)",
            pool.name,
            because,
        )
    metrics = _metrics(pool, args)
    async with pool, metrics:
        await pool.start()
    return 0


def _check_reload_dirs(args: argparse.Namespace) -> None:
    if args.reload_dirs and not args.reload:
        raise ConfigError("--reload-dir is valid with --reload only")
    for directory in args.reload_dirs or ():
        if not os.path.isdir(directory):
            raise ConfigError(f"--reload-dir {directory!r} is not a directory")
    if args.reload:
        from paota.core.extras import require

        require("watchfiles", "paota worker --reload")  # refused at start, not an ERROR later


async def _supervise(args: argparse.Namespace) -> int:
    """Run the supervisor: children re-run this command with the same options."""
    from paota.supervisor import Supervisor

    processes = args.processes if args.processes is not None else 1
    _check_reload_dirs(args)
    child_args = {
        k: v
        for k, v in vars(args).items()
        if k not in (*_SUPERVISOR_ONLY, "log_level", "log_format")
    }
    level = levels_text(args.log_level or {})
    env = dict(os.environ)
    env[ARGS_ENV] = json.dumps(child_args)
    with contextlib.ExitStack() as cleanup:
        import tempfile  # here: it imports shutil, bz2 and lzma, which a worker does not need

        if args.metrics_port is not None and not env.get("PROMETHEUS_MULTIPROC_DIR"):
            # Without a shared directory each child would answer scrapes with its own numbers.
            env["PROMETHEUS_MULTIPROC_DIR"] = cleanup.enter_context(
                tempfile.TemporaryDirectory(prefix="paota-metrics-")
            )

        def command(slot: int) -> list[str]:
            scheduler = ["--scheduler"] if args.scheduler and slot == 0 else []
            line = [sys.executable, "-m", "paota", "--log-level", level or "INFO"]
            line += ["--log-format", args.log_format, "worker"]
            return [*line, "--supervised", *scheduler, args.target]

        supervisor = Supervisor(
            command,
            processes,
            env=env,
            # The scheduler runs in the first child only; its replacement waits for its exit,
            # so two never compete for the scheduler's lock.
            serial_slots={0} if args.scheduler else (),
            reload_dirs=(args.reload_dirs or [os.getcwd()]) if args.reload else (),
        )
        return await supervisor.run()


async def _run_child(args: argparse.Namespace) -> int:
    """A supervised worker process: the supervisor's options, its link, a log line prefix."""
    from paota.supervisor import FD_ENV, supervised_child

    scheduler = args.scheduler
    try:
        vars(args).update(json.loads(os.environ[ARGS_ENV]))
        fd = int(os.environ[FD_ENV])
    except (KeyError, ValueError) as exc:
        raise ConfigError(
            f"--supervised is for the processes a supervisor starts ({exc!r}): run paota worker "
            "--processes N instead"
        ) from None
    args.scheduler = scheduler  # the supervisor gives it to one child only
    if args.log_format != "json":  # JSON lines carry the process id already
        for handler in logging.getLogger().handlers:
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")
            )
    child = supervised_child(
        fd, max_tasks=args.max_tasks_per_child, max_memory_bytes=args.max_memory_per_child
    )
    return await _run_pool(args, child)


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
