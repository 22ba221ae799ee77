"""Task titles: the default derived from the worker function, and the cut of long ones."""

from __future__ import annotations

import pytest

from realtime_async._core.records import MAX_TITLE_LENGTH
from realtime_async._writing.launch import default_title, title_text


def documented(*, task_key=None, manager_class=None):
    """Rebuild the search index.

    Takes a while.
    """


def undocumented(*, task_key=None, manager_class=None):
    pass


@pytest.mark.parametrize(
    ("func", "title"),
    [
        (documented, "Rebuild the search index"),
        (undocumented, "Undocumented"),
        ("myapp.tasks.rebuild_project", "Rebuild project"),  # a dotted path is not imported
        ("tests.testapp.workers.steps", "Steps"),
    ],
)
def test_default_title(func, title):
    assert default_title(func) == title


def test_titles_are_one_line_and_cut_never_refused():
    assert title_text("  Import\n  “Q3”\tfile  ") == "Import “Q3” file"
    long = title_text("x" * 1000)
    assert long is not None and len(long) == MAX_TITLE_LENGTH and long.endswith("…")
    assert title_text("") is None and title_text("   ") is None and title_text(None) is None
    assert title_text(42) == "42"
