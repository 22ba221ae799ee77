"""``manager.track`` outside a task (``task_key`` None): every item, in order, nothing reported."""

from __future__ import annotations

from realtime_async import AsyncManager


def test_outside_a_task_it_yields_every_item():
    assert list(AsyncManager().track(None, range(5))) == [0, 1, 2, 3, 4]
    assert list(AsyncManager().track(None, (c for c in "abc"), message="{n}/{total}")) == ["a", "b", "c"]
    assert list(AsyncManager().track(None, [])) == []


def test_it_is_lazy_like_the_loop_it_wraps():
    consumed = []

    def rows():
        for i in range(3):
            consumed.append(i)
            yield i

    tracked = AsyncManager().track(None, rows())
    assert consumed == []
    assert next(tracked) == 0 and consumed == [0]
