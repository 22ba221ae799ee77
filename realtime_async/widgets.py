"""The live progress widget as plain functions; ``{% live_progress %}`` adapts them.

One template, ``realtime_async/progress.html``, renders a task's state for the
widget (driven by ``static/realtime_async/widget.js``) and for the polling
endpoint's HTMX fragment (driven by htmx's ``hx-get``), so both look the same.
Everything the script needs travels in ``data-ra-*`` attributes: no inline
script or style, so the widget works under a strict Content Security Policy.

A Cancel button is rendered for viewers whose session may cancel the task
(``AsyncManager.can_cancel``), never for watch-token viewers, and only while
the task is not final.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

from django.http import HttpRequest
from django.middleware.csrf import get_token
from django.template.loader import render_to_string
from django.templatetags.static import static
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.safestring import SafeString
from django.utils.translation import gettext

from realtime_async.async_manager import AsyncManager
from realtime_async.conf import get_settings
from realtime_async.naming import validate_task_name
from realtime_async.progress import FINAL_STATES

__all__ = [
    "DEFAULT_WS_PATH",
    "TEMPLATE_NAME",
    "TRANSPORTS",
    "Mode",
    "Transport",
    "format_eta",
    "render_assets",
    "render_fragment",
    "render_live_progress",
    "state_labels",
    "visible_record",
]

Transport = Literal["auto", "ws", "poll"]
Mode = Literal["widget", "fragment"]
TRANSPORTS: tuple[Transport, ...] = ("auto", "ws", "poll")
TEMPLATE_NAME = "realtime_async/progress.html"
#: The multi-subscription endpoint of ``realtime_async.routing``; the script makes it ws(s)://<host>/...
DEFAULT_WS_PATH = "/ws/realtime-async/"
#: Tried in order to find the polling endpoint: ``include("realtime_async.urls")``, then ``get_url()``.
_POLL_URL_NAMES = ("realtime_async:progress", "async-progress")
#: Tried in order to find the cancel endpoint: ``include("realtime_async.urls")``, then ``get_cancel_url()``.
_CANCEL_URL_NAMES = ("realtime_async:cancel", "async-cancel")
_UNAVAILABLE = "unavailable"


def visible_record(
    task_name: str, *, user: Any = None, token: str | None = None, manager: AsyncManager | None = None
) -> dict[str, Any] | None:
    """The task's record if ``user`` or the watch ``token`` may see it, else None.

    Unknown and forbidden tasks give the same answer, so names cannot be probed.
    """
    manager = manager or AsyncManager.resolve_manager()
    record = manager.get_progress(task_name)
    if record is None:
        return None
    if manager.can_view(user, record) or (token and manager.check_watch_token(token, task_name)):
        return record
    return None


def format_eta(seconds: float | None) -> str:
    """``"5 s left"``, ``"3 min left"``, ``"2 h 5 min left"``; ``""`` when unknown.

    ``widget.js`` formats the same way, from the strings in ``data-ra-i18n``.
    """
    if seconds is None or seconds != seconds or seconds < 0:
        return ""
    if seconds < 60:
        return gettext("%(n)s s left") % {"n": max(1, math.ceil(seconds))}
    if seconds < 3600:
        return gettext("%(n)s min left") % {"n": round(seconds / 60)}
    hours, minutes = divmod(round(seconds / 60), 60)
    return gettext("%(h)s h %(m)s min left") % {"h": hours, "m": minutes}


def state_labels() -> dict[str, str]:
    """Each state's visible name, translated; ``"unavailable"`` is a task that cannot be shown."""
    return {
        "queued": gettext("Queued"),
        "running": gettext("Running"),
        "success": gettext("Done"),
        "failure": gettext("Failed"),
        "cancelled": gettext("Cancelled"),
        "lost": gettext("Lost"),
        _UNAVAILABLE: gettext("Not available"),
    }


def _i18n() -> str:
    """Strings the script needs, translated here so one place knows the language."""
    return json.dumps(
        {
            "states": state_labels(),
            "eta_s": gettext("%(n)s s left"),
            "eta_min": gettext("%(n)s min left"),
            "eta_h": gettext("%(h)s h %(m)s min left"),
            "unavailable": gettext("No such task."),
            "failed": gettext("The task failed."),
            "cancelling": gettext("Cancelling…"),
            "cancel_forbidden": gettext("You may not cancel this task."),
            "cancel_failed": gettext("The task could not be cancelled. Try again."),
        },
        separators=(",", ":"),
    )


def _percent_text(percent: float) -> str:
    # Floor, so that "100%" means done.
    return f"{math.floor(percent)}%"


def _context(
    task_name: str,
    record: dict[str, Any] | None,
    *,
    mode: Mode,
    label: str | None = None,
    transport: Transport = "auto",
    token: str | None = None,
    ws_url: str | None = None,
    poll_url: str | None = None,
    htmx_url: str | None = None,
    cancel: dict[str, str] | None = None,
) -> dict[str, Any]:
    state = record["state"] if record else _UNAVAILABLE
    raw = record.get("percent") if record else None
    percent = min(100.0, max(0.0, float(raw))) if isinstance(raw, (int, float)) else None
    if record is None:
        message = gettext("No such task.")
    elif state in ("failure", "lost"):
        message = record.get("error") or gettext("The task failed.")
    else:
        message = record.get("message") or ""
    final = state in FINAL_STATES
    poll_ms = max(100, round(get_settings().poll_interval * 1000))
    return {
        "mode": mode,
        "task": task_name,
        "state": state,
        "state_label": state_labels().get(state, state),
        # Numbers go out as strings: the template would localise them ("42,5").
        "seq": str(record.get("seq", 0)) if record else "0",
        "final": final,
        "label": label or gettext("Progress"),
        "percent": percent,
        "percent_value": f"{round(percent, 1):g}" if percent is not None else None,
        "percent_width": f"{percent:.2f}" if percent is not None else "0",
        "percent_text": _percent_text(percent) if percent is not None else "",
        "indeterminate": percent is None and state == "running",
        "eta_text": "" if final or record is None else format_eta(record.get("eta")),
        "message": message,
        "transport": transport,
        "token": token or "",
        "ws_url": ws_url or DEFAULT_WS_PATH,
        "poll_url": poll_url or "",
        "poll_ms": str(poll_ms),
        "htmx_url": htmx_url if htmx_url and not final and record is not None else "",
        "i18n": _i18n() if mode == "widget" else "",
        "cancel": cancel if mode == "widget" and not final and record is not None else None,
    }


def _default_poll_url(task_name: str, token: str | None) -> str | None:
    for name in _POLL_URL_NAMES:
        try:
            url = reverse(name, kwargs={"task_name": task_name})
        except NoReverseMatch:
            continue
        return f"{url}?{urlencode({'token': token})}" if token else url
    return None


def _default_cancel_url(task_name: str) -> str | None:
    for name in _CANCEL_URL_NAMES:
        try:
            return reverse(name, kwargs={"task_name": task_name})
        except NoReverseMatch:
            continue
    return None


def _cancel_button(
    task_name: str,
    record: dict[str, Any] | None,
    *,
    user: Any,
    request: HttpRequest | None,
    transport: Transport,
    label: str | None,
    cancel_url: str | None,
    manager: AsyncManager,
) -> dict[str, str] | None:
    """What the Cancel button needs, or None when this viewer gets no button.

    The session's user must be allowed to see *and* cancel the task: a watch
    token lets its bearer watch, never cancel. The button needs a way to
    reach the server: the WebSocket, or the cancel endpoint when polling only.
    """
    if record is None or record["state"] in FINAL_STATES:
        return None
    if not (manager.can_view(user, record) and manager.can_cancel(user, record)):
        return None
    url = cancel_url or _default_cancel_url(task_name)
    if not url and transport == "poll":
        return None
    return {
        "url": url or "",
        # Only the POST fallback needs it; widget.js also reads the csrftoken cookie.
        "csrf": get_token(request) if request is not None else "",
        "text": gettext("Cancel"),
        "label": gettext("Cancel %(label)s") % {"label": label or gettext("Progress")},
    }


def render_assets(*, nonce: str | None = None) -> SafeString:
    """The stylesheet and module script of the widget; once per page is enough.

    ``client.js`` is preloaded with the nonce too: under a nonce-only policy
    without ``'strict-dynamic'`` the module's own import would be refused.
    """
    nonce_attr = format_html(' nonce="{}"', nonce) if nonce else ""
    return format_html(
        '<link rel="stylesheet" href="{}"{}><link rel="modulepreload" href="{}"{}><script type="module" src="{}"{}>'
        "</script>",
        static("realtime_async/progress.css"),
        nonce_attr,
        static("realtime_async/client.js"),
        nonce_attr,
        static("realtime_async/widget.js"),
        nonce_attr,
    )


def render_live_progress(
    task_name: str,
    *,
    user: Any = None,
    transport: str = "auto",
    token: str | None = None,
    label: str | None = None,
    ws_url: str | None = None,
    poll_url: str | None = None,
    nonce: str | None = None,
    include_assets: bool = True,
    manager: AsyncManager | None = None,
    request: HttpRequest | None = None,
    cancel_url: str | None = None,
) -> SafeString:
    """The widget for ``task_name``, showing its current state as ``user`` (or ``token``) may see it.

    ``transport`` is ``"auto"`` (WebSocket, polling when the socket fails),
    ``"ws"`` or ``"poll"``. The assets are included unless ``include_assets`` is false.
    ``user`` defaults to ``request.user``; the request also provides the CSRF
    token of the Cancel button's POST fallback (to ``cancel_url``, by default
    the ``realtime_async:cancel`` or ``async-cancel`` URL).
    """
    checked = _transport(transport)
    if not isinstance(task_name, str):
        raise ValueError(f"live_progress(): the task name must be a string, got {task_name!r}.")
    if user is None and request is not None:
        user = getattr(request, "user", None)
    manager = manager or AsyncManager.resolve_manager()
    record = visible_record(task_name, user=user, token=token, manager=manager)
    cancel = _cancel_button(
        task_name,
        record,
        user=user,
        request=request,
        transport=checked,
        label=label,
        cancel_url=cancel_url,
        manager=manager,
    )
    context = _context(
        task_name,
        record,
        mode="widget",
        label=label,
        transport=checked,
        token=token,
        ws_url=ws_url,
        poll_url=poll_url or _default_poll_url(task_name, token),
        cancel=cancel,
    )
    html = _safe(render_to_string(TEMPLATE_NAME, context))
    return format_html("{}{}", html, render_assets(nonce=nonce)) if include_assets else html


def render_fragment(
    task_name: str, record: dict[str, Any] | None, *, htmx_url: str | None = None, label: str | None = None
) -> SafeString:
    """The HTMX fragment: the widget's markup, polling ``htmx_url`` itself until the task is final."""
    try:
        validate_task_name(task_name)
    except ValueError:
        task_name = ""
    context = _context(task_name, record, mode="fragment", label=label, htmx_url=htmx_url)
    return _safe(render_to_string(TEMPLATE_NAME, context))


def _transport(transport: str) -> Transport:
    for choice in TRANSPORTS:
        if transport == choice:
            return choice
    raise ValueError(
        f"live_progress(): transport must be one of {', '.join(map(repr, TRANSPORTS))}, got {transport!r}."
    )


def _safe(html: str) -> SafeString:
    # The template escaped everything it rendered.
    return SafeString(html)
