"""A project that configures its manager class and launches with a plain ``AsyncManager()``, as the README shows.

The configured class (``RecordingManager`` in the test settings) must get every
hook, in the launching process and in the real prefork worker.
"""

from __future__ import annotations

import os

import pytest

from realtime_async.async_manager import AsyncManager
from tests.services import wait_for
from tests.testapp.managers import OtherManager, recorded_events

pytestmark = pytest.mark.django_db(transaction=True)


def _finished(name):
    return wait_for(
        lambda: (r := AsyncManager().get_progress(name)) and r["state"] == "success" and r, 30, 0.1, "success"
    )


def test_a_plain_async_manager_launch_gets_the_configured_hooks(celery_worker_proc):
    name = AsyncManager().launch_async_task("tests.testapp.workers.steps", 2)
    record = _finished(name)
    assert record["result"]["manager"] == "RecordingManager"  # what the worker resolved
    # "create" is emitted here after the enqueue, the others by the worker: their order across processes is not set.
    events = wait_for(lambda: len(e := recorded_events(name)) >= 3 and e, 10, 0.05, "the lifecycle events")
    kinds = [event["event"] for event in events]
    worker_kinds = [kind for kind in kinds if kind != "create"]
    assert kinds.count("create") == 1 and worker_kinds[0] == "start" and worker_kinds[-1] == "complete"
    creator = {event["pid"] for event in events if event["event"] == "create"}
    workers = {event["pid"] for event in events if event["event"] in ("start", "complete")}
    assert creator == {os.getpid()} and workers and os.getpid() not in workers


def test_an_explicit_class_still_wins(celery_worker_proc):
    given = AsyncManager().launch_async_task("tests.testapp.workers.steps", 1, manager_class=OtherManager)
    subclass = OtherManager().launch_async_task("tests.testapp.workers.steps", 1)
    assert _finished(given)["result"]["manager"] == "OtherManager"
    assert _finished(subclass)["result"]["manager"] == "OtherManager"
    assert recorded_events(subclass) == []  # OtherManager records nothing
