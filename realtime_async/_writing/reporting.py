"""What a worker tells its user: progress, stages, tracked loops and log lines (``AsyncManager``'s reporting half).

Every method takes the ``task_key`` the worker was given. Outside a task
(``task_key`` None: a management command, a shell, a test) the calls do
nothing, unless the function runs under ``AsyncManager.run_inline``: then they
change the inline run's record (``terminal.py``), shown in the terminal.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from realtime_async._core.records import FileInfo, LogLevel, StageState, StateRecord
from realtime_async._core.results import ResultLink
from realtime_async._writing import files, terminal
from realtime_async._writing.stages import StageSpec, enter, leave, make_stages, stage_context
from realtime_async._writing.track import track as track_items
from realtime_async._writing.writer import Tracker, get_writer, log_line, progress_change
from realtime_async.exceptions import TaskCancelled

__all__ = ["Reporting"]

_T = TypeVar("_T")


class Reporting:
    """The reporting methods of ``AsyncManager``; cheap in a hot loop, they never raise on broadcast errors."""

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
        """Report progress; coalesced to ``PROGRESS_RATE`` writes a second, the latest state always written.

        Inside a running task it raises ``TaskCancelled`` once the task was cancelled.
        """
        self._change(task_key, progress_change(message, current, total, percent, data))

    def log(self, task_key: str | None, text: object, *, level: LogLevel = "info") -> None:
        """Add a line to the task's log: ``manager.log(task_key, "Row 31 skipped: no e-mail", level="warning")``.

        ``level`` is one of Django's message levels (``debug``, ``info``,
        ``success``, ``warning``, ``error``). Lines are written with the next
        state (never dropped by coalescing), numbered by the store, and kept up to
        ``LOG_MAX_LINES`` / ``LOG_MAX_BYTES`` per task, oldest dropped first.
        Like ``update_progress``, it raises ``TaskCancelled`` once the task was cancelled.
        """
        line = log_line(text, level)
        if not task_key:
            inline = terminal.active()
            if inline is not None:
                inline.log(line)
            return
        self._written(task_key, *get_writer().change(task_key, None, line=line))

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

    def track(
        self, task_key: str | None, iterable: Iterable[_T], *, total: float | None = None, message: str | None = None
    ) -> Iterator[_T]:
        """Yield the items of ``iterable``, reporting how many are done: ``for row in manager.track(task_key, rows):``.

        ``total`` defaults to ``len(iterable)`` when it has one (a generator reports
        its count, with no percent, until it ends); ``message`` may use ``{n}`` and
        ``{total}``. After a cancel it raises ``TaskCancelled`` at the next item.
        """
        return track_items(self, task_key, iterable, total=total, message=message)

    def set_result_link(self, task_key: str | None, url: str, *, label: str | None = None) -> None:
        """Give the task a link its viewers see once it succeeds: ``manager.set_result_link(task_key, url, label=...)``.

        ``url`` is an http(s) URL or a path on this site (``ValueError`` otherwise);
        a later call replaces the link. Returning ``ResultLink(url, label)`` from the
        worker function does the same.
        """
        self._change(task_key, files.link_change(ResultLink(url, label)))

    def attach_file(
        self,
        task_key: str | None,
        path_or_file: Any,
        *,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> FileInfo | None:
        """Attach a file the task produced, offered for download once it succeeds; return its record entry.

        ``path_or_file`` is a path or a file object (binary, or text written as
        UTF-8; read from its start when it can seek); ``filename`` defaults to its
        name, ``content_type`` is guessed from ``filename``. The file is copied to
        ``FILE_STORAGE_ALIAS`` and deleted after ``FILE_RETENTION``.
        ``ValueError`` past ``FILE_MAX_BYTES`` or ``FILE_MAX_PER_TASK``.
        Outside a task (``task_key`` None) it does nothing and returns None.
        """
        if not task_key:
            return None
        entry = files.store_file(task_key, path_or_file, filename=filename, content_type=content_type)
        added: list[FileInfo] = []
        try:
            self._change(task_key, files.file_change(entry, added))
        finally:
            if not added:  # refused (FILE_MAX_PER_TASK), or the task is gone: keep no orphan
                files.delete_file(entry)
        return entry if added else None

    # -- the one path of every change ------------------------------------
    def _change(self, task_key: str | None, apply: Callable[[StateRecord], object], *, check: bool = True) -> None:
        """Change a running task's record; like ``update_progress``, it raises once the task is cancelled."""
        if not task_key:
            inline = terminal.active()
            if inline is not None:
                inline.change(apply)
            return
        self._written(task_key, *get_writer().change(task_key, apply), check=check)

    def _written(self, task_key: str, written: bool, tracker: Tracker | None, *, check: bool = True) -> None:
        if tracker is None:
            return
        if check and tracker.cancel_requested and not tracker.finished:
            raise TaskCancelled(task_key)
        if written:
            self._emit("progress", task_key, meta=tracker.meta, record=tracker.record.copy())

    def _stage_change(self, task_key: str | None, name: str, state: StageState | None) -> None:
        """Enter stage ``name`` (``state`` None) or end it as ``state``."""
        if state is None:
            self._change(task_key, lambda record: enter(record, name))
        else:  # the end of a stage never raises TaskCancelled: it would hide what ended it
            self._change(task_key, lambda record: leave(record, name, state), check=False)

    def _emit(self, event: Any, task_name: str, *, meta: dict[str, Any] | None = None, **payload: Any) -> None:
        raise NotImplementedError  # AsyncManager's
