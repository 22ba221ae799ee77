"""The display rules against the case table that the JS tests read too (``tests/display_cases.json``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.utils import translation

import realtime_async
from realtime_async._core.records import FINAL_STATES
from realtime_async._web.breakdown import show_part
from realtime_async._web.display import display, format_eta, i18n

CASES = json.loads((Path(__file__).parent.parent / "display_cases.json").read_text(encoding="utf-8"))
LUA = sorted((Path(realtime_async.__file__).parent / "_core" / "store").glob("*.lua"))


@pytest.fixture(autouse=True)
def _english():
    with translation.override("en"):
        yield


def test_final_states_are_the_ones_the_js_checks():
    assert sorted(FINAL_STATES) == sorted(CASES["final_states"])


def test_the_lua_scripts_spell_no_state():
    # The write script gets FINAL from Python (redis_store._script); a state spelt in Lua could drift.
    assert LUA
    for path in LUA:
        text = path.read_text(encoding="utf-8")
        for state in FINAL_STATES:
            assert f"'{state}'" not in text and f'"{state}"' not in text, (path.name, state)


def test_the_scripts_get_the_strings_of_the_table():
    assert i18n() == CASES["i18n"]


@pytest.mark.parametrize("case", CASES["eta"], ids=lambda case: repr(case["seconds"]))
def test_eta_text(case):
    assert format_eta(case["seconds"]) == case["text"]


@pytest.mark.parametrize("case", CASES["records"], ids=lambda case: str((case["record"] or {}).get("seq", "none")))
def test_display(case):
    shown = display(case["record"])
    assert {key: shown[key] for key in case["expect"]} == case["expect"]
    assert set(case["expect"]) == set(shown) - {"percent"}  # the table covers every field shown as text


def test_the_scripts_get_the_strings_of_the_table_in_another_language():
    translated = CASES["translated"]
    with translation.override(translated["language"]):
        assert i18n() == translated["i18n"]


@pytest.mark.parametrize("case", CASES["translated"]["records"], ids=lambda case: str(case["record"]["seq"]))
def test_display_in_another_language_translates_the_stock_messages_only(case):
    with translation.override(CASES["translated"]["language"]):
        shown = display(case["record"])
    assert {key: shown[key] for key in case["expect"]} == case["expect"]


@pytest.mark.parametrize("case", CASES["parts"], ids=lambda case: case["part"]["task"])
def test_a_part_of_a_breakdown(case):
    shown = show_part(case["part"])
    assert {key: shown[key] for key in case["expect"]} == case["expect"]
    assert set(case["expect"]) == set(shown) - {"task"}
