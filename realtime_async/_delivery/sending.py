"""How a consumer sends progress frames: past channels' session wrapper, and framed once on daphne.

``progress_sender(send)`` is the ``send`` the consumer uses for the hub's frames.

Frames shared by many watchers are framed once when the server is daphne.

daphne hands each connection ``send = functools.partial(server.handle_reply,
protocol)``, and every ``websocket.send`` then UTF-8 encodes and frames the
text again for that connection. The hub gives every watcher of an update the
same ``str`` object, so this sender frames it once (autobahn's
``prepareMessage``, the library's own broadcast primitive) and writes the
prepared bytes to each protocol, with the checks ``handle_reply`` and
``serverSend`` would make. Anything it does not recognise goes through the
``send`` it was given: other servers, closed connections, compression.

On daphne the sender also applies backpressure (``_delivery.backpressure``):
progress frames name their task, so that while the client is not reading only
the newest frame of each task waits.

Elsewhere (uvicorn, Channels' test communicator) ``_QueuedSender`` does the
same with the server's ``send`` as the only signal: uvicorn's waits while the
transport's buffer is full. The consumer must never wait for one client (the
hub hands each update to every watcher in turn, so one client that stopped
reading would hold up everyone else's), so a writer task per connection
sends, and what waits for it is held as the valve holds it.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from collections.abc import Callable
from typing import Any

from channels.sessions import InstanceSessionWrapper

from realtime_async._delivery.backpressure import CLOSE_GRACE, Valve, attach
from realtime_async.conf import get_settings
from realtime_async.protocol import CLOSE_STALLED

__all__ = ["daphne_reply", "frame_sender", "progress_sender", "send_transport"]

logger = logging.getLogger("realtime_async")

_cache: dict[str, Any] = {"text": None, "factory": None, "prepared": None}


def _prepared(factory: Any, text: str) -> Any:
    # One slot is enough: a fan-out pass hands the same object to every watcher in turn.
    if _cache["text"] is not text or _cache["factory"] is not factory:
        _cache.update(text=text, factory=factory, prepared=factory.prepareMessage(text.encode("utf-8")))
    return _cache["prepared"]


class _PreparedSender:
    """``send`` for progress frames on daphne: frame once, write to many, hold back while the client does not read.

    ``await sender(message, task, final)`` sends a progress frame (``task`` lets a
    newer frame of the task replace it while held); ``await sender.control(message)``
    sends one of this connection's own frames (a pong, an error), in order behind
    the held ones; ``sender.flush()`` writes what is held, before a close; ``await sender.aclose()``
    when the connection ended.
    """

    def __init__(
        self, send: functools.partial[Any], server: Any, protocol: Any, on_stalled: Callable[[], None] | None = None
    ) -> None:
        self.send, self.server, self.protocol = send, server, protocol
        self.on_stalled = on_stalled
        #: Registered on the first progress frame (see ``_delivery.backpressure``); None where it cannot be.
        self.valve: Valve | None = None
        self._attached = False

    def _usable(self, message: dict[str, Any]) -> bool:
        protocol = self.protocol
        return (
            message.get("type") == "websocket.send"
            and isinstance(message.get("text"), str)
            and not message.get("bytes")
            and protocol.state == protocol.STATE_OPEN
            and protocol._perMessageCompress is None  # a compressed connection frames per message
            and protocol in self.server.connections
            and not self.server.connections[protocol].get("disconnected")
        )

    async def __call__(self, message: dict[str, Any], task: str | None = None, final: bool = False) -> None:
        if not self._usable(message):
            await self.send(message)
            return
        protocol = self.protocol
        prepared = _prepared(protocol.factory, str(message["text"]))
        if not self._attached:
            self._attached = True
            self.valve = attach(protocol, self.on_stalled)
        if self.valve is None:
            protocol.sendPreparedMessage(prepared)
        else:
            self.valve.send(prepared, task, final)

    async def control(self, message: dict[str, Any]) -> None:
        valve = self.valve
        if valve is not None and (valve.held or valve.paused) and self._usable(message):
            # Framed for this connection alone: the shared one-slot cache is for fan-out frames.
            valve.send(self.protocol.factory.prepareMessage(str(message["text"]).encode("utf-8")), None, False)
            return
        await self.send(message)

    def flush(self) -> None:
        if self.valve is not None:
            self.valve.flush(force=True)

    async def aclose(self) -> None:
        """Nothing to stop: daphne's ``send`` never waits."""


class _QueuedSender:
    """The same interface over any other server's ``send``, which may wait: a writer task sends, in order.

    Held until the writer takes them, in the order they came. While a send
    waits (the client is not reading), they are held as ``backpressure.Valve``
    holds them: the newest progress frame of each task under the task's name
    (a final one is always kept, and drops the task's older frame), the
    connection's own frames (pongs, errors, the close) under a number. Otherwise
    every frame is kept (a snapshot is not replaced by the update that follows it
    before the writer ran). A
    send that waits ``STALLED_CLOSE_AFTER`` seconds drops what is held and calls
    ``on_stalled`` (the consumer closes with 4408); the close frame then gets
    ``CLOSE_GRACE`` seconds before the TCP connection is aborted.
    """

    def __init__(self, send: Any, on_stalled: Callable[[], None] | None = None) -> None:
        self.send, self.on_stalled = send, on_stalled
        self.held: dict[str | int, dict[str, Any]] = {}
        self._numbers = itertools.count()
        self._writer: asyncio.Task[None] | None = None
        self._stalled = False
        #: A send is waiting for the client (only then do newer frames replace older ones).
        self._waiting = False

    async def __call__(self, message: dict[str, Any], task: str | None = None, final: bool = False) -> None:
        if task is not None and final:
            self.held.pop(task, None)
        replaceable = task is not None and not final and self._waiting
        self.held[task if replaceable and task is not None else next(self._numbers)] = message
        self._start()

    async def control(self, message: dict[str, Any]) -> None:
        self.held[next(self._numbers)] = message
        self._start()

    def flush(self) -> None:
        """Nothing to do: a close is queued behind what is held."""

    async def aclose(self) -> None:
        """Stop the writer (the connection ended)."""
        writer, self._writer = self._writer, None
        self.held.clear()
        if writer is not None and writer is not asyncio.current_task():
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    def _start(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write())

    async def _write(self) -> None:
        stall_after = get_settings().stalled_close_after
        while self.held:
            key = next(iter(self.held))
            message = self.held.pop(key)
            closing = message.get("type") == "websocket.close"
            try:
                async with asyncio.timeout(CLOSE_GRACE if closing or self._stalled else stall_after):
                    # Seen by others only while the send is suspended: a send that does not wait returns first.
                    self._waiting = True
                    try:
                        await self.send(message)
                    finally:
                        self._waiting = False
            except TimeoutError:
                if closing or self._stalled:
                    self._abort()
                    return
                self._stalled = True
                self.held.clear()
                logger.info(
                    "realtime_async: WebSocket client %s read nothing for %g s; closing it with %d",
                    self._peer(), stall_after, CLOSE_STALLED,
                )  # fmt: skip
                if self.on_stalled is not None:
                    self.on_stalled()
            except Exception:  # the client went away (uvicorn raises ClientDisconnected): nothing more to send
                self.held.clear()
                return

    def _peer(self) -> str:
        transport = send_transport(self.send)
        peer = transport.get_extra_info("peername") if hasattr(transport, "get_extra_info") else None
        return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "(unknown)"

    def _abort(self) -> None:
        self.held.clear()
        transport = send_transport(self.send)
        if transport is not None and hasattr(transport, "abort"):
            logger.info(
                "realtime_async: WebSocket client %s took no close frame in %g s; aborted", self._peer(), CLOSE_GRACE
            )
            transport.abort()


def daphne_reply(send: Any) -> tuple[Any, Any] | None:
    """``(server, protocol)`` when ``send`` is daphne's own ``partial(server.handle_reply, protocol)``, else None."""
    try:
        from daphne.server import Server
    except ImportError:  # pragma: no cover - daphne is a dependency, but another server may run us
        return None
    if not (
        isinstance(send, functools.partial)
        and getattr(send.func, "__func__", None) is Server.handle_reply
        and len(send.args) == 1
        and not send.keywords
    ):
        return None
    server = getattr(send.func, "__self__", None)
    return None if server is None else (server, send.args[0])


def send_transport(send: Any) -> Any:
    """The asyncio transport behind a server's bound ``send`` (uvicorn keeps it as ``transport``), or None."""
    return getattr(getattr(send, "__self__", None), "transport", None)


def frame_sender(send: Any, on_stalled: Callable[[], None] | None = None) -> Any:
    """A sender that frames shared texts once when ``send`` is daphne's own, else ``send``.

    ``on_stalled`` is called when the connection's client has read nothing for
    ``STALLED_CLOSE_AFTER`` seconds (see ``_delivery.backpressure``): the consumer closes it.
    """
    found = daphne_reply(send)
    if found is None:
        return send
    server, protocol = found
    if not all(hasattr(protocol, name) for name in ("sendPreparedMessage", "factory", "state", "STATE_OPEN")):
        return send
    return _PreparedSender(send, server, protocol, on_stalled)


def _without_session(send: Any) -> Any:
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


def progress_sender(send: Any, on_stalled: Callable[[], None] | None = None) -> _PreparedSender | _QueuedSender:
    """The sender of the frames of a connection whose ASGI ``send`` is ``send`` (see ``_PreparedSender``)."""
    sender = frame_sender(_without_session(send), on_stalled)
    return sender if isinstance(sender, _PreparedSender) else _QueuedSender(sender, on_stalled)
