"""``AsyncManager``: launch background work, report its progress, lock what it touches.

Subclass it to change the lifecycle hooks or permissions and point
``REALTIME_ASYNC["ASYNC_MANAGER_CLASS_PATH"]`` at the subclass, so launch sites,
workers, consumers and views all resolve the same class.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO, TypeVar

from django.db import transaction
from django.urls import URLPattern, path
from django.utils.module_loading import import_string

from realtime_async._core import access, managers
from realtime_async._core.locks import ConflictIds, from_lock_ids, to_lock_ids
from realtime_async._core.naming import new_task_name, validate_task_name
from realtime_async._core.records import GroupPolicy, StateRecord, is_final
from realtime_async._core.store import Store, WriteMode, get_store
from realtime_async._web.terminal import TerminalRenderer
from realtime_async._writing import terminal
from realtime_async._writing.cleanup import cleanup
from realtime_async._writing.ending import Ending, LifecycleEvent
from realtime_async._writing.files import delete_final_task
from realtime_async._writing.groups import GroupKind, Part, PlannedPart, launch_group
from realtime_async._writing.launch import OnCommit, callable_path, default_title, title_text, user_info
from realtime_async._writing.locking import Locking
from realtime_async._writing.reporting import Reporting
from realtime_async._writing.stages import StageSpec, make_stages
from realtime_async._writing.writer import get_writer
from realtime_async.conf import get_settings
from realtime_async.downloads import download_view
from realtime_async.exceptions import ConflictError
from realtime_async.signals import task_lifecycle
from realtime_async.tasks import run_async_task
from realtime_async.views import cancel_view, progress_view

__all__ = ["AsyncManager", "LifecycleEvent"]

logger = logging.getLogger("realtime_async")

_R = TypeVar("_R")


class AsyncManager(Reporting, Ending, Locking):
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

    def launch_async_group(
        self,
        parts: Iterable[Part | str | Callable[..., Any]],
        *,
        task_name: str | None = None,
        title: str | None = None,
        conflict_ids: ConflictIds | None = None,
        user: Any = None,
        affected_objects: Iterable[Any] | None = None,
        on_failure: GroupPolicy = "continue",
        then: Part | str | Callable[..., Any] | None = None,
        manager_class: type[AsyncManager] | str | None = None,
        queue: str | None = None,
        **celery_options: Any,
    ) -> str:
        """Launch ``parts`` (``Part(func, args, kwargs, weight=, title=)``, or bare functions) as one group.

        Returns the parent task's name: a task like any other to watch, whose
        record counts its parts by state and whose percent is their weighted
        mean. The conflict ids are reserved once, for the parent. ``on_failure``:
        ``"continue"`` (the group ends when every part ended) or ``"fail_fast"``
        (the first failed part ends it and cancels the others). ``ValueError``
        for an empty group, more than ``GROUP_MAX_PARTS`` parts, a bad weight or
        a part that cannot be imported, before anything is reserved or enqueued.
        ``then`` (a ``Part`` or function) runs once after every part succeeded, with
        their results in part order as its first argument; the group ends with it.
        """
        options = {"task_name": task_name, "title": title, "conflict_ids": conflict_ids, "user": user}
        options |= {"affected_objects": affected_objects, "on_failure": on_failure, "then": then}
        return self._launch_parts("group", parts, options, manager_class, {"queue": queue, **celery_options})

    def launch_async_chain(
        self,
        steps: Iterable[Part | str | Callable[..., Any]],
        *,
        task_name: str | None = None,
        title: str | None = None,
        conflict_ids: ConflictIds | None = None,
        user: Any = None,
        affected_objects: Iterable[Any] | None = None,
        on_failure: GroupPolicy = "fail_fast",
        then: Part | str | Callable[..., Any] | None = None,
        manager_class: type[AsyncManager] | str | None = None,
        queue: str | None = None,
        **celery_options: Any,
    ) -> str:
        """Launch ``steps`` to run one after another, each a stage of the parent task; as ``launch_async_group``.

        A step starts when the one before it succeeded; a failed step ends the
        chain (``"fail_fast"``, the default; the steps after it are cancelled) or,
        with ``"continue"``, the next step starts all the same and the chain ends
        ``failure``. Steps do not get the previous step's result; ``then`` gets them all.
        """
        options = {"task_name": task_name, "title": title, "conflict_ids": conflict_ids, "user": user}
        options |= {"affected_objects": affected_objects, "on_failure": on_failure, "then": then}
        return self._launch_parts("chain", steps, options, manager_class, {"queue": queue, **celery_options})

    def _launch_parts(
        self,
        kind: GroupKind,
        parts: Iterable[Part | str | Callable[..., Any]],
        options: dict[str, Any],
        manager_class: type[AsyncManager] | str | None,
        celery_options: dict[str, Any],
    ) -> str:
        manager_path = manager_class if isinstance(manager_class, str) else (manager_class or type(self)).class_path()
        extra = {"manager": manager_path, "options": {k: v for k, v in celery_options.items() if v is not None}}

        def enqueue(part: PlannedPart) -> None:
            self._enqueue({"task": part.name, "func": part.func_path, "kwargs": part.kwargs, **extra}, part.args)

        return launch_group(self, parts, enqueue, enqueue_meta=extra, kind=kind, **options)

    def _enqueue(self, spec: dict[str, Any], args: list[Any]) -> None:
        """Enqueue one part of a group (``spec``: its task, function, kwargs, manager and Celery options)."""
        call = {"func_path": spec["func"], "args": args, "kwargs": spec["kwargs"], "task_name": spec["task"]}
        call["manager_path"] = spec["manager"]
        run_async_task.apply_async(kwargs=call, task_id=spec["task"], **spec.get("options", {}))

    # -- running here, in a terminal ---------------------------------------
    @classmethod
    def run_inline(
        cls,
        func: str | Callable[..., _R],
        /,
        *args: Any,
        title: str | None = None,
        stages: StageSpec | None = None,
        task_kwargs: dict[str, Any] | None = None,
        stream: TextIO | None = None,
    ) -> _R:
        """Run a worker function here, its progress, stages and log on stderr (terminal mode, see README).

        ``AsyncManager.run_inline(rebuild_project, 42, task_kwargs={"force": True})`` in a
        command or a shell. The arguments are ``launch_async_task``'s, so the function's own
        keywords (in ``task_kwargs``) never clash with ``title`` or ``stages``; ``func`` gets
        ``task_key=None`` and ``manager_class`` as under Celery. On a terminal: a status line
        redrawn in place, log lines above it; elsewhere, a few plain lines a second at most.
        Returns what ``func`` returns, re-raises what it raises, after a final line ("Done",
        "Failed: ...", "Cancelled"). Not a task: no store, no locks, no lifecycle events.
        """
        target: Callable[..., _R] = import_string(func) if isinstance(func, str) else func
        return terminal.run(
            TerminalRenderer(stream),
            target,
            args,
            dict(task_kwargs or {}),
            manager_class=cls,
            title=title_text(title) or default_title(target),
            stages=make_stages(stages),
        )

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

    # -- reading ---------------------------------------------------------
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

    def _revoke(self, task_names: list[str]) -> None:
        run_async_task.app.control.revoke(task_names)

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

    @classmethod
    def get_download_url(cls, name: str = "async-download") -> URLPattern:
        """The download endpoint of attached files (``attach_file``), to add to ``urlpatterns``."""
        return path("realtime-async/download/<str:signed>/", download_view, name=name)

    def delete_task(self, task_name: str) -> bool:
        """Forget a final task now: its record and its attached files; False when unknown or unfinished."""
        return delete_final_task(task_name)

    def cleanup_completed_tasks(self, *, dry_run: bool = False) -> dict[str, Any]:
        """Find lost tasks and stale registry entries; see ``realtime_async._writing.cleanup``."""
        return cleanup(self, dry_run=dry_run)
