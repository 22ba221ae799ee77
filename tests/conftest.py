from __future__ import annotations

import pytest
from django.core.cache import cache

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
    return _store.redis_client_for(cache)


@pytest.fixture
def manager():
    from realtime_async.async_manager import AsyncManager

    return AsyncManager.resolve_manager()
