"""The polling endpoint, through Django's test client against the real Redis cache."""

from __future__ import annotations

import time
from unittest import mock

import pytest
from django.test import Client
from django.urls import reverse

from realtime_async._core.naming import new_task_name
from realtime_async._core.store import WriteMode, get_store
from realtime_async._writing.writer import get_writer
from realtime_async.async_manager import AsyncManager
from realtime_async.widgets import render_live_progress

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
JSON = {"HTTP_ACCEPT": "application/json"}


def commit(name, state, owner, **fields):
    record = {"task": name, "state": state, "owner": owner, "created_at": time.time(), "updated_at": time.time()}
    mode = WriteMode.CREATE if state == "queued" else WriteMode.UPDATE
    written = get_writer().commit({**record, **fields}, mode=mode)
    assert written.written and written.seq > 0
    return written.record()


def make_task(user, state="running", **fields):
    """A task record written as a worker would, without a worker."""
    name = new_task_name("view")
    owner = user.pk if user is not None else None
    commit(name, "queued", owner)
    if state != "queued":
        commit(name, state, owner, **fields)
    return name


def url(name, **query):
    path = reverse("async-progress", kwargs={"task_name": name})
    return path + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("alice")


@pytest.fixture
def other(django_user_model):
    return django_user_model.objects.create_user("mallory")


@pytest.fixture
def alice(user):
    client = Client()
    client.force_login(user)
    return client


def assert_never_cached(response):
    cache_control = response["Cache-Control"]
    for directive in ("no-cache", "no-store", "must-revalidate", "max-age=0"):
        assert directive in cache_control, cache_control
    assert "Expires" in response


def test_json_envelope(alice, user):
    name = make_task(user, message="Step 2/5", current=2, total=5, percent=40.0)
    response = alice.get(url(name), **JSON)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["v"] == 1 and body["type"] == "progress" and body["task"] == name
    assert body["data"] == AsyncManager.resolve_manager().get_progress(name)
    assert body["data"]["percent"] == 40.0 and body["data"]["state"] == "running"
    assert response["ETag"].startswith('"')
    assert_never_cached(response)
    assert {"Accept", "HX-Request", "Cookie"} <= {v.strip() for v in response["Vary"].split(",")}


def test_json_is_the_default_without_htmx(alice, user):
    name = make_task(user, percent=10.0)
    response = alice.get(url(name), HTTP_ACCEPT="text/html")
    assert response["Content-Type"] == "application/json"
    assert response.json()["data"]["percent"] == 10.0


def test_included_urls_serve_the_same_view(alice, user):
    name = make_task(user, percent=10.0)
    path = reverse("realtime_async:progress", kwargs={"task_name": name})
    assert path == f"/ra/realtime-async/progress/{name}/"
    assert alice.get(path).json() == alice.get(url(name)).json()


def test_htmx_gets_the_widget_fragment(alice, user):
    name = make_task(user, message="Step 2/5 <b>", current=2, total=5, percent=40.0)
    response = alice.get(url(name, label="Import"), **HTMX)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert 'role="progressbar"' in html and 'aria-valuenow="40"' in html
    assert "Step 2/5 &lt;b&gt;" in html and "<b>" not in html
    assert f'hx-get="{url(name, label="Import")}"' in html
    assert 'hx-trigger="every 1000ms"' in html and 'hx-swap="outerHTML"' in html
    assert "ra-progress--running" in html and ">Import<" in html
    assert "<script" not in html and "data-ra-widget" not in html
    assert_never_cached(response)


def test_fragment_uses_the_widget_template(alice, user):
    name = make_task(user, message="Halfway", percent=50.0)
    fragment = alice.get(url(name), **HTMX).content.decode()
    # A watch-token viewer's widget: no Cancel button, which only the widget of a canceller has.
    token = AsyncManager.resolve_manager().make_watch_token(name)
    # The fragment carries no log: it would read and resend the whole log on every poll (docs/protocol.md).
    widget = render_live_progress(name, token=token, include_assets=False, log=False)

    def inner(html):  # everything after the root element's opening tag
        return html[html.index(">", html.index('class="ra-progress ')) + 1 :].strip()

    assert inner(fragment) == inner(widget)


def test_htmx_asking_for_json_gets_json(alice, user):
    name = make_task(user, percent=5.0)
    response = alice.get(url(name), **HTMX, **JSON)
    assert response.json()["type"] == "progress"


@pytest.mark.parametrize("state", ["success", "failure", "cancelled", "lost"])
def test_final_state_stops_polling_with_286(alice, user, state):
    name = make_task(user, state, message="Over", error="The task failed." if state in ("failure", "lost") else None)
    response = alice.get(url(name), **JSON)
    assert response.status_code == 286
    assert response.json()["data"]["state"] == state
    assert_never_cached(response)
    fragment = alice.get(url(name), **HTMX)
    assert fragment.status_code == 286
    html = fragment.content.decode()
    assert f"ra-progress--{state}" in html and "hx-get" not in html and "hx-trigger" not in html


def test_running_is_200_not_286(alice, user):
    assert alice.get(url(make_task(user, "queued"))).status_code == 200
    assert alice.get(url(make_task(user, "running")), **HTMX).status_code == 200


def test_unknown_and_forbidden_are_the_same_404(alice, other, user):
    name = make_task(other, message="mallory's secret plan", percent=30.0)
    forbidden = alice.get(url(name), **JSON)
    get_store().delete_task(name)
    unknown = alice.get(url(name), **JSON)
    never_existed = alice.get(url(new_task_name("nope")), **JSON)
    assert forbidden.status_code == unknown.status_code == never_existed.status_code == 404
    assert forbidden.content == unknown.content == never_existed.content
    assert forbidden.json() == {"v": 1, "type": "error", "code": "not_found", "message": "No such task."}
    assert dict(forbidden.headers) == dict(unknown.headers) | {"Expires": forbidden["Expires"]}
    assert b"secret plan" not in forbidden.content
    assert_never_cached(forbidden)

    forbidden_html = alice.get(url(make_task(other, message="mallory's secret plan")), **HTMX)
    unknown_html = alice.get(url(new_task_name("nope")), **HTMX)
    assert forbidden_html.status_code == unknown_html.status_code == 404
    assert forbidden_html.content == unknown_html.content
    assert b"secret plan" not in forbidden_html.content


def test_anonymous_users_see_nothing(user):
    name = make_task(user, percent=30.0)
    assert Client().get(url(name)).status_code == 404


def test_staff_see_every_task(user, django_user_model):
    staff = django_user_model.objects.create_user("root", is_staff=True)
    client = Client()
    client.force_login(staff)
    assert client.get(url(make_task(user, percent=30.0))).status_code == 200


def test_watch_token_authorises_like_a_session(user):
    manager = AsyncManager.resolve_manager()
    name = make_task(user, percent=30.0)
    other_name = make_task(user, percent=30.0)
    token = manager.make_watch_token(name)
    anonymous = Client()
    assert anonymous.get(url(name, token=token)).json()["data"]["task"] == name
    assert anonymous.get(url(name, token=token), **HTMX).status_code == 200
    assert anonymous.get(url(other_name, token=token)).status_code == 404
    assert anonymous.get(url(name, token=token + "x")).status_code == 404
    assert anonymous.get(url(name, token="garbage")).status_code == 404
    assert anonymous.get(url(name, token="")).status_code == 404


def test_expired_watch_token_is_refused(user):
    manager = AsyncManager.resolve_manager()
    name = make_task(user, percent=30.0)
    with mock.patch("django.core.signing.time.time", return_value=time.time() - 7200):
        old = manager.make_watch_token(name)
    assert Client().get(url(name, token=old)).status_code == 404


def test_etag_answers_an_unchanged_poll_with_304(alice, user):
    name = make_task(user, message="Step 1", percent=10.0)
    first = alice.get(url(name), **JSON)
    etag = first["ETag"]
    # An unchanged poll is answered from the seq alone: nothing is rendered or encoded.
    with (
        mock.patch("realtime_async.views.render_fragment", side_effect=AssertionError("rendered")),
        mock.patch("realtime_async.views.progress_envelope", side_effect=AssertionError("encoded")),
    ):
        again = alice.get(url(name), HTTP_IF_NONE_MATCH=etag, **JSON)
    assert again.status_code == 304 and again.content == b""
    # The 304's tag names the same state; it is issued anew, so its time may be a second later.
    assert again["ETag"].split("-")[0] == etag.split("-")[0]
    assert_never_cached(again)
    assert alice.get(url(name), HTTP_IF_NONE_MATCH=f"W/{etag}", **JSON).status_code == 304
    assert alice.get(url(name), HTTP_IF_NONE_MATCH=f'"nope", {etag}', **JSON).status_code == 304

    commit(name, "running", user.pk, message="Step 2", percent=20.0)
    changed = alice.get(url(name), HTTP_IF_NONE_MATCH=etag, **JSON)
    assert changed.status_code == 200 and changed["ETag"] != etag
    assert changed.json()["data"]["percent"] == 20.0


def test_etag_differs_between_json_and_html(alice, user):
    name = make_task(user, percent=10.0)
    json_etag = alice.get(url(name), **JSON)["ETag"]
    html_etag = alice.get(url(name), **HTMX)["ETag"]
    labelled = alice.get(url(name, label="Other"), **HTMX)["ETag"]
    assert len({json_etag, html_etag, labelled}) == 3
    assert alice.get(url(name), HTTP_IF_NONE_MATCH=json_etag, **HTMX).status_code == 200
    assert alice.get(url(name), HTTP_IF_NONE_MATCH=html_etag, **HTMX).status_code == 304


def test_final_state_etag_gives_304(alice, user):
    name = make_task(user, "success", percent=100.0)
    etag = alice.get(url(name))["ETag"]
    assert alice.get(url(name), HTTP_IF_NONE_MATCH=etag).status_code == 304


def test_etag_does_not_bypass_authorisation(alice, other):
    name = make_task(other, percent=10.0)
    owner = Client()
    owner.force_login(other)
    etag = owner.get(url(name))["ETag"]
    assert alice.get(url(name), HTTP_IF_NONE_MATCH=etag).status_code == 404
    assert alice.get(url(name), HTTP_IF_NONE_MATCH="*").status_code == 404
    assert owner.get(url(name), HTTP_IF_NONE_MATCH="*").status_code == 304


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete", "head", "options"])
def test_only_get_is_allowed(alice, user, method):
    response = getattr(alice, method)(url(make_task(user)))
    assert response.status_code == 405
    assert response["Allow"] == "GET"


@pytest.mark.parametrize(
    "path",
    [
        "/realtime-async/progress/" + "a" * 129 + "/",
        "/realtime-async/progress/" + "a" * 5000 + "/",
        "/realtime-async/progress/../../etc/passwd/",
        "/realtime-async/progress/a/b/",
        "/realtime-async/progress/%2e%2e%2fsettings/",
        "/realtime-async/progress/t%C3%A2che-%C3%BC/",
        "/realtime-async/progress/%F0%9F%92%A5/",
        "/realtime-async/progress/%00/",
        "/realtime-async/progress/-leading-dash/",
        "/realtime-async/progress/with%20space/",
        "/realtime-async/progress/%3Cscript%3E/",
        "/realtime-async/progress//",
        "/realtime-async/progress/",
    ],
)
def test_odd_task_names_are_a_clean_404(alice, path):
    for extra in ({}, HTMX, JSON):
        response = alice.get(path, **extra)
        assert response.status_code == 404, (path, response.status_code)
        assert b"Traceback" not in response.content and b"<script" not in response.content


def test_store_failure_is_a_503_without_detail(alice, user):
    name = make_task(user)
    down = mock.Mock(**{"read_state.side_effect": ConnectionError("redis://secret-host:6379")})
    with mock.patch("realtime_async._core.access.get_store", return_value=down):  # where the view reads the store
        response = alice.get(url(name))
    assert response.status_code == 503
    assert response["Retry-After"]
    assert b"secret-host" not in response.content and b"ConnectionError" not in response.content
    assert_never_cached(response)


def test_failed_record_shows_only_the_public_error(alice, user):
    name = make_task(user, "failure", message="about to fail", error="The task failed.", percent=50.0)
    body = alice.get(url(name)).json()
    assert body["data"]["error"] == "The task failed."
    html = alice.get(url(name), **HTMX).content.decode()
    assert "The task failed." in html and "ra-progress--failure" in html
