"""What the widget module renders without a task: assets, templates, static files, ETA text."""

from __future__ import annotations

import pytest
from django.contrib.staticfiles import finders
from django.template.loader import render_to_string

from realtime_async.widgets import format_eta, render_assets


def test_nonce_is_escaped():
    assert 'nonce="a&quot;&gt;&lt;x"' in render_assets(nonce='a"><x')


def test_template_is_namespaced_and_static_files_exist():
    assert render_to_string("realtime_async/progress.html", {"state": "queued", "mode": "fragment"})
    for path in ("client.js", "widget.js", "progress.css"):
        assert finders.find(f"realtime_async/{path}"), path


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, ""), (-1, ""), (0.2, "1 s left"), (59.2, "60 s left"), (90, "2 min left"), (7500, "2 h 5 min left")],
)
def test_format_eta(seconds, text):
    assert format_eta(seconds) == text
