"""``AsyncManager``: launch background work, report its progress, lock what it touches.

Subclass it to change the lifecycle hooks or permissions and point
``REALTIME_ASYNC["ASYNC_MANAGER_CLASS_PATH"]`` at the subclass, so launch sites,
workers, consumers and views all resolve the same class.
"""

from __future__ import annotations

import datetime
import json
import logging
import time
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from django.core import signing
from django.db import transaction
from django.urls import URLPattern, path
from django.utils.module_loading import import_string

from realtime_async import _store
from realtime_async.conf import get_settings
from realtime_async.exceptions import ConflictError, TaskCancelled
from realtime_async.locks import ConflictIds, from_lock_ids, to_lock_ids
from realtime_async.naming import new_task_name, validate_task_name
from realtime_async.progress import FINAL_STATES, get_writer
from realtime_async.signals import task_lifecycle

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.auth.models import AnonymousUser

    User = AbstractBaseUser | AnonymousUser

__all__ = ["LIFECYCLE_EVENTS", "AsyncManager"]

logger = logging.getLogger("realtime_async")
_T = TypeVar("_T")

LIFECYCLE_EVENTS = ("create", "start", "progress", "complete", "fail", "cancel", "cleanup")
_WATCH_SALT = "realtime_async.watch"


def _callable_path(func: str | Callable[..., Any]) -> str:
    if isinstance(func, str):
        return func
    module, qualname = getattr(func, "__module__", None), getattr(func, "__qualname__", "")
    if not module or "<" in qualname:
        raise ValueError(f"{func!r} cannot be imported by a worker: pass a module-level function or its dotted path.")
    return f"{module}.{qualname}"


def _user_info(user: Any) -> dict[str, Any] | None:
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return {"id": user.pk, "label": str(user)}


class AsyncManager:
    """Launches tasks on Celery and keeps their state, locks and lifecycle consistent."""

    # -- resolving -------------------------------------------------------
    @classmethod
    def resolve_manager(cls, manager_class: type[AsyncManager] | str | None = None) -> AsyncManager:
        """An instance of ``manager_class`` (a class or dotted path), else of the configured class."""
        candidate: object = manager_class or get_settings().async_manager_class_path
        if isinstance(candidate, str):
            try:
                candidate = import_string(candidate)
            except ImportError:
                logger.error("realtime_async: cannot import manager %r; using AsyncManager", candidate)
                candidate = AsyncManager
        if not (isinstance(candidate, type) and issubclass(candidate, AsyncManager)):
            logger.error("realtime_async: %r is not an AsyncManager subclass; using AsyncManager", candidate)
            candidate = AsyncManager
        return candidate()

    @classmethod
    def class_path(cls) -> str:
        return f"{cls.__module__}.{cls.__qualname__}"

    # -- launching -------------------------------------------------------
    def launch_async_task(
        self,
        func: str | Callable[..., Any],
        *args: Any,
        task_name: str | None = None,
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

        Raises ``ConflictError`` when another task holds any of ``conflict_ids``
        and ``ValueError`` when ``task_name`` belongs to a task still unfinished.
        """
        from realtime_async.tasks import run_async_task

        task_name = validate_task_name(task_name) if task_name is not None else new_task_name()
        lock_ids = to_lock_ids(conflict_ids)
        func_path = _callable_path(func)
        manager_path = manager_class if isinstance(manager_class, str) else (manager_class or type(self)).class_path()
        owner = _user_info(user)
        meta = {
            "user": owner,
            "affected_objects": [str(obj) for obj in affected_objects or ()],
            "task_kwargs": dict(task_kwargs or {}),
            "func": func_path,
            "locks": lock_ids,
        }
        store = _store.get_store()
        if lock_ids:
            # Locks are re-entrant per task name: check the name is free before reserving under it
            # (without locks, the CREATE write below refuses an unfinished task by itself).
            self._refuse_unfinished(task_name)
            self._reserve(store, task_name, lock_ids)
        now = time.time()
        record = {
            "task": task_name,
            "state": "queued",
            "owner": owner["id"] if owner else None,
            "created_at": now,
            "updated_at": now,
        }
        try:
            seq, queued, _ = get_writer().commit(record, mode=_store.CREATE, meta=meta)
        except BaseException:
            store.release(task_name)
            raise
        if seq == -2:  # a launch of the same name won a race; its locks are its own
            raise ValueError(f"Task name {task_name!r} belongs to a task that has not finished.")
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
            transaction.on_commit(_OnCommit(enqueue, lambda: self._forget(task_name)))
        else:
            enqueue()
        return task_name

    def _refuse_unfinished(self, task_name: str) -> None:
        record = self.get_progress(task_name)
        if record is not None and record["state"] not in FINAL_STATES:
            raise ValueError(f"Task name {task_name!r} belongs to a task that has not finished.")

    def _reserve(self, store: _store.Store, task_name: str, lock_ids: list[str]) -> None:
        held = store.acquire(task_name, lock_ids, get_settings().lock_ttl)
        if held:
            raise ConflictError(task_name, from_lock_ids(held))

    def _forget(self, task_name: str) -> None:
        """Undo a launch that will never run: locks, record and registry entry."""
        store = _store.get_store()
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
        written, tracker = get_writer().update(task_key, message, current, total, percent, data)
        if tracker is None:
            return
        if tracker.cancel_requested and not tracker.finished:
            raise TaskCancelled(task_key)
        if written:
            self._emit("progress", task_key, meta=tracker.meta, record=dict(tracker.record))

    def get_progress(self, task_name: str) -> dict[str, Any] | None:
        """The task's state record, or None for an unknown (or expired) task."""
        try:
            validate_task_name(task_name)
        except ValueError:
            return None
        stored = _store.get_store().read_state(task_name)
        return json.loads(stored) if stored else None

    def is_cancelled(self, task_key: str) -> bool:
        """Whether someone asked for ``task_key`` to be cancelled."""
        return _store.get_store().is_cancelled(task_key)

    def cancel(self, task_name: str, user: Any = None) -> bool:
        """Cancel a task the ``user`` may cancel; return False when it is unknown, final or forbidden.

        A queued task is revoked and ends ``cancelled`` at once; a running one
        ends ``cancelled`` at its next ``update_progress`` call.
        """
        record = self.get_progress(task_name)
        if record is None or record["state"] in FINAL_STATES or not self.can_cancel(user, record):
            return False
        store = _store.get_store()
        store.set_cancel(task_name, get_settings().final_state_ttl)
        if record["state"] == "queued":
            from realtime_async.tasks import run_async_task

            try:
                run_async_task.app.control.revoke(task_name)
            except Exception:  # the cancel flag still stops it before it runs
                logger.warning("realtime_async: revoke of %r failed", task_name, exc_info=True)
            self.finish(task_name, "cancelled", message="Cancelled.", base=record)
        return True

    def finish(
        self,
        task_name: str,
        state: str,
        *,
        message: str | None = None,
        result: Any = None,
        error: str | None = None,
        base: dict[str, Any] | None = None,
        event_payload: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Write a final state, releasing locks, registry entry and heartbeat in the same step; emit the event.

        Returns the stored record, or None when the task was already final.
        """
        record = dict(base or get_writer().finish(task_name) or self.get_progress(task_name) or {"task": task_name})
        now = time.time()
        record.update(state=state, updated_at=now, finished_at=now, eta=None, result=result, error=error)
        if message is not None:
            record["message"] = message
        if state == "success":
            record["percent"] = 100.0
        seq, stored, _ = self._retrying(f"final state of {task_name!r}", lambda: get_writer().commit(record, end=True))
        if seq < 0:
            return None
        event = {"success": "complete", "cancelled": "cancel"}.get(state, "fail")
        meta = _store.get_store().read_meta(task_name)
        self._emit(event, task_name, meta=meta, record=stored, **(event_payload or {}))
        return stored

    #: Seconds ``finish`` keeps retrying a final write while Redis is away (a restart, a failover).
    final_write_timeout: float = 60.0

    def _retrying(self, what: str, func: Callable[[], _T]) -> _T:
        # A final state must not be lost to a Redis blip: retry with backoff, then give up loudly.
        deadline, delay = time.monotonic() + self.final_write_timeout, 0.05
        while True:
            try:
                return func()
            except Exception as exc:
                if time.monotonic() + delay > deadline:
                    logger.error("realtime_async: %s failed for good (%s)", what, type(exc).__name__)
                    raise
                logger.warning("realtime_async: %s failed (%s); retrying", what, type(exc).__name__)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    # -- locks -----------------------------------------------------------
    def add_conflict_ids(self, task_name: str, conflict_ids: ConflictIds) -> bool:
        """Reserve every object or none; True when ``task_name`` now holds them all."""
        validate_task_name(task_name)
        lock_ids = to_lock_ids(conflict_ids)
        return not lock_ids or not _store.get_store().acquire(task_name, lock_ids, get_settings().lock_ttl)

    def remove_conflict_ids(self, task_name: str, conflict_ids: ConflictIds | None = None) -> int:
        """Release the given objects (all of the task's when None); return how many were freed.

        Only locks ``task_name`` still holds are released: one that expired and
        was taken by another task stays with that task.
        """
        return _store.get_store().release(task_name, to_lock_ids(conflict_ids) or None)

    def check_conflict(self, conflict_ids: ConflictIds) -> dict[str, dict[str, str]]:
        """Who holds what: ``{"app_label.model": {"pk": task_name}}`` for the held ones."""
        return from_lock_ids(_store.get_store().holders(to_lock_ids(conflict_ids)))

    def holds_locks(self, task_name: str) -> bool:
        """Whether ``task_name`` still holds every lock it reserved (check before writing)."""
        store = _store.get_store()
        mine = store.task_locks(task_name)
        held = store.holders(mine)
        return all(held.get(lock) == task_name for lock in mine)

    def remove_active_task(self, task_name: str) -> None:
        """Drop a task from the registry of active tasks (its record stays)."""
        _store.get_store().remove_active(task_name)

    def active_tasks(self) -> list[str]:
        """Names of tasks launched and not yet finished, oldest first."""
        return _store.get_store().active()

    # -- lifecycle and permissions --------------------------------------
    def async_task_lifecycle(self, event: str, task_name: str, **payload: Any) -> None:
        """Called on create, start, progress, complete, fail, cancel and cleanup; override it."""

    def _emit(self, event: str, task_name: str, *, meta: dict[str, Any] | None = None, **payload: Any) -> None:
        meta = meta if meta is not None else _store.get_store().read_meta(task_name)
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

    def can_view(self, user: Any, record: dict[str, Any]) -> bool:
        """Whether ``user`` may watch the task of ``record``: its owner and staff by default."""
        if user is None or not getattr(user, "is_authenticated", False):
            return False
        if getattr(user, "is_staff", False):
            return True
        return record.get("owner") is not None and str(record["owner"]) == str(user.pk)

    def can_cancel(self, user: Any, record: dict[str, Any]) -> bool:
        """Whether ``user`` may cancel the task of ``record``: the same rule as ``can_view``."""
        return self.can_view(user, record)

    # -- watch tokens ----------------------------------------------------
    def make_watch_token(self, task_name: str) -> str:
        """A signed token that lets its bearer watch ``task_name`` until it expires."""
        return signing.TimestampSigner(salt=_WATCH_SALT).sign(validate_task_name(task_name))

    def check_watch_token(self, token: str, task_name: str) -> bool:
        """Whether ``token`` is a valid, unexpired watch token for ``task_name``."""
        try:
            value = signing.TimestampSigner(salt=_WATCH_SALT).unsign(
                token, max_age=datetime.timedelta(seconds=get_settings().watch_token_max_age)
            )
        except (signing.BadSignature, TypeError):
            return False
        return value == task_name

    # -- urls and cleanup ------------------------------------------------
    @classmethod
    def get_url(cls, name: str = "async-progress") -> URLPattern:
        """The polling endpoint's URL pattern, to add to a project's ``urlpatterns``."""
        from realtime_async.views import progress_view

        return path("realtime-async/progress/<str:task_name>/", progress_view, name=name)

    @classmethod
    def get_cancel_url(cls, name: str = "async-cancel") -> URLPattern:
        """The cancel endpoint's URL pattern (POST with CSRF), to add to ``urlpatterns``."""
        from realtime_async.views import cancel_view

        return path("realtime-async/cancel/<str:task_name>/", cancel_view, name=name)

    def cleanup_completed_tasks(self, *, dry_run: bool = False) -> dict[str, Any]:
        """Find lost tasks and stale registry entries; see ``realtime_async.cleanup``."""
        from realtime_async.cleanup import cleanup

        return cleanup(self, dry_run=dry_run)


class _OnCommit:
    """An on-commit callback that also learns about the rollback that drops it.

    Django keeps on-commit callbacks in a list it empties on rollback without
    calling them; once nothing refers to this object any more, the finalizer
    runs ``on_drop`` unless the callback ran. CPython frees it at once.
    """

    def __init__(self, callback: Callable[[], None], on_drop: Callable[[], None]) -> None:
        self.callback = callback
        self.called = [False]
        weakref.finalize(self, _OnCommit._dropped, self.called, on_drop)

    def __call__(self) -> None:
        self.called[0] = True
        self.callback()

    @staticmethod
    def _dropped(called: list[bool], on_drop: Callable[[], None]) -> None:
        if not called[0]:
            on_drop()
