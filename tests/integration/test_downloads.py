"""Result links and attached files against the real Redis: the writer, the download view, cleanup and the pages."""

from __future__ import annotations

import importlib.resources
import io
import json
import time
from urllib.parse import quote

import pytest
from django.core import signing
from django.test import Client
from jsonschema import Draft202012Validator, ValidationError

from realtime_async._core.access import make_watch_token
from realtime_async._core.naming import new_task_name
from realtime_async._core.results import FILES_DIRECTORY, ResultLink, sign_download, storage_name
from realtime_async._core.store import WriteMode, get_store
from realtime_async._writing.worker import run
from realtime_async._writing.writer import get_writer
from realtime_async.async_manager import AsyncManager
from realtime_async.contrib.dashboard.views import row_context
from realtime_async.widgets import render_live_progress

pytestmark = pytest.mark.django_db(transaction=True)

CSV = "name,total\nAlice,3\nBob,5\n"


@pytest.fixture(autouse=True)
def storage_dir(settings, tmp_path):
    """Files of each test in a folder of their own."""
    settings.STORAGES = {
        **settings.STORAGES,
        "results": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}},
    }
    settings.REALTIME_ASYNC = {**settings.REALTIME_ASYNC, "FILE_STORAGE_ALIAS": "results"}
    return tmp_path


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("owner")


@pytest.fixture
def owner(user):
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def mallory(django_user_model):
    client = Client()
    client.force_login(django_user_model.objects.create_user("mallory"))
    return client


def running_task(user) -> str:
    """A task running in this process, as the worker's ``run`` leaves it before calling the function."""
    name = new_task_name("res")
    now = time.time()
    base = {"task": name, "owner": user.pk, "created_at": now, "updated_at": now}
    get_writer().commit({**base, "state": "queued"}, mode=WriteMode.CREATE)
    started = get_writer().commit({**base, "state": "running", "started_at": now})
    get_writer().track(started.record(), {})
    return name


def body(response) -> str:
    """The streamed file, the response closed after (as the server closes it)."""
    text = b"".join(response.streaming_content).decode()
    response.close()
    return text


def finished_with_file(user, *, filename="report.csv", data=CSV, **options):
    manager = AsyncManager()
    name = running_task(user)
    entry = manager.attach_file(name, io.StringIO(data), filename=filename, **options)
    manager.finish(name, "success")
    return name, entry


def test_a_finished_task_lists_its_file_and_link(user, storage_dir):
    manager = AsyncManager()
    name = running_task(user)
    manager.set_result_link(name, "/reports/7/", label="Open the report")
    entry = manager.attach_file(name, io.BytesIO(CSV.encode()), filename="report.csv")
    record = manager.finish(name, "success")
    assert record["links"] == [{"url": "/reports/7/", "label": "Open the report"}]
    assert record["files"] == [entry]
    assert set(entry) == {"id", "name", "size", "content_type", "url", "expires_at"}
    assert (entry["name"], entry["size"], entry["content_type"]) == ("report.csv", len(CSV), "text/csv")
    assert (storage_dir / storage_name(entry)).read_text() == CSV


def test_the_owner_downloads_the_file_as_an_attachment(user, owner):
    name, entry = finished_with_file(user)
    response = owner.get(entry["url"])
    assert response.status_code == 200
    assert body(response) == CSV
    assert response["Content-Type"] == "text/csv"
    assert response["Content-Disposition"] == 'attachment; filename="report.csv"'
    assert response["Content-Length"] == str(len(CSV))
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert "no-cache" in response["Cache-Control"] and "private" in response["Cache-Control"]
    assert "Cookie" in response["Vary"]
    head = owner.head(entry["url"])
    head.close()
    assert head.status_code == 200 and head["Content-Disposition"].startswith("attachment")


def test_names_and_types_are_sent_safely(user, owner):
    _, entry = finished_with_file(user, filename='../Bericht "März";\r\n.html', content_type="text/html")
    response = owner.get(entry["url"])
    assert response.status_code == 200
    disposition = response["Content-Disposition"]
    assert disposition == "attachment; filename*=utf-8''" + quote('Bericht "März";.html')
    assert "\r" not in disposition and "\n" not in disposition
    # An HTML file still downloads: attachment, nosniff, and a sandbox should anything render it.
    assert response["Content-Type"] == "text/html" and response["X-Content-Type-Options"] == "nosniff"
    response.close()


def test_other_users_and_strangers_get_the_answer_of_an_unknown_file(user, mallory, client):
    _, entry = finished_with_file(user)
    forged = entry["url"].replace(entry["url"].rsplit("/", 2)[-2], sign_download("res-nobody", "0" * 32))
    answers = [mallory.get(entry["url"]), client.get(entry["url"]), mallory.get(forged)]
    for response in answers:
        assert response.status_code == 404
        assert response.content == b"No such file."
        assert response["Content-Type"] == "text/plain; charset=utf-8"


def test_a_watch_token_opens_the_file_as_it_shows_the_task(user, client):
    name, entry = finished_with_file(user)
    ok = client.get(entry["url"], {"token": make_watch_token(name)})
    assert ok.status_code == 200 and body(ok) == CSV
    assert client.get(entry["url"], {"token": make_watch_token("res-other")}).status_code == 404
    assert client.get(entry["url"], {"token": "garbage"}).status_code == 404


def test_a_file_the_task_does_not_list_is_not_found(user, owner):
    name, entry = finished_with_file(user)
    other_id = "f" * 32
    url = entry["url"].replace(entry["url"].rsplit("/", 2)[-2], sign_download(name, other_id))
    assert owner.get(url).status_code == 404


@pytest.mark.parametrize(
    "tamper",
    [
        lambda signed: signed[:-2] + "xx",
        lambda signed: signed.split(":", 1)[0],
        lambda signed: signing.TimestampSigner(salt="realtime_async.watch").sign_object(["x", "y"]),
        lambda signed: "..%2F..%2Fetc%2Fpasswd",
        lambda signed: signed + "%2F..%2F..%2Fetc%2Fpasswd",
        lambda signed: "%2e%2e",
        lambda signed: signed + "/../../etc/passwd",
        lambda signed: "x" * 3000,
    ],
)
def test_tampered_signatures_and_traversal_are_refused(user, owner, tamper):
    _, entry = finished_with_file(user)
    prefix, signed = entry["url"].rstrip("/").rsplit("/", 1)
    response = owner.get(f"{prefix}/{tamper(signed)}/")
    assert response.status_code == 404


def test_an_expired_link_is_gone_for_the_owner_and_unknown_to_others(user, owner, mallory, monkeypatch, settings):
    _, entry = finished_with_file(user)
    later = time.time() + settings.REALTIME_ASYNC.get("FILE_RETENTION", 86400) + 5
    monkeypatch.setattr(signing.time, "time", lambda: later)
    gone = owner.get(entry["url"])
    assert gone.status_code == 410 and gone.content == b"This file is no longer available."
    assert mallory.get(entry["url"]).status_code == 404


def test_a_deleted_file_is_gone(user, owner, storage_dir):
    _, entry = finished_with_file(user)
    (storage_dir / storage_name(entry)).unlink()
    assert owner.get(entry["url"]).status_code == 410


def test_downloads_are_read_only(user, owner):
    _, entry = finished_with_file(user)
    assert owner.post(entry["url"]).status_code == 405


def test_a_failing_store_answers_503_without_detail(user, owner, monkeypatch):
    _, entry = finished_with_file(user)

    def broken(*args, **kwargs):
        raise ConnectionError("redis://secret-host:6379 refused")

    monkeypatch.setattr("realtime_async._web.http.visible_record", broken)
    response = owner.get(entry["url"])
    assert response.status_code == 503 and b"secret" not in response.content


def test_files_past_the_per_task_limit_are_refused_and_not_kept(user, settings, storage_dir):
    settings.REALTIME_ASYNC = {**settings.REALTIME_ASYNC, "FILE_MAX_PER_TASK": 1}
    manager = AsyncManager()
    name = running_task(user)
    manager.attach_file(name, io.BytesIO(b"1"), filename="one.txt")
    with pytest.raises(ValueError, match="FILE_MAX_PER_TASK allows 1"):
        manager.attach_file(name, io.BytesIO(b"2"), filename="two.txt")
    assert len(list((storage_dir / FILES_DIRECTORY).iterdir())) == 1
    assert [entry["name"] for entry in manager.finish(name, "success")["files"]] == ["one.txt"]


def test_an_unsafe_link_is_refused_in_the_worker(user):
    name = running_task(user)
    with pytest.raises(ValueError, match="http"):
        AsyncManager().set_result_link(name, "javascript:alert(document.cookie)")
    assert AsyncManager().finish(name, "success")["links"] is None


def linked_worker(*, task_key, manager_class):
    """Ends with its result link (``run`` turns it into the record's link)."""
    return ResultLink("/reports/7/", "Open the report")


def unsafe_link_worker(*, task_key, manager_class):
    return ResultLink("javascript:alert(1)", "x")


def test_a_returned_result_link_becomes_the_records_link(user):
    manager = AsyncManager()
    for worker, links in (
        ("linked_worker", [{"url": "/reports/7/", "label": "Open the report"}]),
        ("unsafe_link_worker", None),  # logged, left out; the task still succeeds
    ):
        name = new_task_name("res")
        get_writer().commit(
            {"task": name, "state": "queued", "owner": user.pk, "created_at": time.time()}, mode=WriteMode.CREATE
        )
        run(f"{__name__}.{worker}", [], {}, name, manager.class_path())
        record = manager.get_progress(name)
        assert (record["state"], record["result"], record["links"]) == ("success", None, links)


def test_cleanup_deletes_files_after_their_retention(user, owner, settings, storage_dir):
    settings.REALTIME_ASYNC = {**settings.REALTIME_ASYNC, "FILE_RETENTION": 1}
    _, short = finished_with_file(user, filename="short.csv")
    settings.REALTIME_ASYNC = {**settings.REALTIME_ASYNC, "FILE_RETENTION": 3600}
    _, kept = finished_with_file(user, filename="kept.csv")
    manager = AsyncManager()
    assert manager.cleanup_completed_tasks()["files"] == []  # not yet
    time.sleep(max(0.0, short["expires_at"] - time.time()) + 0.1)
    summary = manager.cleanup_completed_tasks(dry_run=True)
    assert summary["files"] == [storage_name(short)] and (storage_dir / storage_name(short)).exists()
    assert manager.cleanup_completed_tasks()["files"] == [storage_name(short)]
    assert not (storage_dir / storage_name(short)).exists()
    assert (storage_dir / storage_name(kept)).exists()
    response = owner.get(kept["url"])
    assert response.status_code == 200 and body(response) == CSV


def test_delete_task_removes_the_record_and_its_files(user, storage_dir):
    manager = AsyncManager()
    running = running_task(user)
    assert manager.delete_task(running) is False  # unfinished: kept
    name, entry = finished_with_file(user)
    assert manager.delete_task(name) is True
    assert manager.get_progress(name) is None and get_store().read_state(name) is None
    assert not (storage_dir / storage_name(entry)).exists()
    assert manager.delete_task(name) is False and manager.delete_task("../bad") is False


def test_the_widget_and_the_dashboard_show_the_results_on_success(user):
    manager = AsyncManager()
    name = running_task(user)
    manager.set_result_link(name, "/reports/<7>/", label="Open <b>the</b> report")
    entry = manager.attach_file(name, io.BytesIO(b"x"), filename="<img src=x>.csv")
    running = render_live_progress(name, user=user, include_assets=False)
    assert 'data-ra-field="results" hidden></p>' in running  # nothing before success
    manager.finish(name, "success")
    html = render_live_progress(name, user=user, include_assets=False)
    assert (
        '<a class="ra-progress__link" href="/reports/%3C7%3E/" rel="noopener">Open &lt;b&gt;the&lt;/b&gt; report</a>'
        in html
    )
    assert f'<a class="ra-progress__download" href="{entry["url"]}" download="&lt;img src=x&gt;.csv">' in html
    assert "<img" not in html and "<b>" not in html
    token = make_watch_token(name)
    watched = render_live_progress(name, token=token, include_assets=False)
    assert f"{entry['url']}?token={quote(token, safe='')}" in watched
    row = row_context(manager.get_progress(name))
    assert row["results"]["files"][0]["url"] == entry["url"]


def test_records_with_results_match_the_protocol_schema(user):
    schema = json.loads(importlib.resources.files("realtime_async").joinpath("protocol.schema.json").read_text())
    validator = Draft202012Validator({"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": "#/$defs/record"})
    manager = AsyncManager()
    name = running_task(user)
    manager.set_result_link(name, "https://example.com/r?x=1", label="Open")
    manager.attach_file(name, io.BytesIO(b"x"), filename="x.bin")
    validator.validate(manager.finish(name, "success"))
    old = manager.get_progress(name)
    del old["links"], old["files"]  # a record written before results existed is still valid
    validator.validate(old)
    with pytest.raises(ValidationError):
        validator.validate({**old, "links": [{"url": "javascript:alert(1)", "label": None}]})


def test_staff_download_any_task_and_an_expired_watch_token_opens_nothing(user, django_user_model, client, settings):
    # The rest of the matrix: owner, other user, anonymous, valid and foreign tokens are above.
    name, entry = finished_with_file(user)
    staff = Client()
    staff.force_login(django_user_model.objects.create_user("sam", is_staff=True))
    ok = staff.get(entry["url"])
    assert ok.status_code == 200 and body(ok) == CSV
    token = make_watch_token(name)
    settings.REALTIME_ASYNC = {**settings.REALTIME_ASYNC, "WATCH_TOKEN_MAX_AGE": 1}
    time.sleep(2.1)  # the signer's age has a resolution of a second
    expired = client.get(entry["url"], {"token": token})
    assert expired.status_code == 404 and expired.content == b"No such file."
