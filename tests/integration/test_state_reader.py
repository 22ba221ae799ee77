"""The unchanged poll's pipelined Redis reader, against real redis-servers (the shared one and private ones)."""

from __future__ import annotations

import asyncio

import pytest
import redis

from realtime_async._core.store import state_reader
from realtime_async._core.store.state_reader import StateReader, usable_for
from tests.services import private_redis


def address(port: int, **extra) -> dict:
    return {"host": "127.0.0.1", "port": port, "path": None, "username": None, "password": None, "db": 0,
            "timeout": 2.0, **extra}  # fmt: skip


async def test_many_reads_in_flight_each_get_their_own_answer():
    with private_redis() as (url, _proc, port):
        sync = redis.Redis.from_url(url)
        for i in range(300):
            sync.hset(f"t:{i}", mapping={"rec": f"record {i} " + "x" * (i * 7)})
        reader = StateReader(address(port))
        try:
            keys = [f"t:{i % 300}" for i in range(1500)] + ["t:missing"]
            values = await asyncio.gather(*(reader.hget(key, "rec") for key in keys))
            for key, value in zip(keys[:-1], values[:-1], strict=True):
                i = int(key[2:])
                assert value == f"record {i} ".encode() + b"x" * (i * 7)
            assert values[-1] is None
            assert await reader.hget("t:1", "no-such-field") is None
        finally:
            await reader.aclose()
            sync.close()


async def test_a_restarted_server_fails_the_reads_in_flight_then_is_reached_again():
    with private_redis() as (url, proc, port):
        redis.Redis.from_url(url).hset("t:a", mapping={"rec": "one"})
        reader = StateReader(address(port))
        try:
            assert await reader.hget("t:a", "rec") == b"one"
            proc.stop()
            with pytest.raises(ConnectionError):
                await reader.hget("t:a", "rec")
            with private_redis(port) as (url, _restarted, _):
                redis.Redis.from_url(url).hset("t:a", mapping={"rec": "two"})
                assert await reader.hget("t:a", "rec") == b"two"
        finally:
            await reader.aclose()


async def test_it_logs_in_and_selects_the_database_as_the_store_does():
    with private_redis() as (url, _proc, port):
        admin = redis.Redis.from_url(url)
        admin.config_set("requirepass", "s3cret")
        client = redis.Redis(host="127.0.0.1", port=port, db=3, password="s3cret")
        client.hset("t:a", mapping={"rec": "in db 3"})
        found = usable_for(client)
        assert found is not None and (found["db"], found["password"]) == (3, "s3cret")
        reader = StateReader(found)
        wrong = StateReader({**found, "password": "nope"})
        try:
            assert await reader.hget("t:a", "rec") == b"in db 3"
            with pytest.raises(ConnectionError):
                await wrong.hget("t:a", "rec")
        finally:
            await reader.aclose()
            await wrong.aclose()
            client.close()


async def test_a_burst_past_the_bound_fails_fast_instead_of_queueing(monkeypatch):
    with private_redis() as (url, _proc, port):
        monkeypatch.setattr(state_reader, "MAX_IN_FLIGHT", 10)
        reader = StateReader(address(port))
        try:
            assert await reader.hget("t:a", "rec") is None  # connected
            results = await asyncio.gather(*(reader.hget("t:a", "rec") for _ in range(30)), return_exceptions=True)
            assert sum(isinstance(result, ConnectionError) for result in results) >= 20
            assert await reader.hget("t:a", "rec") is None  # and it goes on
        finally:
            await reader.aclose()


def test_tls_connections_are_left_to_redis_py():
    client = redis.Redis(host="127.0.0.1", port=1, ssl=True)
    assert usable_for(client) is None
