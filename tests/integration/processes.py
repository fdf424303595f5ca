"""Running paota in processes of its own (``paota worker``, ``paota web``, a supervisor): the
command and the environment that give such a process a test's topology."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from paota import Config

__all__ = ["ROOT", "paota_command", "process_env"]

#: The repository's root, on the processes' ``PYTHONPATH`` (their apps live under ``tests/``).
ROOT = Path(__file__).resolve().parents[2]


def paota_command() -> list[str]:
    """The ``paota`` command of this interpreter's environment (``python -m paota`` without it)."""
    script = shutil.which("paota", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "paota"]


def process_env(config: Config, **extra: str) -> dict[str, str]:
    """This process's environment without its ``PAOTA_*`` variables, plus those of ``config``'s
    broker and topology (one connection), ``PYTHONPATH`` with :data:`ROOT`, then ``extra`` (a
    store, heartbeats, a test's own variables). Connection and store timeouts are the config's
    and 15 s: a child starting on a loaded machine must not give up on a healthy server."""
    amqp = config.amqp
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAOTA_")}
    env.update(
        PAOTA_BROKER="amqp",
        PAOTA_AMQP_URL=amqp.url,
        PAOTA_AMQP_EXCHANGE=amqp.exchange,
        PAOTA_AMQP_DELAYED_QUEUE=amqp.delayed_queue,
        PAOTA_AMQP_DELAY_LADDER=amqp.delay_ladder,
        PAOTA_AMQP_FAILED_QUEUE=amqp.failed_queue,
        PAOTA_AMQP_TIMEOUT_QUEUE=amqp.timeout_queue,
        PAOTA_AMQP_CONNECTION_POOL_SIZE="1",
        PAOTA_AMQP_CONNECTION_TIMEOUT=str(amqp.connection_timeout_s),
        PAOTA_MONGO_TIMEOUT="15",
        PAOTA_QUEUE_NAME=config.task_queue_name,
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env
