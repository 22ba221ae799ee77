"""Launch plumbing: the dotted path of a worker function, a task's owner, on-commit callbacks that see rollbacks."""

from __future__ import annotations

import inspect
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from realtime_async._core.records import MAX_TITLE_LENGTH

logger = logging.getLogger("realtime_async")
_T = TypeVar("_T")

__all__ = ["OnCommit", "callable_path", "default_title", "retrying", "title_text", "user_info"]


def callable_path(func: str | Callable[..., Any]) -> str:
    """The dotted path a worker imports ``func`` by; ``ValueError`` for what cannot be imported."""
    if isinstance(func, str):
        return func
    module, qualname = getattr(func, "__module__", None), getattr(func, "__qualname__", "")
    if not module or "<" in qualname:
        raise ValueError(f"{func!r} cannot be imported by a worker: pass a module-level function or its dotted path.")
    return f"{module}.{qualname}"


def title_text(title: object) -> str | None:
    """``title`` as stored: text on one line, cut to ``MAX_TITLE_LENGTH`` characters; None when empty."""
    if title is None:
        return None
    text = " ".join(str(title).split())
    if len(text) > MAX_TITLE_LENGTH:
        text = text[: MAX_TITLE_LENGTH - 1].rstrip() + "…"
    return text or None


def default_title(func: str | Callable[..., Any]) -> str:
    """The title of a task launched without one: the first line of the function's docstring, else its name.

    A dotted path is not imported in the launching process: its last part names it
    (``"myapp.tasks.rebuild_project"`` → "Rebuild project").
    """
    if not isinstance(func, str):
        doc = inspect.getdoc(func)
        first = doc.strip().splitlines()[0].strip() if doc and doc.strip() else ""
        if first:
            return title_text(first.rstrip(".")) or ""
    name = func.rsplit(".", 1)[-1] if isinstance(func, str) else getattr(func, "__name__", "task")
    words = name.replace("_", " ").strip() or "task"
    return title_text(words[:1].upper() + words[1:]) or ""


def user_info(user: Any) -> dict[str, Any] | None:
    """``{"id", "label"}`` of a signed-in user, as lifecycle payloads carry it; None for anyone else."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return {"id": user.pk, "label": str(user)}


class OnCommit:
    """An on-commit callback that also learns about the rollback that drops it.

    Django keeps on-commit callbacks in a list it empties on rollback without
    calling them; once nothing refers to this object any more, the finalizer
    runs ``on_drop`` unless the callback ran. CPython frees it at once.
    """

    def __init__(self, callback: Callable[[], None], on_drop: Callable[[], None]) -> None:
        self.callback = callback
        self.called = [False]
        weakref.finalize(self, OnCommit._dropped, self.called, on_drop)

    def __call__(self) -> None:
        self.called[0] = True
        self.callback()

    @staticmethod
    def _dropped(called: list[bool], on_drop: Callable[[], None]) -> None:
        if not called[0]:
            on_drop()


def retrying(what: str, func: Callable[[], _T], timeout: float) -> _T:
    """``func()``, retried with backoff for ``timeout`` seconds: a final state must not be lost to a Redis blip."""
    deadline, delay = time.monotonic() + timeout, 0.05
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
