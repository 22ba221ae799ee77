from __future__ import annotations

import pytest

from realtime_async import _store
from tests.services import start_worker


@pytest.fixture(scope="session")
def celery_worker_proc():
    """One real prefork Celery worker for the whole session."""
    proc = start_worker()
    yield proc
    proc.stop()


@pytest.fixture
def redis_client():
    return _store.get_store().client


@pytest.fixture
def manager():
    from realtime_async.async_manager import AsyncManager

    return AsyncManager.resolve_manager()


@pytest.fixture(autouse=True)
def _clean_realtime_async_keys():
    """Each test starts with no tasks, locks or registry entries of earlier tests."""
    store = _store.get_store()
    client = store.client
    keys = list(client.scan_iter(match=f"{store.prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    yield


@pytest.fixture(autouse=True)
def _dashboard_recorder(request):
    """Dashboard rows are written by a thread; keep it to tests that may use the database."""
    from realtime_async.contrib.dashboard.recorder import get_recorder, on_task_lifecycle
    from realtime_async.signals import task_lifecycle

    if "django_db" not in request.keywords:
        task_lifecycle.disconnect(dispatch_uid="realtime_async.contrib.dashboard")
        yield
        task_lifecycle.connect(on_task_lifecycle, dispatch_uid="realtime_async.contrib.dashboard")
        return
    yield
    get_recorder().flush()


# -- docs/reliability.md ------------------------------------------------------
_reliability_rows: list = []
_reliability_outcomes: dict[str, bool] = {}


@pytest.fixture
def reliability(request):
    """Record a row of docs/reliability.md for this test (see tests/reliability.py)."""
    from tests.reliability import Row

    assert request.node.get_closest_marker("reliability"), "mark the test with @pytest.mark.reliability"

    def record(fault: str, injection: str, observed: str) -> None:
        _reliability_rows.append(Row(fault, injection, observed, request.node.nodeid))

    return record


def pytest_runtest_logreport(report):
    if report.when == "call" or report.failed:
        _reliability_outcomes[report.nodeid] = _reliability_outcomes.get(report.nodeid, True) and report.passed


def pytest_sessionfinish(session, exitstatus):
    from tests.reliability import DOC, render

    config = session.config
    whole_suite = (
        not config.option.keyword
        and not config.option.markexpr
        and [str(arg).rstrip("/") for arg in config.args] == [str(path) for path in config.getini("testpaths")]
    )
    marked = [item.nodeid for item in session.items if item.get_closest_marker("reliability")]
    recorded = {row.test for row in _reliability_rows}
    # Only a run of the whole suite in which every reliability test passed rewrites the document.
    if (
        whole_suite
        and marked
        and all(_reliability_outcomes.get(nodeid) for nodeid in marked)
        and set(marked) <= recorded
    ):
        DOC.write_text(render(_reliability_rows))
