"""The store on Redis: every compound operation is atomic across processes, in one round trip.

Each is one Lua script, except the plain progress update, which is most writes: a ``WATCH``ed
``MULTI``/``EXEC`` when the writer's guess of the stored record holds (``watched.py``).

Records are stored as JSON so that the scripts and non-Python readers can use
them. The scripts sit beside this file as ``.lua`` files, each with its
contract written at its top.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from importlib import resources
from typing import Any

from realtime_async._core.messages import PART_CANCELLED
from realtime_async._core.records import FINAL_STATES, GROUP_STATES
from realtime_async._core.store.base import (
    GroupLink,
    GroupResult,
    LogRead,
    NewGroup,
    Outcome,
    Publication,
    Store,
    Write,
    WriteResult,
)
from realtime_async._core.store.shards import server_identity
from realtime_async._core.store.watched import WRONG_GUESS, CheckAndSet
from realtime_async.conf import get_settings

__all__ = ["RedisStore"]

#: What the write script returns instead of a seq when it wrote nothing.
_NOT_WRITTEN = {-1: Outcome.FINAL_KEPT, -2: Outcome.UNFINISHED_EXISTS}


def _source(name: str) -> str:
    return resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")


#: A part's write and its group's step as one script (one EVALSHA, no MULTI): each body runs as a
#: function whose KEYS and ARGV are its own slices. ARGV[1] is how many ARGV the write step takes.
_PART_WRITE = """local function write_step(KEYS, ARGV)
{write}
end
local function group_step(KEYS, ARGV)
{group}
end
local n = tonumber(ARGV[1])
local wk, gk, wa, ga = {{}}, {{}}, {{}}, {{}}
for i = 1, 6 do wk[i], gk[i] = KEYS[i], KEYS[i + 6] end
for i = 2, n + 1 do wa[i - 1] = ARGV[i] end
for i = n + 2, #ARGV do ga[i - n - 1] = ARGV[i] end
local written = write_step(wk, wa)
local group = group_step(gk, ga)
return {{written[1], written[2], written[3], group}}
"""


#: ``PUBLISHED`` (``publish.lua``), which every writing script calls, is put before it.
_PUBLISHED = _source("publish")


def _published(publication: Publication | None) -> list[Any]:
    """The arguments of ``PUBLISHED`` for ``publication``."""
    if publication is None:
        return [""]
    return [publication.head, *publication.channels]


def _script(name: str) -> str:
    fused = name == "partwrite"
    text = _PART_WRITE.format(write=_source("write"), group=_source("group")) if fused else _source(name)
    if name in ("group", "partwrite"):
        # The states come from Python, where they are defined once.
        named = ", ".join(f'{state} = "{state}"' for state in GROUP_STATES)
        ordered = ", ".join(f'"{state}"' for state in GROUP_STATES)
        text = f"local STATE = {{{named}}}\nlocal STATES = {{{ordered}}}\n{text}"
        text = f"local PART_CANCELLED = {json.dumps(PART_CANCELLED)}\n{text}"
    if name in ("write", "update", "group", "partwrite"):
        # Made on every call: the plain write (the hot path) gets only what it uses.
        final = ", ".join(f'["{state}"] = true' for state in sorted(FINAL_STATES))
        text = f"local FINAL = {{{final}}}\n{'' if name == 'update' else _PUBLISHED}{text}"
    return text


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")


class RedisStore(Store):
    """The store on one Redis server: the cache's, or one entry of ``SHARDS`` (``shard``, see ``shards.py``)."""

    def __init__(self, client: Any, prefix: str, shard: dict[str, Any] | None = None) -> None:
        self.client = client
        self.prefix = prefix
        #: The ``SHARDS`` entry this server was made from; None for the cache's own client.
        self.shard_spec = shard
        self._write = client.register_script(_script("write"))
        self._update = client.register_script(_script("update"))
        self._acquire = client.register_script(_script("acquire"))
        self._release = client.register_script(_script("release"))
        self._renew = client.register_script(_script("renew"))
        self._read_log = client.register_script(_script("readlog"))
        self._group = client.register_script(_script("group"))
        self._part_write = client.register_script(_script("partwrite"))
        #: Plain updates by ``WATCH``/``MULTI``/``EXEC`` when the writer's guess holds (``watched.py``).
        self._watched = CheckAndSet(client.connection_pool)
        self._lock_prefix = f"{prefix}:l:"
        db = client.connection_pool.connection_kwargs.get("db") or 0
        self._broadcast_prefix = f"{prefix}:bc:{db}:"

    @property
    def shards(self) -> tuple[RedisStore, ...]:
        """The Redis servers of this store: this one."""
        return (self,)

    def close(self) -> None:
        self._watched.close()

    def shard_index(self, task_name: str) -> int:
        """The index in ``shards`` of the server that holds ``task_name``: this one's."""
        return 0

    def shard(self, task_name: str) -> RedisStore:
        """The server that holds ``task_name``: this one (``ShardedStore`` chooses among several)."""
        return self

    def identity(self) -> tuple[Any, ...] | None:
        """Which server this is, for pub/sub (``shards.server_identity``)."""
        if self.shard_spec is not None:
            return server_identity(self.shard_spec)
        return server_identity(self.client.connection_pool.connection_kwargs)

    def _k(self, kind: str, task_name: str) -> str:
        return f"{self.prefix}:{kind}:{task_name}"

    def broadcast_channel(self, group: str) -> str:
        """The hubs' own pub/sub channel of ``group`` (a layered ``Publication``; see ``_core.publishing``)."""
        # Pub/sub ignores the database number, which keys have: it goes into the name.
        return f"{self._broadcast_prefix}{group}"

    def _write_call(self, write: Write) -> tuple[list[str], list[Any]]:
        k, name = self._k, write.task_name
        keys = [k("t", name), k("c", name), k("tl", name), k("a", "tasks"), k("hb", name), k("log", name)]
        lines = write.lines.bodies()
        args = [write.state, write.body, _ms(write.ttl), int(write.mode), write.meta, write.floor, name, int(write.end)]
        args += [len(lines), *write.log_limits, write.lines.dropped, *lines, *_published(write.publish)]
        return keys, args

    def write_many(self, writes: list[Write]) -> list[WriteResult]:
        self._watched.forget()
        pipe = self.client.pipeline(transaction=False)
        for write in writes:
            keys, args = self._write_call(write)
            self._write(keys=keys, args=args, client=pipe)
        results = []
        for seq, rec, cancel in pipe.execute():
            seq = int(seq)
            results.append(WriteResult(_NOT_WRITTEN.get(seq, Outcome.WRITTEN), max(seq, 0), _text(rec), bool(cancel)))
        return results

    def _update_call(self, write: Write) -> WriteResult | None:
        """A plain write, made here, by a transaction or ``update.lua`` (``watched.py``); None: a wrong guess."""
        name, publish = write.task_name, write.publish
        log = write.log
        last, dropped = (log.get("last", 0), log.get("dropped", 0)) if log else ("", "")
        head = f'"log":{{"last":{last},"dropped":{dropped}}},' if log else ""
        seq = write.floor + 1
        guess = f'{{"seq":{seq},{head}{write.body}'
        message = publish.message(seq, write.state, guess) if publish else b""
        args = [write.state, _ms(write.ttl), int(write.refresh_ttl), write.floor, last, dropped, guess, message]
        channels = publish.channels if publish else ()
        keys = [self._k("t", name), self._k("c", name)]
        changes: list[tuple[Any, ...]] = [("HSET", keys[0], "state", write.state, "seq", seq, "rec", guess)]
        if write.refresh_ttl:
            changes.append(("PEXPIRE", keys[0], _ms(write.ttl)))
        changes += [("PUBLISH", channel, message) for channel in channels]
        script = ("EVALSHA", self._update.sha, 2, *keys, *args, *channels)
        reply = self._watched.update(keys[0], keys[1], (keys[0], write.floor, str(last), str(dropped)), changes, script)
        if isinstance(reply, bool):
            return WriteResult(Outcome.WRITTEN, seq, guess, reply)
        seq, rec, cancel = reply or self._update(keys=keys, args=[*args, *channels])
        seq = int(seq)
        if seq == WRONG_GUESS:  # write.lua writes instead
            return None
        return WriteResult(_NOT_WRITTEN.get(seq, Outcome.WRITTEN), max(seq, 0), _text(rec) or guess, bool(cancel))

    def _write_state(self, write: Write) -> WriteResult:
        if write.plain:
            guessed = self._update_call(write)
            if guessed is not None:
                return guessed
        self._watched.forget()
        keys, args = self._write_call(write)
        if write.group is None:
            seq, rec, cancel = self._write(keys=keys, args=args)
            group = None
        else:  # the part's write and its group's aggregate: one script, one round trip, atomic
            group_keys, group_args = self._group_call(write.group, write.task_name)
            seq, rec, cancel, answer = self._part_write(keys=keys + group_keys, args=[len(args), *args, *group_args])
            group = self._group_result(answer)
        seq = int(seq)
        outcome = _NOT_WRITTEN.get(seq, Outcome.WRITTEN)
        return WriteResult(outcome, max(seq, 0), _text(rec), bool(cancel), group)

    def _group_call(self, group: GroupLink, part: str) -> tuple[list[str], list[Any]]:
        settings = get_settings()
        keys = [self._k("t", part or group.parent), self._k("t", group.parent), self._k("gp", group.parent)]
        keys += [self._k("tl", group.parent), self._k("a", "tasks"), self._k("c", group.parent)]
        args = [part, group.parent, _ms(group.interval), _ms(settings.final_state_ttl), _ms(settings.progress_ttl)]
        args += [self._k("c", ""), _ms(settings.final_state_ttl), "0" if part else "1", *_published(group.publish)]
        return keys, args

    @staticmethod
    def _group_result(answer: list[Any]) -> GroupResult:
        kind = int(answer[0])
        if kind == 1:
            rest = [_text(item) for item in answer[4:]]
            unfinished = tuple(zip(rest[::2], rest[1::2], strict=True))
            return GroupResult(_text(answer[1]), _text(answer[2]), unfinished, start=_text(answer[3]))
        if kind == 2:
            return GroupResult(flush_in=max(0.0, int(answer[1]) / 1000))
        return GroupResult()

    def create_group(self, group: NewGroup) -> None:
        total = sum(weight for weight, _ in group.parts.values()) + (group.then[1] if group.then else 0)
        fields: dict[str, Any] = {f"g:{state}": 0 for state in GROUP_STATES}
        fields.update({"g:queued": len(group.parts), "g:parts": len(group.parts), "g:sumw": total, "g:wp": 0})
        fields.update({"g:ended": 0, "g:policy": group.policy, "g:kind": group.kind})
        packed = {
            name: json.dumps({"s": "queued", "p": 0, "w": weight, "t": title, "i": index}, ensure_ascii=False)
            for index, (name, (weight, title)) in enumerate(group.parts.items())
        }
        if group.then is not None:  # the fan-in step: in the percent ("x"), not in the counts
            name, weight, title = group.then
            packed[name] = json.dumps({"s": "queued", "p": 0, "w": weight, "t": title, "x": 1}, ensure_ascii=False)
            fields.update({"g:then": "waiting", "g:thenname": name})
        ttl = _ms(get_settings().progress_ttl)
        key = self._k("gp", group.parent)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self._k("t", group.parent), mapping=fields)
        pipe.delete(key)
        pipe.hset(key, mapping=packed)
        pipe.pexpire(key, ttl)
        pipe.execute()

    def settle_group(self, group: GroupLink) -> GroupResult:
        keys, args = self._group_call(group, "")
        return self._group_result(self._group(keys=keys, args=args))

    def group_parts(self, parent: str) -> dict[str, str]:
        return {name: entry["s"] for name, entry in self.group_entries(parent).items()}

    def group_results(self, parts: list[str]) -> list[Any]:
        return [json.loads(rec).get("result") if rec else None for rec in self.read_states(parts)]

    def group_entries(self, parent: str) -> dict[str, dict[str, Any]]:
        packed = self.client.hgetall(self._k("gp", parent))
        return {_text(name): json.loads(value) for name, value in packed.items()}

    def read_state(self, task_name: str) -> str | None:
        value = self.client.hget(self._k("t", task_name), "rec")
        return value.decode() if value is not None else None

    def read_states(self, task_names: list[str]) -> list[str | None]:
        """The records of ``task_names`` (JSON, None for a task without one), in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for name in task_names:
            pipe.hget(self._k("t", name), "rec")
        return [_text(rec) or None for rec in pipe.execute()]

    def state_key(self, task_name: str) -> str:
        """The key of the hash whose ``rec`` field holds ``task_name``'s record (``state_reader`` reads it)."""
        return self._k("t", task_name)

    def read_log(self, task_name: str, after: int = 0) -> LogRead:
        last, dropped, *lines = self._read_log(keys=[self._k("t", task_name), self._k("log", task_name)], args=[after])
        return LogRead(int(last), int(dropped), [_text(line) for line in lines])

    def read_meta(self, task_name: str) -> dict[str, Any]:
        value = self.client.hget(self._k("t", task_name), "meta")
        return json.loads(value) if value else {}

    def delete_task(self, task_name: str) -> None:
        self.client.delete(*(self._k(kind, task_name) for kind in ("t", "hb", "c", "log", "gp")))

    def acquire(self, task_name: str, lock_ids: list[str], ttl: float) -> dict[str, str]:
        keys = [self._k("tl", task_name), *(self._lock_prefix + lock for lock in lock_ids)]
        held = self._acquire(keys=keys, args=[task_name, _ms(ttl), _ms(get_settings().progress_ttl)])
        return dict(zip(self._lock_ids(held[::2]), (holder.decode() for holder in held[1::2]), strict=True))

    def release(self, task_name: str, lock_ids: list[str] | None = None) -> int:
        keys = [self._k("tl", task_name), *(self._lock_prefix + lock for lock in lock_ids or ())]
        return int(self._release(keys=keys, args=[task_name]))

    def holders(self, lock_ids: Iterable[str]) -> dict[str, str]:
        ids = list(lock_ids)
        if not ids:
            return {}
        values = self.client.mget([self._lock_prefix + lock for lock in ids])
        return {lock: value.decode() for lock, value in zip(ids, values, strict=True) if value is not None}

    def _lock_ids(self, keys: Iterable[bytes]) -> list[str]:
        """The lock ids of Redis lock ``keys`` (``<prefix>:l:<id>``)."""
        n = len(self._lock_prefix)
        return [key.decode()[n:] for key in keys]

    def task_locks(self, task_name: str) -> list[str]:
        return sorted(self._lock_ids(self.client.smembers(self._k("tl", task_name))))

    def renew(self, task_name: str, *, lock_ttl: float, heartbeat_timeout: float, state_ttl: float) -> list[str]:
        keys = [self._k(kind, task_name) for kind in ("tl", "hb", "t", "log")]
        return self._lock_ids(
            self._renew(keys=keys, args=[task_name, _ms(lock_ttl), _ms(heartbeat_timeout), _ms(state_ttl)])
        )

    def renew_locks(self, task_name: str, *, lock_ttl: float, state_ttl: float) -> list[str]:
        """``renew``'s part for the locks alone (on the shard that holds them); the locks lost."""
        return self._lock_ids(
            self._renew(keys=[self._k("tl", task_name)], args=[task_name, _ms(lock_ttl), 0, _ms(state_ttl)])
        )

    def is_alive(self, task_name: str) -> bool:
        return bool(self.client.exists(self._k("hb", task_name)))

    def set_cancel(self, task_name: str, ttl: float) -> None:
        self.client.set(self._k("c", task_name), "1", px=_ms(ttl))

    def is_cancelled(self, task_name: str) -> bool:
        return bool(self.client.exists(self._k("c", task_name)))

    def add_active(self, task_name: str) -> None:
        self.client.zadd(self._k("a", "tasks"), {task_name: time.time()})

    def add_active_many(self, task_names: list[str]) -> None:
        now = time.time()
        self.client.zadd(self._k("a", "tasks"), dict.fromkeys(task_names, now))

    def remove_active(self, task_name: str) -> None:
        self.client.zrem(self._k("a", "tasks"), task_name)

    def active(self) -> list[str]:
        return [name.decode() for name in self.client.zrange(self._k("a", "tasks"), 0, -1)]
