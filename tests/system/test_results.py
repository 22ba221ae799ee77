"""Results end to end: a prefork Celery worker attaches a file, the owner downloads it; the widget in Chromium."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from django.test import Client

from tests.browser_helpers import assert_clean, new_page, widget
from tests.services import wait_for
from tests.testapp.result_workers import report_rows

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker_proc")]

WORKER = "tests.testapp.result_workers.write_report"


def _final(manager, name, timeout=30):
    def done():
        record = manager.get_progress(name)
        return record if record and record["state"] not in ("queued", "running") else None

    return wait_for(done, timeout, what=f"{name} to finish")


def test_a_worker_attaches_a_file_that_its_owner_downloads(celery_worker_proc, manager, django_user_model):
    user = django_user_model.objects.create_user("reporter")
    name = manager.launch_async_task(WORKER, 5, user=user)
    record = _final(manager, name)
    assert record["state"] == "success", record
    assert record["links"] == [{"url": "/demo/widgets/?done=1", "label": "Open the report"}]
    [entry] = record["files"]
    assert (entry["name"], entry["content_type"]) == ("Report 5 März.csv", "text/csv")
    client = Client()
    client.force_login(user)
    response = client.get(entry["url"])
    assert response.status_code == 200
    assert b"".join(response.streaming_content).decode() == report_rows(5)
    response.close()
    assert response["Content-Disposition"] == "attachment; filename*=utf-8''Report%205%20M%C3%A4rz.csv"
    stranger = Client()
    stranger.force_login(django_user_model.objects.create_user("stranger"))
    assert stranger.get(entry["url"]).status_code == 404


@pytest.mark.browser
@pytest.mark.parametrize("auth", ["session", "token"])
def test_the_widget_offers_the_link_and_the_download_on_success(
    browser, base_url, manager, django_user_model, auth, gate
):
    user = django_user_model.objects.create_user(f"viewer-{auth}")
    # Its rows begin once the page is loaded and checked, however long that took on a busy CI machine.
    name = manager.launch_async_task(WORKER, 8, user=user, task_kwargs={"delay": 0.2, "wait_for": str(gate)})
    query = {"task": name}
    if auth == "token":
        query["token"] = manager.make_watch_token(name)
    page = new_page(browser, base_url, user=user if auth == "session" else None)
    try:
        assert page.goto("/demo/widgets/?" + urlencode(query)).status == 200
        element = widget(page, name)
        results = element.locator('[data-ra-field="results"]')
        assert results.is_hidden()  # nothing while it runs
        gate.open()
        element.locator(".ra-progress__link").wait_for(timeout=30_000)
        link = element.locator(".ra-progress__link")
        assert link.text_content() == "Open the report"
        assert link.get_attribute("href") == "/demo/widgets/?done=1"
        assert link.get_attribute("rel") == "noopener"
        button = element.locator("a.ra-progress__download")
        assert button.text_content() == "Download Report 8 März.csv"
        assert button.get_attribute("download") == "Report 8 März.csv"
        if auth == "token":
            assert "?token=" in button.get_attribute("href")
        with page.expect_download() as info:
            button.click()
        download = info.value
        assert download.suggested_filename == "Report 8 März.csv"
        with open(download.path(), encoding="utf-8", newline="") as saved:
            assert saved.read() == report_rows(8)
        assert_clean(page)
    finally:
        page.context.close()
