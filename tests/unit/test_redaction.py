"""No secret in a log line (issue 16): URL passwords with reserved characters, AMQP URLs that do
not parse, webhook URLs with a credential in the path or query, and httpx's request log."""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest

from paota import AMQPConfig, Config, ConfigError
from paota.core.settings import redact_url
from paota.middleware.webhooks import (
    EVENT_KIND,
    WebhookEndpoint,
    quiet_httpx_request_log,
    redact_webhook_url,
)
from tests.unit.test_webhooks import Backends, _send, hooks
from tests.waiting import until
from tests.webhook_sink import Sink

SECRET_WORD = "s3cr3t-t0ken"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://u:pw@h:5672/v", "amqp://u:***@h:5672/v"),
        ("amqp://u:pa/ss@h:5672/v", "amqp://u:***@h:5672/v"),
        ("amqp://u:p@ss@h/", "amqp://u:***@h/"),
        ("mongodb://u:pw@h1,h2/db?replicaSet=r", "mongodb://u:***@h1,h2/db?replicaSet=r"),
        ("amqp://h:5672/v", "amqp://h:5672/v"),
    ],
)
def test_redact_url_hides_any_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        f"amqp://user:{SECRET_WORD}@host:notaport/",
        f"amqp://user:{SECRET_WORD}/x@host:5672/",
        f"amqp://user:{SECRET_WORD}[@host/",
    ],
)
def test_an_amqp_url_that_does_not_parse_is_a_config_error_without_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Config(broker="amqp", amqp=AMQPConfig(url=url))
    text = str(refused.value)
    assert SECRET_WORD not in text and "amqp.url" in text and "percent-encoded" in text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            f"https://hooks.example.com/services/T0/B0/{SECRET_WORD}",
            "https://hooks.example.com/***",
        ),
        (f"http://u:{SECRET_WORD}@h:8080/x?token=1", "http://***@h:8080/***"),
        (f"https://h/in?token={SECRET_WORD}", "https://h/***"),
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
    ],
)
def test_webhook_urls_show_scheme_host_and_port_only(url: str, shown: str) -> None:
    assert redact_webhook_url(url) == shown
    endpoint = WebhookEndpoint(url, "key")
    assert SECRET_WORD not in repr(endpoint)
    with pytest.raises(ConfigError) as refused:
        WebhookEndpoint(url, "key", timeout_s=0)
    assert SECRET_WORD not in str(refused.value)


def test_the_httpx_request_log_is_quieted_unless_the_application_set_it() -> None:
    http_logger = logging.getLogger("httpx")
    before = http_logger.level
    try:
        http_logger.setLevel(logging.NOTSET)
        quiet_httpx_request_log()
        assert http_logger.level == logging.WARNING
        http_logger.setLevel(logging.INFO)  # the application's own choice stays
        quiet_httpx_request_log()
        assert http_logger.level == logging.INFO
    finally:
        http_logger.setLevel(before)


@pytest.mark.parametrize("answer", ["refused", "500"])
async def test_a_failing_webhook_logs_no_part_of_its_credential(
    caplog: pytest.LogCaptureFixture, answer: str
) -> None:
    # given an endpoint whose URL holds a token in the user info, the path and the query, on a
    # closed port or on a server that answers 500 (httpx logs each answered request at INFO)
    sink = None
    if answer == "refused":
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = f"http://127.0.0.1:{probe.getsockname()[1]}"
    else:
        sink = await Sink(statuses=[500]).start()
        base = sink.url.rstrip("/")
    scheme, _, rest = base.partition("://")
    url = f"{scheme}://user:{SECRET_WORD}@{rest}/hook/{SECRET_WORD}?t={SECRET_WORD}"
    caplog.set_level(logging.DEBUG)
    before = logging.getLogger("httpx").level
    logging.getLogger("httpx").setLevel(logging.NOTSET)
    backends = Backends()
    try:
        pool = await backends.start(backends.pool(hooks(url, events={"succeeded"})))
        await _send(pool, "ok", 1)

        def failed_attempt() -> list[Any]:
            docs = [doc for (kind, _), (doc, _, _) in backends.store._docs.items()
                    if kind.startswith(EVENT_KIND) and doc.get("last_error")]  # fmt: skip
            return docs

        # when the POST fails and is retried
        [doc] = await until(failed_attempt, what="a failed POST recorded")
        if sink is not None:
            assert sink.received  # it did reach the server
        # then neither a log line at any level nor the outbox holds any part of the credential
        assert SECRET_WORD not in repr(doc)
        lines = [r.getMessage() for r in caplog.records]
        assert lines and not [line for line in lines if SECRET_WORD in line]
    finally:
        await backends.close()
        if sink is not None:
            await sink.stop()
        logging.getLogger("httpx").setLevel(before)
