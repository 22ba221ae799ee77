"""Every answer of the polling and cancel endpoints, the 405 included, carries the headers docs/protocol.md promises."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from django.utils.cache import get_max_age

from realtime_async._core.naming import new_task_name
from realtime_async._core.store import WriteMode
from tests.ws_helpers import commit

# transaction=True: the dashboard recorder writes the cancel event from its own thread.
pytestmark = pytest.mark.django_db(transaction=True)

VARY = {"accept", "hx-request", "cookie"}


def _assert_promised_headers(response):
    vary = {part.strip().lower() for part in response.headers.get("Vary", "").split(",")}
    assert vary >= VARY, response.headers.get("Vary")
    cache_control = response.headers.get("Cache-Control", "")
    assert "no-cache" in cache_control and "no-store" in cache_control and "private" in cache_control
    assert get_max_age(response) == 0


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_polling_answers_other_methods_with_405_and_the_headers(method):
    response = getattr(Client(), method)(reverse("realtime_async:progress", args=["some-task"]))
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET"
    _assert_promised_headers(response)


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_cancel_answers_other_methods_with_405_and_the_headers(method):
    response = getattr(Client(), method)(reverse("realtime_async:cancel", args=["some-task"]))
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    _assert_promised_headers(response)


def test_every_other_answer_has_them_too(django_user_model):
    alice = django_user_model.objects.create_user("alice-headers", password="pw")
    name = new_task_name("headers")
    commit(name, "queued", alice.pk, mode=WriteMode.CREATE)
    client = Client()
    client.force_login(alice)
    url = reverse("realtime_async:progress", args=[name])
    found = client.get(url)
    not_modified = client.get(url, HTTP_IF_NONE_MATCH=found.headers["ETag"])
    unknown = client.get(reverse("realtime_async:progress", args=["nobody-knows"]))
    fragment = client.get(url, HTTP_HX_REQUEST="true")
    cancelled = client.post(reverse("realtime_async:cancel", args=[name]))
    refused = Client().post(reverse("realtime_async:cancel", args=[name]))
    statuses = [r.status_code for r in (found, not_modified, unknown, fragment, cancelled, refused)]
    assert statuses == [200, 304, 404, 200, 202, 404]
    for response in (found, not_modified, unknown, fragment, cancelled, refused):
        _assert_promised_headers(response)
