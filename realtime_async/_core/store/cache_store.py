"""The store on any other Django cache: the same semantics, atomic within this process only.

System check ``realtime_async.E001`` refuses it outside DEBUG.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from typing import Any

from django.core.cache import caches

from realtime_async._core.records import FINAL_STATES
from realtime_async._core.store.base import (
    GroupLink,
    GroupResult,
    LogRead,
    NewGroup,
    Outcome,
    Store,
    Write,
    WriteMode,
    WriteResult,
)
from realtime_async.conf import get_settings
from realtime_async.exceptions import ImproperlyConfiguredError

__all__ = ["CacheStore"]


class CacheStore(Store):
    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.mutex = threading.RLock()

    @property
    def cache(self) -> Any:
        return caches[self.alias]

    def _k(self, kind: str, task_name: str) -> str:
        return f"realtime_async:{kind}:{task_name}"

    def _write_state(self, write: Write) -> WriteResult:
        task_name, mode = write.task_name, write.mode
        with self.mutex:
            entry = self.cache.get(self._k("t", task_name)) or {"seq": 0}
            final = entry.get("state") in FINAL_STATES
            refused = None
            if final and mode is WriteMode.UPDATE:
                refused = Outcome.FINAL_KEPT
            elif "state" in entry and not final and mode is WriteMode.CREATE:
                refused = Outcome.UNFINISHED_EXISTS
            if refused is not None:
                if write.end and refused is Outcome.FINAL_KEPT:
                    self._end(task_name)
                return WriteResult(refused, 0, entry["rec"], self.is_cancelled(task_name))
            if mode is WriteMode.CREATE:
                self.cache.delete(self._k("c", task_name))
                entry.pop("log", None)
            entry["seq"] = max(entry["seq"], write.floor) + 1
            entry["state"] = write.state
            log, published = self._append(entry, write)
            entry["rec"] = f'{{"seq":{entry["seq"]},{log}{write.body}'
            if write.meta:
                entry["meta"] = write.meta
            self.cache.set(self._k("t", task_name), entry, write.ttl)
            if write.end:
                self._end(task_name)
            returned = f'{{"seq":{entry["seq"]},{published}{write.body}'
            return WriteResult(Outcome.WRITTEN, entry["seq"], returned, self.is_cancelled(task_name))

    @staticmethod
    def _append(entry: dict[str, Any], write: Write) -> tuple[str, str]:
        """Append ``write.lines`` as ``write.lua`` does; return the record's ``log`` as stored and as published."""
        log = entry.setdefault("log", {"last": 0, "dropped": 0, "lines": []})
        log["last"] += write.lines.dropped
        log["dropped"] += write.lines.dropped
        new = []
        for body in write.lines.bodies():
            log["last"] += 1
            new.append(f'{{"n":{log["last"]},{body}')
        kept: list[str] = log["lines"] + new
        most, budget = write.log_limits
        size = sum(len(line.encode()) for line in kept)
        while kept and (len(kept) > most or size > budget):
            size -= len(kept.pop(0).encode())
            log["dropped"] += 1
        log["lines"] = kept
        if not log["last"]:
            return "", ""
        head = f'"log":{{"last":{log["last"]},"dropped":{log["dropped"]}'
        return head + "},", (head + f',"lines":[{",".join(new)}]}},' if new else head + "},")

    def _end(self, task_name: str) -> None:
        self.release(task_name)
        self.remove_active(task_name)
        self.cache.delete(self._k("hb", task_name))

    def read_state(self, task_name: str) -> str | None:
        entry = self.cache.get(self._k("t", task_name))
        return entry["rec"] if entry else None

    def create_group(self, group: NewGroup) -> None:
        raise ImproperlyConfiguredError(
            "Groups need the Redis store: their parts update the parent atomically across processes. "
            "Set REALTIME_ASYNC['CACHE_ALIAS'] to a Redis cache."
        )

    def settle_group(self, group: GroupLink) -> GroupResult:
        return GroupResult()  # no group was ever created here (create_group refuses)

    def group_parts(self, parent: str) -> dict[str, str]:
        return {}

    def group_entries(self, parent: str) -> dict[str, dict[str, Any]]:
        return {}

    def group_results(self, parts: list[str]) -> list[Any]:
        return []

    def read_log(self, task_name: str, after: int = 0) -> LogRead:
        log = (self.cache.get(self._k("t", task_name)) or {}).get("log") or {"last": 0, "dropped": 0, "lines": []}
        first = log["last"] - len(log["lines"]) + 1
        return LogRead(log["last"], log["dropped"], log["lines"][max(0, after - first + 1) :])

    def read_meta(self, task_name: str) -> dict[str, Any]:
        entry = self.cache.get(self._k("t", task_name)) or {}
        return json.loads(entry["meta"]) if entry.get("meta") else {}

    def delete_task(self, task_name: str) -> None:
        self.cache.delete_many([self._k(kind, task_name) for kind in ("t", "hb", "c")])

    def acquire(self, task_name: str, lock_ids: list[str], ttl: float) -> dict[str, str]:
        with self.mutex:
            held = {lock: holder for lock, holder in self.holders(lock_ids).items() if holder != task_name}
            if held:
                return held
            for lock in lock_ids:
                self.cache.set(self._k("l", lock), task_name, ttl)
            if lock_ids:
                owned = set(self.cache.get(self._k("tl", task_name)) or ()) | set(lock_ids)
                self.cache.set(self._k("tl", task_name), owned, max(ttl, get_settings().progress_ttl))
            return {}

    def release(self, task_name: str, lock_ids: list[str] | None = None) -> int:
        with self.mutex:
            owned = set(self.cache.get(self._k("tl", task_name)) or ())
            targets = set(lock_ids) if lock_ids else set(owned)
            freed = 0
            for lock in targets:
                if self.cache.get(self._k("l", lock)) == task_name:
                    self.cache.delete(self._k("l", lock))
                    freed += 1
            self.cache.set(self._k("tl", task_name), owned - targets)
            return freed

    def holders(self, lock_ids: Iterable[str]) -> dict[str, str]:
        ids = list(lock_ids)
        values = self.cache.get_many([self._k("l", lock) for lock in ids])
        return {lock: values[self._k("l", lock)] for lock in ids if self._k("l", lock) in values}

    def task_locks(self, task_name: str) -> list[str]:
        return sorted(self.cache.get(self._k("tl", task_name)) or ())

    def renew(self, task_name: str, *, lock_ttl: float, heartbeat_timeout: float, state_ttl: float) -> list[str]:
        with self.mutex:
            lost = []
            for lock in self.task_locks(task_name):
                if self.cache.get(self._k("l", lock)) == task_name:
                    self.cache.touch(self._k("l", lock), lock_ttl)
                else:
                    lost.append(lock)
            self.cache.set(self._k("hb", task_name), 1, heartbeat_timeout)
            self.cache.touch(self._k("t", task_name), state_ttl)
            return lost

    def is_alive(self, task_name: str) -> bool:
        return self.cache.get(self._k("hb", task_name)) is not None

    def set_cancel(self, task_name: str, ttl: float) -> None:
        self.cache.set(self._k("c", task_name), 1, ttl)

    def is_cancelled(self, task_name: str) -> bool:
        return self.cache.get(self._k("c", task_name)) is not None

    def add_active(self, task_name: str) -> None:
        with self.mutex:
            self.cache.set(self._k("a", "tasks"), [*self.active(), task_name], None)

    def remove_active(self, task_name: str) -> None:
        with self.mutex:
            self.cache.set(self._k("a", "tasks"), [t for t in self.active() if t != task_name], None)

    def active(self) -> list[str]:
        return list(self.cache.get(self._k("a", "tasks")) or [])
