"""The pool the worker processes of ``test_observe_amqp_mongo`` load (``paota worker
tests.integration.e2e_helpers.observe_app:pool``): configured by the ``PAOTA_*`` variables the test
sets, traced with an OpenTelemetry SDK whose spans go to ``$OBSERVE_SPANS_DIR/spans-<pid>.jsonl``
(one JSON object a line), so the test can link them to the spans of its own producer."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from paota import Config, WorkerPool
from paota.middleware.tracing import TracingMiddleware


class FileExporter(SpanExporter):
    """Appends each finished span to a file of this process, as one line of JSON."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.path.open("a") as out:
            for span in spans:
                assert span.context is not None
                out.write(
                    json.dumps(
                        {
                            "name": span.name,
                            "trace_id": f"{span.context.trace_id:032x}",
                            "span_id": f"{span.context.span_id:016x}",
                            "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
                            "status": span.status.status_code.name,
                            "attributes": dict(span.attributes or {}),
                        }
                    )
                    + "\n"
                )
        return SpanExportResult.SUCCESS


provider = TracerProvider()
provider.add_span_processor(
    SimpleSpanProcessor(
        FileExporter(Path(os.environ["OBSERVE_SPANS_DIR"]) / f"spans-{os.getpid()}.jsonl")
    )
)

pool = WorkerPool(
    Config.from_env(),
    concurrency=4,
    name=os.environ["OBSERVE_NAME"],
    middleware=[TracingMiddleware(tracer_provider=provider)],
)


@pool.task(name="obs.ok")
async def ok(n: int) -> int:
    return n


@pool.task(name="obs.fail")
async def fail() -> None:
    raise ValueError("fails every time")
