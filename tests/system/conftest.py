"""System tests start real processes: Celery workers, daphne, redis-server, Chromium."""

from __future__ import annotations

import pytest

from tests.browser_helpers import run_chromium, run_daphne
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


@pytest.fixture(scope="module")
def base_url():
    """A daphne of the test project for the module's browser tests; its address."""
    yield from run_daphne()


@pytest.fixture(scope="module")
def browser(base_url):
    """Headless Chromium for the module's browser tests (after its daphne, so it stops first)."""
    yield from run_chromium()
