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
import collections
import dataclasses
import json
import logging
import time
from collections.abc import Awaitable
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.sessions import InstanceSessionWrapper
from channels.utils import await_many_dispatch

from realtime_async import _store
from realtime_async._daphne import frame_sender
from realtime_async.async_manager import AsyncManager
from realtime_async.conf import get_settings
from realtime_async.fanout import Hub, LayerUnavailable, get_hub
from realtime_async.naming import STAFF_FEED_GROUP, group_for_user, validate_task_name
from realtime_async.progress import FINAL_STATES
from realtime_async.protocol import (
    CLOSE_FINAL,
    CLOSE_NOT_FOUND,
    CLOSE_RATE_LIMITED,
    CLOSE_TOO_LARGE,
    CLOSE_UNAVAILABLE,
    BadRequest,
    Cancel,
    ClientMessage,
    ErrorCode,
    Ping,
    Subscribe,
    SubscribeFeed,
    Unsubscribe,
    UnsubscribeFeed,
    error_frame,
    parse_client_message,
    pong_frame,
    progress_frame,
)
from realtime_async.views import FORBIDDEN_MESSAGE, cancel_outcome

__all__ = ["ProgressConsumer", "TaskProgressConsumer"]

logger = logging.getLogger("realtime_async")

_NOT_FOUND = "No such task."
_NO_FEED = "No feed without a signed-in user."
_INTERNAL_ERROR = 1011
#: Tasks one connection remembers (last seq sent, the feed's permission); the least recent are forgotten.
_REMEMBERED_TASKS = 4096
_warned_at = 0.0
#: Open connections per user (or per client address, for anonymous ones) in this process.
_connections: collections.Counter[str] = collections.Counter()


@dataclasses.dataclass(eq=False)
class _Subscription:
    last_seq: int = 0
    #: Frames sent for this task, so a repeated subscribe can tell whether it was answered.
    sent: int = 0
    #: Authorised; until then the hub's frames wait in ``held``.
    ready: bool = False
    held: list[tuple[int, str, bool]] = dataclasses.field(default_factory=list)
    #: The watch token the client subscribed with: it shows the task, it never lets the client cancel it.
    token: str | None = None


@dataclasses.dataclass(eq=False)
class _Seen:
    """What one connection knows of one task across its subscription and its feed."""

    #: The last seq sent on this connection (either way), or refused by the feed.
    seq: int = 0
    #: Final states passed: each ends a run, and the next run under the name is asked about again.
    runs: int = 0
    #: ``can_view``'s answer for the feed, for the task's current run; None until asked.
    allowed: bool | None = None
    #: Feed updates waiting for that answer.
    held: list[tuple[int, str, bool]] = dataclasses.field(default_factory=list)


class _TokenBucket:
    """``rate`` messages a second sustained, bursts of ``burst``."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst, self.tokens = rate, burst, burst
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def _connection_key(scope: dict[str, Any]) -> str:
    user = scope.get("user")
    if user is not None and getattr(user, "is_authenticated", False):
        return f"user:{user.pk}"
    # Anonymous watchers (watch tokens) are told apart by address; behind a proxy
    # that is the proxy's unless the server sets the client from proxy headers.
    client = scope.get("client") or ("",)
    return f"anon:{client[0]}"


def _warn(message: str, *args: object) -> None:
    # During an outage every reconnecting client fails the same way: one line every ten seconds.
    global _warned_at
    now = time.monotonic()
    if now - _warned_at > 10:
        _warned_at = now
        logger.warning(message, *args)
    else:
        logger.debug(message, *args)


def _frame_bytes(text: str, limit: int) -> int:
    # Exact UTF-8 length only when the character count leaves any doubt.
    if len(text) > limit or len(text) * 4 <= limit:
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def _frame_send(send: Any) -> Any:
    """``send`` without channels' session wrappers, for ``websocket.send`` frames only.

    ``InstanceSessionWrapper.send`` touches the lazy session twice per frame and
    then forwards anything but the message types it saves on (HTTP responses):
    for a WebSocket frame, skipping it changes nothing but the cost. Anything
    else (a subclass, another wrapper) is kept as it is.
    """
    wrapped = InstanceSessionWrapper.__dict__["send"]
    while True:
        wrapper: Any = getattr(send, "__self__", None)
        if type(wrapper) is not InstanceSessionWrapper or getattr(send, "__func__", None) is not wrapped:
            return send
        if "websocket.send" in wrapper.save_message_types:
            return send
        send = wrapper.real_send


def _read_and_authorize(user: Any, task: str, token: str | None) -> tuple[str, int, bool] | None:
    """``(record_json, seq, final)`` when ``user`` (or ``token``) may watch ``task``, else None."""
    try:
        stored = _store.get_store().read_state(task)
    except Exception as exc:
        raise LayerUnavailable(f"cache read failed ({type(exc).__name__})") from exc
    if stored is None:
        return None
    try:
        record = json.loads(stored)
        seq, final = int(record["seq"]), record.get("state") in FINAL_STATES
        manager = AsyncManager.resolve_manager()
        allowed = manager.can_view(user, record) or (token is not None and manager.check_watch_token(token, task))
    except Exception:  # a broken hook or record must not let anyone in, nor crash the socket
        logger.exception("realtime_async: permission check for %r failed; access refused", task)
        return None
    return (stored, seq, final) if allowed else None


def _can_view_each(user: Any, frames: dict[str, str]) -> dict[str, bool]:
    """``can_view`` of each task's record, read from one of its progress frames; a failing hook refuses."""
    manager = AsyncManager.resolve_manager()
    answers = {}
    for task, frame in frames.items():
        try:
            answers[task] = bool(manager.can_view(user, json.loads(frame)["data"]))
        except Exception:
            logger.exception("realtime_async: permission check for %r failed; access refused", task)
            answers[task] = False
    return answers


class ProgressConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    """``ws/realtime-async/``: subscribe to tasks (up to ``MAX_SUBSCRIPTIONS``), follow the feed, cancel tasks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._subs: dict[str, _Subscription] = {}
        #: The feed groups followed (None: no feed), and per task what was sent or decided.
        self._feed: tuple[str, ...] | None = None
        self._seen: dict[str, _Seen] = {}
        #: Tasks whose feed updates wait for ``can_view``, asked by ``_decider`` a batch at a time.
        self._undecided: dict[str, None] = {}
        self._decider: asyncio.Task[None] | None = None
        self._closed = False
        # Frames of one connection go out one at a time, each checked against the last seq sent.
        self._send_lock = asyncio.Lock()
        self._counted: str | None = None
        self._hub: Hub | None = None
        self._bucket = _TokenBucket(1, 1)
        #: ``send`` for progress frames (see ``_frame_send``).
        self._send_frame: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        # Unlike AsyncConsumer.__call__, no layer channel per connection: the hub
        # holds the process's only one, so a layer failure closes each socket with
        # 4503 instead of crashing it with 1011, and idle sockets cost Redis nothing.
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        self._send_frame = frame_sender(_frame_send(send))
        try:
            await await_many_dispatch([receive], self.dispatch)
        except StopConsumer:
            pass
        finally:
            self._release_connection()
            if self._subs or self._feed is not None:
                await self._unwatch_all()
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
        self._bucket = _TokenBucket(
            settings.max_messages_per_second, settings.max_messages_per_second + settings.max_subscriptions
        )
        # Accept first: only an open socket can carry a close code to the client.
        await self.accept()
        key = _connection_key(self.scope)
        if _connections[key] >= settings.max_connections_per_user:
            await self._close(CLOSE_RATE_LIMITED)
            return
        _connections[key] += 1
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
        size = _frame_bytes(text, limit) if text is not None else len(data or b"")
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
        else:
            await self.cancel(request)

    async def subscribe(self, request: Subscribe) -> None:
        """Join the task's group, then send the current state (the snapshot), then live updates."""
        task = request.task
        sub = self._subs.get(task)
        if sub is not None:  # asked again: the current state at once
            await self._send_current(task, sub, request.token, baseline=sub.sent)
            return
        if len(self._subs) >= get_settings().max_subscriptions:
            await self._send_error("limit", "Too many subscriptions on this connection.", task)
            return
        sub = self._subs[task] = _Subscription()
        try:
            self._hub = self._hub or get_hub()
            await self._hub.watch(task, self)
        except LayerUnavailable as exc:
            _warn("realtime_async: cannot watch %r (%s); closing with 4503", task, exc)
            await self._close(CLOSE_UNAVAILABLE)
            return
        # Joined before this read, so nothing between the snapshot and the stream is missed.
        if await self._send_current(task, sub, request.token, baseline=None):
            sub.ready = True
            for seq, frame, final in sub.held:
                await self._emit(task, sub, seq, frame, final)
            sub.held.clear()

    async def subscribe_feed(self) -> None:
        """Follow every task the user may see (see ``feed_groups``); a second call changes nothing."""
        if self._feed is not None:
            return
        user = self.scope.get("user")
        if user is None or not getattr(user, "is_authenticated", False):
            await self._send_error("not_found", _NO_FEED)
            return
        self._feed = groups = self.feed_groups(user)
        try:
            self._hub = self._hub or get_hub()
            for group in groups:
                await self._hub.watch_feed(group, self)
        except LayerUnavailable as exc:
            _warn("realtime_async: cannot follow the feed (%s); closing with 4503", exc)
            await self._close(CLOSE_UNAVAILABLE)

    async def unsubscribe_feed(self) -> None:
        """Stop following the feed; what was decided about its tasks is kept for this connection."""
        await self._leave_feed()

    def feed_groups(self, user: Any) -> tuple[str, ...]:
        """The groups a signed-in user's feed follows: ``STAFF_FEED_GROUP`` for staff, else their own."""
        if getattr(user, "is_staff", False):
            return (STAFF_FEED_GROUP,)
        return (group_for_user(user.pk),)

    async def _leave_feed(self) -> None:
        groups, self._feed = self._feed, None
        if groups is None:
            return
        self._undecided.clear()
        for seen in self._seen.values():
            seen.held.clear()
        if self._hub is not None:
            for group in groups:
                await self._hub.unwatch_feed(group, self)

    async def cancel(self, request: Cancel) -> None:
        """Called when a client asks to cancel a task; accepted, it is not answered (``cancelled`` follows)."""
        task = request.task
        sub = self._subs.get(task)
        token = sub.token if sub is not None and sub.ready else None
        outcome = await database_sync_to_async(cancel_outcome)(self.scope.get("user"), task, token=token)
        if outcome == "not_found":
            await self.not_found(task)
        elif outcome == "forbidden":
            await self._send_error("forbidden", FORBIDDEN_MESSAGE, task)

    async def not_found(self, task: str) -> None:
        """Called when ``task`` is unknown or not for this user (the same answer, so names cannot be probed)."""
        await self._send_error("not_found", _NOT_FOUND, task)

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

    # -- internals -------------------------------------------------------
    async def _send_current(self, task: str, sub: _Subscription, token: str | None, *, baseline: int | None) -> bool:
        """Send the stored state; False (and the subscription ended) when the task is gone or refused."""
        try:
            loaded = await database_sync_to_async(_read_and_authorize)(self.scope.get("user"), task, token)
        except LayerUnavailable as exc:
            _warn("realtime_async: cannot read %r (%s); closing with 4503", task, exc)
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
        self, task: str, sub: _Subscription, seq: int, frame: str, final: bool, *, baseline: int | None = None
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
            await self._send_frame({"type": "websocket.send", "text": frame})
        if final:
            await self.finished(task)

    # -- the feed ----------------------------------------------------------
    def _remember(self, task: str) -> _Seen:
        seen = self._seen.pop(task, None) or _Seen()
        self._seen[task] = seen  # now the most recent
        if len(self._seen) > _REMEMBERED_TASKS:
            del self._seen[next(iter(self._seen))]
        return seen

    def _sent(self, task: str, seq: int, final: bool) -> None:
        seen = self._remember(task)
        seen.seq = max(seen.seq, seq)
        if final:
            seen.runs += 1
            seen.allowed = None  # a new run under the same name may be someone else's: ask again

    async def _feed_deliver(self, task: str, seq: int, frame: str, final: bool) -> None:
        seen = self._remember(task)
        if seq <= seen.seq or any(seq <= held for held, _, _ in seen.held):
            return  # sent already (through the feed or a subscription), or older than that
        if seen.allowed is None or seen.held:
            # Latest wins while waiting, except a final state (as for a subscription).
            seen.held[:] = [item for item in seen.held if item[2]]
            seen.held.append((seq, frame, final))
            if seen.allowed is None:
                self._ask(task)
            return
        await self._admit(task, seen, seq, frame, final)

    async def _admit(self, task: str, seen: _Seen, seq: int, frame: str, final: bool) -> None:
        """Send a feed update when the task's run is allowed; remember its seq either way, so copies are dropped."""
        allowed = seen.allowed
        # Before any await: a final state ends the run at once, so what follows is asked about again.
        self._sent(task, seq, final)
        if not allowed:
            return
        async with self._send_lock:
            # A subscription made meanwhile sends the task itself; a newer seq already sent wins.
            if self._closed or self._feed is None or task in self._subs or seq < seen.seq:
                return
            await self._send_frame({"type": "websocket.send", "text": frame})

    def _ask(self, task: str) -> None:
        self._undecided[task] = None
        if self._decider is None or self._decider.done():
            self._decider = asyncio.create_task(self._guarded(self._decide()), name="realtime_async-feed-permissions")

    async def _decide(self) -> None:
        """Ask ``can_view`` about the tasks the feed holds updates of, off the event loop, a batch at a time.

        The hub's fan-out never waits for it, and tasks that show up while a
        batch is being decided are asked about together in the next one.
        """
        while self._undecided and self._feed is not None and not self._closed:
            batch, runs = {}, {}
            for task in self._undecided:
                seen = self._seen.get(task)
                if seen is not None and seen.allowed is None and seen.held:
                    batch[task], runs[task] = seen.held[0][1], seen.runs
            self._undecided.clear()
            if not batch:
                continue
            answers = await database_sync_to_async(_can_view_each)(self.scope.get("user"), batch)
            for task, allowed in answers.items():
                seen = self._seen.get(task)
                if seen is None or seen.allowed is not None or self._feed is None:
                    continue
                if seen.runs == runs[task]:
                    seen.allowed = allowed
                    await self._release(task, seen)
                else:  # the run ended meanwhile (its final state went out through a subscription)
                    seen.held[:] = [item for item in seen.held if item[0] > seen.seq]
                    if seen.held:
                        self._ask(task)

    async def _release(self, task: str, seen: _Seen) -> None:
        """Send (or drop, when refused) the updates held while ``can_view`` was asked, up to the run's end."""
        while seen.held and seen.allowed is not None:
            seq, frame, final = seen.held.pop(0)
            if seq > seen.seq:
                await self._admit(task, seen, seq, frame, final)
        if seen.held:
            self._ask(task)  # a new run followed the final state

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
                await self.send(text_data=frame)

    async def _send_error(self, code: ErrorCode, message: str, task: str | None = None) -> None:
        await self._send_text(error_frame(code, message, task))

    async def _close(self, code: int) -> None:
        if self._closed:
            return
        self._closed = True
        async with self._send_lock:
            await self.close(code)
        await self._unwatch_all()

    async def _unwatch_all(self) -> None:
        subs, self._subs = self._subs, {}
        if self._hub is not None:
            for task in subs:
                await self._hub.unwatch(task, self)
        await self._leave_feed()

    def _release_connection(self) -> None:
        key, self._counted = self._counted, None
        if key is not None:
            _connections[key] -= 1
            if _connections[key] <= 0:
                del _connections[key]

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        self._closed = True
        await self._unwatch_all()
        self._release_connection()
        await self.disconnect(message.get("code", 1000))
        raise StopConsumer()


class TaskProgressConsumer(ProgressConsumer):
    """``ws/realtime-async/task/<task_name>/?seq=&token=``: one task; closes 1000 after its final state."""

    async def connect(self) -> None:
        await super().connect()
        if self._closed:
            return
        task = self.scope.get("url_route", {}).get("kwargs", {}).get("task_name")
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        token = query["token"][-1] if query.get("token") else None
        # ``seq`` is accepted for symmetry with subscribe but changes nothing: the
        # current state is always sent first.
        try:
            task = validate_task_name(task)
        except ValueError:
            await self.not_found(str(task))
            return
        await self._guarded(self.subscribe(Subscribe(task, None, token)))

    async def handle(self, request: ClientMessage) -> None:
        if isinstance(request, Ping):
            await super().handle(request)
        else:
            await self._send_error("bad_request", "Only ping is accepted on a per-task URL.")

    async def not_found(self, task: str) -> None:
        await self._close(CLOSE_NOT_FOUND)

    async def finished(self, task: str) -> None:
        await self._close(CLOSE_FINAL)
