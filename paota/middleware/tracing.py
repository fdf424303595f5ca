"""OpenTelemetry tracing, as a middleware: :class:`TracingMiddleware`.

Needs ``opentelemetry-api`` (``pip install 'paota[tracing]'``; an SDK and an exporter of your
choice make the spans go somewhere); ``import paota`` never imports it, only importing this
module does.

- **A producer span per send** (``send {task}``, kind PRODUCER), whose context is injected into
  the message headers with the configured propagator (W3C ``traceparent`` / ``tracestate`` by
  default). A send inside a running task (or from a middleware hook of one, as a workflow's next
  step) is a child of that task's span.
- **A consumer span per run** (``process {task}``, kind CONSUMER), a child of the context in the
  message's headers, current while the task runs (spans the task makes are its children, in
  threads too) and ERROR when the run raised. Retries, deferrals and returns publish the message
  with the headers it came with, so every attempt of a task is a child of the one send: one trace.
- **A short consumer span per delivery that does not run** (deferred to its ETA, throttled,
  returned, dropped, parked before running, cancelled, a duplicate), with the outcome, so a trace
  shows why a task waited or never ran.
- A message with no trace context (from a Go producer, or a producer without tracing) runs
  normally; its spans start a new trace.

Attributes: ``messaging.system`` (``paota``), ``messaging.operation.type`` (``send`` /
``process``), ``messaging.destination.name`` (the queue), ``messaging.message.id`` (the task id),
``paota.task.name``, ``paota.task.attempt`` (``retries_done``), ``paota.worker``,
``paota.outcome`` and, for a park, ``paota.park.reason``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from paota.core.extras import missing_extra

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.propagators.textmap import Getter, TextMapPropagator
    from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider
except ModuleNotFoundError as exc:
    raise missing_extra(exc, "OpenTelemetry tracing (paota.middleware.tracing)") from None

from paota._version import __version__
from paota.core.context import NotInTaskError, TaskContext, current_task
from paota.core.middleware import Middleware, PublishContext
from paota.core.outcome import Outcome, Park
from paota.middleware._outcomes import outcome_label

__all__ = ["TracingMiddleware"]

_SPAN_KEY = "paota.tracing.span"


class _HeaderGetter(Getter[Mapping[str, Any]]):
    """Reads trace headers as AMQP hands them over: text, or UTF-8 bytes."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if isinstance(value, bytes | bytearray):
            value = bytes(value).decode("utf-8", "replace")
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return [str(key) for key in carrier]


_GETTER = _HeaderGetter()


class TracingMiddleware(Middleware):
    """Traces sends and runs (see the module docs).

    ``tracer_provider`` defaults to the global one (``opentelemetry.trace.set_tracer_provider``);
    ``propagator`` to the global text-map propagator (W3C trace context and baggage unless
    ``OTEL_PROPAGATORS`` says otherwise). Put it on the producers' clients and on the workers'
    pools alike.
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        self._tracer = trace.get_tracer("paota", __version__, tracer_provider=tracer_provider)
        self._propagator = propagator

    def _textmap(self) -> TextMapPropagator:
        # Looked up per call: an application may set the global propagator after building us.
        return self._propagator if self._propagator is not None else propagate.get_global_textmap()

    def _extract(self, headers: Mapping[str, Any]) -> otel_context.Context:
        return self._textmap().extract(headers, getter=_GETTER)

    # --- producer --------------------------------------------------------------------------------

    async def publish(
        self, message: PublishContext, call_next: Callable[[], Awaitable[None]]
    ) -> None:
        """Open the producer span and put its context in the headers."""
        sig = message.signature
        attributes = {
            "messaging.system": "paota",
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.destination.name": message.queue,
            "messaging.message.id": sig.uuid,
            "paota.task.name": sig.name,
        }
        with self._tracer.start_as_current_span(
            f"send {sig.name}",
            context=self._publish_parent(),
            kind=SpanKind.PRODUCER,
            attributes=attributes,
        ):
            self._textmap().inject(message.headers)
            await call_next()

    def _publish_parent(self) -> otel_context.Context | None:
        """The current context when a span is active; else, inside a task's delivery (its
        ``after_outcome`` hooks run after its span ended), that task's span or trace."""
        if trace.get_current_span().get_span_context().is_valid:
            return None
        try:
            task = current_task()
        except NotInTaskError:
            return None
        span = task.data.get(_SPAN_KEY)
        if span is not None:
            return trace.set_span_in_context(span)
        return self._extract(task.headers)

    # --- consumer --------------------------------------------------------------------------------

    def _attributes(self, task: TaskContext) -> dict[str, Any]:
        return {
            "messaging.system": "paota",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": task.queue,
            "messaging.message.id": task.id,
            "paota.task.name": task.name,
            "paota.task.attempt": task.attempt,
            "paota.worker": task.worker,
        }

    async def execute(self, task: TaskContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        """Run the task inside its consumer span, a child of the producer's context."""
        span = self._tracer.start_span(
            f"process {task.name}",
            context=self._extract(task.headers),
            kind=SpanKind.CONSUMER,
            attributes=self._attributes(task),
        )
        task.data[_SPAN_KEY] = span
        try:
            with trace.use_span(span, record_exception=True, set_status_on_exception=True):
                return await call_next()
        except asyncio.CancelledError:
            # Not an Exception, so use_span leaves it alone: the run was interrupted (the pool
            # is stopping and returns the message, or the task was cancelled).
            span.set_status(Status(StatusCode.ERROR, "cancelled"))
            raise
        finally:
            span.end()

    async def after_outcome(self, task: TaskContext, outcome: Outcome) -> None:
        """Record a delivery that did not run as a span of its own, with its outcome."""
        if _SPAN_KEY in task.data:
            return
        attributes = self._attributes(task)
        attributes["paota.outcome"] = outcome_label(outcome)
        if isinstance(outcome, Park):
            attributes["paota.park.reason"] = outcome.reason.value
        span = self._tracer.start_span(
            f"process {task.name or '(undecodable)'}",
            context=self._extract(task.headers),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        )
        if isinstance(outcome, Park):
            span.set_status(
                Status(StatusCode.ERROR, f"{outcome.error.type}: {outcome.error.message}")
            )
        span.end()
