"""The state record: its type, its states and how it is encoded for the store.

A state record is a flat JSON object (documented in ``docs/protocol.md``)::

    {"seq": 7, "task": "rebuild-42", "title": "Rebuild “Website”", "state": "running", "message": "Step 3/5",
     "current": 3, "total": 5, "percent": 60.0, "rate": 0.8, "eta": 2.5,
     "owner": 1, "created_at": 1764382000.1, "started_at": ..., "updated_at": ...,
     "finished_at": null, "result": null, "error": null, "data": null}

Times are Unix timestamps in seconds; ``rate`` is units of ``current`` per
second (percent per second when only ``percent`` is reported); ``eta`` is
seconds. ``seq`` is assigned by the store and only grows. The wire field
``task`` holds the task's name.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal, TypedDict

from django.core.serializers.json import DjangoJSONEncoder

__all__ = [
    "FINAL_STATES",
    "GROUP_STATES",
    "LOG_LEVELS",
    "MAX_LOG_LINE_LENGTH",
    "MAX_MESSAGE_LENGTH",
    "MAX_STAGE_NAME_LENGTH",
    "MAX_TITLE_LENGTH",
    "RECORD_FIELDS",
    "FileInfo",
    "GroupCounts",
    "GroupInfo",
    "GroupPolicy",
    "LogEntry",
    "LogInfo",
    "LogLevel",
    "LogLine",
    "PartInfo",
    "ResultLinkInfo",
    "Stage",
    "StageState",
    "State",
    "StateRecord",
    "compute_percent",
    "copy_record",
    "encode_record_body",
    "is_final",
    "log_counts",
]

State = Literal["queued", "running", "success", "failure", "cancelled", "lost"]

#: The states a task never leaves. Defined here only: the store's scripts get them from
#: here, and a test checks that ``client.js`` and ``tests/display_cases.json`` agree.
FINAL_STATES: frozenset[str] = frozenset({"success", "failure", "cancelled", "lost"})


#: Every state, in the order a group counts them.
GROUP_STATES: tuple[str, ...] = ("queued", "running", "success", "failure", "cancelled", "lost")

StageState = Literal["pending", "active", "done", "failed", "cancelled"]


class Stage(TypedDict):
    """One step of a task with stages (``docs/protocol.md``)."""

    name: str
    state: StageState
    #: Its share of the task's overall percent, relative to the other stages' weights.
    weight: float
    #: The stage's own progress, 0..100; None while pending or unknown.
    percent: float | None


#: The levels of a log line: Django's message levels.
LogLevel = Literal["debug", "info", "success", "warning", "error"]
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "success", "warning", "error")


class LogEntry(TypedDict):
    """A log line as the worker made it, before the store numbers it."""

    #: When it was logged (Unix seconds).
    t: float
    level: LogLevel
    text: str


class LogLine(LogEntry):
    """A stored log line (``docs/protocol.md``, "Log lines"): numbered from 1 by the store, in order."""

    n: int


class LogInfo(TypedDict, total=False):
    """The record's ``log``: how far the task's log goes; ``lines`` only in the update that wrote them."""

    #: The number of the newest line (0: none yet).
    last: int
    #: How many of the oldest lines the bound (``LOG_MAX_LINES``, ``LOG_MAX_BYTES``) dropped.
    dropped: int
    lines: list[LogLine]


class ResultLinkInfo(TypedDict):
    """A link the task's viewers may open once it succeeded (``docs/protocol.md``, "Results")."""

    #: An http(s) URL or a path on this site (``_core/results.py``).
    url: str
    #: The link's text; None shows "Open the result".
    label: str | None


class FileInfo(TypedDict):
    """A file the task attached (``docs/protocol.md``, "Results"); ``url`` is a signed download URL."""

    #: Random, 32 hex digits: names the file in its download URL and in the storage.
    id: str
    name: str
    #: Bytes.
    size: int
    content_type: str
    url: str
    #: When cleanup may delete it and its URL stops working (Unix seconds).
    expires_at: int


GroupPolicy = Literal["continue", "fail_fast"]


class GroupCounts(TypedDict):
    """How many parts of a group are in each state."""

    queued: int
    running: int
    success: int
    failure: int
    cancelled: int
    lost: int


class GroupInfo(TypedDict):
    """A group parent's ``group``: its parts, its failure policy and its parts' states, counted."""

    parts: int
    policy: GroupPolicy
    counts: GroupCounts


class PartInfo(TypedDict):
    """A part's ``part``: its group's parent task, its place and its weight."""

    group: str
    index: int
    weight: float


class StateRecord(TypedDict, total=False):
    """What every transport carries about one task (``docs/protocol.md``)."""

    seq: int
    task: str
    #: What people call the task: given at launch, else derived from the worker function.
    title: str | None
    state: State
    message: str | None
    current: float | None
    total: float | None
    percent: float | None
    #: The active stage's name; None outside stages.
    stage: str | None
    #: The declared stages in order, None for a task without stages.
    stages: list[Stage] | None
    rate: float | None
    eta: float | None
    owner: int | str | None
    created_at: float | None
    started_at: float | None
    updated_at: float | None
    finished_at: float | None
    result: Any
    error: str | None
    data: Any
    #: Set by ``set_result_link`` (or a returned ``ResultLink``); None without one.
    links: list[ResultLinkInfo] | None
    #: Added by ``attach_file``; None without any.
    files: list[FileInfo] | None
    #: Present once the task logged a line; written by the store, never by the writer.
    log: LogInfo
    #: A group's parent: its parts counted by state (``docs/protocol.md``, "Groups"); None otherwise.
    group: GroupInfo | None
    #: A part of a group: its parent and weight; None otherwise.
    part: PartInfo | None


RECORD_FIELDS: tuple[str, ...] = tuple(StateRecord.__annotations__)
MAX_MESSAGE_LENGTH = 1000
#: Longer titles are cut (with "…"), never refused.
MAX_TITLE_LENGTH = 200
#: Longer stage names are cut, never refused.
MAX_STAGE_NAME_LENGTH = 100
#: Longer log lines are cut (with "…"), never refused.
MAX_LOG_LINE_LENGTH = 1000


def is_final(record: StateRecord | dict[str, Any] | None) -> bool:
    """Whether ``record`` is in a final state (None is not)."""
    return record is not None and record.get("state") in FINAL_STATES


def compute_percent(current: float | None, total: float | None, percent: float | None) -> float | None:
    """``percent`` when given, else ``current / total``; clamped to 0..100, None when unknown."""
    if percent is None and current is not None and total:
        percent = current * 100.0 / total
    if percent is None:
        return None
    return round(min(100.0, max(0.0, float(percent))), 2)


#: The fields the store writes itself: the writer's copy of them is never sent.
_STORE_FIELDS = frozenset({"seq", "log"})


def encode_record_body(record: StateRecord | dict[str, Any]) -> str:
    """JSON of ``record`` without its opening brace; the store prepends ``{"seq":N,``."""
    fields = {key: record.get(key) for key in RECORD_FIELDS if key not in _STORE_FIELDS}
    return json.dumps(fields, cls=DjangoJSONEncoder, separators=(",", ":"), ensure_ascii=False)[1:]


def copy_record(value: Any) -> Any:
    """A copy of a record (or any JSON value): its dicts and lists copied, their leaves shared.

    Records hold JSON values only, so this is ``copy.deepcopy`` without its memo and
    dispatch, at about a fifth of the cost (the writer copies the record on every write).
    """
    if isinstance(value, dict):
        return {key: copy_record(item) if isinstance(item, (dict, list)) else item for key, item in value.items()}
    if isinstance(value, list):
        return [copy_record(item) if isinstance(item, (dict, list)) else item for item in value]
    return value


_LOG_COUNTS = re.compile(r'\{"seq":\d+,"log":\{"last":(\d+),"dropped":(\d+)')


def log_counts(record_json: str) -> LogInfo | None:
    """The ``log``'s ``last`` and ``dropped`` in a stored or published record's JSON; None for no log."""
    match = _LOG_COUNTS.match(record_json)
    return {"last": int(match[1]), "dropped": int(match[2])} if match else None
