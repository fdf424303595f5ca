"""paota: an asyncio task queue, wire-compatible with the Go paota library.

The public API is re-exported here. ``import paota`` imports no broker or store driver: aiormq and
pymongo are loaded only when the ``amqp`` broker or ``mongodb`` store is chosen.
"""

from paota.core.clock import Clock, ManualClock, SystemClock
from paota.core.config import AMQPConfig, Config, MongoConfig, redact_url
from paota.core.errors import (
    BrokerError,
    ConfigError,
    DecodeError,
    PaotaError,
    PublishError,
    RegistrationError,
    ResultTimeoutError,
    StoreError,
    TaskError,
    TaskFailedError,
    TaskTimeoutError,
    TopologyError,
)
from paota.core.pool import PoolStats, TaskHandle, WorkerPool
from paota.core.protocols import Broker, Delivery, ParkInfo, ParkQueue, ParkReason, Store
from paota.core.signature import Arg, Signature
from paota.core.state import ErrorInfo, TaskState, TaskStatus

__version__ = "0.1.0"

__all__ = [
    "AMQPConfig",
    "Arg",
    "Broker",
    "BrokerError",
    "Clock",
    "Config",
    "ConfigError",
    "DecodeError",
    "Delivery",
    "ErrorInfo",
    "ManualClock",
    "MongoConfig",
    "PaotaError",
    "ParkInfo",
    "ParkQueue",
    "ParkReason",
    "PoolStats",
    "PublishError",
    "RegistrationError",
    "ResultTimeoutError",
    "Signature",
    "Store",
    "StoreError",
    "SystemClock",
    "TaskError",
    "TaskFailedError",
    "TaskHandle",
    "TaskState",
    "TaskTimeoutError",
    "TaskStatus",
    "TopologyError",
    "WorkerPool",
    "__version__",
    "redact_url",
]
