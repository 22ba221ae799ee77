"""``SHARDS``: how entries are read, which server holds a task, and what two processes compare."""

from __future__ import annotations

import pytest
from channels_redis.utils import _consistent_hash

from realtime_async._core.naming import group_for_task
from realtime_async._core.store.shards import (
    decode_shards,
    fingerprint,
    placement,
    ring_index,
    server_identity,
    shard_key,
)
from realtime_async.exceptions import ImproperlyConfiguredError


@pytest.mark.parametrize("size", [1, 2, 3, 5, 16])
def test_the_ring_is_channels_redis_own(size):
    for i in range(500):
        value = f"asgi__group__{group_for_task(f'task-{i}')}"
        assert ring_index(value, size) == _consistent_hash(value, size)


def test_a_task_is_placed_as_the_layer_places_its_groups_channel():
    for i in range(200):
        name = f"job-{i}"
        assert placement(name, 3, "pfx") == _consistent_hash(f"pfx__group__{group_for_task(name)}", 3)


@pytest.mark.parametrize(
    ("name", "key"),
    [("report", "report"), ("report.3", "report"), ("report.then", "report"), ("report.2.11", "report"),
     ("v1.2", "v1"), ("a.b", "a.b"), ("x.thenx", "x.thenx"), ("7.1", "7")],
)  # fmt: skip
def test_a_groups_parts_are_placed_by_their_parents_name(name, key):
    assert shard_key(name) == key
    assert placement(name, 4, "asgi") == placement(key, 4, "asgi")


def test_entries_in_every_form_channels_redis_takes():
    shards = decode_shards(
        [
            "redis://127.0.0.1:6380/0",
            {"address": "redis://localhost:6381/2", "password": "p"},
            {"host": "127.0.0.1", "port": 6382},
            {"sentinels": [["127.0.0.1", 26379]], "master_name": "progress", "db": 1},
        ]
    )
    assert [server_identity(shard) for shard in shards] == [
        ("127.0.0.1", 6380),
        ("127.0.0.1", 6381),
        ("127.0.0.1", 6382),
        ("sentinel", "progress", ("127.0.0.1", 26379)),
    ]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ([], "non-empty list"),
        ("redis://127.0.0.1:6379/0", "non-empty list"),
        ([42], "SHARDS'][0] must be a redis:// URL or a dict"),
        (["http://127.0.0.1"], "'address' must be a redis://"),
        ([{"port": 6379}], "must give an 'address', a 'host'"),
        ([{"master_name": "m"}], "needs 'sentinels'"),
        ([{"sentinels": [("h", "x")], "master_name": "m"}], "needs 'sentinels'"),
        (["redis://127.0.0.1:6379/0", "redis://localhost:6379/3"], "SHARDS'][1] names the same Redis server"),
    ],
)
def test_a_malformed_list_is_refused_naming_the_entry(value, says):
    with pytest.raises(ImproperlyConfiguredError, match=says.replace("[", r"\[").replace("]", r"\]")):
        decode_shards(value)


def test_the_fingerprint_changes_with_the_servers_or_their_order_not_with_the_spelling():
    a, b = "redis://127.0.0.1:6380/0", "redis://127.0.0.1:6381/0"
    assert fingerprint(decode_shards([a, b])) == fingerprint(decode_shards([a, {"host": "localhost", "port": 6381}]))
    assert fingerprint(decode_shards([a, b])) != fingerprint(decode_shards([b, a]))
    assert fingerprint(decode_shards([a, b])) != fingerprint(decode_shards([a]))


def _store(spec):
    from realtime_async._core.store import RedisStore
    from realtime_async._core.store.shards import sync_client

    return RedisStore(sync_client(spec), "p", spec)  # no connection is made until a command


def _pubsub_layer(hosts, prefix="asgi"):
    from channels_redis.pubsub import RedisPubSubChannelLayer

    return RedisPubSubChannelLayer(hosts=hosts, prefix=prefix)


def test_direct_delivery_needs_the_layer_on_the_same_servers_in_the_same_order():
    from realtime_async._core.publishing import why_not_direct
    from realtime_async._core.store import ShardedStore

    sentinel = {"sentinels": [("127.0.0.1", 26379)], "master_name": "progress"}
    assert why_not_direct(_pubsub_layer([{**sentinel, "socket_timeout": None}]), _store(sentinel)) is None
    other = {"sentinels": [("127.0.0.1", 26379)], "master_name": "other"}
    assert why_not_direct(_pubsub_layer([other]), _store(sentinel)) == "the layer's Redis server is not the store's"

    a, b = decode_shards(["redis://127.0.0.1:6390/0", "redis://127.0.0.1:6391/0"])
    sharded = ShardedStore([_store(a), _store(b)], "asgi")
    assert why_not_direct(_pubsub_layer([a["address"], b["address"]]), sharded) is None
    assert "same order" in why_not_direct(_pubsub_layer([b["address"], a["address"]]), sharded)
    assert "same order" in why_not_direct(_pubsub_layer([a["address"]]), sharded)
    assert "prefix" in why_not_direct(_pubsub_layer([a["address"], b["address"]], prefix="other"), sharded)
