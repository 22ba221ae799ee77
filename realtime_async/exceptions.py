"""Exceptions raised by realtime_async."""

from __future__ import annotations

__all__ = [
    "ConflictError",
    "ImproperlyConfiguredError",
    "PublicTaskError",
    "RealtimeAsyncError",
    "TaskCancelled",
]


class RealtimeAsyncError(Exception):
    """Base class of every error realtime_async raises on purpose."""


class ImproperlyConfiguredError(RealtimeAsyncError):
    """The ``REALTIME_ASYNC`` setting is invalid."""


class ConflictError(RealtimeAsyncError):
    """Another task holds some of the conflict ids a launch asked for.

    ``holders`` maps each contested ``"app_label.Model"`` to ``{pk: task_name}``.
    """

    def __init__(self, task_name: str, holders: dict[str, dict[str, str]]) -> None:
        self.task_name = task_name
        self.holders = holders
        names = sorted({holder for pks in holders.values() for holder in pks.values()})
        objects = ", ".join(f"{model}:{pk}" for model, pks in sorted(holders.items()) for pk in sorted(pks))
        super().__init__(f"Task {task_name!r} cannot reserve {objects}: held by task(s) {', '.join(map(repr, names))}.")

    @property
    def holder(self) -> str:
        """The name of one task holding a contested object (the first, sorted)."""
        return sorted({h for pks in self.holders.values() for h in pks.values()})[0]


class PublicTaskError(RealtimeAsyncError):
    """Raise from a worker to fail the task with this message shown to users.

    Any other exception fails the task with a generic message; its text and
    traceback go only to the logs and to the ``fail`` lifecycle payload.
    """


class TaskCancelled(RealtimeAsyncError):  # noqa: N818 - it is a signal, not an error
    """Raised by ``update_progress`` inside a worker whose task was cancelled.

    The task wrapper catches it and ends the task in the ``cancelled`` state;
    workers may catch it to clean up, and should re-raise it.
    """
