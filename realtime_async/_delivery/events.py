"""The Server-Sent Events endpoint (``docs/protocol.md``, "Server-Sent Events"): opening a stream and serving it.

One stream, two ways in:

- ``serve(scope, receive, send)``, from ASGI: ``ProgressHttpRouter`` (``routing.py``)
  calls it before Django's handler, so the writer sees the server's own
  ``send``. That is what gives a client that stops reading the WebSocket's
  backpressure on every server: on uvicorn ``send`` waits while the
  transport's buffer is full; on daphne a Twisted producer registered on the
  request says so (``_DaphneValve``). Either way the writer waits, the records
  meanwhile wait in the stream (the newest per task), and after
  ``STALLED_CLOSE_AFTER`` seconds the connection is aborted.
- ``events_view`` (``views.py``), the URL pattern's Django view, for projects
  without the router: a ``StreamingHttpResponse`` of the same chunks. Django
  writes them; ``SSE_MAX_BYTES`` bounds what a server may buffer for a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from channels.db import database_sync_to_async

from realtime_async._core.naming import validate_task_name
from realtime_async._core.process import Throttled
from realtime_async._delivery.hub import LayerUnavailable, get_hub
from realtime_async._delivery.limits import CONNECTIONS, connection_key
from realtime_async._delivery.sending import daphne_reply, send_transport
from realtime_async._delivery.streams import EventStream
from realtime_async._delivery.subscription import read_snapshot
from realtime_async.conf import get_settings
from realtime_async.protocol import NOT_FOUND_MESSAGE, counter_text, error_frame, progress_frame

__all__ = ["HEADERS", "Opened", "Query", "Refusal", "open_stream", "parse_query", "write_stream"]

logger = logging.getLogger("realtime_async")
_log = Throttled(logger)

#: Every stream's headers (``Vary: Cookie``: the session decides what it holds).
HEADERS: Sequence[tuple[str, str]] = (
    ("Content-Type", "text/event-stream; charset=utf-8"),
    ("Cache-Control", "no-cache, no-store, private"),
    ("X-Accel-Buffering", "no"),
    ("Vary", "Cookie"),
)


@dataclasses.dataclass(frozen=True)
class Query:
    """A stream request: its tasks in order (once each), the watch token for each, and where to resume."""

    tasks: list[str]
    tokens: dict[str, str]
    resume: tuple[str, int] | None


@dataclasses.dataclass(frozen=True)
class Refusal:
    """An answer instead of a stream: ``status``, JSON or text ``body``, extra headers."""

    status: int
    body: str
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass
class Opened:
    """A stream ready to write, and the connection it counts as, until ``release()``."""

    stream: EventStream
    key: str
    released: bool = False

    async def release(self) -> None:
        """Leave the tasks' groups and stop counting the connection; once, however often called."""
        if not self.released:
            self.released = True
            # First: leaving the groups may wait for Redis, or be cancelled, and the client may be back already.
            CONNECTIONS.release(self.key)
            await self.stream.close()


def parse_query(pairs: Sequence[tuple[str, str]], last_event_id: str | None) -> Query:
    """The tasks (``task=``, repeats once), tokens (``token=``, each paired with its task) and resume point."""
    tasks = list(dict.fromkeys(value for name, value in pairs if name == "task"))
    tokens = {}
    for name, value in pairs:
        # A watch token is "<task>:<timestamp>:<signature>": it names the task it is for.
        if name == "token" and value.count(":") >= 2:
            tokens[value.rsplit(":", 2)[0]] = value
    return Query(tasks, tokens, _resume(last_event_id))


def _resume(last_event_id: str | None) -> tuple[str, int] | None:
    """``Last-Event-ID`` as ``(task, seq)``; None when absent or malformed (the same thing)."""
    if not last_event_id or ":" not in last_event_id:
        return None
    task, _, seq = last_event_id.rpartition(":")
    number = counter_text(seq)
    return (task, number) if number is not None and number > 0 else None


async def open_stream(user: Any, client: Any, query: Query) -> Opened | Refusal:
    """Count the connection, join the tasks' groups, read their snapshots: a stream to write, or the refusal.

    The refusals come before anything is written: ``400`` without tasks, ``429``
    over ``MAX_CONNECTIONS_PER_USER``, ``503`` when the layer or the store fails.
    Whatever ends it without a stream (a refusal, an error, a cancellation)
    stops counting the connection first, before leaving any group.
    """
    if not query.tasks:
        return Refusal(400, error_frame("bad_request", "Name at least one task: ?task=<name>."))
    settings = get_settings()
    key = connection_key({"user": user, "client": client})
    if not CONNECTIONS.acquire(key, settings.max_connections_per_user):
        return Refusal(429, "Too many connections.", "text/plain; charset=utf-8", (("Retry-After", "30"),))
    stream: EventStream | None = None
    # Past twice the limit, names are not even answered: a URL of ten thousand names costs no more.
    tasks = query.tasks[: 2 * settings.max_subscriptions]
    try:
        served, refused = _split(tasks, settings.max_subscriptions)
        stream = EventStream(get_hub(), heartbeat=settings.sse_heartbeat, max_bytes=settings.sse_max_bytes)
        await stream.watch(served)
        snapshots = await database_sync_to_async(_read_all)(user, served, query.tokens)
        for task in tasks:
            if task in refused:
                await stream.refuse(task, refused[task])
                continue
            snapshot = snapshots[task]
            if snapshot is None:
                await stream.refuse(task, error_frame("not_found", NOT_FOUND_MESSAGE, task))
                continue
            stored, seq, _ = snapshot
            frame = None if query.resume == (task, seq) else progress_frame(task, stored)
            await stream.start(task, snapshot, frame)
    except LayerUnavailable as exc:
        _log.warning("realtime_async: cannot open an event stream (%s); answering 503", exc)
        CONNECTIONS.release(key)
        if stream is not None:
            await stream.close()
        return Refusal(503, "Service unavailable.", "text/plain; charset=utf-8", (("Retry-After", "2"),))
    except BaseException:
        CONNECTIONS.release(key)
        if stream is not None:
            await stream.close()
        raise
    return Opened(stream, key)


def _split(tasks: list[str], limit: int) -> tuple[list[str], dict[str, str]]:
    """The tasks to serve (valid names, up to ``limit``) and the answer for each of the others."""
    served: list[str] = []
    refused: dict[str, str] = {}
    for task in tasks:
        try:
            validate_task_name(task)
        except ValueError:
            # Like an unknown task, and like the per-task WebSocket URL: the name is not repeated back.
            refused[task] = error_frame("not_found", NOT_FOUND_MESSAGE)
            continue
        if len(served) >= limit:
            refused[task] = error_frame("limit", "Too many tasks on this stream.", task)
        else:
            served.append(task)
    return served, refused


def _read_all(user: Any, tasks: list[str], tokens: dict[str, str]) -> dict[str, tuple[str, int, bool] | None]:
    """Every task's snapshot, or None where refused: one thread hop for the whole stream."""
    return {task: read_snapshot(user, task, tokens.get(task)) for task in tasks}


async def write_stream(opened: Opened, send: Any, receive: Any) -> None:
    """Write an opened stream to an ASGI connection until it ends, the client leaves or stops reading."""
    stream, stall_after = opened.stream, get_settings().stalled_close_after
    writer = _DaphneValve.attach(send) or _Plain(send)
    # On daphne a record can go out from the hub's fan-out at once; uvicorn's send may wait: its writer writes.
    stream.write_now = writer.write_now if isinstance(writer, _DaphneValve) else None
    writing = asyncio.ensure_future(_write_all(stream, writer, stall_after))
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({writing, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (writing, gone):
            task.cancel()
        results = await asyncio.gather(writing, gone, return_exceptions=True)
        stream.write_now = None
        writer.detach()
        await opened.release()
    if isinstance(results[0], _Stalled):
        logger.info("realtime_async: an event stream's client read nothing for %ss; aborted", stall_after)
        writer.abort()
        with contextlib.suppress(TimeoutError):  # let the server see the connection go before returning
            async with asyncio.timeout(1):
                await _disconnected(receive)
    elif isinstance(results[0], BaseException) and not isinstance(results[0], asyncio.CancelledError):
        logger.error("realtime_async: writing an event stream failed", exc_info=results[0])


class _Stalled(Exception):
    """The client read nothing for ``STALLED_CLOSE_AFTER`` seconds while records waited."""


async def _write_all(stream: EventStream, writer: _Plain, stall_after: float | None) -> None:
    async with contextlib.aclosing(stream.chunks()) as chunks:
        async for chunk in chunks:
            try:
                await writer.write(chunk, stall_after)
            except TimeoutError:
                raise _Stalled() from None
    await writer.send(_body(b"", more=False))


def _body(chunk: bytes, *, more: bool = True) -> dict[str, Any]:
    """The ASGI message that writes ``chunk`` to the response; ``more``: the stream goes on."""
    return {"type": "http.response.body", "body": chunk, "more_body": more}


async def _disconnected(receive: Any) -> None:
    while (await receive()).get("type") != "http.disconnect":
        pass


class _Plain:
    """Writes chunks with the server's ``send``; uvicorn's waits while the client does not read."""

    def __init__(self, send: Any) -> None:
        self.send = send

    async def write(self, chunk: bytes, stall_after: float | None) -> None:
        """Write ``chunk``; ``TimeoutError`` when the client took nothing for ``stall_after`` seconds."""
        async with asyncio.timeout(stall_after):
            await self.send(_body(chunk))

    def abort(self) -> None:
        """Drop the TCP connection of a client that stopped reading (uvicorn's transport; elsewhere nothing)."""
        transport = send_transport(self.send)
        if transport is not None and hasattr(transport, "abort"):
            transport.abort()

    def detach(self) -> None:
        """Nothing to undo."""


class _DaphneValve(_Plain):
    """On daphne: a Twisted streaming producer of the request, so that a full buffer makes ``write`` wait."""

    def __init__(self, send: Any, server: Any, request: Any) -> None:
        super().__init__(send)
        self.server, self.request = server, request
        self.flowing = asyncio.Event()
        self.flowing.set()

    @classmethod
    def attach(cls, send: Any) -> _DaphneValve | None:
        found = daphne_reply(send)
        if found is None or getattr(found[1], "producer", True) is not None:
            return None
        valve = cls(send, *found)
        valve.request.registerProducer(valve, True)
        return valve

    async def write(self, chunk: bytes, stall_after: float | None) -> None:
        # daphne's send only queues the bytes: a timer is needed only once the channel paused this producer.
        await self.send(_body(chunk))
        if not self.flowing.is_set():
            async with asyncio.timeout(stall_after):
                await self.flowing.wait()

    def write_now(self, chunk: bytes) -> bool:
        """Write ``chunk`` from the hub's fan-out, as daphne's ``send`` would; False while the client is behind."""
        connection = self.server.connections.get(self.request)  # what daphne's send checks first
        if not self.flowing.is_set() or connection is None or connection.get("disconnected"):
            return False
        self.request.handle_reply(_body(chunk))
        return True

    # Twisted's IPushProducer, called by the channel when the transport's buffer fills and drains.
    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's name
        self.flowing.clear()

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted's name
        self.flowing.set()

    def stopProducing(self) -> None:  # noqa: N802 - Twisted's name
        self.flowing.set()

    def abort(self) -> None:
        transport = getattr(self.request, "transport", None)
        if transport is not None:
            transport.abortConnection()

    def detach(self) -> None:
        with contextlib.suppress(Exception):  # the channel may be gone with the connection
            if self.request.producer is self:
                self.request.unregisterProducer()
