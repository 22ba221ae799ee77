"""WebSocket consumers of the progress protocol (``docs/protocol.md``).

- ``ProgressConsumer`` (``ws/realtime-async/``): one connection, many subscriptions.
- ``TaskProgressConsumer`` (``ws/realtime-async/task/<task_name>/``): one task,
  subscribed on connect, closed with 1000 after its final state.

They subclass ``AsyncWebsocketConsumer`` rather than the JSON variant: frames
are measured before they are decoded, binary frames get an error instead of
crashing the consumer, and progress frames are text encoded once by the hub
and shared by every watcher.

On ``ws/realtime-async/`` a client may also follow the feed (every task it may
see) and cancel tasks. A connection gets each ``(task, seq)`` at most once and
in order, whether through a subscription or the feed: both go through one
per-connection record of the last seq sent per task. The one exception is the
snapshot answering a ``subscribe``, which is always sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.utils import await_many_dispatch

from realtime_async._core.access import cancel_outcome
from realtime_async._core.managers import resolve_manager
from realtime_async._core.naming import validate_task_name
from realtime_async._core.process import Throttled
from realtime_async._delivery.feed import FeedMixin
from realtime_async._delivery.hub import Hub, LayerUnavailable, get_hub
from realtime_async._delivery.limits import CONNECTIONS, TokenBucket, connection_key, frame_bytes
from realtime_async._delivery.sending import progress_sender
from realtime_async._delivery.servers import check_running_server
from realtime_async._delivery.subscription import LogMixin, Subscription, read_snapshot
from realtime_async.conf import get_settings
from realtime_async.protocol import (
    CLOSE_FINAL,
    CLOSE_NOT_FOUND,
    CLOSE_RATE_LIMITED,
    CLOSE_STALLED,
    CLOSE_TOO_LARGE,
    CLOSE_UNAVAILABLE,
    FORBIDDEN_MESSAGE,
    NOT_FOUND_MESSAGE,
    BadRequest,
    Cancel,
    ClientMessage,
    ErrorCode,
    LogRequest,
    Ping,
    Subscribe,
    SubscribeFeed,
    Unsubscribe,
    UnsubscribeFeed,
    counter_text,
    error_frame,
    parse_client_message,
    pong_frame,
    progress_frame,
)

__all__ = ["ProgressConsumer", "TaskProgressConsumer"]

logger = logging.getLogger("realtime_async")
# During an outage every reconnecting client fails the same way: one line every ten seconds.
_log = Throttled(logger)

_INTERNAL_ERROR = 1011


class ProgressConsumer(FeedMixin, LogMixin, AsyncWebsocketConsumer):  # type: ignore[misc]
    """``ws/realtime-async/``: subscribe to tasks (up to ``MAX_SUBSCRIPTIONS``), follow the feed, cancel tasks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._subs: dict[str, Subscription] = {}
        self._init_feed()
        self._closed = False
        # Frames of one connection go out one at a time, each checked against the last seq sent.
        self._send_lock = asyncio.Lock()
        self._counted: str | None = None
        self._hub: Hub | None = None
        self._bucket = TokenBucket(1, 1)
        #: Sends this connection's frames, with backpressure on daphne (see ``_delivery.sending``).
        self._send_frame: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        # Unlike AsyncConsumer.__call__, no layer channel per connection: the hub
        # holds the process's only one, so a layer failure closes each socket with
        # 4503 instead of crashing it with 1011, and idle sockets cost Redis nothing.
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        check_running_server(send)  # the server's own options, once per process (system checks W006-W009)
        self._send_frame = progress_sender(send, self._stalled)
        try:
            await await_many_dispatch([receive], self.dispatch)
        except StopConsumer:
            pass
        finally:
            self._release_connection()
            if self._subs or self._feed is not None:
                await self._unwatch_all()
            await self._send_frame.aclose()
            if self._decider is not None:
                # SyncToAsync lets a running permission check finish; its answer is then ignored.
                self._decider.cancel()
                await asyncio.gather(self._decider, return_exceptions=True)

    async def dispatch(self, message: dict[str, Any]) -> None:
        # AsyncConsumer.dispatch runs close_old_connections in a thread before every
        # event; nothing here touches the ORM outside database_sync_to_async, which
        # closes its own connections, so that hop is skipped.
        handler = {
            "websocket.connect": self.websocket_connect,
            "websocket.receive": self.websocket_receive,
            "websocket.disconnect": self.websocket_disconnect,
        }.get(message.get("type", ""))
        if handler is None:
            logger.debug("realtime_async: ignored ASGI event %r", message.get("type"))
            return
        await handler(message)

    # -- hooks -----------------------------------------------------------
    async def connect(self) -> None:
        """Called when a client connects: accept it unless its user has too many connections."""
        settings = get_settings()
        # Bursts large enough to resubscribe everything at once after a reconnect.
        self._bucket = TokenBucket(
            settings.max_messages_per_second, settings.max_messages_per_second + settings.max_subscriptions
        )
        # Accept first: only an open socket can carry a close code to the client.
        await self.accept()
        key = connection_key(self.scope)
        if not CONNECTIONS.acquire(key, settings.max_connections_per_user):
            await self._close(CLOSE_RATE_LIMITED)
            return
        self._counted = key

    async def disconnect(self, code: int) -> None:
        """Called when the connection has closed, after its subscriptions ended."""

    # -- client frames ---------------------------------------------------
    async def websocket_receive(self, message: dict[str, Any]) -> None:
        if self._closed:
            return
        if not self._bucket.take():
            await self._close(CLOSE_RATE_LIMITED)
            return
        text, data = message.get("text"), message.get("bytes")
        limit = get_settings().max_message_bytes
        size = frame_bytes(text, limit) if text is not None else len(data or b"")
        if size > limit:
            await self._close(CLOSE_TOO_LARGE)
            return
        if text is None:
            await self._send_error("bad_request", "Binary frames are not supported.")
            return
        try:
            request = parse_client_message(text)
        except BadRequest as exc:
            await self._send_error("bad_request", exc.message, exc.task)
            return
        await self._guarded(self.handle(request))

    async def handle(self, request: ClientMessage) -> None:
        """Called with each valid client message."""
        if isinstance(request, Ping):
            await self._send_text(pong_frame(request.id))
        elif isinstance(request, Unsubscribe):
            await self._end(request.task)
        elif isinstance(request, Subscribe):
            await self.subscribe(request)
        elif isinstance(request, SubscribeFeed):
            await self.subscribe_feed()
        elif isinstance(request, UnsubscribeFeed):
            await self.unsubscribe_feed()
        elif isinstance(request, LogRequest):
            await self.send_log(request.task, request.after, request.token)
        else:
            await self.cancel(request)

    async def subscribe(self, request: Subscribe) -> None:
        """Join the task's group, then send the current state (the snapshot), then live updates."""
        task = request.task
        sub = self._subs.get(task)
        if sub is not None:  # asked again: the current state at once
            if await self._send_current(task, sub, request.token, baseline=sub.sent) and request.log_after is not None:
                await self.send_log(task, request.log_after)
            return
        if len(self._subs) >= get_settings().max_subscriptions:
            await self._send_error("limit", "Too many subscriptions on this connection.", task)
            return
        sub = self._subs[task] = Subscription()
        try:
            self._hub = self._hub or get_hub()
            await self._hub.watch(task, self)
        except LayerUnavailable as exc:
            _log.warning("realtime_async: cannot watch %r (%s); closing with 4503", task, exc)
            await self._close(CLOSE_UNAVAILABLE)
            return
        # Joined before this read, so nothing between the snapshot and the stream is missed.
        if await self._send_current(task, sub, request.token, baseline=None):
            sub.ready = True
            if (
                request.log_after is not None
            ):  # the history, then what came meanwhile (duplicate lines are the client's to drop)
                await self.send_log(task, request.log_after)
            for seq, frame, final in sub.held:
                await self._emit(task, sub, seq, frame, final)
            sub.held.clear()

    async def cancel(self, request: Cancel) -> None:
        """Called when a client asks to cancel a task; accepted, it is not answered (``cancelled`` follows)."""
        task = request.task
        sub = self._subs.get(task)
        token = sub.token if sub is not None and sub.ready else None
        user = self.scope.get("user")
        outcome = await database_sync_to_async(lambda: cancel_outcome(resolve_manager(), user, task, token=token))()
        if outcome == "not_found":
            await self.not_found(task)
        elif outcome == "forbidden":
            await self._send_error("forbidden", FORBIDDEN_MESSAGE, task)

    async def not_found(self, task: str) -> None:
        """Called when ``task`` is unknown or not for this user (the same answer, so names cannot be probed)."""
        await self._send_error("not_found", NOT_FOUND_MESSAGE, task)

    async def finished(self, task: str) -> None:
        """Called after a task's final state was sent: the subscription ends (it stops counting)."""
        await self._end(task)

    # -- hub side --------------------------------------------------------
    async def hub_deliver(self, task: str, seq: int, frame: str, final: bool) -> None:
        """Called by the hub with each update of a watched task or followed feed (the frame is shared: keep it)."""
        sub = self._subs.get(task)
        if sub is None:
            if self._feed is not None:
                await self._feed_deliver(task, seq, frame, final)
            return
        if not sub.ready:
            # Latest wins while authorising, except a final state (see fanout._route).
            if all(seq > held for held, _, _ in sub.held):
                sub.held[:] = [item for item in sub.held if item[2]]
                sub.held.append((seq, frame, final))
            return
        await self._emit(task, sub, seq, frame, final)

    async def hub_failed(self) -> None:
        """Called by the hub when it lost the channel layer: the client must reconnect and resubscribe."""
        await self._close(CLOSE_UNAVAILABLE)

    def _stalled(self) -> None:
        """Called (daphne only) when the client read nothing for ``STALLED_CLOSE_AFTER`` s: it must resubscribe."""
        self._stall_close = asyncio.create_task(self._guarded(self._close(CLOSE_STALLED)))

    # -- internals -------------------------------------------------------
    async def _send_current(self, task: str, sub: Subscription, token: str | None, *, baseline: int | None) -> bool:
        """Send the stored state; False (and the subscription ended) when the task is gone or refused."""
        try:
            loaded = await database_sync_to_async(read_snapshot)(self.scope.get("user"), task, token)
        except LayerUnavailable as exc:
            _log.warning("realtime_async: cannot read %r (%s); closing with 4503", task, exc)
            await self._close(CLOSE_UNAVAILABLE)
            return False
        if loaded is None:
            if self._subs.get(task) is sub:
                del self._subs[task]
                if self._hub is not None:
                    await self._hub.unwatch(task, self)
            await self.not_found(task)
            return False
        stored, seq, final = loaded
        if token is not None:
            sub.token = token
        await self._emit(task, sub, seq, progress_frame(task, stored), final, baseline=baseline)
        return True

    async def _emit(
        self, task: str, sub: Subscription, seq: int, frame: str, final: bool, *, baseline: int | None = None
    ) -> None:
        async with self._send_lock:
            if self._closed or self._subs.get(task) is not sub:
                return
            # An equal seq goes out again only to answer a repeated subscribe nothing else answered.
            if seq < sub.last_seq or (seq == sub.last_seq and (baseline is None or sub.sent != baseline)):
                return
            sub.last_seq = seq
            sub.sent += 1
            self._sent(task, seq, final)
            await self._send_frame({"type": "websocket.send", "text": frame}, task, final)
        if final:
            await self.finished(task)

    # -- the feed ----------------------------------------------------------
    async def _guarded(self, work: Awaitable[None]) -> None:
        try:
            await work
        except Exception:
            # A bug, not the client's fault: log it, tell the client nothing but 1011 (retry).
            logger.exception("realtime_async: handling a WebSocket request failed")
            await self._close(_INTERNAL_ERROR)

    async def _end(self, task: str) -> None:
        if self._subs.pop(task, None) is not None and self._hub is not None:
            await self._hub.unwatch(task, self)

    async def _send_text(self, frame: str) -> None:
        async with self._send_lock:
            if not self._closed:
                await self._send_frame.control({"type": "websocket.send", "text": frame})

    async def _send_error(self, code: ErrorCode, message: str, task: str | None = None) -> None:
        await self._send_text(error_frame(code, message, task))

    async def _close(self, code: int) -> None:
        if self._closed:
            return
        self._closed = True
        # Closed, it stops counting now, not at websocket.disconnect: that waits for
        # the handler running (a Redis call may hang for seconds), and the client reconnects at once.
        self._release_connection()
        async with self._send_lock:
            self._send_frame.flush()  # what waits for a slow client goes first
            # Through the sender, behind what it holds: a server whose send waits must not hold up the hub.
            await self._send_frame.control({"type": "websocket.close", "code": code})
        await self._unwatch_all()

    async def _unwatch_all(self) -> None:
        subs, self._subs = self._subs, {}
        if self._hub is not None:
            for task in subs:
                await self._hub.unwatch(task, self)
        await self._leave_feed()

    def _release_connection(self) -> None:
        """Stop counting this connection against ``MAX_CONNECTIONS_PER_USER``; once, whichever way it ended."""
        key, self._counted = self._counted, None
        if key is not None:
            CONNECTIONS.release(key)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        self._closed = True
        self._release_connection()  # before leaving the groups, which may wait for Redis
        await self._unwatch_all()
        await self.disconnect(message.get("code", 1000))
        raise StopConsumer()


class TaskProgressConsumer(ProgressConsumer):
    """``ws/realtime-async/task/<task_name>/?seq=&token=&log_after=``: one task; closes 1000 after its final state."""

    async def connect(self) -> None:
        await super().connect()
        if self._closed:
            return
        task = self.scope.get("url_route", {}).get("kwargs", {}).get("task_name")
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        token = query["token"][-1] if query.get("token") else None
        # ``seq`` is accepted for symmetry with subscribe but changes nothing: the
        # current state is always sent first. ``log_after`` asks for the log's history.
        after = query["log_after"][-1] if query.get("log_after") else None
        try:
            task = validate_task_name(task)
        except ValueError:
            await self.not_found(str(task))
            return
        log_after = counter_text(after) if after is not None else None  # an invalid one asks for no history
        await self._guarded(self.subscribe(Subscribe(task, None, token, log_after)))

    async def handle(self, request: ClientMessage) -> None:
        if isinstance(request, Ping):
            await super().handle(request)
        else:
            await self._send_error("bad_request", "Only ping is accepted on a per-task URL.")

    async def not_found(self, task: str) -> None:
        await self._close(CLOSE_NOT_FOUND)

    async def finished(self, task: str) -> None:
        await self._close(CLOSE_FINAL)
