"""``{% live_progress %}``, ``{% live_progress_assets %}`` and the functions they adapt, on tasks stored in Redis."""

from __future__ import annotations

import re
import time

import pytest
from django.contrib.auth.models import AnonymousUser
from django.template import Context, Template
from django.test import RequestFactory, override_settings
from django.utils import translation

from realtime_async._core.naming import new_task_name
from realtime_async._core.store import WriteMode
from realtime_async._writing.writer import get_writer
from realtime_async.async_manager import AsyncManager
from realtime_async.widgets import TRANSPORTS, render_fragment, render_live_progress

pytestmark = pytest.mark.django_db


def make_task(user, state="running", **fields):
    name = new_task_name("tag")
    base = {"task": name, "owner": user.pk if user else None, "created_at": time.time()}
    get_writer().commit({**base, "state": "queued"}, mode=WriteMode.CREATE)
    if state != "queued":
        get_writer().commit({**base, "state": state, **fields})
    return name


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("alice")


def request_for(user=None, **attrs):
    request = RequestFactory().get("/page/")
    request.user = user or AnonymousUser()
    for key, value in attrs.items():
        setattr(request, key, value)
    return request


def render(source, user=None, request=None, **context):
    request = request or request_for(user)
    return Template("{% load realtime_async %}" + source).render(Context({"request": request, **context}))


def attrs_of(html, role="progressbar"):
    tag = re.search(rf'<[^>]*role="{role}"[^>]*>', html).group(0)
    return dict(re.findall(r'([\w-]+)="([^"]*)"', tag))


def test_renders_the_current_state_server_side(user):
    name = make_task(user, message="Step 2/5", current=2, total=5, percent=40.0, eta=12.3)
    html = render("{% live_progress task %}", user, task=name)
    assert f'data-ra-task="{name}"' in html
    assert 'data-ra-state="running"' in html
    seq = AsyncManager.resolve_manager().get_progress(name)["seq"]
    assert f'data-ra-seq="{seq}"' in html
    assert "Step 2/5" in html and ">40%<" in html and "13 s left" in html and ">Running<" in html
    assert 'width="40.00"' in html


def test_progressbar_is_accessible(user):
    name = make_task(user, message="Working", percent=62.5)
    html = render('{% live_progress task label="Import" %}', user, task=name)
    bar = attrs_of(html)
    assert bar["aria-valuemin"] == "0" and bar["aria-valuemax"] == "100"
    assert bar["aria-valuenow"] == "62.5" and bar["aria-valuetext"] == "62%"
    assert bar["aria-label"] == "Import"
    live = re.search(r'<p[^>]*aria-live="polite"[^>]*>([^<]*)</p>', html)
    assert live and live.group(1) == "Working"
    assert 'aria-hidden="true"' in html  # the SVG is decoration; the role carries the value


def test_indeterminate_progress_has_no_value(user):
    html = render("{% live_progress task %}", user, task=make_task(user, message="Thinking"))
    assert "aria-valuenow" not in attrs_of(html)
    assert "ra-progress--indeterminate" in html


def test_queued_state(user):
    html = render("{% live_progress task %}", user, task=make_task(user, "queued"))
    assert 'data-ra-state="queued"' in html and ">Queued<" in html
    assert "ra-progress--indeterminate" not in html


@pytest.mark.parametrize(
    ("state", "fields", "label", "text"),
    [
        ("success", {"message": "All 5 done", "percent": 100.0}, "Done", "All 5 done"),
        ("failure", {"message": "Step 3", "error": "The CSV file has no header row."}, "Failed", "no header row"),
        ("cancelled", {"message": "Cancelled."}, "Cancelled", "Cancelled."),
        ("lost", {"error": "The worker stopped responding."}, "Lost", "stopped responding"),
    ],
)
def test_final_states_are_clear(user, state, fields, label, text):
    html = render("{% live_progress task %}", user, task=make_task(user, state, **fields))
    assert f"ra-progress--{state}" in html and f'data-ra-state="{state}"' in html
    assert f">{label}<" in html and text in html
    assert "left<" not in html  # no ETA once final


def test_failure_without_public_error_shows_a_generic_message(user):
    html = render("{% live_progress task %}", user, task=make_task(user, "failure", message="Step 3"))
    assert "The task failed." in html


@pytest.mark.parametrize("who", ["stranger", "anonymous", "unknown"])
def test_hidden_tasks_render_as_unavailable(user, django_user_model, who):
    name = make_task(user, message="alice's secret", percent=50.0)
    viewer = django_user_model.objects.create_user("bob") if who == "stranger" else None
    if who == "unknown":
        name = new_task_name("nope")
    html = render("{% live_progress task %}", viewer, task=name)
    assert 'data-ra-state="unavailable"' in html and "No such task." in html
    assert "secret" not in html and "aria-valuenow" not in html


def test_watch_token_lets_anyone_see_it(user):
    name = make_task(user, message="shared", percent=20.0)
    token = AsyncManager.resolve_manager().make_watch_token(name)
    html = render("{% live_progress task token=token %}", None, task=name, token=token)
    assert 'data-ra-state="running"' in html and "shared" in html
    assert f'data-ra-token="{token}"' in html
    assert f'data-ra-poll-url="/ra/realtime-async/progress/{name}/?token={token.replace(":", "%3A")}"' in html


def test_widget_data_attributes(user):
    name = make_task(user, percent=1.0)
    html = render("{% live_progress task %}", user, task=name)
    assert "data-ra-widget" in html and 'data-ra-transport="auto"' in html
    assert 'data-ra-ws-url="/ws/realtime-async/"' in html
    assert f'data-ra-poll-url="/ra/realtime-async/progress/{name}/"' in html
    assert 'data-ra-poll-interval="1000"' in html
    assert "data-ra-i18n=" in html and "hx-get" not in html
    html = render('{% live_progress task transport="poll" ws_url="wss://push.example/ws/" %}', user, task=name)
    assert 'data-ra-transport="poll"' in html and 'data-ra-ws-url="wss://push.example/ws/"' in html


@override_settings(REALTIME_ASYNC={"POLL_INTERVAL": 2.5})
def test_poll_interval_comes_from_settings(user):
    html = render("{% live_progress task %}", user, task=make_task(user))
    assert 'data-ra-poll-interval="2500"' in html


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_valid_transports(user, transport):
    html = render("{% live_progress task transport=transport %}", user, task=make_task(user), transport=transport)
    assert f'data-ra-transport="{transport}"' in html


@pytest.mark.parametrize("transport", ["websocket", "", "POLL", None])
def test_invalid_transport_raises_naming_the_choices(user, transport):
    name = make_task(user)
    with pytest.raises(ValueError, match=r"'auto', 'ws', 'poll'"):
        render("{% live_progress task transport=transport %}", user, task=name, transport=transport)
    with pytest.raises(ValueError, match=r"'auto', 'ws', 'poll'"):
        render_live_progress(name, user=user, transport=transport)


def test_script_and_stylesheet_are_included_once(user):
    a, b = make_task(user, percent=10.0), make_task(user, percent=20.0)
    html = render("{% live_progress a %}<hr>{% live_progress b %}{% live_progress a %}", user, a=a, b=b)
    assert html.count('role="progressbar"') == 3
    assert html.count("<script") == 1 and html.count('type="module"') == 1
    assert html.count("realtime_async/widget.js") == 1
    assert html.count('rel="stylesheet"') == 1 and html.count('rel="modulepreload"') == 1


def test_assets_once_per_request_across_separate_renders(user):
    name = make_task(user)
    request = request_for(user)
    first = render("{% live_progress task %}", request=request, task=name)
    second = render("{% live_progress task %}", request=request, task=name)
    assert first.count("<script") == 1 and second.count("<script") == 0


def test_assets_once_per_render_without_a_request(user):
    name = make_task(user)
    template = Template("{% load realtime_async %}{% live_progress t %}{% live_progress t %}")
    html = template.render(Context({"t": name}))
    assert html.count("<script") == 1
    assert 'data-ra-state="unavailable"' in html  # no request, no user: nothing is shown


def test_assets_tag_in_head(user):
    name = make_task(user)
    html = render(
        "<head>{% live_progress_assets %}{% live_progress_assets %}</head>{% live_progress t %}", user, t=name
    )
    head, body = html.split("</head>")
    assert head.count("<script") == 1 and "<script" not in body and 'role="progressbar"' in body


def test_no_inline_script_or_style(user):
    html = render("{% live_progress task %}", user, task=make_task(user, message="hi", percent=33.0))
    assert "style=" not in html and "<style" not in html
    assert all(' src="' in tag for tag in re.findall(r"<script[^>]*>", html))
    assert " on" not in re.sub(r'"[^"]*"', '""', html)  # no event handler attributes


@pytest.mark.parametrize(
    ("context", "request_attrs"),
    [({"nonce": "ctx-n0nce"}, {}), ({"csp_nonce": "ctx-n0nce"}, {}), ({}, {"csp_nonce": "ctx-n0nce"})],
)
def test_csp_nonce_is_honoured(user, context, request_attrs):
    request = request_for(user, **request_attrs)
    html = render("{% live_progress task %}", request=request, task=make_task(user), **context)
    for tag in re.findall(r"<(?:script|link)[^>]*>", html):
        assert 'nonce="ctx-n0nce"' in tag, tag
    assert html.count('nonce="ctx-n0nce"') == 3


def test_no_nonce_attribute_without_a_nonce(user):
    assert "nonce" not in render("{% live_progress task %}", user, task=make_task(user))


def test_user_text_is_escaped(user):
    name = make_task(user, message="<img src=x onerror=alert(1)>", percent=5.0)
    html = render("{% live_progress task label=label %}", user, task=name, label='"><script>alert(2)</script>')
    assert "<img" not in html and "<script>alert" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_numbers_are_not_localised(user):
    name = make_task(user, percent=42.5)
    with translation.override("de"):
        html = render("{% live_progress task %}", user, task=name)
    bar = attrs_of(html)
    assert bar["aria-valuenow"] == "42.5" and 'width="42.50"' in html


def cancel_button(html):
    match = re.search(r"<button[^>]*>[^<]*</button>", html)
    return match.group(0) if match else None


def test_cancel_button_for_the_owner_of_an_unfinished_task(user):
    name = make_task(user, message="Working", percent=10.0)
    request = request_for(user)
    html = render('{% live_progress task label="Import" %}', request=request, task=name)
    button = cancel_button(html)
    assert button is not None
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', button))
    assert attrs["type"] == "button" and "data-ra-cancel" in button
    assert attrs["aria-label"] == "Cancel Import" and button.endswith(">Cancel</button>")
    assert attrs["data-ra-cancel-url"] == f"/ra/realtime-async/cancel/{name}/"
    # The token of this request's CSRF cookie, for the POST fallback.
    assert attrs["data-ra-csrf"] and "CSRF_COOKIE" in request.META
    assert 'role="alert" data-ra-field="notice" hidden' in html
    assert "Cancelling" in html  # the script's wording, in data-ra-i18n
    assert render("{% live_progress task %}", user, task=make_task(user, "queued")).count("<button") == 1


def test_staff_get_the_button_for_any_task(user, django_user_model):
    staff = django_user_model.objects.create_user("sam", is_staff=True)
    assert cancel_button(render("{% live_progress task %}", staff, task=make_task(user, percent=5.0)))


@pytest.mark.parametrize("state", ["success", "failure", "cancelled", "lost"])
def test_no_cancel_button_once_final(user, state):
    html = render("{% live_progress task %}", user, task=make_task(user, state))
    assert "<button" not in html and "data-ra-csrf" not in html


def test_no_cancel_button_for_watch_token_viewers(user, django_user_model):
    name = make_task(user, percent=5.0)
    token = AsyncManager.resolve_manager().make_watch_token(name)
    stranger = django_user_model.objects.create_user("bob")
    for viewer in (None, stranger):
        html = render("{% live_progress task token=token %}", viewer, task=name, token=token)
        assert 'data-ra-state="running"' in html and "<button" not in html


def test_no_cancel_button_when_can_cancel_refuses(user, settings):
    settings.REALTIME_ASYNC = {"ASYNC_MANAGER_CLASS_PATH": "tests.testapp.managers.NoCancelManager"}
    html = render("{% live_progress task %}", user, task=make_task(user, percent=5.0))
    assert 'data-ra-state="running"' in html and "<button" not in html


@override_settings(ROOT_URLCONF="tests.testapp.urls")  # no cancel endpoint
def test_cancel_button_without_an_endpoint_needs_the_websocket(user):
    name = make_task(user, percent=5.0)
    button = cancel_button(render("{% live_progress task %}", user, task=name))
    assert button and "data-ra-cancel-url" not in button  # WebSocket only
    assert "<button" not in render('{% live_progress task transport="poll" %}', user, task=name)


def test_cancel_url_can_be_given(user):
    name = make_task(user, percent=5.0)
    html = render_live_progress(name, request=request_for(user), cancel_url="/custom/cancel/")
    assert 'data-ra-cancel-url="/custom/cancel/"' in html
    html = render('{% live_progress task cancel_url="/tag/cancel/" %}', user, task=name)
    assert 'data-ra-cancel-url="/tag/cancel/"' in html


def test_fragment_has_no_cancel_button(user):
    name = make_task(user, percent=5.0)
    record = AsyncManager.resolve_manager().get_progress(name)
    assert "<button" not in render_fragment(name, record, htmx_url="/x/")


def test_cancel_button_has_no_inline_handler(user):
    html = render("{% live_progress task %}", user, task=make_task(user, message="hi", percent=33.0))
    assert "<button" in html and "style=" not in html
    assert " on" not in re.sub(r'"[^"]*"', '""', html)
