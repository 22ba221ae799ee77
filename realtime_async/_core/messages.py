"""The stock texts the package itself writes into records, kept in English and translated when shown.

A record is written once, by a worker that knows nothing of its watchers, and
read by many people, each in their own language. So the package stores these
texts in English, which is also their gettext msgid, and translates them at
display time: ``_web/display.py`` for server-rendered HTML, and ``display.js``
through the ``messages`` table that ``display.i18n()`` sends the page. A record
written by an older version, or by a worker in another language, is shown
translated all the same; the wire protocol and the store stay language-neutral.
A worker's own messages and ``PublicTaskError`` texts are shown as written.
"""

from __future__ import annotations

from django.utils.translation import gettext_noop

__all__ = [
    "CANCELLED",
    "GENERIC_ERROR",
    "LOST_ERROR",
    "PART_CANCELLED",
    "STOCK_MESSAGES",
    "THEN_NOT_STARTED",
    "TIME_LIMIT_ERROR",
]

#: The message of a task that ended cancelled.
CANCELLED = gettext_noop("Cancelled.")
#: What users see when a worker fails with anything but ``PublicTaskError``.
GENERIC_ERROR = gettext_noop("The task failed.")
#: The error of a task stopped by its soft time limit.
TIME_LIMIT_ERROR = gettext_noop("The task took too long and was stopped.")
#: The error of a task whose worker died.
LOST_ERROR = gettext_noop("The worker running this task stopped responding.")

#: The error of a ``fail_fast`` group ended by a cancelled part (``_core/store/group.lua`` writes it).
PART_CANCELLED = gettext_noop("A part was cancelled.")
#: The error of a group's part (a chain's step, the fan-in step) that could not be enqueued when its time came.
THEN_NOT_STARTED = gettext_noop("This step could not be started.")

#: Every stock text, the ones display time translates (any other message is shown as written).
STOCK_MESSAGES = (CANCELLED, GENERIC_ERROR, TIME_LIMIT_ERROR, LOST_ERROR, PART_CANCELLED, THEN_NOT_STARTED)
