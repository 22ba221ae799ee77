"""Cleanup of lost tasks and stale registry entries.

Run by ``AsyncManager.cleanup_completed_tasks()``, the ``realtime_async_cleanup``
command and the ``realtime_async.schedules.cleanup_async_artifacts`` beat task (defined in ``realtime_async.tasks``).
It never touches a running task whose heartbeat is alive, nor a queued task
younger than ``QUEUED_TIMEOUT``. Locks need no sweep: each has a TTL, renewed
only while its task runs, and finishing a task releases its locks. Attached
files are deleted once their ``FILE_RETENTION`` passed (``files``: their storage names).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from realtime_async._core.messages import LOST_ERROR
from realtime_async._core.records import FINAL_STATES, StateRecord
from realtime_async._core.store import get_store
from realtime_async._writing.files import sweep
from realtime_async._writing.writer import group_link
from realtime_async.conf import get_settings

if TYPE_CHECKING:
    from realtime_async.async_manager import AsyncManager

__all__ = ["LOST_ERROR", "cleanup"]

# LOST_ERROR is stored in English and translated when shown (_core/messages.py).


def cleanup(manager: AsyncManager, *, dry_run: bool = False) -> dict[str, Any]:
    """Return ``{"active", "cleaned", "skipped", "files", "dry_run"}``; see the module docstring."""
    store = get_store()
    settings = get_settings()
    names = store.active()
    cleaned: list[dict[str, str]] = []
    skipped: list[dict[str, str]] = []
    for name in names:
        record = manager.get_progress(name)
        state = record["state"] if record else None
        if record is None:
            reason = "no state record (expired or removed)"
        elif state in FINAL_STATES:
            reason = f"already {state}"
        elif record.get("group"):  # no worker, no heartbeat: a group ends with its parts
            if _settle(manager, name, record, cleaned, dry_run):
                manager._emit("cleanup", name, record=manager.get_progress(name), reason=_SETTLED)
            else:
                skipped.append({"task": name, "reason": "a group whose parts have not all ended"})
            continue
        elif state == "running" and store.is_alive(name):
            skipped.append({"task": name, "reason": "running with a live heartbeat"})
            continue
        elif state == "running":
            reason = "heartbeat expired: worker lost"
        elif time.time() - (record.get("created_at") or 0) > settings.queued_timeout:
            reason = "queued longer than QUEUED_TIMEOUT"
        else:
            skipped.append({"task": name, "reason": "queued"})
            continue
        cleaned.append({"task": name, "reason": reason, "state": state or "unknown"})
        if dry_run:
            continue
        if record is not None and state not in FINAL_STATES:
            # The final write releases the locks and the registry entry in the same step.
            manager.finish(name, "lost", error=LOST_ERROR, event_payload={"reason": reason})
        else:
            store.release(name)
            store.remove_active(name)
        manager._emit("cleanup", name, record=manager.get_progress(name), reason=reason)
    # Attached files whose FILE_RETENTION passed, found by listing the storage (_writing/files.py).
    files = sweep(dry_run=dry_run)
    return {"active": len(names), "cleaned": cleaned, "skipped": skipped, "files": files, "dry_run": dry_run}


_SETTLED = "every part ended, but not the group: its final write was lost"


def _settle(
    manager: AsyncManager, name: str, record: StateRecord, cleaned: list[dict[str, str]], dry_run: bool
) -> bool:
    """End a group whose parts all ended (its last part's write was lost); True when it did (or would)."""
    store = get_store()
    parts = store.group_parts(name)
    if not parts or not all(state in FINAL_STATES for state in parts.values()):
        return False
    cleaned.append({"task": name, "reason": _SETTLED, "state": record["state"]})
    if not dry_run:
        result = store.settle_group(group_link(name, record.get("owner")))
        if result.final:
            manager._ended(name, json.loads(result.record_json), {"reason": _SETTLED})
    return True
