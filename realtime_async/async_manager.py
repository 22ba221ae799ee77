"""``AsyncManager``: launch background work, report its progress, lock what it touches.

Subclass it to change the lifecycle hooks or permissions and point
``REALTIME_ASYNC["ASYNC_MANAGER_CLASS_PATH"]`` at the subclass, so launch sites,
workers, consumers and views all resolve the same class.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, TypeVar

from django.db import transaction
from django.urls import URLPattern, path

from realtime_async._core import access, managers
from realtime_async._core.locks import ConflictIds, from_lock_ids, to_lock_ids
from realtime_async._core.naming import new_task_name, validate_task_name
from realtime_async._core.records import StageState, State, StateRecord, is_final
from realtime_async._core.store import Store, WriteMode, get_store
from realtime_async._writing.cleanup import cleanup
from realtime_async._writing.launch import OnCommit, callable_path, default_title, retrying, title_text, user_info
from realtime_async._writing.stages import StageSpec, enter, leave, make_stages, stage_context
from realtime_async._writing.track import track as track_items
from realtime_async._writing.writer import Tracker, get_writer
from realtime_async.conf import get_settings
from realtime_async.exceptions import ConflictError, TaskCancelled
from realtime_async.signals import task_lifecycle
from realtime_async.tasks import run_async_task
from realtime_async.views import cancel_view, progress_view

__all__ = ["AsyncManager", "LifecycleEvent"]

logger = logging.getLogger("realtime_async")
_T = TypeVar("_T")

#: The events of ``async_task_lifecycle`` and the ``task_lifecycle`` signal.
LifecycleEvent = Literal["create", "start", "progress", "complete", "fail", "cancel", "cleanup"]


class AsyncManager:
    """Launches tasks on Celery and keeps their state, locks and lifecycle consistent.

    ``AsyncManager()`` makes an instance of the configured class
    (``ASYNC_MANAGER_CLASS_PATH``): the project's hooks and permissions apply
    wherever the base class is used. An instance of a subclass, or an explicit
    ``manager_class=``, is used as given.
    """

    def __new__(cls) -> AsyncManager:
        if cls is AsyncManager:
            cls = managers.configured_class()
        return super().__new__(cls)

    # -- resolving -------------------------------------------------------
    @classmethod
    def resolve_manager(cls, manager_class: type[AsyncManager] | str | None = None) -> AsyncManager:
        """An instance of ``manager_class`` (a class or dotted path), else of the configured class."""
        return managers.resolve_manager(manager_class)

    @classmethod
    def class_path(cls) -> str:
        """The dotted path workers import this class by."""
        return managers.class_path(cls)

    # -- launching -------------------------------------------------------
    def launch_async_task(
        self,
        func: str | Callable[..., Any],
        *args: Any,
        task_name: str | None = None,
        title: str | None = None,
        stages: StageSpec | None = None,
        conflict_ids: ConflictIds | None = None,
        user: Any = None,
        affected_objects: Iterable[Any] | None = None,
        task_kwargs: dict[str, Any] | None = None,
        manager_class: type[AsyncManager] | str | None = None,
        queue: str | None = None,
        countdown: float | None = None,
        **celery_options: Any,
    ) -> str:
        """Reserve locks, record the task as queued, enqueue it (on commit), emit ``create``.

        ``title`` is what people see the task called (cut to 200 characters); without
        one it is the first line of ``func``'s docstring, else its name.
        Raises ``ConflictError`` when another task holds any of ``conflict_ids``
        and ``ValueError`` when ``task_name`` belongs to a task still unfinished.
        """
        task_name = validate_task_name(task_name) if task_name is not None else new_task_name()
        lock_ids = to_lock_ids(conflict_ids)
        declared = make_stages(stages)
        func_path = callable_path(func)
        manager_path = manager_class if isinstance(manager_class, str) else (manager_class or type(self)).class_path()
        owner = user_info(user)
        meta = {
            "user": owner,
            "affected_objects": [str(obj) for obj in affected_objects or ()],
            "task_kwargs": dict(task_kwargs or {}),
            "func": func_path,
            "locks": lock_ids,
        }
        store = get_store()
        if lock_ids:
            # Locks are re-entrant per task name: check the name is free before reserving under it
            # (without locks, the CREATE write below refuses an unfinished task by itself).
            self._refuse_unfinished(task_name)
            self._reserve(store, task_name, lock_ids)
        now = time.time()
        record: StateRecord = {
            "task": task_name,
            "title": title_text(title) or default_title(func),
            "stages": declared,
            "state": "queued",
            "owner": owner["id"] if owner else None,
            "created_at": now,
            "updated_at": now,
        }
        try:
            created = get_writer().commit(record, mode=WriteMode.CREATE, meta=meta)
        except BaseException:
            store.release(task_name)
            raise
        if not created.written:  # a launch of the same name won a race; its locks are its own
            raise ValueError(f"Task name {task_name!r} belongs to a task that has not finished.")
        queued = created.record()
        store.add_active(task_name)

        options = {"task_id": task_name, "queue": queue, "countdown": countdown, **celery_options}
        options = {key: value for key, value in options.items() if value is not None}
        call_kwargs = {
            "func_path": func_path,
            "args": list(args),
            "kwargs": meta["task_kwargs"],
            "task_name": task_name,
            "manager_path": manager_path,
        }

        def enqueue() -> None:
            try:
                run_async_task.apply_async(kwargs=call_kwargs, **options)
            except BaseException:
                self._forget(task_name)
                raise
            self._emit("create", task_name, meta=meta, record=queued)

        connection = transaction.get_connection()
        if connection.in_atomic_block:
            transaction.on_commit(OnCommit(enqueue, lambda: self._forget(task_name)))
        else:
            enqueue()
        return task_name

    def _refuse_unfinished(self, task_name: str) -> None:
        record = self.get_progress(task_name)
        if record is not None and not is_final(record):
            raise ValueError(f"Task name {task_name!r} belongs to a task that has not finished.")

    def _reserve(self, store: Store, task_name: str, lock_ids: list[str]) -> None:
        held = store.acquire(task_name, lock_ids, get_settings().lock_ttl)
        if held:
            raise ConflictError(task_name, from_lock_ids(held))

    def _forget(self, task_name: str) -> None:
        """Undo a launch that will never run: locks, record and registry entry."""
        store = get_store()
        store.release(task_name)
        store.delete_task(task_name)
        store.remove_active(task_name)

    # -- progress --------------------------------------------------------
    def update_progress(
        self,
        task_key: str | None,
        message: str | None = None,
        *,
        current: float | None = None,
        total: float | None = None,
        percent: float | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        """Report progress; cheap in a hot loop (coalesced), never raises on broadcast errors.

        Inside a running task it raises ``TaskCancelled`` once the task was cancelled.
        """
        if not task_key:
            return  # the worker runs outside realtime_async (a test, a shell): nothing to report
        self._written(task_key, *get_writer().update(task_key, message, current, total, percent, data))

    def _change(self, task_key: str | None, apply: Callable[[StateRecord], object], *, check: bool = True) -> None:
        """Change a running task's record (stages); like ``update_progress``, it raises once the task is cancelled."""
        if task_key:
            self._written(task_key, *get_writer().change(task_key, apply), check=check)

    def _written(self, task_key: str, written: bool, tracker: Tracker | None, *, check: bool = True) -> None:
        if tracker is None:
            return
        if check and tracker.cancel_requested and not tracker.finished:
            raise TaskCancelled(task_key)
        if written:
            self._emit("progress", task_key, meta=tracker.meta, record=tracker.record.copy())

    def stage(self, task_key: str | None, name: str) -> contextlib.AbstractContextManager[None]:
        """``with manager.stage(task_key, "Process"):`` marks the stage active, then done, failed or cancelled.

        Inside it, ``update_progress`` moves the stage's own bar. ``ValueError`` names
        the task's stages when ``name`` is not one of them.
        """
        return stage_context(self, task_key, name)

    def declare_stages(self, task_key: str | None, stages: StageSpec) -> None:
        """Declare (or replace) the stages of a running task, from its worker; all pending."""
        declared = make_stages(stages)
        self._change(task_key, lambda record: record.update({"stages": declared, "stage": None}))

    def _stage_change(self, task_key: str | None, name: str, state: StageState | None) -> None:
        """Enter stage ``name`` (``state`` None) or end it as ``state``."""
        if state is None:
            self._change(task_key, lambda record: enter(record, name))
        else:  # the end of a stage never raises TaskCancelled: it would hide what ended it
            self._change(task_key, lambda record: leave(record, name, state), check=False)

    def track(
        self, task_key: str | None, iterable: Iterable[_T], *, total: float | None = None, message: str | None = None
    ) -> Iterator[_T]:
        """Yield the items of ``iterable``, reporting how many are done: ``for row in manager.track(task_key, rows):``.

        ``total`` defaults to ``len(iterable)`` when it has one (a generator reports
        its count, with no percent, until it ends); ``message`` may use ``{n}`` and
        ``{total}``. After a cancel it raises ``TaskCancelled`` at the next item.
        """
        return track_items(self, task_key, iterable, total=total, message=message)

    def get_progress(self, task_name: str) -> StateRecord | None:
        """The task's state record, or None for an unknown (or expired) task."""
        try:
            validate_task_name(task_name)
        except ValueError:
            return None
        stored = get_store().read_state(task_name)
        return json.loads(stored) if stored else None

    def is_cancelled(self, task_key: str) -> bool:
        """Whether someone asked for ``task_key`` to be cancelled."""
        return get_store().is_cancelled(task_key)

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
        if record["state"] == "queued":
            try:
                run_async_task.app.control.revoke(task_name)
            except Exception:  # the cancel flag still stops it before it runs
                logger.warning("realtime_async: revoke of %r failed", task_name, exc_info=True)
            self.finish(task_name, "cancelled", message="Cancelled.", base=record)
        return True

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
        found = base or get_writer().finish(task_name) or self.get_progress(task_name)
        record: StateRecord = found.copy() if found else {"task": task_name}
        now = time.time()
        record.update({"updated_at": now, "finished_at": now, "eta": None, "result": result, "error": error})
        record["state"] = state
        if message is not None:
            record["message"] = message
        if state == "success":
            record["percent"] = 100.0
        written = retrying(
            f"final state of {task_name!r}", lambda: get_writer().commit(record, end=True), self.final_write_timeout
        )
        stored = written.record()
        if not written.written or stored is None:
            return None
        event: LifecycleEvent = "complete" if state == "success" else "cancel" if state == "cancelled" else "fail"
        meta = get_store().read_meta(task_name)
        self._emit(event, task_name, meta=meta, record=stored, **(event_payload or {}))
        return stored

    #: Seconds ``finish`` keeps retrying a final write while Redis is away (a restart, a failover).
    final_write_timeout: float = 60.0

    # -- locks -----------------------------------------------------------
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

    # -- lifecycle and permissions --------------------------------------
    def async_task_lifecycle(self, event: LifecycleEvent, task_name: str, **payload: Any) -> None:
        """Called on create, start, progress, complete, fail, cancel and cleanup; override it."""

    def _emit(
        self, event: LifecycleEvent, task_name: str, *, meta: dict[str, Any] | None = None, **payload: Any
    ) -> None:
        meta = meta if meta is not None else get_store().read_meta(task_name)
        payload = {
            "user": meta.get("user"),
            "affected_objects": meta.get("affected_objects", []),
            "task_kwargs": meta.get("task_kwargs", {}),
            **payload,
        }
        try:
            self.async_task_lifecycle(event, task_name, **payload)
        except Exception:
            logger.exception("realtime_async: lifecycle hook failed for %s of %r", event, task_name)
        for receiver, error in task_lifecycle.send_robust(type(self), event=event, task_name=task_name, **payload):
            if isinstance(error, Exception):
                logger.error("realtime_async: %r failed for %s of %r", receiver, event, task_name, exc_info=error)

    def can_view(self, user: Any, record: StateRecord) -> bool:
        """Whether ``user`` may watch the task of ``record``: its owner and staff by default."""
        if user is None or not getattr(user, "is_authenticated", False):
            return False
        if getattr(user, "is_staff", False):
            return True
        return record.get("owner") is not None and str(record["owner"]) == str(user.pk)

    def can_cancel(self, user: Any, record: StateRecord) -> bool:
        """Whether ``user`` may cancel the task of ``record``: the same rule as ``can_view``."""
        return self.can_view(user, record)

    # -- watch tokens ----------------------------------------------------
    def make_watch_token(self, task_name: str) -> str:
        """A signed token that lets its bearer watch ``task_name`` until it expires."""
        return access.make_watch_token(task_name)

    def check_watch_token(self, token: str, task_name: str) -> bool:
        """Whether ``token`` is a valid, unexpired watch token for ``task_name``."""
        return access.check_watch_token(token, task_name)

    # -- urls and cleanup ------------------------------------------------
    @classmethod
    def get_url(cls, name: str = "async-progress") -> URLPattern:
        """The polling endpoint's URL pattern, to add to a project's ``urlpatterns``."""
        return path("realtime-async/progress/<str:task_name>/", progress_view, name=name)

    @classmethod
    def get_cancel_url(cls, name: str = "async-cancel") -> URLPattern:
        """The cancel endpoint's URL pattern (POST with CSRF), to add to ``urlpatterns``."""
        return path("realtime-async/cancel/<str:task_name>/", cancel_view, name=name)

    def cleanup_completed_tasks(self, *, dry_run: bool = False) -> dict[str, Any]:
        """Find lost tasks and stale registry entries; see ``realtime_async._writing.cleanup``."""
        return cleanup(self, dry_run=dry_run)
