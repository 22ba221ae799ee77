"""System tests start real processes: Celery workers, daphne, redis-server, Chromium."""

from __future__ import annotations

import pytest

from tests.services import start_worker


@pytest.fixture(autouse=True)
def _clean_keys(clean_realtime_async_keys):
    """Each test starts with no tasks, locks or registry entries of earlier tests."""


@pytest.fixture(scope="session")
def celery_worker_proc(django_db_setup):
    """One real prefork Celery worker for the whole session.

    It outlives every test but not the test database: PostgreSQL refuses to drop a database that
    the worker's processes are still connected to.
    """
    proc = start_worker()
    yield proc
    proc.stop()
