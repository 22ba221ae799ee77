"""``AsyncManager.run_inline``: a worker function run here, its progress, stages and log on a stream.

Unit tests run with Redis unreachable: an inline run that touched the store would fail here.
"""

from __future__ import annotations

import io
import time

import pytest
from django.utils import translation

from realtime_async import AsyncManager, PublicTaskError
from realtime_async._writing import terminal
from realtime_async._writing.writer import progress_change

STAGES = ["Load", "Process", "Save"]


@pytest.fixture(autouse=True)
def _english():
    with translation.override("en"):
        yield


def rebuild(rows, *, task_key=None, manager_class=None, fail_at=None, public=False):
    """Rebuild the search index."""
    manager = AsyncManager.resolve_manager(manager_class)
    manager.declare_stages(task_key, STAGES)
    with manager.stage(task_key, "Load"):
        manager.update_progress(task_key, "Reading", current=1, total=1)
    with manager.stage(task_key, "Process"):
        for row in manager.track(task_key, range(1, rows + 1), message="Row {n} of {total}"):
            if row == fail_at:
                raise PublicTaskError(f"Row {row}: no e-mail.") if public else ValueError(f"bad row {row}")
            if row == 3:
                manager.log(task_key, "Row 3 skipped: no e-mail", level="warning")
    with manager.stage(task_key, "Save"):
        manager.log(task_key, "Saved")
    return {"rows": rows, "task_key": task_key, "manager": type(manager).__name__}


def staged_by_launcher(*, task_key=None, manager_class=None):
    manager = AsyncManager.resolve_manager(manager_class)
    with manager.stage(task_key, "Only"):
        manager.update_progress(task_key, "Half", percent=50)
    return "ok"


def run(func, *args, **options):
    stream = io.StringIO()
    return AsyncManager.run_inline(func, *args, stream=stream, **options), stream.getvalue().splitlines()


def test_progress_stages_and_log_are_printed_and_the_result_returned():
    result, lines = run(rebuild, 5)
    # The test project configures RecordingManager: AsyncManager.run_inline hands the worker the configured class.
    assert result == {"rows": 5, "task_key": None, "manager": "RecordingManager"}
    assert lines[0] == "Rebuild the search index · Running"  # the title from the docstring, as at launch
    assert "0% · Stage 1 of 3: Load" in lines
    assert any(line.startswith("33% · Stage 2 of 3: Process") for line in lines)
    assert "Warning: Row 3 skipped: no e-mail" in lines
    assert any(line.startswith("66% · Stage 3 of 3: Save") for line in lines)
    assert lines[-2:] == ["Info: Saved", "Rebuild the search index · Done"]


def test_an_exception_is_shown_then_re_raised():
    stream = io.StringIO()
    with pytest.raises(ValueError, match="bad row 2"):
        AsyncManager.run_inline(rebuild, 5, task_kwargs={"fail_at": 2}, stream=stream)
    # The person at the terminal runs the code: the real error, not "The task failed.".
    assert stream.getvalue().splitlines()[-1] == "Rebuild the search index · 40% · Failed: ValueError: bad row 2"


def test_a_public_error_is_shown_as_written():
    stream = io.StringIO()
    with pytest.raises(PublicTaskError):
        AsyncManager.run_inline(rebuild, 5, task_kwargs={"fail_at": 4, "public": True}, title="Import", stream=stream)
    assert stream.getvalue().splitlines()[-1].endswith("· Failed: Row 4: no e-mail.")


def test_ctrl_c_ends_the_run_cancelled_and_goes_on_up():
    def interrupted(*, task_key=None, manager_class=None):
        AsyncManager.resolve_manager(manager_class).update_progress(task_key, "Working", percent=20)
        raise KeyboardInterrupt

    stream = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        AsyncManager.run_inline(interrupted, title="Long job", stream=stream)
    assert stream.getvalue().splitlines()[-1] == "Long job · 20% · Cancelled"


def test_stages_and_title_can_be_given_as_at_launch():
    result, lines = run(staged_by_launcher, stages=["Only"], title="  A   job  ")
    assert result == "ok"
    assert lines[0] == "A job · Running"
    assert "50% · Stage 1 of 1: Only · Half" in lines


def test_an_undeclared_stage_raises_in_the_worker_as_under_celery():
    with pytest.raises(ValueError, match="has no stages"):
        run(staged_by_launcher)


def test_a_dotted_path_is_imported_and_kwargs_go_through_task_kwargs():
    result, lines = run("tests.unit.test_run_inline.rebuild", 2, task_kwargs={"fail_at": None})
    assert result["rows"] == 2
    assert lines[-1] == "Rebuild the search index · Done"


def test_the_configured_manager_class_runs_the_worker(settings):
    settings.REALTIME_ASYNC = {"ASYNC_MANAGER_CLASS_PATH": "tests.testapp.managers.OtherManager"}
    result, _lines = run(rebuild, 1)
    assert result["manager"] == "OtherManager"


def test_outside_run_inline_reporting_is_silent_and_needs_no_store():
    assert terminal.active() is None
    assert rebuild(3)["rows"] == 3
    run(rebuild, 1)
    assert terminal.active() is None  # the context is reset after the run


def test_a_screen_that_raises_never_stops_the_work():
    class Broken:
        def show(self, record):
            raise RuntimeError("screen")

        log = end = show

    assert terminal.run(Broken(), rebuild, (4,), {}, manager_class=AsyncManager)["rows"] == 4


def test_the_record_mirrors_a_task_record_with_rate_and_eta():
    records = []

    class Screen:
        def show(self, record):
            records.append(dict(record))

        def log(self, entry):
            records.append(entry)

        end = show

    inline = terminal.Inline(Screen(), title="T")
    for n in range(3):
        inline.change(progress_change(None, n * 10, 100, None, None))
        time.sleep(0.21)
    inline.end("success", result=1)
    first, last = records[0], records[-1]
    assert first["state"] == "running" and first["started_at"] and first["title"] == "T"
    assert records[-2]["rate"] > 0 and records[-2]["eta"] > 0  # the writer's estimate
    assert last["state"] == "success" and last["percent"] == 100.0 and last["eta"] is None
    assert last["finished_at"] >= last["started_at"] and last["result"] == 1
