"""The management API and dashboard (``paota[web]``): :func:`create_app` builds an ASGI app of a
client's broker and store; ``paota web --port N`` serves it with uvicorn.

It reads the store and the broker on every request and keeps no task in memory, so its history is
the store's (it survives a restart of the web process) and its memory does not grow with the
number of tasks. See :mod:`paota.web.app` for authentication and errors, and
:mod:`paota.web.openapi` for every endpoint (``/api/openapi.json``).

This package imports starlette; ``import paota`` does not import it.
"""

from __future__ import annotations

from paota.web.app import MIN_TOKEN_LENGTH, TOKEN_ENV, create_app

__all__ = ["MIN_TOKEN_LENGTH", "TOKEN_ENV", "create_app"]
