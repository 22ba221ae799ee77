"""A connection's subscription to one task, and the snapshot that starts it."""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

from realtime_async._core.access import may_view
from realtime_async._core.managers import resolve_manager
from realtime_async._core.records import is_final
from realtime_async._core.store import get_store
from realtime_async._delivery.fanout import LayerUnavailable

__all__ = ["Subscription", "read_snapshot"]

logger = logging.getLogger("realtime_async")


@dataclasses.dataclass(eq=False)
class Subscription:
    """One task a connection subscribed to."""

    last_seq: int = 0
    #: Frames sent for this task, so a repeated subscribe can tell whether it was answered.
    sent: int = 0
    #: Authorised; until then the hub's frames wait in ``held``.
    ready: bool = False
    held: list[tuple[int, str, bool]] = dataclasses.field(default_factory=list)
    #: The watch token the client subscribed with: it shows the task, it never lets the client cancel it.
    token: str | None = None


def read_snapshot(user: Any, task: str, token: str | None) -> tuple[str, int, bool] | None:
    """``(record_json, seq, final)`` when ``user`` (or ``token``) may watch ``task``, else None.

    A failed read raises ``LayerUnavailable`` (the client retries); a broken hook
    or record refuses, logged, and never lets anyone in.
    """
    try:
        stored = get_store().read_state(task)
    except Exception as exc:
        raise LayerUnavailable(f"cache read failed ({type(exc).__name__})") from exc
    if stored is None:
        return None
    try:
        record = json.loads(stored)
        allowed = may_view(resolve_manager(), user, task, record, token=token)
        seq, final = int(record["seq"]), is_final(record)
    except Exception:
        logger.exception("realtime_async: permission check for %r failed; access refused", task)
        return None
    return (stored, seq, final) if allowed else None
