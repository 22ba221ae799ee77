"""The wire protocol, version 1: client message parsing, every envelope the server sends, close codes.

``docs/protocol.md`` is the contract and ``protocol.schema.json`` describes the
same messages; the tests check that this parser accepts exactly what the
schema accepts. Every envelope of every transport (WebSocket frames, polling
and cancel answers) is built here, with ``PROTOCOL_VERSION``. Nothing here
touches the cache or the channel layer.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any, Final, Literal

from django.core.serializers.json import DjangoJSONEncoder

from realtime_async._core.naming import validate_task_name

if TYPE_CHECKING:
    from realtime_async._core.store import LogRead

__all__ = [
    "CLOSE_FINAL",
    "CLOSE_NOT_FOUND",
    "CLOSE_RATE_LIMITED",
    "CLOSE_STALLED",
    "CLOSE_TOO_LARGE",
    "CLOSE_UNAVAILABLE",
    "FORBIDDEN_MESSAGE",
    "MAX_ID_LENGTH",
    "MAX_SEQ",
    "MAX_TOKEN_LENGTH",
    "NOT_FOUND_MESSAGE",
    "PROTOCOL_VERSION",
    "BadRequest",
    "Cancel",
    "ClientMessage",
    "ClientMessageType",
    "ErrorCode",
    "LogRequest",
    "Ping",
    "ServerMessageType",
    "Subscribe",
    "SubscribeFeed",
    "Unsubscribe",
    "UnsubscribeFeed",
    "breakdown_envelope",
    "cancel_accepted_frame",
    "counter_text",
    "error_frame",
    "log_frame",
    "parse_client_message",
    "pong_frame",
    "progress_envelope",
    "progress_frame",
]

PROTOCOL_VERSION: Final = 1

#: Per-task URL: the final state was sent.
CLOSE_FINAL: Final = 1000
#: A client message over ``MAX_MESSAGE_BYTES``.
CLOSE_TOO_LARGE: Final = 4400
#: Per-task URL: no such task, or not allowed (the same answer).
CLOSE_NOT_FOUND: Final = 4404
#: The client read nothing for ``STALLED_CLOSE_AFTER`` seconds while updates waited; retry and resubscribe.
CLOSE_STALLED: Final = 4408
#: A message flood, or too many connections for one user.
CLOSE_RATE_LIMITED: Final = 4429
#: The channel layer or the cache failed; retry and resubscribe.
CLOSE_UNAVAILABLE: Final = 4503

#: The public text of every ``not_found`` answer: unknown and forbidden tasks alike.
NOT_FOUND_MESSAGE: Final = "No such task."
#: The public text of every ``forbidden`` answer to a cancel.
FORBIDDEN_MESSAGE: Final = "You may not cancel this task."

#: Largest ``seq`` (or log line number) a client may send: JavaScript numbers stay exact up to here.
MAX_SEQ: Final = 2**53 - 1
MAX_TOKEN_LENGTH: Final = 512
MAX_ID_LENGTH: Final = 128
#: Deepest nesting of arrays and objects a client message may have (a valid one has 1).
_MAX_DEPTH: Final = 32

ClientMessageType = Literal["subscribe", "unsubscribe", "ping", "subscribe_feed", "unsubscribe_feed", "cancel", "log"]
ServerMessageType = Literal["progress", "log", "error", "pong"]
ErrorCode = Literal["not_found", "forbidden", "bad_request", "limit"]

_ALLOWED_FIELDS: Final[dict[str, frozenset[str]]] = {
    "subscribe": frozenset({"v", "type", "task", "seq", "token", "log_after"}),
    "unsubscribe": frozenset({"v", "type", "task"}),
    "ping": frozenset({"v", "type", "id"}),
    "subscribe_feed": frozenset({"v", "type"}),
    "unsubscribe_feed": frozenset({"v", "type"}),
    "cancel": frozenset({"v", "type", "task"}),
    "log": frozenset({"v", "type", "task", "after", "token"}),
}


@dataclasses.dataclass(frozen=True)
class Subscribe:
    task: str
    seq: int | None = None
    token: str | None = None
    #: Send the task's log lines numbered above this one after the snapshot (None: no log history).
    log_after: int | None = None


@dataclasses.dataclass(frozen=True)
class Unsubscribe:
    task: str


@dataclasses.dataclass(frozen=True)
class Ping:
    id: str | int | None = None


@dataclasses.dataclass(frozen=True)
class SubscribeFeed:
    """Follow every task the user may see (their own; every task for staff)."""


@dataclasses.dataclass(frozen=True)
class UnsubscribeFeed:
    """Stop following the feed."""


@dataclasses.dataclass(frozen=True)
class Cancel:
    """Ask for ``task`` to be cancelled; the ``cancelled`` state follows as progress."""

    task: str


@dataclasses.dataclass(frozen=True)
class LogRequest:
    """Ask for ``task``'s log lines numbered above ``after`` (a gap, the last lines after a final state)."""

    task: str
    after: int
    #: A watch token, for a task not subscribed on the connection (its subscription ended with its final state).
    token: str | None = None


ClientMessage = Subscribe | Unsubscribe | Ping | SubscribeFeed | UnsubscribeFeed | Cancel | LogRequest


class BadRequest(Exception):
    """A client message the server refuses; ``message`` is safe to show the client."""

    def __init__(self, message: str, task: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.task = task


def _integer(value: object) -> int | None:
    # JSON (and JSON Schema) makes no difference between 17 and 17.0.
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _task(content: dict[str, Any]) -> str:
    try:
        return validate_task_name(content.get("task"))
    except ValueError:
        raise BadRequest("Invalid or missing field: task.") from None


def _valid_task_or_none(value: object) -> str | None:
    try:
        return validate_task_name(value)
    except ValueError:
        return None


def _reject_constant(value: str) -> None:
    # json.loads accepts NaN and Infinity, which are not JSON; a client sending them is broken.
    raise ValueError(value)


def _too_deep(text: str) -> bool:
    """Whether ``text`` nests arrays and objects deeper than ``_MAX_DEPTH`` (brackets in strings do not count)."""
    if text.count("[") + text.count("{") <= _MAX_DEPTH:
        return False
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > _MAX_DEPTH:
                return True
        elif char in "]}":
            depth -= 1
    return False


def parse_client_message(text: str) -> ClientMessage:
    """Parse one client text frame or raise ``BadRequest`` with a public reason."""
    # Bounded here, not by json's RecursionError: where that strikes depends on
    # the server's stack, so the same frame would get different answers.
    if _too_deep(text):
        raise BadRequest("Malformed JSON.")
    try:
        content = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise BadRequest("Malformed JSON.") from None
    if not isinstance(content, dict):
        raise BadRequest("A message must be a JSON object.")
    if _integer(content.get("v")) != PROTOCOL_VERSION:
        raise BadRequest("Unsupported or missing protocol version v.")
    kind = content.get("type")
    allowed = _ALLOWED_FIELDS.get(kind) if isinstance(kind, str) else None
    if allowed is None:
        raise BadRequest("Unknown message type.")
    if not allowed.issuperset(content):
        raise BadRequest("Unknown field.", _valid_task_or_none(content.get("task")))
    if kind == "ping":
        ident = content.get("id")
        if ident is None:
            return Ping()
        number = _integer(ident)
        if number is not None:
            return Ping(number)
        if isinstance(ident, str) and len(ident) <= MAX_ID_LENGTH:
            return Ping(ident)
        raise BadRequest("Invalid field: id.")
    if kind == "subscribe_feed":
        return SubscribeFeed()
    if kind == "unsubscribe_feed":
        return UnsubscribeFeed()
    task = _task(content)
    if kind == "unsubscribe":
        return Unsubscribe(task)
    if kind == "cancel":
        return Cancel(task)
    if kind == "log":
        after = _counter(content, "after", task)
        if after is None:
            raise BadRequest("Missing field: after.", task)
        return LogRequest(task, after, _token(content, task))
    seq = _counter(content, "seq", task)
    return Subscribe(task, seq, _token(content, task), _counter(content, "log_after", task))


def _token(content: dict[str, Any], task: str) -> str | None:
    token = content.get("token")
    if token is not None and not (isinstance(token, str) and len(token) <= MAX_TOKEN_LENGTH):
        raise BadRequest("Invalid field: token.", task)
    return token


def counter_text(value: str) -> int | None:
    """A ``seq`` or log line number given as query-string text (``?log_after=17``); None unless 0 to ``MAX_SEQ``."""
    if len(value) > 16 or not value.isascii() or not value.isdigit():  # 16 digits: no huge int() on hostile input
        return None
    number = int(value)
    return number if number <= MAX_SEQ else None


def _counter(content: dict[str, Any], field: str, task: str) -> int | None:
    """An optional ``seq``-like field: an integer from 0 to ``MAX_SEQ``."""
    value = content.get(field)
    number = _integer(value)
    if value is not None and (number is None or not 0 <= number <= MAX_SEQ):
        raise BadRequest(f"Invalid field: {field}.", task)
    return number


def _dumps(content: dict[str, Any]) -> str:
    return json.dumps(content, cls=DjangoJSONEncoder, separators=(",", ":"))


def progress_frame(task: str, record_json: str) -> str:
    """A ``progress`` envelope around a record that is already JSON text (it is not parsed again)."""
    return f'{{"v":{PROTOCOL_VERSION},"type":"progress","task":{json.dumps(task)},"data":{record_json}}}'


def progress_envelope(task: str, record: dict[str, Any]) -> str:
    """A ``progress`` envelope around a decoded record (the polling endpoint's answer)."""
    return _dumps({"v": PROTOCOL_VERSION, "type": "progress", "task": task, "data": record})


def breakdown_envelope(task: str, data: dict[str, Any]) -> str:
    """A ``breakdown`` envelope: a group's parts (the polling endpoint's ``?parts=1`` answer, HTTP only)."""
    return _dumps({"v": PROTOCOL_VERSION, "type": "breakdown", "task": task, "data": data})


def log_frame(task: str, read: LogRead) -> str:
    """A ``log`` envelope: the lines read (already JSON text), with where the task's log stands."""
    head = (
        f'{{"v":{PROTOCOL_VERSION},"type":"log","task":{json.dumps(task)},"last":{read.last},"dropped":{read.dropped}'
    )
    return f'{head},"lines":[{",".join(read.lines)}]}}'


def error_frame(code: ErrorCode, message: str, task: str | None = None) -> str:
    """An ``error`` envelope; ``message`` must be a fixed public text, never exception text."""
    content: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": "error", "code": code, "message": message}
    if task is not None:
        content["task"] = task
    return _dumps(content)


def cancel_accepted_frame(task: str) -> str:
    """The cancel endpoint's ``202`` answer: the ``cancelled`` state follows as progress."""
    return _dumps({"v": PROTOCOL_VERSION, "type": "cancel", "task": task, "accepted": True})


def pong_frame(ident: str | int | None) -> str:
    """The answer to a ``ping``, echoing its ``id`` when it had one."""
    content: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": "pong"}
    if ident is not None:
        content["id"] = ident
    return _dumps(content)
