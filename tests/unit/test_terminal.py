"""The terminal renderer (``_web/terminal.py``): a status line on a tty, plain lines elsewhere, never a crash."""

from __future__ import annotations

import io

import pytest
from django.utils import translation

from realtime_async._web.display import display
from realtime_async._web.terminal import TerminalRenderer

CLEAR = "\r\x1b[2K"
STAGES = [
    {"name": "Load", "state": "done", "weight": 1.0, "percent": 100.0},
    {"name": "Process", "state": "active", "weight": 1.0, "percent": 50.0},
    {"name": "Save", "state": "pending", "weight": 1.0, "percent": None},
]


@pytest.fixture(autouse=True)
def _english():
    with translation.override("en"):
        yield


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def running(**fields):
    return {"title": "Rebuild “Website”", "state": "running", **fields}


def tty_renderer(**options):
    stream = FakeTTY()
    return stream, TerminalRenderer(stream, width=120, clock=Clock(), **options)


def plain_renderer(**options):
    stream = io.StringIO()
    clock = Clock()
    return stream, clock, TerminalRenderer(stream, clock=clock, **options)


# -- choosing the mode -------------------------------------------------------
def test_a_tty_gets_the_status_line_and_anything_else_plain_lines():
    assert TerminalRenderer(FakeTTY()).tty is True
    assert TerminalRenderer(io.StringIO()).tty is False
    assert TerminalRenderer(io.StringIO(), tty=True).tty is True


def test_colour_follows_the_tty_and_no_color(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert TerminalRenderer(FakeTTY()).color is True
    assert TerminalRenderer(io.StringIO()).color is False
    monkeypatch.setenv("NO_COLOR", "1")
    assert TerminalRenderer(FakeTTY()).color is False


# -- on a terminal -------------------------------------------------------------
def test_the_status_line_says_what_the_widget_says():
    stream, renderer = tty_renderer()
    record = running(percent=50.0, stages=STAGES, stage="Process", message="Row 31 of 62", eta=125)
    renderer.show(record)
    shown = display(record)
    out = stream.getvalue()
    assert out.startswith(CLEAR) and "\n" not in out  # drawn in place
    line = out[len(CLEAR) :]
    assert line.startswith("Rebuild “Website” [" + "█" * 10 + "░" * 10 + "]  50%")
    assert line.endswith(" · Stage 2 of 3: Process · Row 31 of 62 · 2 min left")
    assert shown["stage_text"] in line and shown["eta_text"] in line and shown["percent_text"] in line


def test_the_status_line_is_translated():
    stream, renderer = tty_renderer()
    with translation.override("de"):
        renderer.show(running(percent=50.0, stages=STAGES, stage="Process", eta=125))
        expected = display(running(percent=50.0, stages=STAGES, stage="Process", eta=125))
    assert expected["stage_text"] in stream.getvalue() and expected["eta_text"] in stream.getvalue()


def test_a_log_line_is_printed_above_the_status_line_which_is_redrawn():
    stream, renderer = tty_renderer(color=False)
    renderer.show(running(percent=10.0, message="Working"))
    status = stream.getvalue()[len(CLEAR) :]
    renderer.log({"t": 1.0, "level": "warning", "text": "Row 31 skipped"})
    assert stream.getvalue().endswith(CLEAR + "Warning: Row 31 skipped\n" + status)


def test_log_levels_are_coloured_on_a_colour_terminal():
    stream, renderer = tty_renderer(color=True)
    renderer.log({"level": "error", "text": "Disk full"})
    assert "\x1b[31mError\x1b[0m: Disk full\n" in stream.getvalue()


def test_redraws_are_throttled_but_a_new_stage_is_drawn_at_once():
    stream, renderer = tty_renderer()
    clock = renderer.clock
    renderer.show(running(percent=1.0))
    for n in range(2, 50):
        renderer.show(running(percent=float(n)))  # the same instant: no redraw
    assert stream.getvalue().count(CLEAR) == 1
    renderer.show(running(percent=50.0, stages=STAGES, stage="Process"))
    assert stream.getvalue().count(CLEAR) == 2
    clock.now += 0.1
    renderer.show(running(percent=60.0, stages=STAGES, stage="Process"))
    assert stream.getvalue().count(CLEAR) == 3


def test_an_unknown_percent_is_a_moving_bar():
    stream, renderer = tty_renderer()
    renderer.show(running())
    renderer.clock.now += 1
    renderer.show(running())
    first, second = stream.getvalue().split(CLEAR)[1:]
    assert first != second and "%" not in first and "█" * 3 in first


def test_the_status_line_never_wraps():
    stream = FakeTTY()
    renderer = TerminalRenderer(stream, width=40)
    renderer.show(running(percent=12.0, message="x" * 200))
    line = stream.getvalue()[len(CLEAR) :]
    assert len(line) == 39 and line.endswith("…")


def test_the_end_replaces_the_status_line_with_a_final_line():
    stream, renderer = tty_renderer()
    renderer.show(running(percent=40.0))
    renderer.end(running(state="success", percent=100.0))
    assert stream.getvalue().endswith(CLEAR + "Rebuild “Website” · Done\n")
    renderer.show(running(percent=50.0))  # nothing after the end
    assert stream.getvalue().endswith("Done\n")


@pytest.mark.parametrize(
    ("record", "final"),
    [
        ({"state": "failure", "percent": 38.0, "error": "Row 31: no e-mail."}, "38% · Failed: Row 31: no e-mail."),
        ({"state": "failure", "error": "The task failed."}, "Failed: The task failed."),
        ({"state": "cancelled", "percent": 12.5, "message": "Cancelled."}, "12% · Cancelled"),
        ({"state": "lost", "error": "The worker running this task stopped responding."}, "Lost: The worker"),
    ],
)
def test_final_lines(record, final):
    stream, _clock, renderer = plain_renderer()
    renderer.end({"title": "Import", **record})
    assert stream.getvalue().startswith("Import · " + final)


def test_close_takes_the_status_line_away():
    stream, renderer = tty_renderer()
    renderer.show(running(percent=40.0))
    renderer.close()
    renderer.note("Stopped following.")
    assert stream.getvalue().endswith("%" + CLEAR + CLEAR + "Stopped following.\n")


# -- anywhere else -----------------------------------------------------------
def test_plain_lines_one_per_state_and_stage():
    stream, _clock, renderer = plain_renderer()
    renderer.show({"title": "Report", "state": "queued"})
    renderer.show({"title": "Report", "state": "running", "stages": STAGES, "stage": "Process", "percent": 50.0})
    renderer.log({"level": "info", "text": "Page 3 rendered"})
    renderer.end({"title": "Report", "state": "success", "percent": 100.0})
    assert stream.getvalue().splitlines() == [
        "Report · Queued",
        "Report · Running",
        "50% · Stage 2 of 3: Process",
        "Info: Page 3 rendered",
        "Report · Done",
    ]
    assert CLEAR not in stream.getvalue()


def test_plain_lines_are_throttled_by_percent_step_and_time():
    stream, clock, renderer = plain_renderer()
    renderer.show(running())
    for n in range(1, 10001):  # a hot loop: 10,000 updates in no time
        renderer.show(running(current=n, total=10000, percent=n / 100, message=f"Row {n} of 10000"))
    lines = stream.getvalue().splitlines()
    assert 20 <= len(lines) <= 22  # the state line, then one per 5 %
    assert lines[-1] == "100% · Row 10000 of 10000"
    before = len(lines)
    renderer.show(running(percent=100.0, message="Saving"))  # a new message, within the second: held back
    assert len(stream.getvalue().splitlines()) == before
    clock.now += 1.0
    renderer.show(running(percent=100.0, message="Saving"))
    assert stream.getvalue().splitlines()[-1] == "100% · Saving"
    clock.now += 5.0
    renderer.show(running(percent=100.0, message="Saving", eta=3))  # nothing new worth a line
    assert stream.getvalue().splitlines()[-1] == "100% · Saving"


def test_a_multi_line_log_entry_is_indented():
    stream, _clock, renderer = plain_renderer()
    renderer.log({"level": "error", "text": "Import failed\nrow 31: no e-mail"})
    assert stream.getvalue() == "Error: Import failed\n  row 31: no e-mail\n"


def test_a_stream_that_cannot_encode_gets_ascii_bars():
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii")
    renderer = TerminalRenderer(stream, tty=True, width=100)
    renderer.show(running(title="Rebuild", percent=50.0, message="Step 2"))
    stream.flush()
    assert raw.getvalue().decode("ascii").endswith("Rebuild [##########----------]  50% - Step 2")


# -- never a crash -----------------------------------------------------------
def test_a_closed_stream_turns_rendering_off_without_raising():
    stream = FakeTTY()
    renderer = TerminalRenderer(stream)
    stream.close()
    renderer.show(running(percent=10.0))
    renderer.log({"level": "info", "text": "still fine"})
    renderer.end(running(state="success"))
    renderer.close()


def test_a_broken_pipe_turns_rendering_off_for_good():
    class Broken(io.StringIO):
        writes = 0

        def write(self, text):
            Broken.writes += 1
            raise BrokenPipeError

    renderer = TerminalRenderer(Broken())
    renderer.show(running(percent=10.0))
    renderer.show(running(percent=90.0))
    renderer.log({"level": "info", "text": "x"})
    assert Broken.writes == 1
