"""Conflict ids turned into lock ids (``_core.locks``): what is refused."""

from __future__ import annotations

import pytest

from realtime_async._core.locks import to_lock_ids


@pytest.mark.parametrize(
    "bad",
    [{"nolabel": {1}}, {"app.Model": "abc"}, {"app.Model": {None}}, {"app.Model": {True}}, {"app.Model": {1.5}}, [1]],
)
def test_invalid_conflict_ids_are_refused(bad):
    with pytest.raises(ValueError):
        to_lock_ids(bad)
