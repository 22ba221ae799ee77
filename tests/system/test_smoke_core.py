from __future__ import annotations

import pytest

from tests.services import wait_for


@pytest.mark.django_db(transaction=True)
def test_launch_runs_to_success(celery_worker_proc, manager):
    name = manager.launch_async_task("tests.testapp.workers.steps", 3, task_kwargs={"extra": "info"})
    final = wait_for(lambda: (r := manager.get_progress(name)) and r["state"] in ("success", "failure") and r, 30)
    assert final["state"] == "success", final
    assert final["result"]["steps"] == 3
