"""Cancelling through the WebSocket ``cancel`` message and ``POST .../cancel/<task_name>/``."""

from __future__ import annotations

import time
from unittest import mock

import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from django.urls import reverse
from django.utils.crypto import get_random_string

from realtime_async._core.naming import new_task_name
from realtime_async._core.store import WriteMode
from realtime_async._writing.writer import get_writer
from realtime_async.async_manager import AsyncManager
from realtime_async.views import cancel_view
from tests.ws_helpers import connected, fake_user, recv, subscribe, task_path

NOT_FOUND = {"v": 1, "type": "error", "code": "not_found", "message": "No such task."}
FORBIDDEN = {"v": 1, "type": "error", "code": "forbidden", "message": "You may not cancel this task."}


pytestmark = pytest.mark.usefixtures("hub_cleanup")


def queued_task(owner_pk):
    """A queued task as ``launch_async_task`` records it, without a worker."""
    name = new_task_name("cancel")
    record = {"task": name, "state": "queued", "owner": owner_pk, "created_at": time.time()}
    assert get_writer().commit(record, mode=WriteMode.CREATE, wait=True).written  # a feed followed later misses it
    return name


def state_of(name):
    record = AsyncManager.resolve_manager().get_progress(name)
    return record["state"] if record else None


def cancel_message(name):
    return {"v": 1, "type": "cancel", "task": name}


async def answered(comm):
    """The frames the server sent before answering a ping (so: nothing was left unsent)."""
    await comm.send_json_to({"v": 1, "type": "ping", "id": "answered"})
    frames = []
    while (msg := await recv(comm, 5)) != {"v": 1, "type": "pong", "id": "answered"}:
        frames.append(msg)
    return frames


def no_cancel_manager(settings):
    settings.REALTIME_ASYNC = {
        **settings.REALTIME_ASYNC,
        "ASYNC_MANAGER_CLASS_PATH": "tests.testapp.managers.NoCancelManager",
    }


# -- over the WebSocket ------------------------------------------------------
async def test_cancelling_a_queued_task_sends_cancelled_through_the_stream():
    alice = fake_user()
    name = await sync_to_async(queued_task)(alice.pk)
    comm = await connected(user=alice)
    await comm.send_json_to(subscribe(name))
    assert (await recv(comm))["data"]["state"] == "queued"
    await comm.send_json_to(cancel_message(name))
    final = await recv(comm)  # accepted: no answer of its own, the state follows
    assert (final["type"], final["task"], final["data"]["state"]) == ("progress", name, "cancelled")
    assert final["data"]["message"] == "Cancelled."
    assert await answered(comm) == []
    assert await sync_to_async(state_of)(name) == "cancelled"
    # Cancelling a final task is accepted and changes nothing.
    await comm.send_json_to(cancel_message(name))
    assert await answered(comm) == []
    await comm.disconnect()


async def test_the_feed_carries_the_cancelled_state_too():
    alice = fake_user()
    name = await sync_to_async(queued_task)(alice.pk)
    comm = await connected(user=alice)
    await comm.send_json_to({"v": 1, "type": "subscribe_feed"})
    await comm.send_json_to(cancel_message(name))
    msg = await recv(comm)
    assert (msg["type"], msg["task"], msg["data"]["state"]) == ("progress", name, "cancelled")
    await comm.disconnect()


async def test_other_users_and_unknown_tasks_get_the_same_not_found():
    alice, bob = fake_user(), fake_user()
    name = await sync_to_async(queued_task)(alice.pk)
    comm = await connected(user=bob)
    for task in (name, "cancel-no-such-task"):
        await comm.send_json_to(cancel_message(task))
        assert await recv(comm) == {**NOT_FOUND, "task": task}
    anonymous = await connected(user=None)
    await anonymous.send_json_to(cancel_message(name))
    assert await recv(anonymous) == {**NOT_FOUND, "task": name}
    assert await sync_to_async(state_of)(name) == "queued"
    for c in (comm, anonymous):
        await c.disconnect()


async def test_a_watch_token_shows_a_task_but_never_cancels_it():
    name = await sync_to_async(queued_task)(fake_user().pk)
    token = AsyncManager.resolve_manager().make_watch_token(name)
    comm = await connected(user=None)
    await comm.send_json_to(cancel_message(name))  # no subscription yet: nothing shows it
    assert await recv(comm) == {**NOT_FOUND, "task": name}
    await comm.send_json_to(subscribe(name, token=token))
    assert (await recv(comm))["type"] == "progress"
    await comm.send_json_to(cancel_message(name))
    assert await recv(comm) == {**FORBIDDEN, "task": name}
    # A signed-in user who is not the owner, watching by token, is refused the same way.
    mallory = await connected(user=fake_user())
    await mallory.send_json_to(subscribe(name, token=token))
    await recv(mallory)
    await mallory.send_json_to(cancel_message(name))
    assert await recv(mallory) == {**FORBIDDEN, "task": name}
    assert await sync_to_async(state_of)(name) == "queued"
    for c in (comm, mallory):
        await c.disconnect()


async def test_staff_may_cancel_any_task():
    name = await sync_to_async(queued_task)(fake_user().pk)
    comm = await connected(user=fake_user(staff=True))
    await comm.send_json_to(cancel_message(name))
    assert await answered(comm) == []
    assert await sync_to_async(state_of)(name) == "cancelled"
    await comm.disconnect()


async def test_can_cancel_refusing_gives_forbidden(settings):
    no_cancel_manager(settings)
    alice = fake_user()
    name = await sync_to_async(queued_task)(alice.pk)
    comm = await connected(user=alice)
    await comm.send_json_to(cancel_message(name))
    assert await recv(comm) == {**FORBIDDEN, "task": name}
    assert await sync_to_async(state_of)(name) == "queued"
    await comm.disconnect()


async def test_the_per_task_url_refuses_cancel():
    alice = fake_user()
    name = await sync_to_async(queued_task)(alice.pk)
    comm = await connected(task_path(name), user=alice)
    await recv(comm)
    await comm.send_json_to(cancel_message(name))
    assert (await recv(comm))["code"] == "bad_request"
    assert await sync_to_async(state_of)(name) == "queued"
    await comm.disconnect()


async def test_a_failing_cancel_closes_1011_and_tells_nothing(caplog):
    alice = fake_user()
    name = await sync_to_async(queued_task)(alice.pk)
    comm = await connected(user=alice)
    with mock.patch.object(AsyncManager, "cancel", side_effect=ConnectionError("redis://secret-host:6379")):
        await comm.send_json_to(cancel_message(name))
        out = await comm.receive_output(3)
    assert (out["type"], out["code"]) == ("websocket.close", 1011)
    assert "secret-host" in caplog.text  # in the server log only
    await comm.disconnect()


# -- over HTTP ---------------------------------------------------------------
#: Transactional: the dashboard's recorder writes the cancel event from its own thread, which an open
#: test transaction would keep waiting on SQLite's lock.
on_db = pytest.mark.django_db(transaction=True)


def cancel_url(name, **query):
    path = reverse("realtime_async:cancel", kwargs={"task_name": name})
    return path + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def csrf_client(user=None):
    """A client that enforces CSRF like a browser would meet it, with a known token in its cookie."""
    client = Client(enforce_csrf_checks=True)
    if user is not None:
        client.force_login(user)
    token = get_random_string(32)
    client.cookies["csrftoken"] = token
    client.csrf = token
    return client


def post(client, path, **extra):
    return client.post(path, HTTP_X_CSRFTOKEN=client.csrf, **extra)


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_user("owner")


@pytest.fixture
def mallory(django_user_model):
    return django_user_model.objects.create_user("mallory")


@on_db
def test_the_owner_cancels_with_202(owner):
    name = queued_task(owner.pk)
    response = post(csrf_client(owner), cancel_url(name))
    assert response.status_code == 202
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"v": 1, "type": "cancel", "task": name, "accepted": True}
    assert "no-cache" in response["Cache-Control"]
    assert state_of(name) == "cancelled"
    # Already final: accepted, nothing changes.
    again = post(csrf_client(owner), cancel_url(name))
    assert (again.status_code, state_of(name)) == (202, "cancelled")


@on_db
def test_the_csrf_token_may_come_as_a_form_field(owner):
    name = queued_task(owner.pk)
    client = csrf_client(owner)
    response = client.post(cancel_url(name), {"csrfmiddlewaretoken": client.csrf})
    assert response.status_code == 202
    assert state_of(name) == "cancelled"


@on_db
def test_csrf_is_enforced(owner):
    name = queued_task(owner.pk)
    client = csrf_client(owner)
    for extra in ({}, {"HTTP_X_CSRFTOKEN": get_random_string(32)}):
        response = client.post(cancel_url(name), **extra)
        assert response.status_code == 403
        assert b"CSRF" in response.content
    assert state_of(name) == "queued"


@on_db
@pytest.mark.parametrize("method", ["get", "head", "options", "put", "patch", "delete"])
def test_only_post_is_allowed(owner, method):
    name = queued_task(owner.pk)
    client = csrf_client(owner)
    response = getattr(client, method)(cancel_url(name), HTTP_X_CSRFTOKEN=client.csrf)
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert state_of(name) == "queued"


@on_db
def test_unknown_invisible_and_anonymous_are_the_same_404(owner, mallory):
    name = queued_task(owner.pk)
    invisible = post(csrf_client(mallory), cancel_url(name))
    unknown = post(csrf_client(mallory), cancel_url(new_task_name("nope")))
    anonymous = post(csrf_client(), cancel_url(name))
    for response in (invisible, unknown, anonymous):
        assert response.status_code == 404
        assert response.content == unknown.content
        assert response.json() == NOT_FOUND
        # Not even a header tells them apart (the session is read only for a task that exists).
        assert {**response.headers, "Expires": ""} == {**unknown.headers, "Expires": ""}
    assert state_of(name) == "queued"


@on_db
def test_a_watch_token_gives_403(owner):
    name = queued_task(owner.pk)
    token = AsyncManager.resolve_manager().make_watch_token(name)
    response = post(csrf_client(), cancel_url(name, token=token))
    assert response.status_code == 403
    assert response.json() == FORBIDDEN
    assert post(csrf_client(), cancel_url(name, token="junk")).status_code == 404
    assert state_of(name) == "queued"


@on_db
def test_can_cancel_refusing_gives_403(owner, settings):
    no_cancel_manager(settings)
    name = queued_task(owner.pk)
    response = post(csrf_client(owner), cancel_url(name))
    assert (response.status_code, response.json()) == (403, FORBIDDEN)
    assert state_of(name) == "queued"


@on_db
def test_staff_cancel_any_task(owner, django_user_model):
    staff = django_user_model.objects.create_user("root", is_staff=True)
    name = queued_task(owner.pk)
    assert post(csrf_client(staff), cancel_url(name)).status_code == 202
    assert state_of(name) == "cancelled"


@on_db
@pytest.mark.parametrize(
    "path",
    [
        "/ra/realtime-async/cancel/" + "a" * 129 + "/",
        "/ra/realtime-async/cancel/../../etc/passwd/",
        "/ra/realtime-async/cancel/a/b/",
        "/ra/realtime-async/cancel/%2e%2e%2fsettings/",
        "/ra/realtime-async/cancel/t%C3%A2che-%C3%BC/",
        "/ra/realtime-async/cancel/%00/",
        "/ra/realtime-async/cancel/-leading-dash/",
        "/ra/realtime-async/cancel/with%20space/",
        "/ra/realtime-async/cancel/%3Cscript%3E/",
        "/ra/realtime-async/cancel//",
        "/ra/realtime-async/cancel/",
    ],
)
def test_odd_task_names_are_a_clean_404(owner, path):
    response = post(csrf_client(owner), path)
    assert response.status_code == 404, (path, response.status_code)
    assert b"Traceback" not in response.content and b"<script" not in response.content


@on_db
def test_a_store_failure_is_a_503_without_detail(owner):
    name = queued_task(owner.pk)
    with mock.patch.object(AsyncManager, "get_progress", side_effect=ConnectionError("redis://secret-host:6379")):
        response = post(csrf_client(owner), cancel_url(name))
    assert response.status_code == 503
    assert response["Retry-After"]
    assert b"secret-host" not in response.content and b"ConnectionError" not in response.content


def test_get_cancel_url_serves_the_same_view():
    pattern = AsyncManager.get_cancel_url()
    assert pattern.name == "async-cancel" and pattern.callback is cancel_view
    assert reverse("realtime_async:cancel", kwargs={"task_name": "t-1"}) == "/ra/realtime-async/cancel/t-1/"
