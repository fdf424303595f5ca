"""The pool a scheduler process of ``test_scheduler_amqp_mongo`` loads (``paota scheduler
scheduler_app:pool``): the test's RabbitMQ topology and MongoDB database, from the JSON in
``PAOTA_TEST_SCHEDULER_CONFIG``, and the periodic tasks the test counts."""

from __future__ import annotations

import json
import os

from paota import AMQPConfig, Config, MongoConfig, WorkerPool

SCHEDULES = {
    # id: (cron or None, interval or None, tz)
    "every-5s": ("*/5 * * * * *", None, "UTC"),
    "every-3s": (None, 3.0, "UTC"),
    "every-minute": ("* * * * *", None, "Europe/Berlin"),
}


def config() -> Config:
    """The test's config, from ``PAOTA_TEST_SCHEDULER_CONFIG``."""
    raw = json.loads(os.environ["PAOTA_TEST_SCHEDULER_CONFIG"])
    return Config(
        broker="amqp",
        task_queue_name=raw["task_queue_name"],
        amqp=AMQPConfig(**raw["amqp"], connection_pool_size=1),
        store=raw.get("store", "mongodb"),
        mongo=MongoConfig(uri=raw["mongo_uri"], database=raw["database"]),
    )


def make_pool(cfg: Config, name: str) -> WorkerPool:
    """A pool with the test's periodic tasks; their bodies run only in the test's own worker."""
    built = WorkerPool(cfg, concurrency=8, name=name)
    for schedule_id, (cron, every, tz) in SCHEDULES.items():

        async def tick() -> None: ...

        task = built.task(name=f"sched.{schedule_id}")(tick)
        built.periodic(cron, every=every, tz=tz, id=schedule_id, misfire_grace_s=30)(task)
    return built


pool = (
    make_pool(config(), os.environ.get("PAOTA_TEST_SCHEDULER_NAME", "scheduler-app"))
    if ("PAOTA_TEST_SCHEDULER_CONFIG" in os.environ)
    else None
)
