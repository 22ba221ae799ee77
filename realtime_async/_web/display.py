"""How a state record looks to a person: labels, percent and ETA text, the message shown.

The same rules run in the browser (``static/realtime_async/display.js``);
``tests/display_cases.json`` is one table of cases that a pytest and a
``node:test`` both check, so the two cannot drift. The scripts get their
strings from ``i18n()``, translated here so one place knows the language.
"""

from __future__ import annotations

import math
from typing import Any, TypedDict

from django.utils.translation import gettext

from realtime_async._core.records import StateRecord, is_final

__all__ = ["UNAVAILABLE", "Display", "display", "format_eta", "i18n", "state_labels"]

#: The pseudo-state of a task that cannot be shown (unknown, or not for this viewer).
UNAVAILABLE = "unavailable"


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
        "queued": gettext("Queued"),
        "running": gettext("Running"),
        "success": gettext("Done"),
        "failure": gettext("Failed"),
        "cancelled": gettext("Cancelled"),
        "lost": gettext("Lost"),
        UNAVAILABLE: gettext("Not available"),
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
    }


def display(record: StateRecord | dict[str, Any] | None, labels: dict[str, str] | None = None) -> Display:
    """What to show of ``record`` (None: a task that cannot be shown)."""
    labels = labels if labels is not None else state_labels()
    state = str(record.get("state") or "queued") if record is not None else UNAVAILABLE
    raw = record.get("percent") if record is not None else None
    percent = min(100.0, max(0.0, float(raw))) if isinstance(raw, (int, float)) and not isinstance(raw, bool) else None
    final = is_final(record)
    if record is None:
        message = gettext("No such task.")
    elif state in ("failure", "lost"):
        message = record.get("error") or gettext("The task failed.")
    else:
        message = record.get("message") or ""
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
    }
