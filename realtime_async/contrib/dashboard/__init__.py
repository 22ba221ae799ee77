"""Optional add-on: a database record of every task and a live "my tasks" page.

Add ``"realtime_async.contrib.dashboard"`` to ``INSTALLED_APPS``, migrate, and
include ``realtime_async.contrib.dashboard.urls``.
"""
