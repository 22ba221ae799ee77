"""Frames shared by many watchers, framed once, when the server is daphne.

daphne hands each connection ``send = functools.partial(server.handle_reply,
protocol)``, and every ``websocket.send`` then UTF-8 encodes and frames the
text again for that connection. The hub gives every watcher of an update the
same ``str`` object, so this sender frames it once (autobahn's
``prepareMessage``, the library's own broadcast primitive) and writes the
prepared bytes to each protocol, with the checks ``handle_reply`` and
``serverSend`` would make. Anything it does not recognise goes through the
``send`` it was given: other servers, closed connections, compression.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["frame_sender"]

_cache: dict[str, Any] = {"text": None, "factory": None, "prepared": None}


def _prepared(factory: Any, text: str) -> Any:
    # One slot is enough: a fan-out pass hands the same object to every watcher in turn.
    if _cache["text"] is not text or _cache["factory"] is not factory:
        _cache.update(text=text, factory=factory, prepared=factory.prepareMessage(text.encode("utf-8")))
    return _cache["prepared"]


class _PreparedSender:
    """``send`` for progress frames on daphne: frame once, write to many."""

    def __init__(self, send: functools.partial[Any], server: Any, protocol: Any) -> None:
        self.send, self.server, self.protocol = send, server, protocol

    async def __call__(self, message: dict[str, Any]) -> None:
        protocol, text = self.protocol, message.get("text")
        usable = (
            message.get("type") == "websocket.send"
            and isinstance(text, str)
            and not message.get("bytes")
            and protocol.state == protocol.STATE_OPEN
            and protocol._perMessageCompress is None  # a compressed connection frames per message
            and protocol in self.server.connections
            and not self.server.connections[protocol].get("disconnected")
        )
        if not usable:
            await self.send(message)
            return
        protocol.sendPreparedMessage(_prepared(protocol.factory, str(text)))


def frame_sender(send: Any) -> Any:
    """A sender that frames shared texts once when ``send`` is daphne's own, else ``send``."""
    try:
        from daphne.server import Server
    except ImportError:  # pragma: no cover - daphne is a dependency, but another server may run us
        return send
    if not (
        isinstance(send, functools.partial)
        and getattr(send.func, "__func__", None) is Server.handle_reply
        and len(send.args) == 1
        and not send.keywords
    ):
        return send
    protocol = send.args[0]
    if not all(hasattr(protocol, name) for name in ("sendPreparedMessage", "factory", "state", "STATE_OPEN")):
        return send
    server: Any = getattr(send.func, "__self__", None)
    return send if server is None else _PreparedSender(send, server, protocol)
