"""How a state record looks to a person: labels, percent and ETA text, the message shown.

The same rules run in the browser (``static/realtime_async/display.js``);
``tests/display_cases.json`` is one table of cases that a pytest and a
``node:test`` both check, so the two cannot drift. A group's summary
("1,000 parts: 812 done, 3 failed, 185 running") groups digits with the
language's thousand separator, which ``i18n()`` sends the scripts too, so both
sides write numbers alike (rather than each asking its own locale library). The scripts get their
strings from ``i18n()``, translated here so one place knows the language.
Words that name both a task's state and a stage's ("Done", "Failed") have a
context each (``pgettext``): languages agree them differently. The package's
stock messages are stored in English and translated here, at display time
(``_core/messages.py``); the scripts do the same through ``i18n()["messages"]``.
"""

from __future__ import annotations

import math
from typing import Any, TypedDict

from django.utils.formats import get_format
from django.utils.translation import gettext, ngettext, npgettext, pgettext

from realtime_async._core.messages import STOCK_MESSAGES
from realtime_async._core.records import StateRecord, is_final
from realtime_async._web.results import results_i18n

__all__ = [
    "UNAVAILABLE",
    "Display",
    "StageDisplay",
    "display",
    "format_count",
    "format_eta",
    "group_summary",
    "i18n",
    "log_level_labels",
    "stage_labels",
    "state_labels",
]

#: The pseudo-state of a task that cannot be shown (unknown, or not for this viewer).
UNAVAILABLE = "unavailable"


class StageDisplay(TypedDict):
    """One step of the widget's stepper."""

    name: str
    #: ``pending``, ``active``, ``done``, ``failed`` or ``cancelled`` (anything else is shown as given).
    state: str
    #: The state in words, for screen readers: "Not started", "In progress", ...
    state_label: str
    #: The task's current stage (``aria-current="step"``); never one of a final task.
    current: bool


class Display(TypedDict):
    """What the widget and the dashboard show of one record; numbers as text (templates would localise them)."""

    state: str
    state_label: str
    final: bool
    #: Running with no known percent: an indeterminate bar.
    indeterminate: bool
    #: The percent clamped to 0..100, None when unknown.
    percent: float | None
    #: The percent to one decimal (half up), as ``aria-valuenow`` says it: ``"42.7"``.
    percent_value: str | None
    #: The floored percent: ``"42%"`` (``"100%"`` only when done).
    percent_text: str
    eta_text: str
    message: str
    #: The stages in declared order, ``[]`` for a task without stages.
    stages: list[StageDisplay]
    #: ``"Stage 2 of 3: Process"`` while a stage is current, else ``""``.
    stage_text: str
    #: A group's parent: ``"1,000 parts: 812 done, 3 failed, 185 running"``; ``""`` for any other task.
    group_text: str


def _half_up(value: float) -> int:
    # JavaScript's Math.round, which the browser uses: Python's round() rounds halves to even.
    return math.floor(value + 0.5)


def format_eta(seconds: float | None) -> str:
    """``"5 s left"``, ``"3 min left"``, ``"2 h 5 min left"``; ``""`` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return ""
    if seconds < 60:
        return gettext("%(n)s s left") % {"n": max(1, math.ceil(seconds))}
    if seconds < 3600:
        return gettext("%(n)s min left") % {"n": _half_up(seconds / 60)}
    hours, minutes = divmod(_half_up(seconds / 60), 60)
    return gettext("%(h)s h %(m)s min left") % {"h": hours, "m": minutes}


def state_labels() -> dict[str, str]:
    """Each state's visible name, translated; ``"unavailable"`` is a task that cannot be shown."""
    return {
        "queued": pgettext("task state", "Queued"),
        "running": pgettext("task state", "Running"),
        "success": pgettext("task state", "Done"),
        "failure": pgettext("task state", "Failed"),
        "cancelled": pgettext("task state", "Cancelled"),
        "lost": pgettext("task state", "Lost"),
        UNAVAILABLE: pgettext("task state", "Not available"),
    }


def stage_labels() -> dict[str, str]:
    """Each stage state in words, translated (the stepper's text for screen readers)."""
    return {
        "pending": pgettext("stage state", "Not started"),
        "active": pgettext("stage state", "In progress"),
        "done": pgettext("stage state", "Done"),
        "failed": pgettext("stage state", "Failed"),
        "cancelled": pgettext("stage state", "Cancelled"),
    }


def i18n() -> dict[str, Any]:
    """The strings ``display.js`` and the widgets need, in the request's language."""
    return {
        "states": state_labels(),
        "eta_s": gettext("%(n)s s left"),
        "eta_min": gettext("%(n)s min left"),
        "eta_h": gettext("%(h)s h %(m)s min left"),
        "unavailable": gettext("No such task."),
        "failed": gettext("The task failed."),
        "cancelling": gettext("Cancelling…"),
        "cancel_forbidden": gettext("You may not cancel this task."),
        "cancel_failed": gettext("The task could not be cancelled. Try again."),
        "stages": gettext("Stages"),
        "stage": gettext("Stage %(n)s of %(total)s: %(name)s"),
        "stage_states": stage_labels(),
        # The stock messages records hold in English, each in this language (see _stock()).
        "messages": {text: gettext(text) for text in STOCK_MESSAGES},
        "no_updates": gettext("Live updates are not available."),
        # The result link's default label and the download button's text (_web/results.py).
        **results_i18n(),
        "log": gettext("Log"),
        "log_levels": log_level_labels(),
        # %(n)s is filled in by the script: the plural form is chosen here, for the count shown.
        "log_dropped_one": ngettext(
            "%(n)s earlier line is no longer kept.", "%(n)s earlier lines are no longer kept.", 1
        ),
        "log_dropped_other": ngettext(
            "%(n)s earlier line is no longer kept.", "%(n)s earlier lines are no longer kept.", 2
        ),
        "group": _group_i18n(),
    }


def _group_words(n: int) -> dict[str, str]:
    """The summary's words in the plural form for ``n`` (their ``%(n)s`` still to fill in)."""
    return {
        "parts": npgettext("group summary", "%(n)s part", "%(n)s parts", n),
        "success": npgettext("group summary", "%(n)s done", "%(n)s done", n),
        "failure": npgettext("group summary", "%(n)s failed", "%(n)s failed", n),
        "cancelled": npgettext("group summary", "%(n)s cancelled", "%(n)s cancelled", n),
        "running": npgettext("group summary", "%(n)s running", "%(n)s running", n),
        "queued": npgettext("group summary", "%(n)s queued", "%(n)s queued", n),
        "omitted": npgettext("group summary", "%(n)s more part not listed.", "%(n)s more parts not listed.", n),
    }


def _group_i18n() -> dict[str, Any]:
    # The plural form is chosen here for 1 and for more (as log_dropped_*); the script fills in %(n)s.
    return {
        "summary": pgettext("group summary", "%(parts)s: %(counts)s"),
        "thousands": str(get_format("THOUSAND_SEPARATOR")),
        "parts": gettext("Parts"),
        "one": _group_words(1),
        "other": _group_words(2),
    }


def format_count(n: int) -> str:
    """``1234`` as ``"1,234"``: digits grouped by three with the language's separator (as display.js)."""
    return f"{n:,}".replace(",", str(get_format("THOUSAND_SEPARATOR")))


#: The summary's pieces in order, each the states it counts: a lost part is a failed one, as in the parent's error.
_SUMMARY = (
    ("success", ("success",)),
    ("failure", ("failure", "lost")),
    ("cancelled", ("cancelled",)),
    ("running", ("running",)),
    ("queued", ("queued",)),
)


def group_summary(group: Any) -> str:
    """A group parent's ``group`` in words, ``"1,000 parts: 812 done, 3 failed, 185 running"``; ``""`` if none.

    States no part is in are left out; lost parts count as failed.
    """
    if not isinstance(group, dict) or not isinstance(group.get("counts"), dict):
        return ""
    counts, parts = group["counts"], group.get("parts")
    if not isinstance(parts, int) or isinstance(parts, bool):
        return ""
    pieces = []
    for key, states in _SUMMARY:
        n = sum(value for state in states if isinstance(value := counts.get(state), int) and value > 0)
        if n:
            pieces.append(_group_words(n)[key] % {"n": format_count(n)})
    text = _group_words(parts)["parts"] % {"n": format_count(parts)}
    if not pieces:
        return text
    return pgettext("group summary", "%(parts)s: %(counts)s") % {"parts": text, "counts": ", ".join(pieces)}


def log_level_labels() -> dict[str, str]:
    """What each log level is called, in the request's language."""
    return {
        "debug": pgettext("log level", "Debug"),
        "info": pgettext("log level", "Info"),
        "success": pgettext("log level", "Success"),
        "warning": pgettext("log level", "Warning"),
        "error": pgettext("log level", "Error"),
    }


def _stock(text: Any) -> Any:
    """A stock message in the viewer's language; any other text as the worker wrote it."""
    return gettext(text) if isinstance(text, str) and text in STOCK_MESSAGES else text


def _stages(record: StateRecord | dict[str, Any] | None, final: bool) -> tuple[list[StageDisplay], str]:
    """The stepper's steps and the current stage's text; entries without a string name are left out."""
    raw = record.get("stages") if record is not None else None
    if not isinstance(raw, list):
        return [], ""
    labels = stage_labels()
    stages: list[StageDisplay] = []
    for entry in raw:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            continue
        raw_state = entry.get("state")
        state = raw_state if isinstance(raw_state, str) else "pending"
        stages.append(
            {"name": entry["name"], "state": state, "state_label": labels.get(state, state), "current": False}
        )
    # The record's "stage" names the current one; without it, the first active stage. A final task has none.
    names = [stage["name"] for stage in stages]
    active = [index for index, stage in enumerate(stages) if stage["state"] == "active"]
    named = record.get("stage") if record is not None else None
    current = names.index(named) if named in names else (active[0] if active else None)
    if final or current is None:
        return stages, ""
    stages[current]["current"] = True
    text = gettext("Stage %(n)s of %(total)s: %(name)s") % {
        "n": current + 1,
        "total": len(stages),
        "name": names[current],
    }
    return stages, text


def display(record: StateRecord | dict[str, Any] | None, labels: dict[str, str] | None = None) -> Display:
    """What to show of ``record`` (None: a task that cannot be shown)."""
    labels = labels if labels is not None else state_labels()
    state = str(record.get("state") or "queued") if record is not None else UNAVAILABLE
    raw = record.get("percent") if record is not None else None
    percent = min(100.0, max(0.0, float(raw))) if isinstance(raw, (int, float)) and not isinstance(raw, bool) else None
    final = is_final(record)
    stages, stage_text = _stages(record, final)
    if record is None:
        message = gettext("No such task.")
    elif state in ("failure", "lost"):
        message = _stock(record.get("error")) or gettext("The task failed.")
    else:
        message = _stock(record.get("message")) or ""
    return {
        "state": state,
        "state_label": labels.get(state, state),
        "final": final,
        "indeterminate": percent is None and state == "running",
        "percent": percent,
        "percent_value": f"{_half_up(percent * 10) / 10:g}" if percent is not None else None,
        "percent_text": f"{math.floor(percent)}%" if percent is not None else "",
        "eta_text": "" if final or record is None else format_eta(record.get("eta")),
        "message": str(message),
        "stages": stages,
        "stage_text": stage_text,
        "group_text": group_summary(record.get("group")) if record is not None else "",
    }
