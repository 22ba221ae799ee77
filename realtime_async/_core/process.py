"""Per-process objects and throttled log lines, each written once.

Celery's prefork pool forks children from a parent that may already hold
threads, event loops and connections; none of them survive the fork. So every
per-process object (the writer, the scheduler and sender threads, the store,
the dashboard recorder) is made lazily and made again in a new process.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["PerProcess", "Throttled"]

_T = TypeVar("_T")


class PerProcess(Generic[_T]):
    """The object ``factory`` makes, once per process: ``get()`` makes it again after a fork.

    ``key`` names a variant (a cache alias, say): a new key replaces the object.
    """

    def __init__(self, factory: Callable[[], _T], close: Callable[[_T], None] | None = None) -> None:
        self._factory = factory
        #: Called on an object this process made when a new key or ``reset`` replaces it.
        self._close = close
        self._lock = threading.Lock()
        self._slot: tuple[int, object, _T] | None = None

    def get(self, key: object = None) -> _T:
        slot, pid = self._slot, os.getpid()
        if slot is not None and slot[0] == pid and slot[1] == key:
            return slot[2]
        with self._lock:
            slot = self._slot
            if slot is None or slot[0] != pid or slot[1] != key:
                self._retire(slot)
                slot = self._slot = (pid, key, self._factory())
            return slot[2]

    def reset(self) -> None:
        """Forget the object; the next ``get()`` makes a new one."""
        with self._lock:
            self._retire(self._slot)
            self._slot = None

    def _retire(self, slot: tuple[int, object, _T] | None) -> None:
        if slot is not None and slot[0] == os.getpid() and self._close is not None:  # not a parent's
            self._close(slot[2])


class Throttled:
    """A logger that says one line every ``interval`` seconds: an outage must not flood the logs.

    Lines within the interval go to ``debug`` instead.
    """

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._said_at = float("-inf")

    def warning(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._said_at > self.interval:
            self._said_at = now
            self.logger.warning(message, *args)
        else:
            self.logger.debug(message, *args)
