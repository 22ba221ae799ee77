"""``async_action`` checks its options when the admin is defined, not when an action runs."""

from __future__ import annotations

import pytest

from realtime_async.admin import async_action


@pytest.mark.parametrize("chunk_size", [0, -3, True, 2.5, "10"])
def test_chunk_size_must_be_a_positive_int(chunk_size):
    with pytest.raises(ValueError, match=r"chunk_size must be a positive int \(objects per part\), got "):
        async_action("tests.testapp.workers.admin_rebuild", chunk_size=chunk_size)


def test_a_split_action_is_an_ordinary_admin_action():
    action = async_action("tests.testapp.workers.admin_rebuild", chunk_size=500, name="rebuild_in_parallel")
    assert action.__name__ == "rebuild_in_parallel"
    assert str(action.short_description) == "Run admin_rebuild in the background"
