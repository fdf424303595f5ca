"""The MongoDB task-state store (needs ``pymongo``: ``pip install 'paota[mongo]'``).

:class:`MongoStore` lives in :mod:`paota.stores.mongo.store` and is imported on first use, so
``import paota`` (which reads :class:`~paota.stores.mongo.settings.MongoConfig`) never imports
pymongo.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from paota.stores.mongo.settings import MongoConfig

if TYPE_CHECKING:
    from paota.stores.mongo.store import MongoStore

__all__ = ["MongoConfig", "MongoStore"]


def __getattr__(name: str) -> Any:
    if name == "MongoStore":
        from paota.stores.mongo.store import MongoStore

        return MongoStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
