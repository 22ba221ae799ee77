"""Which manager class answers for a task: the one extension point every layer asks.

The manager class is a dotted-path setting (``ASYNC_MANAGER_CLASS_PATH``),
resolved with ``import_string`` like every Django extension point, so the
layers below ``async_manager`` (views, consumers, the worker wrapper) reach the
configured class without importing it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.utils.module_loading import import_string

from realtime_async.conf import DEFAULT_MANAGER_CLASS_PATH, get_settings

if TYPE_CHECKING:
    from realtime_async.async_manager import AsyncManager

__all__ = ["class_path", "configured_class", "resolve_manager"]

logger = logging.getLogger("realtime_async")


def class_path(cls: type) -> str:
    """The dotted path a worker imports ``cls`` by."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _checked(candidate: object, fallback: type[AsyncManager] | None = None) -> type[AsyncManager]:
    """``candidate`` (a class or dotted path) when it is an ``AsyncManager`` subclass, else ``fallback``, loudly."""
    base: type[AsyncManager] = import_string(DEFAULT_MANAGER_CLASS_PATH)
    fallback = fallback or base
    if isinstance(candidate, str):
        try:
            candidate = import_string(candidate)
        except ImportError:
            logger.error("realtime_async: cannot import manager %r; using %s", candidate, class_path(fallback))
            return fallback
    if not (isinstance(candidate, type) and issubclass(candidate, base)):
        logger.error("realtime_async: %r is not an AsyncManager subclass; using %s", candidate, class_path(fallback))
        return fallback
    return candidate


def configured_class() -> type[AsyncManager]:
    """The class ``ASYNC_MANAGER_CLASS_PATH`` names (``AsyncManager`` when it names nothing usable)."""
    return _checked(get_settings().async_manager_class_path)


def resolve_manager(manager_class: type[AsyncManager] | str | None = None) -> AsyncManager:
    """An instance of ``manager_class`` (a class or dotted path), else of the configured class.

    ``AsyncManager`` itself, given or not, means the configured class (see ``AsyncManager.__new__``).
    """
    configured = configured_class()
    return _checked(manager_class, configured)() if manager_class else configured()
