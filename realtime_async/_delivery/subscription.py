"""A connection's subscription to one task, and the snapshot that starts it."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async

from realtime_async._core.access import may_view
from realtime_async._core.managers import resolve_manager
from realtime_async._core.process import Throttled
from realtime_async._core.records import is_final
from realtime_async._core.store import LogRead, get_store
from realtime_async._delivery.fanout import LayerUnavailable
from realtime_async.protocol import CLOSE_UNAVAILABLE, NOT_FOUND_MESSAGE, log_frame

__all__ = ["LogMixin", "Subscription", "read_log", "read_snapshot"]

logger = logging.getLogger("realtime_async")
_log = Throttled(logger)


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


async def read_log(task: str, after: int) -> LogRead:
    """The task's log lines above ``after``, read off the event loop; a failed read raises ``LayerUnavailable``."""
    try:
        return await sync_to_async(get_store().read_log, thread_sensitive=False)(task, after)
    except Exception as exc:
        raise LayerUnavailable(f"cache read failed ({type(exc).__name__})") from exc


class LogMixin:
    """The log half of ``ProgressConsumer``: history and gaps of a subscribed task's log, as ``log`` frames.

    Live lines need nothing here: they ride in the ``progress`` frame of the write that stored them.
    """

    scope: dict[str, Any]
    _closed: bool
    _subs: dict[str, Subscription]
    _send_lock: Any
    _send_frame: Any  # _delivery.sending's sender: (message, task, final), and .control(message)
    _send_error: Callable[..., Coroutine[Any, Any, None]]
    _close: Callable[[int], Coroutine[Any, Any, None]]

    async def send_log(self, task: str, after: int, token: str | None = None) -> None:
        """Send ``task``'s log lines numbered above ``after`` as one ``log`` frame.

        A task subscribed on this connection was authorised already; any other
        (one whose final state ended its subscription) is checked as a subscribe
        would be, with ``token``, and gets ``not_found`` when refused.
        """
        sub = self._subs.get(task)
        try:
            if sub is None or not sub.ready:
                user = self.scope.get("user")
                if await database_sync_to_async(read_snapshot)(user, task, token) is None:
                    await self._send_error("not_found", NOT_FOUND_MESSAGE, task)
                    return
            frame = log_frame(task, await read_log(task, after))
        except LayerUnavailable as exc:
            _log.warning("realtime_async: cannot read the log of %r (%s); closing with 4503", task, exc)
            await self._close(CLOSE_UNAVAILABLE)
            return
        async with self._send_lock:
            if not self._closed:  # a control frame: never superseded by a newer progress frame of the task
                await self._send_frame.control({"type": "websocket.send", "text": frame})
