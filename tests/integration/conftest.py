"""Integration tests use the real Redis of the test settings, in this process."""

from __future__ import annotations

import pytest

from tests.ws_helpers import stop_hub


@pytest.fixture(autouse=True)
def _clean_keys(clean_realtime_async_keys):
    """Each test starts with no tasks, locks or registry entries of earlier tests."""


@pytest.fixture
async def hub_cleanup():
    """Stop this loop's hub after the test, before its loop closes (see ``ws_helpers.stop_hub``)."""
    yield
    await stop_hub()
