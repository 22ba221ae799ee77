"""``AsyncManager.track``: report the progress of a loop by counting its items."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from realtime_async._writing.reporting import Reporting

__all__ = ["track"]

_T = TypeVar("_T")


def _total_of(iterable: Iterable[object], total: float | None) -> float | None:
    if total is not None:
        return total
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:  # a generator: the count alone is reported, the bar is indeterminate
        return None


def track(
    manager: Reporting, task_key: str | None, iterable: Iterable[_T], *, total: float | None, message: str | None
) -> Iterator[_T]:
    """Yield the items of ``iterable``, reporting ``current``/``total`` before each one and when it ends.

    Each report goes through ``update_progress``: coalesced like any other call,
    and raising ``TaskCancelled`` at the first item after the cancel was seen.
    ``message`` is formatted with ``n`` (the 1-based number of the item about to be
    worked on) and ``total`` (``"?"`` when unknown).
    """
    total = _total_of(iterable, total)
    shown_total = "?" if total is None else f"{total:g}"
    done = 0
    for item in iterable:
        text = message.format(n=done + 1, total=shown_total) if message else None
        manager.update_progress(task_key, text, current=done, total=total)
        yield item
        done += 1
    text = message.format(n=done, total=shown_total) if message else None
    manager.update_progress(task_key, text, current=done, total=total if total is not None else done)
