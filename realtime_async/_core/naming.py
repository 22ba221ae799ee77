"""Task names, Channels group names and the layer's message type, each made in one place."""

from __future__ import annotations

import hashlib
import re
import secrets

__all__ = [
    "CLEANUP_TASK_NAME",
    "HUB_CHANNEL_PREFIX",
    "MAX_TASK_NAME_LENGTH",
    "PROGRESS_TYPE",
    "RUN_TASK_NAME",
    "STAFF_FEED_GROUP",
    "TASK_NAME_PATTERN",
    "group_for_task",
    "group_for_user",
    "new_task_name",
    "validate_task_name",
]

#: The Celery name of the task that runs worker functions (``realtime_async.tasks``).
RUN_TASK_NAME = "realtime_async.run"
#: The Celery name of the scheduled cleanup, as ``CELERY_BEAT_SCHEDULE`` names it (``realtime_async.tasks``).
CLEANUP_TASK_NAME = "realtime_async.schedules.cleanup_async_artifacts"

#: The ``type`` of the channel-layer messages that carry a task's new state to its groups.
PROGRESS_TYPE = "realtime_async.progress"

#: The prefix of each server's fan-out hub channel; channels_redis' ``channel_capacity`` patterns can match it.
HUB_CHANNEL_PREFIX = "realtime_async.hub"

#: Task names travel in URLs, cache keys and log lines, so they are kept plain.
MAX_TASK_NAME_LENGTH = 128
TASK_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}"
_TASK_NAME_RE = re.compile(TASK_NAME_PATTERN)


def new_task_name(prefix: str = "task") -> str:
    """Return an unguessable task name (128 random bits)."""
    return f"{prefix}-{secrets.token_urlsafe(16)}".replace("_", ".")


def validate_task_name(task_name: object) -> str:
    """Return ``task_name`` or raise ``ValueError`` saying what is allowed."""
    if not isinstance(task_name, str) or not _TASK_NAME_RE.fullmatch(task_name):
        raise ValueError(
            f"Invalid task name {task_name!r}: use 1 to 128 characters from "
            "letters, digits and . _ : @ + -, starting with a letter or digit."
        )
    return task_name


def _group(kind: str, value: str) -> str:
    # Channels allows [A-Za-z0-9._-] and fewer than 100 characters; a digest
    # keeps any task name or user id inside those rules and collision-free.
    digest = hashlib.blake2b(value.encode(), digest_size=16).hexdigest()
    return f"realtime_async.{kind}.{digest}"


def group_for_task(task_name: str) -> str:
    """The Channels group that receives every state change of ``task_name``."""
    return _group("task", task_name)


#: Every task's state changes, for the feeds of staff users (who may see every task by default).
STAFF_FEED_GROUP = "realtime_async.feed.staff"


def group_for_user(user_id: object) -> str:
    """The Channels group that receives every state change of a user's tasks."""
    return _group("user", str(user_id))
