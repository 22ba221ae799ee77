"""Storage of task state, conflict locks, heartbeats and the active-task registry.

Everything lives in the cache named by ``CACHE_ALIAS`` under that cache's key
prefix. On Redis (Django's ``RedisCache`` or django-redis) every compound
operation is one Lua script, so it is atomic across processes and costs one
round trip; records are stored as JSON so that scripts and non-Python readers
can use them. Any other cache backend gets ``_CacheStore``, which is atomic only
within one process and is therefore refused outside DEBUG by system check
``realtime_async.E001``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from django.core.cache import caches

from realtime_async.conf import get_settings

FINAL_STATES = frozenset({"success", "failure", "cancelled", "lost"})
KEEP_FINAL, REPLACE, CREATE = 0, 1, 2

# KEYS: task hash, cancel flag, lock set, active registry, heartbeat. ARGV: state,
# record body without its opening brace, ttl ms, mode, meta JSON (or ""), seq
# floor, task name, "1" to end the task, then the pub/sub channels to publish
# the stored record to. Mode 0 keeps a final state, 1 replaces anything, 2
# creates (refusing a task that exists and is not final).
# The floor is the last seq the writer saw: a record that Redis lost (a restart
# without persistence) comes back above it, so seq never goes backwards.
# Ending a task frees the locks it still holds, drops it from the registry and
# stops its heartbeat in the same script as the final write, so whoever reads
# a final state never finds its locks still taken.
# Returns {seq, or -1 when a final state was kept, or -2 when a create found
# an unfinished task; the stored record; the cancel flag}.
_WRITE = """
local function finish()
  if ARGV[8] ~= '1' then return end
  for _, key in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    if redis.call('GET', key) == ARGV[7] then redis.call('DEL', key) end
  end
  redis.call('DEL', KEYS[3], KEYS[5])
  redis.call('ZREM', KEYS[4], ARGV[7])
end
local cur = redis.call('HGET', KEYS[1], 'state')
local cancel = redis.call('EXISTS', KEYS[2])
if cur and ARGV[4] == '0' and (cur == 'success' or cur == 'failure' or cur == 'cancelled' or cur == 'lost') then
  finish()
  return {-1, redis.call('HGET', KEYS[1], 'rec'), cancel}
end
if cur and ARGV[4] == '2' and not (cur == 'success' or cur == 'failure' or cur == 'cancelled' or cur == 'lost') then
  return {-2, redis.call('HGET', KEYS[1], 'rec'), cancel}
end
if ARGV[4] == '2' then redis.call('DEL', KEYS[2]) end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
if seq <= tonumber(ARGV[6]) then
  seq = tonumber(ARGV[6]) + 1
  redis.call('HSET', KEYS[1], 'seq', seq)
end
local rec = '{"seq":' .. seq .. ',' .. ARGV[2]
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'rec', rec)
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'meta', ARGV[5]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
finish()
for i = 9, #ARGV do redis.call('PUBLISH', ARGV[i], rec) end
return {seq, rec, cancel}
"""

# KEYS: the task's lock set, then one key per object. ARGV: task, lock ttl ms, set ttl ms.
_ACQUIRE = """
local held = {}
for i = 2, #KEYS do
  local holder = redis.call('GET', KEYS[i])
  if holder and holder ~= ARGV[1] then
    table.insert(held, KEYS[i]); table.insert(held, holder)
  end
end
if #held > 0 then return held end
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
  redis.call('SADD', KEYS[1], KEYS[i])
end
-- The set outlives its locks: after they expire it still says what the task reserved.
if #KEYS > 1 then redis.call('PEXPIRE', KEYS[1], math.max(tonumber(ARGV[2]), tonumber(ARGV[3]))) end
return held
"""

# KEYS: the task's lock set, then the keys to release (none: all of them).
# ARGV: task. A key taken over by another task is left alone.
_RELEASE = """
local keys = {}
if #KEYS > 1 then for i = 2, #KEYS do table.insert(keys, KEYS[i]) end
else keys = redis.call('SMEMBERS', KEYS[1]) end
local freed = 0
for _, key in ipairs(keys) do
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key); freed = freed + 1 end
  redis.call('SREM', KEYS[1], key)
end
return freed
"""

# KEYS: lock set, heartbeat, task hash. ARGV: task, lock ttl ms, heartbeat ttl ms,
# state ttl ms. Returns the locks this task no longer holds; they stay in its set
# so that ``holds_locks`` keeps saying so until the task releases them.
_RENEW = """
local lost = {}
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('GET', key) == ARGV[1] then redis.call('PEXPIRE', key, ARGV[2])
  else table.insert(lost, key) end
end
redis.call('PEXPIRE', KEYS[1], math.max(tonumber(ARGV[2]), tonumber(ARGV[4])))
redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return lost
"""


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class Store:
    """The operations the manager needs; see ``RedisStore`` for the semantics."""

    def write_state(
        self,
        task: str,
        state: str,
        body: str,
        *,
        ttl: float,
        mode: int = 0,
        meta: str = "",
        floor: int = 0,
        end: bool = False,
        publish: Sequence[str] = (),
    ) -> tuple[int, str, bool]:
        """Store a record above seq ``floor``; return ``(seq, stored_record_json, cancel_requested)``.

        Final states are sticky: in mode 0 (``KEEP_FINAL``) a task that already has
        one keeps it and ``seq`` is -1, so a late progress call cannot undo it.
        Mode 1 (``REPLACE``) always writes; mode 2 (``CREATE``) refuses, with
        ``seq`` -2, a task that exists and is not final. With ``end``, the same
        atomic step releases the task's locks, drops it from the active registry
        and stops its heartbeat, whether or not the state was written. A record
        written is also published, in the same step, to the pub/sub channel of
        each group in ``publish`` (``RedisStore.broadcast_channel``); stores
        without pub/sub ignore it.
        """
        raise NotImplementedError

    def read_state(self, task: str) -> str | None:
        raise NotImplementedError

    def read_meta(self, task: str) -> dict[str, Any]:
        raise NotImplementedError

    def delete_task(self, task: str) -> None:
        raise NotImplementedError

    def acquire(self, task: str, lock_ids: list[str], ttl: float) -> dict[str, str]:
        """Take every lock or none; return ``{}`` or ``{lock_id: holder}`` of those held by others."""
        raise NotImplementedError

    def release(self, task: str, lock_ids: list[str] | None = None) -> int:
        raise NotImplementedError

    def holders(self, lock_ids: Iterable[str]) -> dict[str, str]:
        raise NotImplementedError

    def task_locks(self, task: str) -> list[str]:
        raise NotImplementedError

    def renew(self, task: str, *, lock_ttl: float, heartbeat_ttl: float, state_ttl: float) -> list[str]:
        raise NotImplementedError

    def is_alive(self, task: str) -> bool:
        raise NotImplementedError

    def stop_heartbeat(self, task: str) -> None:
        raise NotImplementedError

    def set_cancel(self, task: str, ttl: float) -> None:
        raise NotImplementedError

    def is_cancelled(self, task: str) -> bool:
        raise NotImplementedError

    def add_active(self, task: str) -> None:
        raise NotImplementedError

    def remove_active(self, task: str) -> None:
        raise NotImplementedError

    def active(self) -> list[str]:
        raise NotImplementedError


class RedisStore(Store):
    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._write = client.register_script(_WRITE)
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)
        self._renew = client.register_script(_RENEW)
        self._lock_prefix = f"{prefix}:l:"
        db = client.connection_pool.connection_kwargs.get("db") or 0
        self._broadcast_prefix = f"{prefix}:bc:{db}:"

    def _k(self, kind: str, task: str) -> str:
        return f"{self.prefix}:{kind}:{task}"

    def broadcast_channel(self, group: str) -> str:
        """The pub/sub channel that ``write_state`` publishes ``group``'s records to."""
        # Pub/sub ignores the database number, which keys have: it goes into the name.
        return f"{self._broadcast_prefix}{group}"

    def write_state(
        self,
        task: str,
        state: str,
        body: str,
        *,
        ttl: float,
        mode: int = 0,
        meta: str = "",
        floor: int = 0,
        end: bool = False,
        publish: Sequence[str] = (),
    ) -> tuple[int, str, bool]:
        keys = [self._k("t", task), self._k("c", task), self._k("tl", task), self._k("a", "tasks"), self._k("hb", task)]
        args = [state, body, _ms(ttl), mode, meta, floor, task, int(end), *map(self.broadcast_channel, publish)]
        seq, rec, cancel = self._write(keys=keys, args=args)
        return int(seq), rec.decode() if isinstance(rec, bytes) else (rec or ""), bool(cancel)

    def read_state(self, task: str) -> str | None:
        value = self.client.hget(self._k("t", task), "rec")
        return value.decode() if value is not None else None

    def read_meta(self, task: str) -> dict[str, Any]:
        value = self.client.hget(self._k("t", task), "meta")
        return json.loads(value) if value else {}

    def delete_task(self, task: str) -> None:
        self.client.delete(self._k("t", task), self._k("hb", task), self._k("c", task))

    def acquire(self, task: str, lock_ids: list[str], ttl: float) -> dict[str, str]:
        keys = [self._k("tl", task), *(self._lock_prefix + lock for lock in lock_ids)]
        held = self._acquire(keys=keys, args=[task, _ms(ttl), _ms(get_settings().progress_ttl)])
        n = len(self._lock_prefix)
        return {held[i].decode()[n:]: held[i + 1].decode() for i in range(0, len(held), 2)}

    def release(self, task: str, lock_ids: list[str] | None = None) -> int:
        keys = [self._k("tl", task), *(self._lock_prefix + lock for lock in lock_ids or ())]
        return int(self._release(keys=keys, args=[task]))

    def holders(self, lock_ids: Iterable[str]) -> dict[str, str]:
        ids = list(lock_ids)
        if not ids:
            return {}
        values = self.client.mget([self._lock_prefix + lock for lock in ids])
        return {lock: value.decode() for lock, value in zip(ids, values, strict=True) if value is not None}

    def task_locks(self, task: str) -> list[str]:
        n = len(self._lock_prefix)
        return sorted(key.decode()[n:] for key in self.client.smembers(self._k("tl", task)))

    def renew(self, task: str, *, lock_ttl: float, heartbeat_ttl: float, state_ttl: float) -> list[str]:
        keys = [self._k("tl", task), self._k("hb", task), self._k("t", task)]
        lost = self._renew(keys=keys, args=[task, _ms(lock_ttl), _ms(heartbeat_ttl), _ms(state_ttl)])
        n = len(self._lock_prefix)
        return [key.decode()[n:] for key in lost]

    def is_alive(self, task: str) -> bool:
        return bool(self.client.exists(self._k("hb", task)))

    def stop_heartbeat(self, task: str) -> None:
        self.client.delete(self._k("hb", task))

    def set_cancel(self, task: str, ttl: float) -> None:
        self.client.set(self._k("c", task), "1", px=_ms(ttl))

    def is_cancelled(self, task: str) -> bool:
        return bool(self.client.exists(self._k("c", task)))

    def add_active(self, task: str) -> None:
        self.client.zadd(self._k("a", "tasks"), {task: time.time()})

    def remove_active(self, task: str) -> None:
        self.client.zrem(self._k("a", "tasks"), task)

    def active(self) -> list[str]:
        return [name.decode() for name in self.client.zrange(self._k("a", "tasks"), 0, -1)]


class _CacheStore(Store):
    """The same semantics on any Django cache, atomic within this process only."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.mutex = threading.RLock()

    @property
    def cache(self) -> Any:
        return caches[self.alias]

    def _k(self, kind: str, task: str) -> str:
        return f"realtime_async:{kind}:{task}"

    def write_state(
        self,
        task: str,
        state: str,
        body: str,
        *,
        ttl: float,
        mode: int = 0,
        meta: str = "",
        floor: int = 0,
        end: bool = False,
        publish: Sequence[str] = (),
    ) -> tuple[int, str, bool]:
        with self.mutex:
            entry = self.cache.get(self._k("t", task)) or {"seq": 0}
            final = entry.get("state") in FINAL_STATES
            if final and mode == KEEP_FINAL:
                if end:
                    self._end(task)
                return -1, entry["rec"], self.is_cancelled(task)
            if "state" in entry and not final and mode == CREATE:
                return -2, entry["rec"], self.is_cancelled(task)
            if mode == CREATE:
                self.cache.delete(self._k("c", task))
            entry["seq"] = max(entry["seq"], floor) + 1
            entry["state"] = state
            entry["rec"] = f'{{"seq":{entry["seq"]},{body}'
            if meta:
                entry["meta"] = meta
            self.cache.set(self._k("t", task), entry, ttl)
            if end:
                self._end(task)
            return entry["seq"], entry["rec"], self.is_cancelled(task)

    def _end(self, task: str) -> None:
        self.release(task)
        self.remove_active(task)
        self.stop_heartbeat(task)

    def read_state(self, task: str) -> str | None:
        entry = self.cache.get(self._k("t", task))
        return entry["rec"] if entry else None

    def read_meta(self, task: str) -> dict[str, Any]:
        entry = self.cache.get(self._k("t", task)) or {}
        return json.loads(entry["meta"]) if entry.get("meta") else {}

    def delete_task(self, task: str) -> None:
        self.cache.delete_many([self._k(kind, task) for kind in ("t", "hb", "c")])

    def acquire(self, task: str, lock_ids: list[str], ttl: float) -> dict[str, str]:
        with self.mutex:
            held = {lock: holder for lock, holder in self.holders(lock_ids).items() if holder != task}
            if held:
                return held
            for lock in lock_ids:
                self.cache.set(self._k("l", lock), task, ttl)
            if lock_ids:
                owned = set(self.cache.get(self._k("tl", task)) or ()) | set(lock_ids)
                self.cache.set(self._k("tl", task), owned, max(ttl, get_settings().progress_ttl))
            return {}

    def release(self, task: str, lock_ids: list[str] | None = None) -> int:
        with self.mutex:
            owned = set(self.cache.get(self._k("tl", task)) or ())
            targets = set(lock_ids) if lock_ids else set(owned)
            freed = 0
            for lock in targets:
                if self.cache.get(self._k("l", lock)) == task:
                    self.cache.delete(self._k("l", lock))
                    freed += 1
            self.cache.set(self._k("tl", task), owned - targets)
            return freed

    def holders(self, lock_ids: Iterable[str]) -> dict[str, str]:
        ids = list(lock_ids)
        values = self.cache.get_many([self._k("l", lock) for lock in ids])
        return {lock: values[self._k("l", lock)] for lock in ids if self._k("l", lock) in values}

    def task_locks(self, task: str) -> list[str]:
        return sorted(self.cache.get(self._k("tl", task)) or ())

    def renew(self, task: str, *, lock_ttl: float, heartbeat_ttl: float, state_ttl: float) -> list[str]:
        with self.mutex:
            lost = []
            for lock in self.task_locks(task):
                if self.cache.get(self._k("l", lock)) == task:
                    self.cache.touch(self._k("l", lock), lock_ttl)
                else:
                    lost.append(lock)
            self.cache.set(self._k("hb", task), 1, heartbeat_ttl)
            self.cache.touch(self._k("t", task), state_ttl)
            return lost

    def is_alive(self, task: str) -> bool:
        return self.cache.get(self._k("hb", task)) is not None

    def stop_heartbeat(self, task: str) -> None:
        self.cache.delete(self._k("hb", task))

    def set_cancel(self, task: str, ttl: float) -> None:
        self.cache.set(self._k("c", task), 1, ttl)

    def is_cancelled(self, task: str) -> bool:
        return self.cache.get(self._k("c", task)) is not None

    def add_active(self, task: str) -> None:
        with self.mutex:
            self.cache.set(self._k("a", "tasks"), [*self.active(), task], None)

    def remove_active(self, task: str) -> None:
        with self.mutex:
            self.cache.set(self._k("a", "tasks"), [t for t in self.active() if t != task], None)

    def active(self) -> list[str]:
        return list(self.cache.get(self._k("a", "tasks")) or [])


_stores: dict[tuple[int, str], Store] = {}
_stores_lock = threading.Lock()


def redis_client_for(cache: Any) -> Any | None:
    """The shared, pooled redis-py client behind a Django cache, or None."""
    from django.core.cache.backends.redis import RedisCache

    if isinstance(cache, RedisCache):
        return cache._cache.get_client(write=True)
    client = getattr(getattr(cache, "client", None), "get_client", None)  # django-redis
    if client is not None and type(cache).__module__.startswith("django_redis"):
        return client(write=True)
    return None


def get_store() -> Store:
    """The store for this process (made again after a fork or a settings change)."""
    alias = get_settings().cache_alias
    key = (os.getpid(), alias)
    store = _stores.get(key)
    if store is None:
        with _stores_lock:
            store = _stores.get(key)
            if store is None:
                cache = caches[alias]
                client = redis_client_for(cache)
                if client is not None:
                    store = RedisStore(client, cache.make_key("realtime_async"))
                else:
                    store = _CacheStore(alias)
                _stores.clear()
                _stores[key] = store
    return store


def reset() -> None:
    """Forget the stores (their connection pools stay with the cache objects)."""
    with _stores_lock:
        _stores.clear()
