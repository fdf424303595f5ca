"""paota: an asyncio task queue, wire-compatible with the Go paota library.

The public API is re-exported here. ``import paota`` imports no broker or store driver: aiormq and
pymongo are loaded only when the ``amqp`` broker or ``mongodb`` store is chosen.
"""

import typing as _typing

from paota._version import __version__
from paota.client import Client
from paota.core.clock import Clock, ManualClock, SystemClock
from paota.core.config import AMQPConfig, Config, MongoConfig, redact_url
from paota.core.context import NotInTaskError, TaskContext, TaskLogFilter, current_task
from paota.core.errors import (
    BrokerError,
    ConfigError,
    DecodeError,
    PaotaError,
    PublishError,
    RegistrationError,
    ReplyLostError,
    ResultTimeoutError,
    SendManyError,
    StoreError,
    TaskCancelledError,
    TaskError,
    TaskFailedError,
    TaskTimeoutError,
    TopologyError,
)
from paota.core.message import Arg, Signature
from paota.core.middleware import Middleware, PublishContext
from paota.core.outcome import (
    Cancelled,
    Defer,
    Drop,
    Duplicate,
    Outcome,
    Park,
    Retry,
    Return,
    Succeeded,
)
from paota.core.protocols import (
    Broker,
    Delivery,
    Message,
    OutgoingMessage,
    ParkInfo,
    ParkQueue,
    ParkReason,
    Store,
)
from paota.core.state import ErrorInfo, TaskState, TaskStatus
from paota.core.tasks import (
    ArgumentError,
    AsyncTask,
    BindError,
    SyncTask,
    Task,
    TaskHandle,
    TaskOptions,
    TaskSender,
)
from paota.middleware.stats import PoolStats
from paota.pool import WorkerPool

if _typing.TYPE_CHECKING:
    from paota.workflows import (
        Chain,
        Group,
        TaskSignature,
        WorkflowFailure,
        WorkflowHandle,
        chain,
        chord,
        group,
    )


__all__ = [
    "AMQPConfig",
    "Arg",
    "ArgumentError",
    "AsyncTask",
    "BindError",
    "Broker",
    "BrokerError",
    "Cancelled",
    "Chain",
    "Client",
    "Clock",
    "Config",
    "ConfigError",
    "DecodeError",
    "Defer",
    "Delivery",
    "Drop",
    "Duplicate",
    "ErrorInfo",
    "Group",
    "ManualClock",
    "Message",
    "Middleware",
    "MongoConfig",
    "NotInTaskError",
    "OutgoingMessage",
    "Outcome",
    "PaotaError",
    "Park",
    "ParkInfo",
    "ParkQueue",
    "ParkReason",
    "PoolStats",
    "PublishContext",
    "PublishError",
    "RegistrationError",
    "ResultTimeoutError",
    "Retry",
    "Return",
    "SendManyError",
    "Signature",
    "Store",
    "StoreError",
    "Succeeded",
    "SyncTask",
    "SystemClock",
    "Task",
    "TaskCancelledError",
    "TaskContext",
    "TaskError",
    "TaskFailedError",
    "ReplyLostError",
    "TaskHandle",
    "TaskLogFilter",
    "TaskOptions",
    "TaskSender",
    "TaskSignature",
    "TaskState",
    "TaskStatus",
    "TaskTimeoutError",
    "TopologyError",
    "WorkerPool",
    "WorkflowFailure",
    "WorkflowHandle",
    "__version__",
    "chain",
    "chord",
    "current_task",
    "group",
    "redact_url",
]

#: Names imported from :mod:`paota.workflows` on first use: a worker that runs no workflow does
#: not hold the code of their API and engine.
_WORKFLOWS = frozenset(
    {
        "Chain",
        "Group",
        "TaskSignature",
        "WorkflowFailure",
        "WorkflowHandle",
        "chain",
        "chord",
        "group",
    }
)


def __getattr__(name: str) -> _typing.Any:
    if name in _WORKFLOWS:
        from paota import workflows

        value = getattr(workflows, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_WORKFLOWS})
