"""Hostile client input for the protocol tests: fixed frames, and hypothesis strategies of random ones.

``HOSTILE`` is a list of malformed messages every parser and consumer test
sends; ``FRAMES`` generates random frames and ``expected`` says the documented
answer (``docs/protocol.md``) to each, for the in-process and the real-daphne
hostile tests alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from realtime_async._core.naming import TASK_NAME_PATTERN
from realtime_async.conf import get_settings
from realtime_async.protocol import (
    CLOSE_TOO_LARGE,
    BadRequest,
    Cancel,
    Ping,
    Subscribe,
    SubscribeFeed,
    parse_client_message,
)
from tests.ws_helpers import BAD_REQUEST_MESSAGES

#: Malformed client messages: each gets a ``bad_request`` error, never a close.
HOSTILE = [
    "not json", "{", "[]", "null", "42", '"text"', "NaN", '{"v": 1, "type": "ping", "id": NaN}',
    "[" * 2000 + "]" * 2000, '{"v": 1}', '{"type": "ping"}', '{"v": 2, "type": "ping"}', '{"v": "1", "type": "ping"}',
    '{"v": true, "type": "ping"}', '{"v": 1, "type": "launch"}', '{"v": 1, "type": null}', '{"v": 1, "type": {}}',
    '{"v": 1, "type": "subscribe"}', '{"v": 1, "type": "subscribe", "task": ""}',
    '{"v": 1, "type": "subscribe", "task": "../etc/passwd"}', '{"v": 1, "type": "subscribe", "task": 123}',
    '{"v": 1, "type": "subscribe", "task": "ok", "seq": -1}', '{"v": 1, "type": "subscribe", "task": "ok", "seq": "1"}',
    '{"v": 1, "type": "subscribe", "task": "ok", "seq": 1.5}',
    '{"v": 1, "type": "subscribe", "task": "ok", "token": 5}',
    '{"v": 1, "type": "subscribe", "task": "ok", "extra": 1}', '{"v": 1, "type": "ping", "id": {}}',
    '{"v": 1, "type": "ping", "id": "' + "x" * 129 + '"}', '{"v": 1, "type": "unsubscribe"}', "\ud800", "",
]  # fmt: skip

LIMIT = get_settings().max_message_bytes
#: Every ``message`` an error frame may carry: fixed texts, never the client's input.
PUBLIC_ERRORS = BAD_REQUEST_MESSAGES | {
    "No such task.",
    "No feed without a signed-in user.",
    "Too many subscriptions on this connection.",
    "You may not cancel this task.",
}


# -- frames ------------------------------------------------------------------
Frame = tuple[str, Any]  # ("text", str) or ("bytes", bytes)


def text_frame(value: str) -> Frame:
    return ("text", value)


def _nested(opener_and_depth: tuple[str, int]) -> Frame:
    opener, depth = opener_and_depth
    if opener == "[":
        return text_frame("[" * depth + "]" * depth)
    return text_frame('{"a":' * depth + "1" + "}" * depth)


_SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
)
_JSON = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
_TYPES = st.sampled_from(["subscribe", "unsubscribe", "ping", "subscribe_feed", "unsubscribe_feed", "cancel"])
#: Messages close to the protocol: each field either well-formed or anything at all, extra fields too.
_MESSAGES = st.fixed_dictionaries(
    {},
    optional={
        "v": st.sampled_from([1, 1, 1, 1.0, 2, 0, "1", True, None]) | _JSON,
        "type": _TYPES | _TYPES | _JSON,
        "task": st.from_regex(TASK_NAME_PATTERN, fullmatch=True) | st.text(max_size=140) | _JSON,
        "seq": st.integers(-5, 2**60) | st.none() | _JSON,
        "token": st.text(max_size=600) | st.none() | _JSON,
        "id": st.integers() | st.text(max_size=140) | _JSON,
        "extra": _JSON,
    },
)
FRAMES = st.one_of(
    _MESSAGES.map(json.dumps).map(text_frame),
    _MESSAGES.map(lambda m: json.dumps(m, ensure_ascii=False)).map(text_frame),  # multibyte, counted in bytes
    _MESSAGES.map(json.dumps).flatmap(lambda s: st.integers(0, len(s)).map(lambda i: text_frame(s[:i]))),  # truncated
    _JSON.map(json.dumps).map(text_frame),  # any JSON value
    st.text(max_size=300).map(text_frame),  # any text
    st.binary(max_size=300).map(lambda b: ("bytes", b)),
    st.tuples(st.sampled_from("[{"), st.integers(1, 3000)).map(_nested),  # deep nesting, some over the limit
    st.integers(LIMIT - 2, 40_000).map(lambda n: text_frame("x" * n)),  # around and over MAX_MESSAGE_BYTES
    st.integers(LIMIT - 2, 20_000).map(lambda n: ("bytes", b"\x00" * n)),
)
EXAMPLES = [
    *(
        text_frame(json.dumps(m))
        for m in [
            {"v": 1, "type": "subscribe", "task": "no-such-task", "seq": 3, "token": "forged"},
            {"v": 1, "type": "unsubscribe", "task": "no-such-task"},
            {"v": 1, "type": "cancel", "task": "no-such-task"},
            {"v": 1, "type": "subscribe_feed"},
            {"v": 1, "type": "unsubscribe_feed"},
            {"v": 1, "type": "ping", "id": "x" * 128},
        ]
    ),  # fmt: skip
    text_frame(""),
    ("bytes", b""),
    text_frame("x" * LIMIT),
    text_frame("€" * (LIMIT // 3 + 1)),  # few characters, over the limit in bytes
    text_frame('{"v": 1, "type": "ping", "id": NaN}'),
    text_frame('{"v": 1, "type": "ping", "id": 1e400}'),
    text_frame('{"v": 1e400, "type": "ping"}'),
    text_frame('{"v": 1, "type": "subscribe", "task": "a", "seq": 9007199254740992}'),
    text_frame('{"v": 1, "type": "subscribe", "task": "a", "token": "' + "t" * 513 + '"}'),
    text_frame('{"v": 1, "type": "subscribe", "task": "\\ud800"}'),
    text_frame('{"v": 1, "type": "ping", "id": "\\ud800"}'),
    text_frame('{"v": 1, "type": "ping", "id": 1' + "0" * 300 + "}"),
    text_frame('{"__proto__": {"v": 1}, "v": 1, "type": "ping"}'),
]


@dataclass(frozen=True)
class Answer:
    """What one frame is answered with: a close code, or the frames sent before the next message's answer."""

    close: int | None = None
    frames: tuple[str, ...] = ()

    def kind(self) -> str:
        if self.close is not None:
            return f"close {self.close}"
        if not self.frames:
            return "no answer"
        message = json.loads(self.frames[0])
        return message.get("code") or message["type"]


def expected(frame: Frame, *, per_task: bool = False, signed_in: bool = False) -> Answer:
    """The documented answer (docs/protocol.md) to ``frame`` from a client that may see none of the named tasks."""
    kind, payload = frame
    size = len(payload) if kind == "bytes" else len(payload.encode("utf-8", "surrogatepass"))
    if size > LIMIT:
        return Answer(close=CLOSE_TOO_LARGE)
    if kind == "bytes":
        return Answer(frames=(_error("bad_request", "Binary frames are not supported."),))
    try:
        message = parse_client_message(payload)
    except BadRequest as exc:
        return Answer(frames=(_error("bad_request", exc.message, exc.task),))
    if isinstance(message, Ping):
        pong = {"v": 1, "type": "pong", **({} if message.id is None else {"id": message.id})}
        return Answer(frames=(json.dumps(pong, separators=(",", ":")),))
    if per_task:
        return Answer(frames=(_error("bad_request", "Only ping is accepted on a per-task URL."),))
    if isinstance(message, (Subscribe, Cancel)):
        return Answer(frames=(_error("not_found", "No such task.", message.task),))
    if isinstance(message, SubscribeFeed) and not signed_in:
        return Answer(frames=(_error("not_found", "No feed without a signed-in user."),))
    return Answer()  # unsubscribe, unsubscribe_feed, a signed-in subscribe_feed: not answered


def _error(code: str, message: str, task: str | None = None) -> str:
    content = {"v": 1, "type": "error", "code": code, "message": message, **({"task": task} if task else {})}
    return json.dumps(content, separators=(",", ":"))


def check_answer(frame: Frame, got: Answer, want: Answer) -> None:
    assert got == want, (frame, got, want)
    for text in got.frames:
        message = json.loads(text)
        if message["type"] == "error":
            assert message["message"] in PUBLIC_ERRORS, message


def sentinel(n: int) -> tuple[str, str]:
    """A ping no random frame is going to send, and the pong that answers it."""
    ident = f"\x00sentinel-{n}"
    return (
        json.dumps({"v": 1, "type": "ping", "id": ident}),
        json.dumps({"v": 1, "type": "pong", "id": ident}, separators=(",", ":")),
    )
