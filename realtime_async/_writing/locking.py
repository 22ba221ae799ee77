"""``AsyncManager``'s conflict locks and registry of active tasks (the ``Locking`` mixin)."""

from __future__ import annotations

from realtime_async._core.locks import ConflictIds, from_lock_ids, to_lock_ids
from realtime_async._core.naming import validate_task_name
from realtime_async._core.store import get_store
from realtime_async.conf import get_settings

__all__ = ["Locking"]


class Locking:
    """Reserve, release and inspect the objects tasks work on; every call is atomic in the store."""

    def add_conflict_ids(self, task_name: str, conflict_ids: ConflictIds) -> bool:
        """Reserve every object or none; True when ``task_name`` now holds them all."""
        validate_task_name(task_name)
        lock_ids = to_lock_ids(conflict_ids)
        return not lock_ids or not get_store().acquire(task_name, lock_ids, get_settings().lock_ttl)

    def remove_conflict_ids(self, task_name: str, conflict_ids: ConflictIds | None = None) -> int:
        """Release the given objects (all of the task's when None); return how many were freed.

        Only locks ``task_name`` still holds are released: one that expired and
        was taken by another task stays with that task.
        """
        return get_store().release(task_name, to_lock_ids(conflict_ids) or None)

    def check_conflict(self, conflict_ids: ConflictIds) -> dict[str, dict[str, str]]:
        """Who holds what: ``{"app_label.model": {"pk": task_name}}`` for the held ones."""
        return from_lock_ids(get_store().holders(to_lock_ids(conflict_ids)))

    def holds_locks(self, task_name: str) -> bool:
        """Whether ``task_name`` still holds every lock it reserved (check before writing)."""
        store = get_store()
        mine = store.task_locks(task_name)
        held = store.holders(mine)
        return all(held.get(lock) == task_name for lock in mine)

    def remove_active_task(self, task_name: str) -> None:
        """Drop a task from the registry of active tasks (its record stays)."""
        get_store().remove_active(task_name)

    def active_tasks(self) -> list[str]:
        """Names of tasks launched and not yet finished, oldest first."""
        return get_store().active()
