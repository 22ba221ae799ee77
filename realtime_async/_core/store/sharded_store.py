"""The store on several Redis servers (``SHARDS``): each task on one of them, the locks on the first.

Every operation on one task goes to the task's shard (``shards.placement``), so
an update costs that shard alone: one script, as on a single server. What spans
tasks is split by shard: reading many records is one pipeline per shard, the
active registry is one per shard (``active`` joins them).

Conflict locks stay atomic by living together on the first shard ("the lock
shard"), with each task's set of the locks it holds. The write script cannot
free them in the step that ends a task on another shard, so ``ShardedStore``
frees them right after it, on the lock shard: in between, which is one round
trip, a launch that wants them is refused as if the task still ran; if the
process dies in between, they expire with ``LOCK_TTL`` as a crashed task's do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from realtime_async._core.store.base import GroupLink, GroupResult, LogRead, NewGroup, Store, Write, WriteResult
from realtime_async._core.store.redis_store import RedisStore
from realtime_async._core.store.shards import placement

__all__ = ["ShardedStore"]

_T = TypeVar("_T")


class ShardedStore(Store):
    """``RedisStore`` on each of ``shards``; a task's operations go to its shard (see the module's docstring)."""

    def __init__(self, shards: list[RedisStore], channel_prefix: str) -> None:
        self.shards: tuple[RedisStore, ...] = tuple(shards)
        #: Where conflict locks and each task's lock set live.
        self.locks = self.shards[0]
        #: The channel layer's prefix: a task is placed as the layer places its group's channel.
        self.channel_prefix = channel_prefix

    def close(self) -> None:
        for shard in self.shards:
            shard.close()

    def shard_index(self, task_name: str) -> int:
        """The index in ``shards`` of the server that holds ``task_name``."""
        return placement(task_name, len(self.shards), self.channel_prefix)

    def shard(self, task_name: str) -> RedisStore:
        """The server that holds ``task_name``."""
        return self.shards[self.shard_index(task_name)]

    def _grouped(self, names: list[str]) -> dict[RedisStore, list[int]]:
        """The indexes of ``names``, by the shard that holds each."""
        groups: dict[RedisStore, list[int]] = {}
        for index, name in enumerate(names):
            groups.setdefault(self.shard(name), []).append(index)
        return groups

    def _by_shard(self, names: list[str], read: Callable[[RedisStore, list[str]], list[_T]]) -> list[_T]:
        """``read(shard, its names)`` on each shard holding some of ``names``, answers back in ``names``' order."""
        answers: list[Any] = [None] * len(names)
        for shard, indexes in self._grouped(names).items():
            for index, answer in zip(indexes, read(shard, [names[i] for i in indexes]), strict=True):
                answers[index] = answer
        return answers

    def _release_elsewhere(self, shard: RedisStore, task_name: str) -> None:
        if shard is not self.locks:
            self.locks.release(task_name)

    # -- writes ------------------------------------------------------------
    def _write_state(self, write: Write) -> WriteResult:
        shard = self.shard(write.task_name)
        result = shard._write_state(write)
        if write.end:
            self._release_elsewhere(shard, write.task_name)
        if write.group is not None and result.group is not None and result.group.final:
            self._release_elsewhere(shard, write.group.parent)
        return result

    def write_many(self, writes: list[Write]) -> list[WriteResult]:
        results: list[Any] = [None] * len(writes)
        for shard, indexes in self._grouped([write.task_name for write in writes]).items():
            for index, result in zip(indexes, shard.write_many([writes[i] for i in indexes]), strict=True):
                results[index] = result
                if writes[index].end:
                    self._release_elsewhere(shard, writes[index].task_name)
        return results

    # -- groups: a group's parts live on its parent's shard --------------------
    def create_group(self, group: NewGroup) -> None:
        self.shard(group.parent).create_group(group)

    def settle_group(self, group: GroupLink) -> GroupResult:
        shard = self.shard(group.parent)
        result = shard.settle_group(group)
        if result.final:
            self._release_elsewhere(shard, group.parent)
        return result

    def group_parts(self, parent: str) -> dict[str, str]:
        return self.shard(parent).group_parts(parent)

    def group_results(self, parts: list[str]) -> list[Any]:
        return self._by_shard(parts, RedisStore.group_results)

    def group_entries(self, parent: str) -> dict[str, dict[str, Any]]:
        return self.shard(parent).group_entries(parent)

    # -- one task ------------------------------------------------------------
    def read_state(self, task_name: str) -> str | None:
        return self.shard(task_name).read_state(task_name)

    def read_states(self, task_names: list[str]) -> list[str | None]:
        """The records of ``task_names`` (JSON or None), in one round trip per shard that holds some."""
        return self._by_shard(task_names, RedisStore.read_states)

    def read_log(self, task_name: str, after: int = 0) -> LogRead:
        return self.shard(task_name).read_log(task_name, after)

    def read_meta(self, task_name: str) -> dict[str, Any]:
        return self.shard(task_name).read_meta(task_name)

    def delete_task(self, task_name: str) -> None:
        self.shard(task_name).delete_task(task_name)

    def is_alive(self, task_name: str) -> bool:
        return self.shard(task_name).is_alive(task_name)

    def set_cancel(self, task_name: str, ttl: float) -> None:
        self.shard(task_name).set_cancel(task_name, ttl)

    def is_cancelled(self, task_name: str) -> bool:
        return self.shard(task_name).is_cancelled(task_name)

    def renew(self, task_name: str, *, lock_ttl: float, heartbeat_timeout: float, state_ttl: float) -> list[str]:
        shard = self.shard(task_name)
        lost = shard.renew(task_name, lock_ttl=lock_ttl, heartbeat_timeout=heartbeat_timeout, state_ttl=state_ttl)
        if shard is self.locks:
            return lost
        return self.locks.renew_locks(task_name, lock_ttl=lock_ttl, state_ttl=state_ttl)

    # -- locks: all on the lock shard ----------------------------------------
    def acquire(self, task_name: str, lock_ids: list[str], ttl: float) -> dict[str, str]:
        return self.locks.acquire(task_name, lock_ids, ttl)

    def release(self, task_name: str, lock_ids: list[str] | None = None) -> int:
        return self.locks.release(task_name, lock_ids)

    def holders(self, lock_ids: Iterable[str]) -> dict[str, str]:
        return self.locks.holders(lock_ids)

    def task_locks(self, task_name: str) -> list[str]:
        return self.locks.task_locks(task_name)

    # -- the active registry: one per shard ------------------------------------
    def add_active(self, task_name: str) -> None:
        self.shard(task_name).add_active(task_name)

    def add_active_many(self, task_names: list[str]) -> None:
        for shard, indexes in self._grouped(task_names).items():
            shard.add_active_many([task_names[index] for index in indexes])

    def remove_active(self, task_name: str) -> None:
        self.shard(task_name).remove_active(task_name)

    def active(self) -> list[str]:
        return [name for shard in self.shards for name in shard.active()]
