"""Integration tests use the real Redis of the test settings, in this process."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _clean_keys(clean_realtime_async_keys):
    """Each test starts with no tasks, locks or registry entries of earlier tests."""
