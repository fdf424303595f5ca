"""The one mapping of aiormq's errors to paota's.

:func:`classify` names what went wrong (a :class:`Failure`); :func:`translate` turns an aiormq
error into the paota error for it, message included, chained with ``from``; :func:`broker_errors`
is the context manager every broker operation runs in, so no aiormq error escapes the adapter.
The publisher uses :func:`classify` to tell a failure worth retrying on another connection
(:attr:`Failure.GONE`) from one to report.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Iterator

from pamqp import commands as spec

from paota.brokers.amqp.driver import aiormq
from paota.core.errors import BrokerError, PublishError, TopologyError

__all__ = ["ChannelGoneError", "Failure", "broker_errors", "classify", "describe", "translate"]


class ChannelGoneError(ConnectionError):
    """The channel or connection an operation ran on closed under it."""


class Failure(enum.Enum):
    """What an aiormq error means for paota."""

    GONE = "the connection or channel went away (retry on another one)"
    TIMEOUT = "no answer in time"
    UNROUTABLE = "returned as unroutable"
    NACKED = "negatively confirmed"
    MISSING = "a queue or exchange does not exist"
    REFUSED = "refused by RabbitMQ (precondition, access)"
    LOGIN = "the login was refused"


def describe(exc: BaseException | None) -> str:
    """A short, password-free description of ``exc`` for messages and logs."""
    if exc is None:
        return "closed"
    text = " ".join(str(arg) for arg in exc.args if arg is not None) if exc.args else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def classify(exc: BaseException) -> Failure | None:
    """The :class:`Failure` ``exc`` stands for, or None when it is not a broker error."""
    if isinstance(exc, aiormq.PublishError):
        return Failure.UNROUTABLE
    if isinstance(exc, aiormq.DeliveryError):
        return Failure.NACKED
    if isinstance(exc, aiormq.ChannelNotFoundEntity):
        return Failure.MISSING
    if isinstance(exc, aiormq.AuthenticationError | aiormq.ProbableAuthenticationError):
        return Failure.LOGIN
    if isinstance(exc, aiormq.ChannelClosed):
        return Failure.REFUSED
    if isinstance(exc, asyncio.TimeoutError):
        return Failure.TIMEOUT
    if isinstance(
        exc, aiormq.AMQPError | ChannelGoneError | ConnectionError | aiormq.ChannelInvalidStateError
    ):
        return Failure.GONE
    if isinstance(exc, RuntimeError) and "closed" in str(exc).lower():
        return Failure.GONE
    return None


def _reply(exc: BaseException) -> str:
    if isinstance(exc, aiormq.PublishError) and exc.message is not None:
        returned = exc.message.delivery
        if isinstance(returned, spec.Basic.Return):
            return f"{returned.reply_code} {returned.reply_text}"
    return describe(exc)


def translate(exc: BaseException, what: str, *, publish: bool = False) -> BrokerError:
    """The paota error for ``exc`` raised while doing ``what`` (PublishError when ``publish``)."""
    failure = classify(exc)
    cls: type[BrokerError] = PublishError if publish else BrokerError
    if failure is Failure.REFUSED and "PRECONDITION_FAILED" in describe(exc):
        cls = TopologyError
    if failure is Failure.UNROUTABLE:
        text = f"{what} was returned by RabbitMQ as unroutable ({_reply(exc)})"
    elif failure is Failure.NACKED:
        text = f"{what} was rejected (nack) by RabbitMQ"
    elif failure is Failure.TIMEOUT:
        text = f"{what}: no answer from RabbitMQ in time"
    elif failure is Failure.REFUSED:
        text = f"{what} refused by RabbitMQ: {describe(exc)}"
    else:
        text = f"{what}: {describe(exc)}"
    error = cls(text)
    error.__cause__ = exc
    return error


@contextlib.contextmanager
def broker_errors(what: str, *, publish: bool = False) -> Iterator[None]:
    """Run a block so that aiormq, connection and timeout errors leave it as paota errors."""
    try:
        yield
    except BrokerError:
        raise
    except (TimeoutError, aiormq.AMQPError, ConnectionError, RuntimeError) as exc:
        if classify(exc) is None:
            raise
        raise translate(exc, what, publish=publish) from exc
