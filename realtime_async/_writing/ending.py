"""How tasks end: ``AsyncManager``'s ``cancel`` and ``finish`` (the ``Ending`` mixin), for tasks and groups.

A final write releases the task's locks in the same atomic step. A part's
final write may end its group (``_core/store/group.lua``): the group's own
event follows, and with ``fail_fast`` the parts not final yet are cancelled.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Literal

from realtime_async._core.messages import CANCELLED, THEN_NOT_STARTED
from realtime_async._core.records import FINAL_STATES, State, StateRecord, is_final
from realtime_async._core.store import get_store
from realtime_async._writing.launch import retrying
from realtime_async._writing.writer import get_writer
from realtime_async.conf import get_settings

__all__ = ["Ending", "LifecycleEvent"]

logger = logging.getLogger("realtime_async")

#: The events of ``async_task_lifecycle`` and the ``task_lifecycle`` signal.
LifecycleEvent = Literal["create", "start", "progress", "complete", "fail", "cancel", "cleanup"]


class Ending:
    """Cancel and finish tasks; ``AsyncManager`` provides the hooks declared here."""

    def get_progress(self, task_name: str) -> StateRecord | None:
        raise NotImplementedError

    def can_cancel(self, user: Any, record: StateRecord) -> bool:
        raise NotImplementedError

    def _revoke(self, task_names: list[str]) -> None:
        raise NotImplementedError

    def _emit(self, event: Any, task_name: str, *, meta: dict[str, Any] | None = None, **payload: Any) -> None:
        raise NotImplementedError

    def _enqueue(self, spec: dict[str, Any], args: list[Any]) -> None:
        raise NotImplementedError

    def _start(self, parent: str, name: str) -> None:
        """Enqueue a group's waiting part: a chain's next step, or the fan-in step with every part's result.

        A failed enqueue ends that part failed, so the group goes on (or ends) by its policy.
        """
        store = get_store()
        spec = store.read_meta(parent)["pending"][name]
        args = list(spec["args"])
        if spec.get("results"):  # the parts' results in part order
            record = self.get_progress(parent)
            group = record.get("group") if record else None
            names = [f"{parent}.{index}" for index in range(group["parts"] if group else 0)]
            args = [store.group_results(names), *args]
        try:
            self._enqueue(spec, args)
        except Exception:  # the broker is away: this part cannot run, and the group must not wait for it forever
            logger.exception("realtime_async: enqueueing %r of %r failed", name, parent)
            self.finish(name, "failure", error=THEN_NOT_STARTED)

    def cancel(self, task_name: str, user: Any = None) -> bool:
        """Cancel a task the ``user`` may cancel; return False when it is unknown, final or forbidden.

        A queued task is revoked and ends ``cancelled`` at once; a running one
        ends ``cancelled`` at its next ``update_progress`` call.
        """
        record = self.get_progress(task_name)
        if record is None or is_final(record) or not self.can_cancel(user, record):
            return False
        store = get_store()
        store.set_cancel(task_name, get_settings().final_state_ttl)
        if record.get("group"):  # a group: every part not final is cancelled; the group ends with its last part
            self._stop_parts(list(store.group_parts(task_name).items()))
        elif record["state"] == "queued":
            self._stop_parts([(task_name, "queued")], base=record)
        return True

    def _stop_parts(self, parts: list[tuple[str, str]], base: StateRecord | None = None) -> None:
        """Flag tasks to cancel: queued ones are revoked and end ``cancelled`` now, running ones at their next call."""
        store, ttl = get_store(), get_settings().final_state_ttl
        queued = [name for name, state in parts if state == "queued"]
        for name, state in parts:
            if state not in FINAL_STATES:
                store.set_cancel(name, ttl)
        if queued:
            try:
                self._revoke(queued)
            except Exception:  # the cancel flags still stop them before they run
                logger.warning("realtime_async: revoke of %s failed", queued[:5], exc_info=True)
        for name in queued:
            self.finish(name, "cancelled", message=CANCELLED, base=base)

    def finish(
        self,
        task_name: str,
        state: State,
        *,
        message: str | None = None,
        result: Any = None,
        error: str | None = None,
        base: StateRecord | None = None,
        event_payload: dict[str, Any] | None = None,
    ) -> StateRecord | None:
        """Write a final state, releasing locks, registry entry and heartbeat in the same step; emit the event.

        Returns the stored record, or None when the task was already final.
        """
        tracker = None if base else get_writer().finish(task_name)
        found = base or (tracker.record if tracker else None) or self.get_progress(task_name)
        lines = tracker.take_lines() if tracker else None  # the last lines go with the final state
        record: StateRecord = found.copy() if found else {"task": task_name}
        now = time.time()
        record.update({"updated_at": now, "finished_at": now, "eta": None, "result": result, "error": error})
        record["state"] = state
        if message is not None:
            record["message"] = message
        if state == "success":
            record["percent"] = 100.0
        written = retrying(
            f"final state of {task_name!r}",
            lambda: get_writer().commit(record, end=True, lines=lines),
            self.final_write_timeout,
        )
        stored = written.record()
        if not written.written or stored is None:
            return None
        self._ended(task_name, stored, event_payload)
        group = written.group
        part = stored.get("part")
        if group is not None and part is not None:
            if group.final:  # this part ended its group
                self._ended(part["group"], json.loads(group.record_json), None)
                self._stop_parts(list(group.unfinished))
            elif group.start:  # the next step of a chain, or the fan-in step: this write, and no other
                self._start(part["group"], group.start)
        return stored

    def _ended(self, task_name: str, stored: StateRecord, payload: dict[str, Any] | None) -> None:
        state = stored.get("state")
        event: LifecycleEvent = "complete" if state == "success" else "cancel" if state == "cancelled" else "fail"
        self._emit(event, task_name, meta=get_store().read_meta(task_name), record=stored, **(payload or {}))

    #: Seconds ``finish`` keeps retrying a final write while Redis is away (a restart, a failover).
    final_write_timeout: float = 60.0
