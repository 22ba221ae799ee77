"""System tests start real processes: Celery workers, daphne or uvicorn, redis-server, Chromium.

A test that asks for ``server``, itself or through a fixture (``base_url``),
runs once per ASGI server of ``tests.services.SERVERS`` (ids ``[daphne]``,
``[uvicorn]``); the module's tests are grouped by server, so a module-scoped
server starts once per server. The modules of ``DAPHNE_ONLY`` run on daphne alone.

A test that must see a task run (bars advancing, a cancel, a reload, a fault
mid-task) launches it behind a ``gate`` and opens the gate once its page or
watchers follow the task: on a loaded machine a task of a few seconds may
otherwise end before they arrive.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser_helpers import run_chromium, run_server
from tests.services import SERVERS, start_worker


@pytest.fixture(autouse=True)
def _clean_keys(clean_realtime_async_keys):
    """Each test starts with no tasks, locks or registry entries of earlier tests."""


class Gate:
    """A file that a worker function waits for (``wait_for=str(gate)``, ``hold=[step, str(gate)]``;
    ``tests.testapp.workers.wait_for_gate``) before it goes on; ``open()`` lets it go on."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __str__(self) -> str:
        return str(self.path)

    def open(self) -> None:
        self.path.touch()


@pytest.fixture
def gate(tmp_path):
    """A closed `Gate`. Opened at teardown too: a test that failed before opening it leaves no worker waiting."""
    gate = Gate(tmp_path / "gate")
    yield gate
    gate.open()


@pytest.fixture(scope="session")
def celery_worker_proc(django_db_setup):
    """One real prefork Celery worker for the whole session.

    It outlives every test but not the test database: PostgreSQL refuses to drop a database that
    the worker's processes are still connected to.
    """
    proc = start_worker()
    yield proc
    proc.stop()


#: Browser modules about the page (the admin, the dashboard, stages, breakdowns, logs, languages, hidden
#: tabs), not the transport: the client's transport is tested on both servers by test_browser_widget, so these
#: run on daphne only, saving CI about 70 s (see .ci/run).
DAPHNE_ONLY = frozenset(
    f"tests.system.test_browser_{name}"
    for name in ("admin", "breakdown", "dashboard", "hidden", "log", "stages", "translations")
)


def pytest_generate_tests(metafunc):
    if "server" in metafunc.fixturenames and metafunc.module.__name__ not in DAPHNE_ONLY:
        metafunc.parametrize("server", SERVERS, indirect=True, scope="module")


@pytest.fixture(scope="module")
def server(request) -> str:
    """The ASGI server ("daphne", "uvicorn") the module's server-level tests run on: each in turn."""
    return getattr(request, "param", "daphne")


@pytest.fixture(scope="module")
def base_url(server):
    """A ``server`` of the test project for the module's browser tests; its address."""
    yield from run_server(server)


@pytest.fixture(scope="module")
def browser(base_url):
    """Headless Chromium for the module's browser tests (after its server, so it stops first)."""
    yield from run_chromium()
