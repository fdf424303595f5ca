"""MongoStore against a MongoDB-protocol server: the store contract, then what only MongoDB has
(indexes, TTL, unreachable servers, outages, BSON limits)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError

from paota.core.config import Config, MongoConfig
from paota.core.errors import StoreError
from paota.core.state import TaskStatus
from paota.stores.mongo import MongoStore
from paota.stores.mongo import store as mongo_store
from tests.contracts.coordination_contract import CoordinationContract
from tests.contracts.store_contract import StoreContract, make_state
from tests.integration.mongo_server import MongoecoServer

pytestmark = pytest.mark.integration


def _config(uri: str, database: str, **mongo: Any) -> Config:
    return Config(store="mongodb", mongo=MongoConfig(uri=uri, database=database, **mongo))


@pytest.fixture
async def database(mongo_uri: str) -> AsyncIterator[str]:
    """A fresh database name; the database is dropped afterwards over a connection of its own."""
    name = f"paota_test_{uuid.uuid4().hex[:12]}"
    yield name
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_uri, serverSelectionTimeoutMS=5000
    )
    try:
        await client.drop_database(name)
    finally:
        await client.close()


class TestMongoStore(StoreContract):
    @pytest.fixture
    async def store(self, mongo_uri: str, database: str) -> AsyncIterator[MongoStore]:
        async with MongoStore(_config(mongo_uri, database)) as store:
            yield store


class TestMongoCoordination(CoordinationContract):
    @pytest.fixture
    async def store(self, mongo_uri: str, database: str) -> AsyncIterator[MongoStore]:
        async with MongoStore(_config(mongo_uri, database)) as store:
            yield store

    @pytest.fixture
    def advance(self) -> Callable[[float], Awaitable[None]]:
        return asyncio.sleep  # the MongoDB store's entries expire on the real clock


def _result_ttl(indexes: MutableMapping[str, Any]) -> list[Any]:
    """The TTL indexes other than the one on ``expires_at`` (per-task lifetimes, always there)."""
    return [
        info
        for info in indexes.values()
        if "expireAfterSeconds" in info and list(info["key"]) != [("expires_at", 1)]
    ]


async def _indexes(uri: str, database: str) -> MutableMapping[str, Any]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        return await client[database]["paota_tasks"].index_information()
    finally:
        await client.close()


async def test_connect_creates_the_indexes_without_ttl_by_default(
    mongo_uri: str, database: str
) -> None:
    async with MongoStore(_config(mongo_uri, database)):
        indexes = await _indexes(mongo_uri, database)
    keys = {name: list(info["key"]) for name, info in indexes.items()}
    assert [("status", 1), ("updated_at", 1)] in keys.values()
    assert [("name", 1), ("created_at", 1)] in keys.values()
    assert not _result_ttl(indexes)
    [expiry] = [info for info in indexes.values() if list(info["key"]) == [("expires_at", 1)]]
    assert expiry["expireAfterSeconds"] == 0  # per-task result lifetimes


async def test_connect_creates_a_ttl_index_on_finished_at(mongo_uri: str, database: str) -> None:
    async with MongoStore(_config(mongo_uri, database, result_ttl_s=3600)) as store:
        await store.connect()  # idempotent
        indexes = await _indexes(mongo_uri, database)
    ttl = _result_ttl(indexes)
    assert len(ttl) == 1
    assert list(ttl[0]["key"]) == [("finished_at", 1)]
    assert ttl[0]["expireAfterSeconds"] == 3600
    # connecting again with the same settings changes nothing
    async with MongoStore(_config(mongo_uri, database, result_ttl_s=3600)):
        assert await _indexes(mongo_uri, database) == indexes


async def test_a_changed_ttl_is_applied_to_the_existing_index(
    mongo_uri: str, database: str
) -> None:
    async with MongoStore(_config(mongo_uri, database, result_ttl_s=3600)):
        pass
    # (collMod on MongoDB; servers without it, like mongoeco, get the index replaced)
    async with MongoStore(_config(mongo_uri, database, result_ttl_s=60)):
        pass
    ttl = _result_ttl(await _indexes(mongo_uri, database))
    assert [info["expireAfterSeconds"] for info in ttl] == [60]


async def test_turning_ttl_off_keeps_the_index_and_warns(
    mongo_uri: str, database: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with MongoStore(_config(mongo_uri, database, result_ttl_s=3600)):
        pass
    with caplog.at_level(logging.WARNING, logger="paota"):
        async with MongoStore(_config(mongo_uri, database)):
            pass
    assert "still expire" in caplog.text


async def test_finished_records_expire_and_unfinished_ones_stay(
    mongo_uri: str, database: str
) -> None:
    # finished_at long ago: past any TTL. MongoDB's TTL monitor runs every 60 s, so a real
    # server may still show the record; this checks the unfinished one is never the one to go.
    async with MongoStore(_config(mongo_uri, database, result_ttl_s=1)) as store:
        old = make_state("t-old", TaskStatus.SUCCEEDED)
        running = make_state("t-running", TaskStatus.STARTED)
        assert await store.record(old) is True
        assert await store.record(running) is True
        assert await store.get("t-running") == running


@pytest.mark.parametrize(
    ("winner", "applied"),
    [(TaskStatus.PENDING, True), (TaskStatus.FAILED, False)],
)
async def test_losing_the_race_to_create_the_record_is_decided_by_the_winner(
    mongo_uri: str,
    database: str,
    monkeypatch: pytest.MonkeyPatch,
    winner: TaskStatus,
    applied: bool,
) -> None:
    # On MongoDB, two upserts of a new task can both find no document; the second insert then
    # fails with E11000 although its filter would match what the first one wrote. mongoeco
    # serialises writes, so the race is staged: another writer creates the record, then the
    # upsert fails as MongoDB's would.
    async with MongoStore(_config(mongo_uri, database)) as store:
        collection = store._collection
        assert collection is not None
        update_one = collection.update_one
        first = make_state("t-raced", winner, worker="the-other-worker")

        async def racing_update_one(query: Any, update: Any, upsert: bool = False) -> Any:
            if upsert:
                await collection.insert_one({"_id": "t-raced", **mongo_store._to_fields(first)})
                raise DuplicateKeyError("E11000 duplicate key error collection", 11000)
            return await update_one(query, update, upsert=upsert)

        monkeypatch.setattr(collection, "update_one", racing_update_one)
        done = make_state("t-raced", TaskStatus.SUCCEEDED)
        assert await store.record(done) is applied
        monkeypatch.undo()
        assert await store.get("t-raced") == (done if applied else first)


async def test_an_unreachable_server_raises_store_error_without_the_password(database: str) -> None:
    uri = "mongodb://user:secret@127.0.0.1:1/?directConnection=true"
    store = MongoStore(_config(uri, database, timeout_s=0.5))
    started = time.monotonic()
    with pytest.raises(StoreError) as info:
        await store.connect()
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert "127.0.0.1:1" in message
    assert "secret" not in message
    assert info.value.__cause__ is not None
    with pytest.raises(StoreError, match="not connected"):
        await store.get("t-1")
    await store.close()


async def test_an_unconnected_store_raises_store_error(mongo_uri: str, database: str) -> None:
    store = MongoStore(_config(mongo_uri, database))
    with pytest.raises(StoreError, match="not connected"):
        await store.record(make_state("t-1", TaskStatus.PENDING))


async def test_a_result_bson_cannot_hold_is_stored_as_its_repr(
    mongo_uri: str, database: str, caplog: pytest.LogCaptureFixture
) -> None:
    class Point:
        def __repr__(self) -> str:
            return "Point(1, 2)"

    cases: list[tuple[Any, Any]] = [
        ((1, "a"), [1, "a"]),  # BSON has arrays, not tuples
        ({3}, "{3}"),
        (Point(), "Point(1, 2)"),
        (2**70, repr(2**70)),
        ({1: "one"}, "{1: 'one'}"),
    ]
    async with MongoStore(_config(mongo_uri, database)) as store:
        for i, (result, stored) in enumerate(cases):
            task_id = f"t-bson-{i}"
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="paota"):
                assert await store.record(make_state(task_id, TaskStatus.SUCCEEDED, result=result))
            got = await store.get(task_id)
            assert got is not None
            assert got.result == stored
            warned = [r for r in caplog.records if r.levelno == logging.WARNING]
            if isinstance(result, tuple):
                assert not warned
            else:
                assert len(warned) == 1
                assert task_id in warned[0].getMessage()
                assert type(result).__name__ in warned[0].getMessage()


async def test_a_record_over_the_document_limit_is_a_permanent_store_error(
    mongo_uri: str, database: str
) -> None:
    # a 20 MB result: MongoDB's documents hold 16 MB; no retry can make it fit
    async with MongoStore(_config(mongo_uri, database)) as store:
        with pytest.raises(StoreError) as refused:
            await store.record(make_state("t-huge", TaskStatus.SUCCEEDED, result="r" * 20_000_000))
        assert refused.value.permanent
        assert "t-huge" in str(refused.value)
        # while an outage is not permanent (below), and a smaller record still goes in
        assert await store.record(make_state("t-huge", TaskStatus.FAILED))


async def test_an_argument_bson_cannot_hold_is_stored_as_its_repr(
    mongo_uri: str, database: str
) -> None:
    args = [
        {"Name": "big", "Type": "uint64", "Value": 2**64 - 1},
        {"Name": "s", "Type": "string", "Value": "x"},
    ]
    async with MongoStore(_config(mongo_uri, database)) as store:
        assert await store.record(make_state("t-args", TaskStatus.PENDING, args=args))
        got = await store.get("t-args")
    assert got is not None
    assert got.args == [{"Name": "big", "Type": "uint64", "Value": str(2**64 - 1)}, args[1]]


async def test_an_outage_raises_store_error_in_bounded_time_and_recovers(
    mongoeco_servers: Callable[..., MongoecoServer],
) -> None:
    # given a store on a server of its own
    server = mongoeco_servers(0)
    store = MongoStore(_config(server.uri, "paota_outage", timeout_s=1.0))
    async with store:
        assert await store.record(make_state("t-1", TaskStatus.PENDING)) is True
        # when the server dies
        server.kill()
        # then a write fails with StoreError, within about timeout_s
        started = time.monotonic()
        with pytest.raises(StoreError) as info:
            await store.record(make_state("t-1", TaskStatus.STARTED))
        elapsed = time.monotonic() - started
        assert elapsed < 4.0, elapsed
        assert "t-1" in str(info.value)
        assert not info.value.permanent  # an outage: workers wait it out
        with pytest.raises(StoreError):
            await store.get("t-1")
        # and when a server is back on the same port, the same store works again
        restarted = mongoeco_servers(server.port)
        assert restarted.port == server.port
        deadline = time.monotonic() + 15
        while True:
            try:
                applied = await store.record(make_state("t-2", TaskStatus.STARTED))
                break
            except StoreError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        assert applied is True
        assert await store.get("t-2") == make_state("t-2", TaskStatus.STARTED)


async def test_a_hung_server_raises_store_error_in_bounded_time(
    mongoeco_servers: Callable[..., MongoecoServer],
) -> None:
    # A server that accepts but never answers (stopped with SIGSTOP) must not hang record().
    server = mongoeco_servers(0)
    store = MongoStore(_config(server.uri, "paota_hang", timeout_s=1.0))
    async with store:
        assert await store.record(make_state("t-1", TaskStatus.PENDING)) is True
        server.pause()
        try:
            started = time.monotonic()
            with pytest.raises(StoreError):
                await store.record(make_state("t-1", TaskStatus.STARTED))
            assert time.monotonic() - started < 4.0
        finally:
            server.resume()
        deadline = time.monotonic() + 15
        while True:
            try:
                assert await store.record(make_state("t-1", TaskStatus.STARTED)) is True
                break
            except StoreError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
