"""Fixtures for every test; those that need Redis are opted into by ``integration/`` and ``system/``.

The suite is split by cost: ``unit/`` needs no service at all (not even Redis),
``integration/`` needs Redis and runs in this process, ``system/`` starts
workers, servers and browsers. The per-test Redis cleanup is autouse in the
conftest of ``integration/`` and ``system/`` only, so unit tests never connect.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from realtime_async._core.store import get_store

#: The folders of the suite, cheapest first; running all of them is running the whole suite.
SUITES = ("unit", "integration", "system")


def pytest_collection_modifyitems(session, config, items):
    """Cheapest first: unit, then integration, then system tests (each folder's own order kept)."""
    rank = {suite: index for index, suite in enumerate(SUITES)}
    here = Path(__file__).parent

    def suite(item: pytest.Item) -> int:
        path = item.path
        return rank.get(path.relative_to(here).parts[0], len(SUITES)) if path.is_relative_to(here) else len(SUITES)

    items.sort(key=suite)


@pytest.fixture
def redis_client():
    return get_store().client


@pytest.fixture
def core_layer(settings):
    """RedisChannelLayer, whatever the run's ``RA_TEST_LAYER``: for tests of the layered delivery."""
    from tests.project import settings as project

    settings.CHANNEL_LAYERS = project.CORE_LAYERS


@pytest.fixture
def pubsub_layer(settings):
    """RedisPubSubChannelLayer, whatever the run's ``RA_TEST_LAYER``: for tests of the direct delivery."""
    from tests.project import settings as project

    settings.CHANNEL_LAYERS = project.PUBSUB_LAYERS


@pytest.fixture
def manager():
    from realtime_async.async_manager import AsyncManager

    return AsyncManager.resolve_manager()


@pytest.fixture
def clean_realtime_async_keys():
    """Each test starts with no tasks, locks or registry entries of earlier tests (autouse where Redis is used)."""
    store = get_store()
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


def _whole_suite(config) -> bool:
    """Whether this session ran every test: ``testpaths`` (a bare ``pytest``), or each of its ``SUITES`` folders."""
    if config.option.keyword or config.option.markexpr:
        return False
    here = Path(config.invocation_params.dir)
    ran = {(here / str(arg)).resolve() for arg in config.args}
    roots = {(config.rootpath / str(path)).resolve() for path in config.getini("testpaths")}
    return ran == roots or ran == {root / suite for root in roots for suite in SUITES}


def pytest_sessionfinish(session, exitstatus):
    from tests.reliability import DOC, render

    config = session.config
    whole_suite = _whole_suite(config)
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
