"""Storage of task state, conflict locks, heartbeats and the active-task registry.

Everything lives in the cache named by ``CACHE_ALIAS`` under that cache's key
prefix. On Redis (Django's ``RedisCache`` or django-redis) it is ``RedisStore``,
whose compound operations are Lua scripts; any other cache backend gets
``CacheStore``, atomic only within one process and therefore refused outside
DEBUG by system check ``realtime_async.E001``. With ``SHARDS`` the store is on
those Redis servers instead, under the same key prefix: one ``RedisStore``,
or a ``ShardedStore`` of several (``shards.py``).
"""

from __future__ import annotations

from typing import Any

from django.core.cache import caches

from realtime_async._core.process import PerProcess
from realtime_async._core.store.base import (
    GroupLink,
    GroupResult,
    Lines,
    LogRead,
    NewGroup,
    Outcome,
    Publication,
    Store,
    Write,
    WriteMode,
    WriteResult,
)
from realtime_async._core.store.cache_store import CacheStore
from realtime_async._core.store.redis_store import RedisStore
from realtime_async._core.store.sharded_store import ShardedStore
from realtime_async._core.store.shards import decode_shards, sync_client
from realtime_async.conf import get_settings

__all__ = [
    "CacheStore",
    "GroupLink",
    "GroupResult",
    "Lines",
    "LogRead",
    "NewGroup",
    "Outcome",
    "Publication",
    "RedisStore",
    "ShardedStore",
    "Store",
    "Write",
    "WriteMode",
    "WriteResult",
    "channel_prefix",
    "get_store",
    "redis_client_for",
    "redis_shards",
    "reset",
    "shard_of",
]


def redis_client_for(cache: Any) -> Any | None:
    """The shared, pooled redis-py client behind a Django cache, or None."""
    from django.core.cache.backends.redis import RedisCache

    if isinstance(cache, RedisCache):
        return cache._cache.get_client(write=True)
    client = getattr(getattr(cache, "client", None), "get_client", None)  # django-redis
    if client is not None and type(cache).__module__.startswith("django_redis"):
        return client(write=True)
    return None


def channel_prefix(alias: str) -> str:
    """The ``prefix`` of channel layer ``alias`` as its CONFIG gives it (channels_redis' default otherwise)."""
    from django.conf import settings

    config = getattr(settings, "CHANNEL_LAYERS", {}).get(alias, {}).get("CONFIG") or {}
    return str(config.get("prefix", "asgi"))


def _make_store() -> Store:
    conf = get_settings()
    cache = caches[conf.cache_alias]
    if conf.shards is not None:
        prefix = cache.make_key("realtime_async")
        shards = [RedisStore(sync_client(spec), prefix, spec) for spec in decode_shards(conf.shards)]
        return shards[0] if len(shards) == 1 else ShardedStore(shards, channel_prefix(conf.channel_layer_alias))
    client = redis_client_for(cache)
    if client is not None:
        return RedisStore(client, cache.make_key("realtime_async"))
    return CacheStore(conf.cache_alias)


def redis_shards(store: Store) -> tuple[RedisStore, ...]:
    """The Redis servers of ``store``, in ``SHARDS`` order; none for a store that is not on Redis."""
    return store.shards if isinstance(store, (RedisStore, ShardedStore)) else ()


_stores = PerProcess(_make_store, lambda store: store.close())


def get_store() -> Store:
    """The store for this process (made again after a fork or a change of ``CACHE_ALIAS``)."""
    return _stores.get(get_settings().cache_alias)


def reset(**kwargs: Any) -> None:
    """Forget the store (its connection pool stays with the cache object); a ``setting_changed`` receiver."""
    if kwargs.get("setting", "CACHES") in ("REALTIME_ASYNC", "CACHES", "CHANNEL_LAYERS"):
        _stores.reset()


def shard_of(store: Store, task_name: str) -> RedisStore | None:
    """The Redis server of ``store`` that holds ``task_name``; None for a store that is not on Redis."""
    return store.shard(task_name) if isinstance(store, (RedisStore, ShardedStore)) else None
