"""The guard in front of the management API: the bearer token, or (an open app) the loopback
checks, on every ``/api/`` request before any handler runs; the security headers on every
response; and the JSON response the refusals and the app's answers share.

See :mod:`paota.web.app` for what is checked and answered.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from typing import Any

# paota.web.app checks starlette is installed (paota[web]) before it imports this module.
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from paota.core.errors import ConfigError
from paota.web.params import WebError
from paota.web.views import dumps

__all__ = [
    "JSON",
    "MIN_TOKEN_LENGTH",
    "SECURITY_HEADERS",
    "TOKEN_ENV",
    "Guard",
    "SecurityHeaders",
    "error_response",
    "is_loopback",
    "resolve_token",
]

TOKEN_ENV = "PAOTA_WEB_TOKEN"
"""The environment variable the bearer token is read from."""
MIN_TOKEN_LENGTH = 16
"""The shortest token accepted: a guessable token is no protection."""


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` is an address (or ``localhost``) of the loopback interface."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class JSON(Response):
    """A JSON response that cannot fail on odd values (see :func:`paota.web.views.dumps`)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)


def error_response(exc: WebError) -> Response:
    """``exc`` as the JSON error answer (a 401 with the ``WWW-Authenticate`` challenge)."""
    headers = {"WWW-Authenticate": 'Bearer realm="paota"'} if exc.status == 401 else None
    return JSON(exc.body(), status_code=exc.status, headers=headers)


class Guard:
    """ASGI middleware: the bearer token (or, open, the loopback address) on ``/api/``, checked
    before any handler runs, and every error as JSON."""

    def __init__(self, app: ASGIApp, *, token_digest: bytes | None) -> None:
        self.app = app
        self.token_digest = token_digest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if path.startswith("/api/") and path != "/api/openapi.json":
            refusal = self._refusal(scope)
            if refusal is not None:
                await error_response(refusal)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> WebError | None:
        if self.token_digest is None:
            client = scope.get("client")
            if client is None or not is_loopback(client[0]):
                return WebError(
                    403, "this paota web app runs open (no token) and answers loopback clients only"
                )
            return _open_mode_refusal(scope)
        given = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                given = value
                break
        scheme, _, credentials = given.partition(b" ")
        if scheme.lower() != b"bearer" or not credentials.strip():
            return WebError(401, "authorization: send the token as 'Authorization: Bearer <token>'")
        # Digests of equal length, compared in constant time.
        digest = hashlib.sha256(credentials.strip()).digest()
        if not hmac.compare_digest(digest, self.token_digest):
            return WebError(401, "authorization: the token is not valid")
        return None


#: Methods that change something.
_CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _open_mode_refusal(scope: Scope) -> WebError | None:
    """Without a token, loopback is the only credential, and a web page the user visits is on
    loopback too: refuse what a page of another site could make the browser send.

    - ``Host`` must name the loopback interface (``localhost``, ``127.0.0.1``, ``[::1]``): a
      DNS-rebinding page reaches 127.0.0.1 under its own host name;
    - an ``Origin``, when the browser sends one, must be a loopback origin;
    - a request that changes something must be ``Content-Type: application/json``, which a
      cross-site page cannot send without a CORS preflight (that this app never answers).
    """
    headers = {name: value for name, value in scope.get("headers", ())}
    host = headers.get(b"host", b"").decode("latin-1")
    if not _loopback_authority(host):
        return WebError(
            403,
            f"Host {host!r} is not allowed: without a token this app answers requests addressed "
            "to localhost, 127.0.0.1 or [::1] only (a page of another site may be trying to "
            "reach it through DNS rebinding); set PAOTA_WEB_TOKEN to serve other names",
        )
    origin = headers.get(b"origin")
    if origin is not None:
        text = origin.decode("latin-1")
        scheme, _, authority = text.partition("://")
        if scheme not in ("http", "https") or not _loopback_authority(authority):
            return WebError(
                403, f"Origin {text!r} is not allowed: without a token, only loopback pages"
            )
    if scope.get("method", "GET") in _CHANGES:
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if content_type != b"application/json":
            return WebError(
                415,
                "a request that changes something must be 'Content-Type: application/json' "
                f"(got {content_type.decode('latin-1') or 'none'!r})",
            )
    return None


def _loopback_authority(authority: str) -> bool:
    """Whether ``host[:port]`` names the loopback interface."""
    if authority.startswith("["):
        host = authority[1 : authority.find("]")] if "]" in authority else ""
    else:
        host = authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority
    host = host.lower().rstrip(".")
    return host == "localhost" or (host != "" and is_loopback(host))


#: Sent with every response: the dashboard loads only its own files, runs no inline script,
#: cannot be framed, and leaks no address.
SECURITY_HEADERS = (
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        b"frame-ancestors 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
)


class SecurityHeaders:
    """ASGI middleware: :data:`SECURITY_HEADERS` on every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", ())}
                extra = [(n, v) for n, v in SECURITY_HEADERS if n not in present]
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def resolve_token(token: str | None, open: bool) -> bytes | None:
    """The digest of the bearer token (``token``, else :data:`TOKEN_ENV`), or None for an open
    app; :class:`~paota.ConfigError` for a missing or short token, or for both a token and
    ``open``."""
    if open:
        if token:
            raise ConfigError("create_app: give a token or open=True, not both")
        return None
    token = token if token is not None else os.environ.get(TOKEN_ENV, "")
    if not token:
        raise ConfigError(
            f"the paota web app needs a bearer token: set {TOKEN_ENV} (or pass token=...), or run "
            "it open on the loopback interface only (paota web --insecure-open, create_app(open="
            "True))"
        )
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"{TOKEN_ENV} is {len(token)} characters long: use at least {MIN_TOKEN_LENGTH} random "
            "characters (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return hashlib.sha256(token.encode()).digest()
