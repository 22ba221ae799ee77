"""Which ASGI server serves this process, and the WebSocket options of it that realtime_async depends on.

``manage.py check`` runs outside the server and cannot see its options
(``uvicorn --ws-max-size …`` lives in the server's command line). A consumer
can: the ASGI ``send`` a connection gets belongs to the server.

- daphne: ``functools.partial(Server.handle_reply, protocol)``; the ``Server``
  keeps its options (``websocket_max_message_size``, ``ping_interval``,
  ``ping_timeout``) and never negotiates per-message deflate.
- uvicorn: a bound method of its WebSocket protocol object (websockets-sansio,
  websockets or wsproto), whose ``config`` is uvicorn's ``Config``
  (``ws_max_size``, ``ws_ping_interval``, ``ws_ping_timeout``, ``ws_per_message_deflate``).

Channels' session middleware wraps ``send``; ``detect_server`` looks through it.
Anything else (a test communicator, a middleware that wraps ``send`` in a
function) is not recognised: ``detect_server`` answers None.

``check_server`` judges the options found (system checks W006 to W009, listed
in ``checks``; W005 there is the static half); ``check_running_server(send)``,
called by the consumer for each connection, does it once per process and logs
each message that ``SILENCED_SYSTEM_CHECKS`` does not silence, as ``manage.py
check`` would print it.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from django.core.checks import CheckMessage, Warning

from realtime_async._delivery.sending import daphne_reply
from realtime_async.conf import get_settings

__all__ = ["SERVER_MAX_MESSAGE_BYTES", "ServerInfo", "check_running_server", "check_server", "detect_server"]

logger = logging.getLogger("realtime_async")

#: The most a server should buffer of one client message: daphne's own limit (realtime_async reads far less).
SERVER_MAX_MESSAGE_BYTES = 1024 * 1024
#: Per-message deflate, measured with websockets 17 on a 350-byte progress frame (the README's Run section).
_DEFLATE_US_PER_FRAME = 3
_DEFLATE_KIB_PER_CONNECTION = 47

#: uvicorn's WebSocket protocol modules, by the name of its ``--ws`` option.
_UVICORN_IMPLEMENTATIONS = {
    "uvicorn.protocols.websockets.websockets_sansio_impl": "websockets-sansio",
    "uvicorn.protocols.websockets.websockets_impl": "websockets",
    "uvicorn.protocols.websockets.wsproto_impl": "wsproto",
}


@dataclasses.dataclass(frozen=True)
class ServerInfo:
    """What realtime_async needs to know of the server behind a WebSocket connection."""

    #: "daphne" or "uvicorn".
    name: str
    #: Its WebSocket implementation: "autobahn" (daphne), or uvicorn's ``--ws`` ("websockets-sansio", …).
    websocket: str
    #: The largest client message it accepts, in bytes (None: no limit).
    max_message_bytes: int | None
    #: Seconds between its keepalive pings (None: it sends none).
    ping_interval: float | None
    #: Seconds it waits for a ping's answer before closing (None: it never closes for that).
    ping_timeout: float | None
    #: Whether it negotiates per-message deflate with the clients that offer it (browsers do).
    per_message_deflate: bool


def _unwrapped(send: Any) -> Any:
    """``send`` without channels' ``InstanceSessionWrapper`` (its ``real_send`` is the server's)."""
    for _ in range(8):  # a bound on wrappers of wrappers
        inner = getattr(getattr(send, "__self__", None), "real_send", None)
        if inner is None:
            return send
        send = inner
    return send


def _daphne(send: Any) -> ServerInfo | None:
    found = daphne_reply(send)
    if found is None:
        return None
    server = found[0]
    timeout = getattr(server, "ping_timeout", None)
    return ServerInfo(
        name="daphne",
        websocket="autobahn",
        max_message_bytes=getattr(server, "websocket_max_message_size", None) or None,
        # daphne pings on each timeout check once ``ping_interval`` passed, even at 0: never off.
        ping_interval=getattr(server, "ping_interval", None),
        # autobahn's autoPingTimeout: 0 or None waits for the answer forever.
        ping_timeout=timeout or None,
        per_message_deflate=False,
    )


def _uvicorn(send: Any) -> ServerInfo | None:
    protocol = getattr(send, "__self__", None)
    implementation = _UVICORN_IMPLEMENTATIONS.get(type(protocol).__module__)
    config: Any = getattr(protocol, "config", None)
    if implementation is None or type(config).__module__ != "uvicorn.config":
        return None
    interval = config.ws_ping_interval
    max_size = config.ws_max_size
    return ServerInfo(
        name="uvicorn",
        websocket=implementation,
        max_message_bytes=max_size if isinstance(max_size, int) and max_size > 0 else None,
        # Every implementation pings only when the interval is above 0.
        ping_interval=interval if interval is not None and interval > 0 else None,
        ping_timeout=config.ws_ping_timeout,
        per_message_deflate=bool(config.ws_per_message_deflate),
    )


def detect_server(send: Any) -> ServerInfo | None:
    """The server whose ASGI ``send`` (as a consumer gets it) is ``send``; None when it is not recognised."""
    send = _unwrapped(send)
    return _daphne(send) or _uvicorn(send)


def _label(info: ServerInfo) -> str:
    """What the messages are about, as ``manage.py check`` names a model: the server and its WebSocket library."""
    return f"{info.name} ({info.websocket})"


def _size(size: int | None) -> str:
    if size is None:
        return "any size"
    return f"{size // (1024 * 1024)} MiB" if size % (1024 * 1024) == 0 else f"{size:,} bytes"


def _max_size_messages(info: ServerInfo, limit: int) -> list[CheckMessage]:
    size, suggested = info.max_message_bytes, max(65536, limit)
    if info.name == "uvicorn":
        flag = f"Start uvicorn with --ws-max-size {suggested}"
    else:
        flag = "Set daphne's websocket_max_message_size (Server(...), its command line has no option for it)"
    if size is not None and size < limit:
        return [
            Warning(
                f"The server refuses WebSocket messages over {size:,} bytes, less than MAX_MESSAGE_BYTES ({limit:,}): "
                "a message the protocol allows ends the client's connection instead of being answered.",
                hint=f"{flag} (at least MAX_MESSAGE_BYTES), or lower REALTIME_ASYNC['MAX_MESSAGE_BYTES'].",
                obj=_label(info),
                id="realtime_async.W006",
            )
        ]
    if size is None or size > max(SERVER_MAX_MESSAGE_BYTES, limit):
        return [
            Warning(
                f"The server accepts WebSocket messages of {_size(size)} and holds each one whole before "
                f"realtime_async refuses anything over MAX_MESSAGE_BYTES ({limit:,} bytes): every connection can "
                "make the server buffer that much.",
                hint=f"{flag}: from MAX_MESSAGE_BYTES up to {_size(SERVER_MAX_MESSAGE_BYTES)}, daphne's limit.",
                obj=_label(info),
                id="realtime_async.W007",
            )
        ]
    return []


def _ping_messages(info: ServerInfo) -> list[CheckMessage]:
    if info.ping_interval is None:
        problem = "sends no keepalive pings"
    elif info.ping_timeout is None:
        problem = "never closes a connection whose keepalive pings go unanswered"
    else:
        return []
    if info.name == "uvicorn":
        hint = "Start uvicorn with --ws-ping-interval 20 --ws-ping-timeout 20 (its defaults)."
    else:
        hint = "Start daphne with --ping-interval 20 --ping-timeout 30 (its defaults)."
    return [
        Warning(
            f"The server {problem}: a client that vanished without closing (a dropped network, a sleeping laptop) "
            "keeps its connection, its subscriptions and one of its user's MAX_CONNECTIONS_PER_USER until the "
            "operating system gives up on the socket, which can take hours.",
            hint=hint,
            obj=_label(info),
            id="realtime_async.W008",
        )
    ]


def check_server(info: ServerInfo) -> list[CheckMessage]:
    """The running server's WebSocket options against what realtime_async needs (W006 to W009)."""
    messages = _max_size_messages(info, get_settings().max_message_bytes) + _ping_messages(info)
    if info.per_message_deflate:
        messages.append(
            Warning(
                "The server negotiates per-message deflate, which browsers ask for: each progress frame is "
                f"compressed for each watcher rather than framed once for all (about {_DEFLATE_US_PER_FRAME} µs "
                f"more CPU per frame and watcher), and every connection keeps its own compression state (about "
                f"{_DEFLATE_KIB_PER_CONNECTION} KiB).",
                hint="Start uvicorn with --ws-per-message-deflate false, unless the bandwidth it saves (progress "
                "frames shrink about tenfold) is worth more to you: then silence realtime_async.W009.",
                obj=_label(info),
                id="realtime_async.W009",
            )
        )
    return messages


#: The server checked in this process (None: none recognised yet); see ``check_running_server``.
_checked: dict[str, ServerInfo | None] = {"server": None}


def check_running_server(send: Any) -> None:
    """Check the server behind a connection's ``send`` once per process; log what ``check_server`` finds."""
    if _checked["server"] is not None:
        return
    info = detect_server(send)
    if info is None:
        return
    _checked["server"] = info
    for message in check_server(info):
        if not message.is_silenced():
            level = logging.ERROR if message.is_serious() else logging.WARNING
            logger.log(level, "realtime_async: system check of the running server: %s", message)
