"""Terminal mode: a worker function run outside Celery reports to a screen (``AsyncManager.run_inline``).

Outside a task a worker's reporting calls get no task key and go nowhere. Under
``run_inline`` they go to an ``Inline`` run, found in a context variable for the
length of the call. It keeps a record built exactly as a task's is: the same
changes (``progress_change`` from the writer, stage ``enter``/``leave``), the
same rate and ETA estimate, the same states (running, then success, failure or
cancelled); so a worker behaves the same in both places, down to the
``ValueError`` for an undeclared stage. Each change goes to a ``Screen``: the
terminal renderer of ``_web/terminal.py``, which the root wires in, since this
layer may not import ``_web``.

An inline run is not a task: it has no name, writes nothing to the store, takes
no locks, emits no lifecycle events and cannot be cancelled (Ctrl-C ends it
``cancelled`` on screen and goes on up). Threads the worker starts itself do
not inherit the context variable; their calls stay silent.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from realtime_async._core.messages import CANCELLED
from realtime_async._core.records import LogEntry, Stage, State, StateRecord
from realtime_async._writing.writer import Tracker
from realtime_async.exceptions import PublicTaskError, TaskCancelled

__all__ = ["Inline", "Screen", "active", "error_text", "run"]

logger = logging.getLogger("realtime_async")

_R = TypeVar("_R")


class Screen(Protocol):
    """Where an inline run shows itself (``_web.terminal.TerminalRenderer``); it must not raise."""

    def show(self, record: StateRecord) -> None:
        """Called with the record after each change."""

    def log(self, entry: LogEntry) -> None:
        """Called with each log line."""

    def end(self, record: StateRecord) -> None:
        """Called once, with the final record."""


class Inline:
    """The record of one inline run, changed as the writer changes a task's, shown on ``screen``."""

    def __init__(self, screen: Screen, *, title: str | None = None, stages: list[Stage] | None = None) -> None:
        now = time.time()
        self.screen = screen
        self.record: StateRecord = {
            "title": title,
            "state": "running",
            "stages": stages,
            "stage": None,
            "created_at": now,
            "started_at": now,
            "updated_at": now,
        }
        # The writer's estimate of rate and ETA, fed the same way, so the terminal's ETA is the widget's.
        self._tracker = Tracker(record=self.record)
        self._shown(self.screen.show)

    def change(self, apply: Callable[[StateRecord], object]) -> None:
        """Apply a record change (what it raises reaches the worker, as under Celery), then show the record."""
        apply(self.record)
        self._tracker.estimate(time.monotonic())
        self.record["updated_at"] = time.time()
        self._shown(self.screen.show)

    def log(self, line: LogEntry) -> None:
        """Show a log line at once: on a terminal nothing coalesces, and nothing is kept."""
        try:
            self.screen.log(line)
        except Exception:
            logger.debug("realtime_async: the inline screen failed", exc_info=True)

    def end(self, state: State, *, result: Any = None, error: str | None = None, message: str | None = None) -> None:
        """End the run as ``state``, as ``AsyncManager.finish`` ends a task."""
        now = time.time()
        record = self.record
        record.update({"state": state, "updated_at": now, "finished_at": now, "eta": None})
        record.update({"result": result, "error": error})
        if message is not None:
            record["message"] = message
        if state == "success":
            record["percent"] = 100.0
        self._shown(self.screen.end)

    def _shown(self, method: Callable[[StateRecord], None]) -> None:
        try:
            method(self.record)
        except Exception:  # a screen of one's own that raises must not stop the work
            logger.debug("realtime_async: the inline screen failed", exc_info=True)


_current: contextvars.ContextVar[Inline | None] = contextvars.ContextVar("realtime_async_inline", default=None)


def active() -> Inline | None:
    """The inline run of this context, or None (then reporting calls without a task key do nothing)."""
    return _current.get()


def error_text(exc: BaseException) -> str:
    """What a failed inline run says: a ``PublicTaskError``'s text, else the exception's type and text.

    Unlike a task's watchers, the person at the terminal runs the code: the
    real error is theirs to see (the traceback follows, as the exception does).
    """
    if isinstance(exc, PublicTaskError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def run(
    screen: Screen,
    func: Callable[..., _R],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    manager_class: type | str,
    title: str | None = None,
    stages: list[Stage] | None = None,
) -> _R:
    """Call ``func`` as the worker would call it, with ``task_key=None``, its reports on ``screen``.

    Returns what ``func`` returns and re-raises what it raises, after the final
    line: ``success``, ``failure`` (any ``Exception``) or ``cancelled``
    (``TaskCancelled``, or ``KeyboardInterrupt`` and the like).
    """
    inline = Inline(screen, title=title, stages=stages)
    token = _current.set(inline)
    try:
        result = func(*args, task_key=None, manager_class=manager_class, **kwargs)
    except TaskCancelled:
        inline.end("cancelled", message=CANCELLED)
        raise
    except Exception as exc:
        inline.end("failure", error=error_text(exc))
        raise
    except BaseException:  # Ctrl-C, SystemExit: the run was stopped, not broken
        inline.end("cancelled", message=CANCELLED)
        raise
    finally:
        _current.reset(token)
    inline.end("success", result=result)
    return result
