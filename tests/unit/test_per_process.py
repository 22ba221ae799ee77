"""``PerProcess``: one object per process and key, the replaced one closed, a parent's left alone."""

from __future__ import annotations

import itertools
import os
from unittest import mock

from realtime_async._core.process import PerProcess


def _counting():
    made, closed = itertools.count(1), []
    return PerProcess(lambda: next(made), closed.append), closed


def test_the_object_is_made_once_per_key_and_the_replaced_one_closed():
    slot, closed = _counting()
    assert slot.get("a") == slot.get("a") == 1
    assert slot.get("b") == 2 and closed == [1]
    slot.reset()
    assert closed == [1, 2]
    assert slot.get("b") == 3
    slot.reset()
    slot.reset()  # nothing left to close
    assert closed == [1, 2, 3]


def test_a_parents_object_is_made_again_but_not_closed():
    slot, closed = _counting()
    assert slot.get() == 1
    with mock.patch("realtime_async._core.process.os.getpid", return_value=os.getpid() + 1):  # as in a forked child
        assert slot.get() == 2
    assert closed == []
