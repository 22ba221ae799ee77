"""Storage of task state, conflict locks, heartbeats and the active-task registry.

Everything lives in the cache named by ``CACHE_ALIAS`` under that cache's key
prefix. On Redis (Django's ``RedisCache`` or django-redis) it is ``RedisStore``,
whose compound operations are Lua scripts; any other cache backend gets
``CacheStore``, atomic only within one process and therefore refused outside
DEBUG by system check ``realtime_async.E001``.
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
    "Store",
    "Write",
    "WriteMode",
    "WriteResult",
    "get_store",
    "redis_client_for",
    "reset",
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


def _make_store() -> Store:
    alias = get_settings().cache_alias
    cache = caches[alias]
    client = redis_client_for(cache)
    if client is not None:
        return RedisStore(client, cache.make_key("realtime_async"))
    return CacheStore(alias)


_stores = PerProcess(_make_store)


def get_store() -> Store:
    """The store for this process (made again after a fork or a change of ``CACHE_ALIAS``)."""
    return _stores.get(get_settings().cache_alias)


def reset(**kwargs: Any) -> None:
    """Forget the store (its connection pool stays with the cache object); a ``setting_changed`` receiver."""
    if kwargs.get("setting", "CACHES") in ("REALTIME_ASYNC", "CACHES"):
        _stores.reset()
