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
