"""Which parts a group's breakdown lists, and how the widget shows them (``_web/breakdown.py``); no services."""

from __future__ import annotations

import pytest
from django.utils import translation

from realtime_async._core.messages import STOCK_MESSAGES
from realtime_async._web.breakdown import BREAKDOWN_LIMIT, breakdown, shown_parts

PARENT = "group-abc"
ZERO = {"queued": 0, "running": 0, "success": 0, "failure": 0, "cancelled": 0, "lost": 0}


@pytest.fixture(autouse=True)
def _english():
    with translation.override("en"):
        yield


def entries(*states, **extra):
    """The store's entries of a group whose part i is in states[i] (at 10 % per index, title "Part i")."""
    found = {
        f"{PARENT}.{index}": {"s": state, "p": float(index % 10) * 10, "w": 1, "t": f"Part {index}"}
        for index, state in enumerate(states)
    }
    found.update(extra)
    return found


def record(states, **fields):
    counts = dict(ZERO)
    for state in states:
        counts[state] += 1
    return {"seq": 7, "state": "running", "group": {"parts": len(states), "policy": "continue", "counts": counts}}


def test_up_to_the_limit_every_part_is_listed_in_index_order():
    states = ["success", "queued", "running", "failure", "lost", "cancelled"] * 2
    found = entries(*states)
    answer = breakdown(PARENT, record(states), dict(reversed(found.items())))
    assert [part["task"] for part in answer["parts"]] == [f"{PARENT}.{index}" for index in range(12)]  # .10 after .9
    assert (answer["total"], answer["omitted"], answer["seq"], answer["state"]) == (12, 0, 7, "running")
    assert answer["counts"] == record(states)["group"]["counts"]


def test_beyond_the_limit_the_failed_ones_come_first_then_the_running_ones():
    states = ["success"] * 50 + ["running"] * 90 + ["failure", "queued", "lost"] * 10
    answer = breakdown(PARENT, record(states), entries(*states))
    listed = answer["parts"]
    assert len(listed) == BREAKDOWN_LIMIT and answer["omitted"] == len(states) - BREAKDOWN_LIMIT
    assert [part["state"] for part in listed[:20]] == ["failure", "lost"] * 10  # in index order
    assert {part["state"] for part in listed[20:]} == {"running"}
    assert [part["task"] for part in listed[20:22]] == [f"{PARENT}.50", f"{PARENT}.51"]


def test_more_failed_parts_than_the_limit_fill_it():
    states = ["failure"] * 5 + ["running"] * 3
    answer = breakdown(PARENT, record(states), entries(*states), limit=4)
    assert [part["task"] for part in answer["parts"]] == [f"{PARENT}.{index}" for index in range(4)]
    assert answer["omitted"] == 4


def test_only_a_failed_part_shows_its_error_and_odd_entries_are_left_out():
    found = entries("failure", "success", "lost")
    found[f"{PARENT}.0"]["e"] = "Broken."
    found[f"{PARENT}.1"]["e"] = "Not for a succeeded part."
    found[f"{PARENT}.2"]["e"] = STOCK_MESSAGES[3]
    found["other-group.3"] = {"s": "running", "p": 0, "w": 1, "t": "Not ours"}
    found[f"{PARENT}.then"] = {"s": "running", "p": 0, "w": 1, "t": "A fan-in step", "x": 1}
    found[f"{PARENT}.4"] = {"s": "running", "p": 0, "w": 1, "t": "A fan-in step", "x": 1}
    found[f"{PARENT}.5"] = {"s": 3, "p": "ten", "t": 5}  # whatever the store holds
    answer = breakdown(PARENT, record(["failure", "success", "lost"]), found)
    assert [(part["task"], part["error"]) for part in answer["parts"]] == [
        (f"{PARENT}.0", "Broken."),
        (f"{PARENT}.1", None),
        (f"{PARENT}.2", STOCK_MESSAGES[3]),
        (f"{PARENT}.5", None),
    ]
    assert answer["parts"][3] == {
        "task": f"{PARENT}.5",
        "title": None,
        "state": "queued",
        "percent": None,
        "error": None,
    }


def test_no_entries_left_lists_nothing_and_says_so():
    answer = breakdown(PARENT, record(["success"] * 3), {})
    assert answer["parts"] == [] and answer["omitted"] == 3


def test_the_widget_shows_the_summary_the_parts_and_what_was_left_out():
    states = ["failure"] + ["running"] * 2 + ["queued"] * 2
    found = entries(*states)
    found[f"{PARENT}.0"]["e"] = STOCK_MESSAGES[3]
    shown = shown_parts(breakdown(PARENT, record(states), found, limit=2))
    assert shown["summary"] == "5 parts: 1 failed, 2 running, 2 queued"
    assert shown["omitted_text"] == "3 more parts not listed."
    assert shown["parts"][0] == {
        "task": f"{PARENT}.0",
        "title": "Part 0",
        "state": "failure",
        "state_label": "Failed",
        "percent_text": "0%",
        "error": STOCK_MESSAGES[3],
    }
    states[-1] = found[f"{PARENT}.4"]["s"] = "running"
    with translation.override("de"):
        german = shown_parts(breakdown(PARENT, record(states), found, limit=4))
    assert german["summary"] == "5 Teile: 1 fehlgeschlagen, 3 laufen, 1 wartet"
    assert german["omitted_text"] == "1 weiterer Teil nicht aufgeführt."
    assert german["parts"][0]["error"] == "Der Worker, der diese Aufgabe ausführt, antwortet nicht mehr."
    assert german["label"] == "Teile"
