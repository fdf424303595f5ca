"""The MongoDB task-state store, on pymongo's native asyncio client (``AsyncMongoClient``).

This module imports pymongo (the ``paota[mongo]`` extra); ``import paota`` does not import this
module, :func:`paota.core.factory.make_store` does when the ``mongodb`` store is chosen, and turns
a missing pymongo into a :class:`~paota.core.errors.ConfigError` that says what to install.

One document per task, ``_id`` = task id::

    {_id, name, args: [{Name, Type, Value}], status: "STARTED", attempts, rank, result,
     error: {type, message, traceback} | null, worker,
     created_at, started_at, finished_at, updated_at}      # BSON dates (milliseconds, UTC)

``rank`` is ``TaskStatus.rank``, stored so that the rule of
:func:`~paota.core.state.may_replace` can be one conditional upsert (see :meth:`MongoStore.record`).
"""

from __future__ import annotations

import builtins
import logging
from datetime import UTC, datetime
from typing import Any

import bson
import pymongo
from bson.errors import InvalidDocument, InvalidStringData
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import (
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
    WTimeoutError,
)

from paota.core.config import Config, redact_url
from paota.core.errors import StoreError
from paota.core.protocols import ListCursor
from paota.core.state import ErrorInfo, TaskState, TaskStatus
from paota.stores.mongo.coordination import MongoCoordination, create_coordination_indexes

__all__ = ["MongoStore"]

logger = logging.getLogger(__name__)

Document = dict[str, Any]

#: Stored tracebacks keep their last this many characters.
TRACEBACK_LIMIT = 4000

#: Time allowed for creating indexes in ``connect()``: building one on a large existing collection
#: takes longer than an ordinary operation.
INDEX_TIMEOUT_S = 300.0

_FINAL_NAMES = [s.value for s in TaskStatus if s.is_final]

#: Server error codes that refuse the write itself, whatever the server's health: BadValue,
#: FailedToParse, TypeMismatch, DollarPrefixedFieldName, BSONObjectTooLarge, and a document that
#: an update made too large (17419, 17420).
_PERMANENT_CODES = frozenset({2, 9, 14, 52, 10334, 17419, 17420})


def is_permanent(exc: BaseException) -> bool:
    """Whether MongoDB (or the driver, before sending) refused this write for good: a document it
    cannot encode or that is over the size limit, an integer over 8 bytes, a value the server
    rejects. Connection failures, timeouts and elections are not permanent."""
    if isinstance(exc, InvalidDocument | OverflowError | InvalidStringData):
        return True  # DocumentTooLarge is an InvalidDocument
    if isinstance(exc, ConnectionFailure | ExecutionTimeout | WTimeoutError):
        return False
    return isinstance(exc, OperationFailure) and exc.code in _PERMANENT_CODES


_TTL_INDEX = "finished_at_1"
_EXPIRY_INDEX = "expires_at_1"


class MongoStore(MongoCoordination):
    """A :class:`~paota.core.protocols.Store` in one MongoDB collection (``config.mongo``).

    ``connect()`` creates the client (pool of ``max_pool_size``), pings the server and creates the
    indexes ``(status, updated_at)`` and ``(name, created_at)``, plus, when ``result_ttl_s > 0``, a
    TTL index on ``finished_at`` (set on final records only, so unfinished tasks never expire).
    Per-task result lifetimes (``@pool.task(result_ttl_s=...)``) set ``expires_at`` on final
    records, with a TTL index of its own (``expireAfterSeconds=0``): a record goes when the first
    of the two expires. MongoDB's TTL monitor deletes about once a minute; until then
    :meth:`get` and :meth:`list` already leave an expired record out.
    ``timeout_s`` bounds server selection, connecting, and each operation (pymongo's
    ``timeoutMS``): with the server down or hung, a call raises :class:`StoreError` after about
    ``timeout_s``, and once the server is back the client reconnects by itself.

    Stored values are what BSON holds: datetimes lose their microseconds below the millisecond and
    come back as aware UTC; tuples come back as lists. A ``result`` (or an argument ``Value``) that
    BSON cannot encode (a set, a custom object, an int beyond 64 bits, a dict with non-string keys)
    is stored as its ``repr()`` string, with a WARNING naming the task: the task's outcome is still
    recorded, and the reader sees a string it can show, never a silently dropped value. A traceback
    is kept to its last 4,000 characters.

    Every pymongo error is raised as :class:`StoreError` (chained), naming the task and the server
    (password hidden).
    """

    def __init__(self, config: Config) -> None:
        self._config = config.mongo
        self._where = redact_url(config.mongo.uri)
        self._client: AsyncMongoClient[Document] | None = None
        self._collection: AsyncCollection[Document] | None = None
        self._coord_collection: AsyncCollection[Document] | None = None
        self._closed = False

    def __repr__(self) -> str:
        cfg = self._config
        return f"MongoStore({self._where!r}, {cfg.database}.{cfg.collection})"

    async def connect(self) -> None:
        """Connect, ping and create the indexes. Idempotent.

        Raises :class:`StoreError` when the server is unreachable within ``timeout_s``, the
        indexes cannot be made, or the store was closed (closing is final: create a new store).
        """
        if self._closed:
            raise StoreError(f"this MongoStore ({self._where}) is closed; create a new one")
        if self._collection is not None:
            return
        cfg = self._config
        timeout_ms = max(1, round(cfg.timeout_s * 1000))
        try:
            client: AsyncMongoClient[Document] = AsyncMongoClient(
                cfg.uri,
                maxPoolSize=cfg.max_pool_size,
                serverSelectionTimeoutMS=timeout_ms,
                connectTimeoutMS=timeout_ms,
                timeoutMS=timeout_ms,
                tz_aware=True,
                tzinfo=UTC,
                appname="paota",
            )
        except (PyMongoError, ValueError, TypeError) as exc:
            raise StoreError(
                f"MongoDB URI {self._where} is not usable: {self._scrub(exc)}"
            ) from exc
        try:
            await client.admin.command("ping")
        except PyMongoError as exc:
            await client.close()
            raise StoreError(
                f"MongoDB at {self._where} is unreachable: {self._scrub(exc)}"
            ) from exc
        collection = client[cfg.database][cfg.collection]
        coord = client[cfg.database][f"{cfg.collection}_coord"]
        try:
            with pymongo.timeout(max(INDEX_TIMEOUT_S, cfg.timeout_s)):
                await self._create_indexes(collection)
                await create_coordination_indexes(coord)
        except BaseException as exc:
            await client.close()
            if isinstance(exc, PyMongoError):
                raise StoreError(
                    f"cannot create the indexes of {cfg.database}.{cfg.collection} on MongoDB at "
                    f"{self._where}: {self._scrub(exc)}"
                ) from exc
            raise
        if self._closed:  # closed while connecting
            await client.close()
            raise StoreError(f"this MongoStore ({self._where}) was closed while connecting")
        self._client, self._collection, self._coord_collection = client, collection, coord
        logger.debug(
            "connected to MongoDB at %s, collection %s.%s",
            self._where,
            cfg.database,
            cfg.collection,
        )

    async def _create_indexes(self, collection: AsyncCollection[Document]) -> None:
        cfg = self._config
        await collection.create_index(
            [("status", pymongo.ASCENDING), ("updated_at", pymongo.ASCENDING)]
        )
        await collection.create_index(
            [("name", pymongo.ASCENDING), ("created_at", pymongo.ASCENDING)]
        )
        # Listing newest first (the management API pages through these), all or by status or
        # queue, without sorting in memory however many records there are.
        newest: builtins.list[tuple[str, Any]] = [
            ("created_at", pymongo.DESCENDING),
            ("_id", pymongo.DESCENDING),
        ]
        await collection.create_index(newest)
        await collection.create_index([("status", pymongo.ASCENDING), *newest])
        await collection.create_index([("queue", pymongo.ASCENDING), *newest])
        # Documents without an expires_at (None) never expire by this index.
        await collection.create_index(
            [("expires_at", pymongo.ASCENDING)], name=_EXPIRY_INDEX, expireAfterSeconds=0
        )
        existing = (await collection.index_information()).get(_TTL_INDEX)
        current_ttl = None if existing is None else existing.get("expireAfterSeconds")
        wanted_ttl = cfg.result_ttl_s or None
        if current_ttl == wanted_ttl:
            return
        if wanted_ttl is None:
            # Dropping an index is not this store's call to make silently: say what happens.
            logger.warning(
                "result_ttl_s is 0 but %s.%s has a TTL index %s (expireAfterSeconds=%s): finished "
                "task records still expire; drop that index to keep them",
                cfg.database,
                cfg.collection,
                _TTL_INDEX,
                current_ttl,
            )
        elif existing is None:
            await collection.create_index(
                [("finished_at", pymongo.ASCENDING)], expireAfterSeconds=wanted_ttl
            )
        else:
            # createIndexes refuses to change the options of an existing index; collMod can.
            try:
                await collection.database.command(
                    {
                        "collMod": cfg.collection,
                        "index": {"name": _TTL_INDEX, "expireAfterSeconds": wanted_ttl},
                    }
                )
            except OperationFailure as exc:
                # Some MongoDB-protocol servers have no collMod: replace the index instead.
                logger.info("collMod failed (%s); recreating the TTL index %s", exc, _TTL_INDEX)
                await collection.drop_index(_TTL_INDEX)
                await collection.create_index(
                    [("finished_at", pymongo.ASCENDING)], expireAfterSeconds=wanted_ttl
                )
            logger.info(
                "TTL of finished task records in %s.%s changed from %s s to %s s",
                cfg.database,
                cfg.collection,
                current_ttl,
                wanted_ttl,
            )

    async def close(self) -> None:
        """Close the client. Idempotent and final: a closed store cannot be opened again."""
        self._closed = True
        client, self._client, self._collection = self._client, None, None
        self._coord_collection = None
        if client is not None:
            await client.close()

    async def __aenter__(self) -> MongoStore:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _coord(self) -> AsyncCollection[Document]:
        self._require()
        assert self._coord_collection is not None
        return self._coord_collection

    def _require(self) -> AsyncCollection[Document]:
        if self._collection is None:
            if self._closed:
                raise StoreError(f"this MongoStore ({self._where}) is closed")
            raise StoreError("MongoStore is not connected: call connect() or use 'async with'")
        return self._collection

    def _scrub(self, exc: BaseException) -> str:
        """``str(exc)`` with the URI's password hidden, should the driver ever quote it."""
        text = str(exc)
        password = _password(self._config.uri)
        return text.replace(password, "***") if password else text

    def _failed(self, action: str, exc: BaseException) -> StoreError:
        return StoreError(
            f"{action} failed on MongoDB at {self._where}: {self._scrub(exc)}",
            permanent=is_permanent(exc),
        )

    async def record(self, state: TaskState) -> bool:
        """Write ``state`` if :func:`~paota.core.state.may_replace` allows it; True if it did.

        One conditional upsert: the filter matches the task's document only when it is of an
        earlier run (``replays``), or of the same run, not final, and ``(attempts, rank)`` does not
        exceed the new state's, and ``upsert=True`` creates the
        document when there is none. When a document exists but the filter does not match, the
        upsert's insert fails with a duplicate key error: not applied. The same error also comes
        from losing a race to create the document, so the update is tried once more without
        upsert (the document exists by then), and its match decides.
        """
        collection = self._require()
        attempts, rank, replays = state.attempts, state.status.rank, state.replays
        same_run: Document = {"replays": replays, "status": {"$nin": _FINAL_NAMES}}
        query: Document = {
            "_id": state.task_id,
            "$or": [
                {"replays": {"$lt": replays}},
                {**same_run, "attempts": {"$lt": attempts}},
                {**same_run, "attempts": attempts, "rank": {"$lte": rank}},
            ],
        }
        fields = _to_fields(state)
        action = f"recording task {state.task_id} as {state.status.value}"
        try:
            try:
                await collection.update_one(query, {"$set": fields}, upsert=True)
                return True
            except (InvalidDocument, OverflowError):
                fields = _bson_safe_fields(state, fields)
                await collection.update_one(query, {"$set": fields}, upsert=True)
                return True
        except DuplicateKeyError:
            pass
        except (PyMongoError, InvalidDocument, InvalidStringData, OverflowError) as exc:
            raise self._failed(action, exc) from exc
        try:
            result = await collection.update_one(query, {"$set": fields})
        except PyMongoError as exc:
            raise self._failed(action, exc) from exc
        if result.matched_count:
            return True
        logger.debug(
            "task %s: %s of attempt %d not recorded: the stored record is final or further along",
            state.task_id,
            state.status.value,
            attempts,
        )
        return False

    async def get(self, task_id: str) -> TaskState | None:
        """The record of ``task_id``, or None."""
        collection = self._require()
        try:
            doc = await collection.find_one({"_id": task_id})
        except PyMongoError as exc:
            raise self._failed(f"reading task {task_id}", exc) from exc
        if doc is None:
            return None
        expires = doc.get("expires_at")
        if expires is not None and expires <= datetime.now(UTC):
            return None  # expired; the TTL monitor deletes it soon
        return _from_document(doc)

    async def delete(self, task_id: str) -> bool:
        """Delete the record of ``task_id``; returns whether it existed."""
        collection = self._require()
        try:
            result = await collection.delete_one({"_id": task_id})
        except PyMongoError as exc:
            raise self._failed(f"deleting task {task_id}", exc) from exc
        return result.deleted_count == 1

    async def list(
        self,
        *,
        status: TaskStatus | None = None,
        name: str | None = None,
        limit: int = 100,
        queue: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        cursor: ListCursor | None = None,
    ) -> builtins.list[TaskState]:
        """Records filtered by ``status``, ``name``, ``queue`` and creation time, newest
        ``created_at`` first (ties by task id, descending; records without one last), after
        ``cursor``, at most ``limit`` (see :meth:`paota.core.protocols.Store.list`). One indexed
        query: the server sorts and pages, nothing is read beyond the page."""
        collection = self._require()
        if limit <= 0:  # MongoDB reads limit(0) as "no limit"
            return []
        query: Document = {
            "$or": [{"expires_at": None}, {"expires_at": {"$gt": datetime.now(UTC)}}]
        }
        if status is not None:
            query["status"] = TaskStatus(status).value
        if name is not None:
            query["name"] = name
        if queue is not None:
            query["queue"] = queue
        if created_after is not None or created_before is not None:
            created: Document = {}
            if created_after is not None:
                created["$gte"] = created_after
            if created_before is not None:
                created["$lt"] = created_before
            query["created_at"] = created
        if cursor is not None:
            query["$and"] = [_after(cursor)]
        try:
            found = (
                collection.find(query)
                .sort([("created_at", pymongo.DESCENDING), ("_id", pymongo.DESCENDING)])
                .limit(limit)
            )
            return [_from_document(doc) async for doc in found]
        except PyMongoError as exc:
            raise self._failed("listing tasks", exc) from exc


def _after(cursor: ListCursor) -> Document:
    """The records after ``cursor`` in list order (a null ``created_at`` sorts last: a range
    query on dates never matches it, so those records are asked for by name)."""
    if cursor.created_at is None:
        return {"created_at": None, "_id": {"$lt": cursor.task_id}}
    return {
        "$or": [
            {"created_at": {"$lt": cursor.created_at}},
            {"created_at": cursor.created_at, "_id": {"$lt": cursor.task_id}},
            {"created_at": None},
        ]
    }


def _password(uri: str) -> str:
    """The password in ``uri``'s user info, or ""."""
    start = uri.find("://") + 3
    end = min((i for i in (uri.find(c, start) for c in "/?#") if i >= 0), default=len(uri))
    at = uri.rfind("@", start, end)
    colon = uri.find(":", start, at) if at >= 0 else -1
    return uri[colon + 1 : at] if colon >= 0 else ""


def _to_fields(state: TaskState) -> Document:
    """The document of ``state`` without ``_id`` (the upsert takes it from the filter)."""
    error = state.error
    return {
        "name": state.name,
        "args": state.args,
        "status": state.status.value,
        "attempts": state.attempts,
        "replays": state.replays,
        "rank": state.status.rank,
        "result": state.result,
        "error": None
        if error is None
        else {
            "type": error.type,
            "message": error.message,
            "traceback": error.traceback[-TRACEBACK_LIMIT:],
        },
        "worker": state.worker,
        "created_at": state.created_at,
        "started_at": state.started_at,
        "finished_at": state.finished_at,
        "updated_at": state.updated_at,
        "queue": state.queue,
        "progress": state.progress,
        "progress_message": state.progress_message,
        "expires_at": state.expires_at,
        "parent_id": state.parent_id,
        "workflow_id": state.workflow_id,
    }


def _encodable(value: Any) -> bool:
    try:
        bson.encode({"v": value})
    except (InvalidDocument, OverflowError):
        return False
    return True


def _bson_safe_fields(state: TaskState, fields: Document) -> Document:
    """``fields`` with a result or argument value that BSON cannot encode replaced by its repr."""
    fields = dict(fields)
    if not _encodable(state.result):
        logger.warning(
            "task %s: result of type %s cannot be stored in MongoDB (not BSON-encodable); "
            "storing its repr() instead",
            state.task_id,
            type(state.result).__name__,
        )
        fields["result"] = repr(state.result)
    args = []
    for arg in state.args:
        value = arg.get("Value")
        if not _encodable(value):
            logger.warning(
                "task %s: argument %r of type %s is not BSON-encodable; storing its repr()",
                state.task_id,
                arg.get("Name", ""),
                type(value).__name__,
            )
            arg = {**arg, "Value": repr(value)}
        args.append(arg)
    fields["args"] = args
    return fields


def _from_document(doc: Document) -> TaskState:
    error = doc.get("error")
    return TaskState(
        task_id=doc["_id"],
        name=doc.get("name", ""),
        status=TaskStatus(doc["status"]),
        args=doc.get("args") or [],
        attempts=doc.get("attempts", 0),
        replays=doc.get("replays", 0),
        result=doc.get("result"),
        error=None
        if error is None
        else ErrorInfo(
            type=error.get("type", ""),
            message=error.get("message", ""),
            traceback=error.get("traceback", ""),
        ),
        worker=doc.get("worker", ""),
        created_at=doc.get("created_at"),
        started_at=doc.get("started_at"),
        finished_at=doc.get("finished_at"),
        updated_at=doc.get("updated_at"),
        queue=doc.get("queue") or "",
        progress=doc.get("progress"),
        progress_message=doc.get("progress_message") or "",
        expires_at=doc.get("expires_at"),
        parent_id=doc.get("parent_id") or "",
        workflow_id=doc.get("workflow_id") or "",
    )
