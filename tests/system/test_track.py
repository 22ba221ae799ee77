"""``manager.track`` in a real prefork worker: counts, totals from len(), generators, cancel at the next item."""

from __future__ import annotations

import pytest

from tests.services import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def _final(manager, name, timeout=30):
    return wait_for(
        lambda: (r := manager.get_progress(name)) and r["state"] in ("success", "failure", "cancelled") and r,
        timeout,
        0.1,
        "a final state",
    )


@pytest.mark.parametrize(("sized", "total"), [(True, 25), (False, 25)])
def test_track_counts_every_item_and_ends_complete(celery_worker_proc, manager, sized, total):
    name = manager.launch_async_task("tests.testapp.workers.track_rows", 25, task_kwargs={"sized": sized})
    record = _final(manager, name)
    assert record["state"] == "success" and record["result"] == {"seen": 25}
    assert (record["current"], record["total"], record["percent"]) == (25, total, 100.0)
    assert record["message"] == ("Importing row 25 of 25" if sized else "Importing row 25 of ?")


def test_track_reports_while_it_runs_and_a_generator_has_no_percent(celery_worker_proc, manager):
    name = manager.launch_async_task(
        "tests.testapp.workers.track_rows", 200, task_kwargs={"sized": False, "delay": 0.02}
    )
    running = wait_for(
        lambda: (r := manager.get_progress(name)) and r["state"] == "running" and r.get("current") and r,
        20,
        0.05,
        "progress",
    )
    assert running["total"] is None and running["percent"] is None
    assert running["message"].startswith("Importing row ") and running["message"].endswith(" of ?")
    assert _final(manager, name)["result"] == {"seen": 200}


def test_a_cancel_stops_the_loop_at_its_next_item(celery_worker_proc, manager, django_user_model):
    owner = django_user_model.objects.create_user("track-owner")
    name = manager.launch_async_task("tests.testapp.workers.track_rows", 1000, user=owner, task_kwargs={"delay": 0.02})
    wait_for(lambda: (manager.get_progress(name) or {}).get("current"), 20, 0.05, "progress")
    assert manager.cancel(name, user=owner)
    at_cancel = manager.get_progress(name)["current"]
    record = _final(manager, name)
    assert record["state"] == "cancelled"
    # It stopped within a few items of the cancel: one progress interval (0.1 s) is 5 items here; 1,000 were left.
    assert at_cancel <= record["current"] <= at_cancel + 50
