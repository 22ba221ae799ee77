"""The German and French catalogues against the sources, and what users see in each language.

The catalogues are checked in plain Python, without GNU gettext: every string
the sources mark (by the rules ``makemessages`` follows, re-implemented below)
is in each ``django.po``, translated, not fuzzy, with the same placeholders;
and each committed ``django.mo`` says exactly what its ``.po`` says, so a
``.po`` edited without ``./run.sh messages`` (which compiles) fails here.
"""

from __future__ import annotations

import ast
import gettext
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from django.template.loader import render_to_string
from django.utils import translation

import realtime_async
from realtime_async._core.messages import STOCK_MESSAGES
from realtime_async.admin import async_action
from realtime_async.contrib.dashboard.views import row_context
from realtime_async.widgets import _context, render_fragment

PACKAGE = Path(realtime_async.__file__).parent
LANGUAGES = ("de", "fr")

#: (context, msgid, msgid_plural); context and plural are None when absent.
Key = tuple[str | None, str, str | None]

# The gettext functions and where their arguments are: (context, singular, plural) positions.
_PY_FUNCTIONS = {
    "gettext": (None, 0, None),
    "gettext_lazy": (None, 0, None),
    "gettext_noop": (None, 0, None),
    "_": (None, 0, None),
    "ngettext": (None, 0, 1),
    "ngettext_lazy": (None, 0, 1),
    "pgettext": (0, 1, None),
    "pgettext_lazy": (0, 1, None),
    "npgettext": (0, 1, 2),
    "npgettext_lazy": (0, 1, 2),
}
_STRING = r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\''
_TRANSLATE = re.compile(rf"{{%\s*(?:translate|trans)\s+({_STRING})(?:\s+context\s+({_STRING}))?(?:\s+as\s+\w+)?\s*%}}")
_BLOCK = re.compile(
    r"{%\s*(?:blocktranslate|blocktrans)\b(.*?)%}(.*?){%\s*(?:endblocktranslate|endblocktrans)\s*%}", re.S
)
_PLACEHOLDERS = re.compile(r"%\((\w+)\)[sd]|%[sd]|{(\w*)}")


def _source_files(suffix: str) -> list[Path]:
    return sorted(path for path in PACKAGE.rglob(f"*{suffix}") if "migrations" not in path.parts)


def _python_keys(path: Path) -> set[Key]:
    keys: set[Key] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
        if name not in _PY_FUNCTIONS:
            continue
        literals = [
            arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None for arg in node.args
        ]

        def at(index: int | None, literals: list[str | None] = literals) -> str | None:
            return literals[index] if index is not None and index < len(literals) else None

        context, singular, plural = (at(index) for index in _PY_FUNCTIONS[name])
        if singular is not None:  # gettext(variable) translates a string marked elsewhere
            keys.add((context, singular, plural))
    return keys


def _template_keys(path: Path) -> set[Key]:
    text = path.read_text(encoding="utf-8")
    keys: set[Key] = {
        (ast.literal_eval(context) if context else None, ast.literal_eval(msgid), None)
        for msgid, context in _TRANSLATE.findall(text)
    }
    for options, body in _BLOCK.findall(text):
        assert "{% plural" not in body, f"{path.name}: extend this test for blocktranslate count"
        context = re.search(rf"context\s+({_STRING})", options)
        msgid = re.sub(r"{{\s*(\w+)\s*}}", r"%(\1)s", body.replace("%", "%%"))
        keys.add((ast.literal_eval(context.group(1)) if context else None, msgid, None))
    return keys


def marked_strings() -> set[Key]:
    """Every string the package marks for translation, as makemessages would extract it."""
    keys: set[Key] = set()
    for path in _source_files(".py"):
        keys |= _python_keys(path)
    for path in _source_files(".html"):
        keys |= _template_keys(path)
    return keys


def _unquote(text: str) -> str:
    escapes = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}
    return re.sub(r"\\(.)", lambda match: escapes[match.group(1)], text)


def parse_po(path: Path) -> dict[Key, dict]:
    """The entries of a .po file: key -> {"msgstr": [forms], "flags": set}; obsolete (#~) entries left out."""
    entries: dict[Key, dict] = {}
    for block in re.split(r"\n\s*\n", path.read_text(encoding="utf-8").strip()):
        lines = [line for line in block.splitlines() if not line.startswith("#~")]
        flags: set[str] = set()
        fields: dict[str, str] = {}
        current = None
        for line in lines:
            if line.startswith("#,"):
                flags |= {flag.strip() for flag in line[2:].split(",")}
            elif line.startswith("#"):
                continue
            elif line.startswith('"'):
                fields[current] += _unquote(line[1:-1])
            else:
                current, _, rest = line.partition(" ")
                fields[current] = _unquote(rest.strip()[1:-1])
        if "msgid" not in fields:
            continue
        key = (fields.get("msgctxt"), fields["msgid"], fields.get("msgid_plural"))
        assert key not in entries, f"{path}: {key} twice"
        forms = [fields[name] for name in sorted(fields) if name.startswith("msgstr")]
        entries[key] = {"msgstr": forms, "flags": flags}
    return entries


def _po(language: str) -> Path:
    return PACKAGE / "locale" / language / "LC_MESSAGES" / "django.po"


def _header(entries: dict[Key, dict]) -> dict[str, str]:
    lines = entries[(None, "", None)]["msgstr"][0].splitlines()
    return dict(line.split(": ", 1) for line in lines if ": " in line)


def _placeholders(text: str) -> Counter[str]:
    return Counter(match.group(0) for match in _PLACEHOLDERS.finditer(text))


def test_the_extraction_finds_the_strings_we_know_of():
    keys = marked_strings()
    assert ("task state", "Done", None) in keys and ("stage state", "Done", None) in keys
    assert (None, "No tasks yet.", None) in keys  # a template's
    assert {(None, text, None) for text in STOCK_MESSAGES} <= keys  # gettext_noop's


@pytest.mark.parametrize("language", LANGUAGES)
def test_each_catalogue_holds_exactly_the_marked_strings(language):
    """Missing: run ``./run.sh messages`` and translate; extra: a string the sources no longer mark."""
    catalogue = set(parse_po(_po(language))) - {(None, "", None)}
    marked = marked_strings()
    assert sorted(marked - catalogue, key=str) == [], "not in the catalogue"
    assert sorted(catalogue - marked, key=str) == [], "in the catalogue, marked nowhere"


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_entry_is_translated_not_fuzzy_with_the_same_placeholders(language):
    entries = parse_po(_po(language))
    header = _header(entries)
    assert header["Language"] == language
    assert header["Content-Type"] == "text/plain; charset=UTF-8"
    assert "Plural-Forms" in header
    for key, entry in entries.items():
        assert "fuzzy" not in entry["flags"], key
        if key[1] == "":
            continue
        assert entry["msgstr"] and all(entry["msgstr"]), f"{key} is not translated"
        for form in entry["msgstr"]:
            assert _placeholders(form) == _placeholders(key[1]), (key, form)
        if "python-format" in entry["flags"] or "python-brace-format" in entry["flags"]:
            assert _placeholders(key[1]), key  # the flag says so: the check above compared something


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_committed_mo_says_what_the_po_says(language):
    """Fails after a .po edit that was not compiled (``./run.sh messages`` compiles)."""
    entries = parse_po(_po(language))
    with _po(language).with_suffix(".mo").open("rb") as file:
        compiled = gettext.GNUTranslations(file)
    for (context, msgid, plural), entry in entries.items():
        if msgid == "":
            continue
        if plural is None:
            found = compiled.pgettext(context, msgid) if context else compiled.gettext(msgid)
            assert found == entry["msgstr"][0], (msgid, found)
        else:
            for index, form in enumerate(entry["msgstr"]):
                # A count that picks this form: the catalogue's own Plural-Forms rule decides, not the index.
                n = next(count for count in range(1, 200) if compiled.plural(count) == index)
                found = (
                    compiled.npgettext(context, msgid, plural, n) if context else compiled.ngettext(msgid, plural, n)
                )
                assert found == form, (msgid, n, found)
    # Nothing more either (a stale .mo would still translate strings the .po dropped).
    assert len(compiled._catalog) == sum(max(1, len(entry["msgstr"])) for entry in entries.values())


RUNNING = {
    "task": "t-1",
    "state": "running",
    "seq": 3,
    "percent": 40,
    "eta": 150,
    "stage": "Process",
    "stages": [
        {"name": "Load", "state": "done", "weight": 1, "percent": 100},
        {"name": "Process", "state": "active", "weight": 1, "percent": 10},
        {"name": "Save", "state": "pending", "weight": 1, "percent": None},
    ],
}
EXPECTED = {
    "de": {
        "state": "Läuft",
        "eta": "noch 3 min",
        "stage": "Phase 2 von 3: Process",
        "label": "Fortschritt",
        "stages": "Phasen",
        "done_step": "Erledigt",
        "current_step": "In Arbeit",
        "cancelled": ("Abgebrochen", "Abgebrochen."),
        "lost": "Der Worker, der diese Aufgabe ausführt, antwortet nicht mehr.",
        "unavailable": "Diese Aufgabe gibt es nicht.",
        "empty": "Noch keine Aufgaben.",
        "action": "rebuild im Hintergrund ausführen",
    },
    "fr": {
        "state": "En cours",
        "eta": "encore 3 min",
        "stage": "Étape 2 sur 3\u00a0: Process",
        "label": "Progression",
        "stages": "Étapes",
        "done_step": "Terminée",
        "current_step": "En cours",
        "cancelled": ("Annulée", "Annulée."),
        "lost": "Le processus qui exécute cette tâche ne répond plus.",
        "unavailable": "Tâche introuvable.",
        "empty": "Aucune tâche pour l’instant.",
        "action": "Exécuter rebuild en arrière-plan",
    },
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_polling_fragment_speaks_the_language(language):
    expected = EXPECTED[language]
    with translation.override(language):
        html = render_fragment("t-1", RUNNING)
        gone = render_fragment("", None)
    # The widget shows no stage text: the stepper says each step's state (the dashboard shows the text).
    for text in ("state", "eta", "label", "stages", "done_step", "current_step"):
        assert expected[text] in html, (text, expected[text])
    assert f'aria-label="{expected["label"]}"' in html
    assert expected["unavailable"] in gone


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_widget_sends_its_script_the_strings_in_the_language(language):
    expected = EXPECTED[language]
    with translation.override(language):
        strings = json.loads(_context("t-1", RUNNING, mode="widget")["i18n"])
    assert strings["states"]["running"] == expected["state"]
    assert strings["eta_min"].replace("%(n)s", "3") == expected["eta"]
    assert strings["stage_states"]["done"] == expected["done_step"]
    # The records hold the stock messages in English; the script looks them up here.
    assert strings["messages"]["Cancelled."] == expected["cancelled"][1]


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_dashboard_rows_and_stock_messages_speak_the_language(language):
    expected = EXPECTED[language]
    with translation.override(language):
        cancelled = row_context({"task": "t-2", "state": "cancelled", "seq": 4, "message": "Cancelled."})
        running = row_context(RUNNING)
        lost = row_context({"task": "t-3", "state": "lost", "seq": 5, "error": STOCK_MESSAGES[3]})
        empty = render_to_string("realtime_async_dashboard/rows.html", {"rows": []})
    assert (cancelled["state_label"], cancelled["message"]) == expected["cancelled"]
    assert lost["message"] == expected["lost"]
    assert (running["state_label"], running["stage_text"]) == (expected["state"], expected["stage"])
    assert expected["empty"] in empty


@pytest.mark.parametrize("language", LANGUAGES)
def test_an_admin_action_is_described_in_the_language_of_the_request(language):
    action = async_action("myapp.tasks.rebuild")  # made at import time, before any request's language
    with translation.override(language):
        assert str(action.short_description) == EXPECTED[language]["action"]
    with translation.override("en"):
        assert str(action.short_description) == "Run rebuild in the background"
