"""Signals. ``task_lifecycle`` mirrors ``AsyncManager.async_task_lifecycle``.

Receivers get ``sender`` (the manager class), ``event``, ``task_name`` and the
same payload as the hook. It lets add-ons such as the dashboard listen to
every task without asking users to change their manager class. Receivers run
with ``send_robust``: an exception is logged and never reaches the task.
"""

from __future__ import annotations

from django.dispatch import Signal

__all__ = ["task_lifecycle"]

task_lifecycle = Signal()
