"""A group's breakdown: which of its parts a page lists, and how they look.

A group may have ``GROUP_MAX_PARTS`` (10,000) parts; a page lists at most
``BREAKDOWN_LIMIT``. Up to the limit every part is listed, in index order.
Beyond it the parts that need a look come first: every failed one (``failure``
or ``lost``, up to the limit), then the running ones, each in index order; the
others are counted, not listed (``omitted``), and the summary text
(``display.group_summary``) says how many are in each state.

Pure functions over the store's ``group_entries()`` and the parent's record:
the polling endpoint's ``?parts=1`` answer is ``breakdown()``, and the widget's
first render shows ``shown_parts()`` of it, as ``breakdown.js`` shows the next
answers (through ``display.js``, the same rules).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

from django.utils.translation import gettext, npgettext

from realtime_async._core.records import GroupCounts, StateRecord
from realtime_async._web.display import display, format_count, group_summary, state_labels

__all__ = [
    "BREAKDOWN_LIMIT",
    "FAILED_STATES",
    "Breakdown",
    "BreakdownPart",
    "PartShown",
    "breakdown",
    "show_part",
    "shown_parts",
]

#: The most parts one breakdown lists (docs/protocol.md, "Groups").
BREAKDOWN_LIMIT = 100
#: The states a breakdown lists first, and its summary calls failed.
FAILED_STATES = ("failure", "lost")
_NONE: GroupCounts = {"queued": 0, "running": 0, "success": 0, "failure": 0, "cancelled": 0, "lost": 0}


class BreakdownPart(TypedDict):
    """One part as the ``?parts=1`` answer lists it."""

    task: str
    title: str | None
    state: str
    #: 0..100 as the group last counted it (0 until the part reported any).
    percent: float | None
    #: The public error of a failed or lost part; None otherwise.
    error: str | None


class Breakdown(TypedDict):
    """The ``data`` of the ``?parts=1`` answer (``protocol.schema.json``, ``breakdown``)."""

    #: The parent's state and seq this answer goes with.
    seq: int
    state: str
    #: How many parts the group has, and how many are in each state (the parent's ``group``).
    total: int
    counts: GroupCounts
    parts: list[BreakdownPart]
    #: Parts of the group not in ``parts``.
    omitted: int


class PartShown(TypedDict):
    """A listed part as a page shows it (``progress.html``)."""

    task: str
    title: str
    state: str
    state_label: str
    percent_text: str
    #: The public error in the viewer's language (a stock message translated), or "".
    error: str


def _index(parent: str, name: str) -> int | None:
    """The place of ``<parent>.<index>``; None for any other entry (a fan-in step is no part)."""
    prefix, _, tail = name.rpartition(".")
    return int(tail) if prefix == parent and tail.isascii() and tail.isdigit() else None


def _part(name: str, entry: Mapping[str, Any]) -> BreakdownPart:
    state = entry.get("s") if isinstance(entry.get("s"), str) else "queued"
    percent = entry.get("p")
    error = entry.get("e")
    return {
        "task": name,
        "title": entry["t"] if isinstance(entry.get("t"), str) else None,
        "state": str(state),
        "percent": float(percent) if isinstance(percent, (int, float)) and not isinstance(percent, bool) else None,
        "error": error if state in FAILED_STATES and isinstance(error, str) else None,
    }


def breakdown(
    parent: str, record: StateRecord, entries: Mapping[str, Mapping[str, Any]], *, limit: int = BREAKDOWN_LIMIT
) -> Breakdown:
    """The parts of ``parent`` to list (see the module's docstring), with the parent's counts."""
    indexed = sorted(
        (index, name)
        for name, entry in entries.items()
        if (index := _index(parent, name)) is not None and not entry.get("x")
    )
    parts = [_part(name, entries[name]) for _, name in indexed]
    if len(parts) > limit:
        failed = [part for part in parts if part["state"] in FAILED_STATES]
        running = [part for part in parts if part["state"] == "running"]
        parts = (failed + running)[:limit]
    group = record.get("group")
    total = group["parts"] if group else len(indexed)
    counts: GroupCounts = group["counts"] if group else {**_NONE}
    return {
        "seq": int(record.get("seq") or 0),
        "state": str(record.get("state") or "queued"),
        "total": total,
        "counts": counts,
        "parts": parts,
        "omitted": max(0, total - len(parts)),
    }


def show_part(part: BreakdownPart, labels: dict[str, str] | None = None) -> PartShown:
    """``part`` as a page lists it, by the rules of any record: its state's label, floored percent, error translated."""
    looks = display({"state": part["state"], "percent": part["percent"], "error": part["error"]}, labels)
    return {
        "task": part["task"],
        "title": part["title"] or part["task"],
        "state": looks["state"],
        "state_label": looks["state_label"],
        "percent_text": looks["percent_text"],
        "error": looks["message"] if part["state"] in FAILED_STATES else "",
    }


def shown_parts(answer: Breakdown) -> dict[str, Any]:
    """What the widget renders of ``answer``: the summary, each listed part, the note on the parts left out."""
    labels = state_labels()
    shown = [show_part(part, labels) for part in answer["parts"]]
    omitted = answer["omitted"]
    note = npgettext("group summary", "%(n)s more part not listed.", "%(n)s more parts not listed.", omitted)
    return {
        "summary": group_summary({"parts": answer["total"], "counts": answer["counts"]}),
        "label": gettext("Parts"),
        "parts": shown,
        "omitted_text": note % {"n": format_count(omitted)} if omitted else "",
    }
