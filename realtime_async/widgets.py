"""The live progress widget as plain functions; ``{% live_progress %}`` adapts them.

One template, ``realtime_async/progress.html``, renders a task's state for the
widget (driven by ``static/realtime_async/widget.js``) and for the polling
endpoint's HTMX fragment (driven by htmx's ``hx-get``), so both look the same.
Everything the script needs travels in ``data-ra-*`` attributes: no inline
script or style, so the widget works under a strict Content Security Policy.

A Cancel button is rendered for viewers whose session may cancel the task
(``AsyncManager.can_cancel``), never for watch-token viewers, and only while
the task is not final. With ``breakdown=True`` a group's parent also shows its
parts (``_web/breakdown.py``), kept current by ``breakdown.js``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

from django.http import HttpRequest
from django.middleware.csrf import get_token
from django.template.loader import render_to_string
from django.templatetags.static import static
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.safestring import SafeString
from django.utils.translation import gettext

from realtime_async._core.access import visible_record
from realtime_async._core.managers import resolve_manager
from realtime_async._core.naming import validate_task_name
from realtime_async._core.records import StateRecord, is_final
from realtime_async._core.store import get_store
from realtime_async._web.breakdown import breakdown as group_breakdown
from realtime_async._web.breakdown import shown_parts
from realtime_async._web.display import display, format_eta, i18n, state_labels
from realtime_async._web.results import display_results
from realtime_async.conf import get_settings

if TYPE_CHECKING:
    from realtime_async.async_manager import AsyncManager

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
]

Transport = Literal["auto", "ws", "poll", "sse"]
Mode = Literal["widget", "fragment"]
TRANSPORTS: tuple[Transport, ...] = ("auto", "ws", "poll", "sse")
TEMPLATE_NAME = "realtime_async/progress.html"
#: The multi-subscription endpoint of ``realtime_async.routing``; the script makes it ws(s)://<host>/...
DEFAULT_WS_PATH = "/ws/realtime-async/"
#: Tried in order to find the polling endpoint: ``include("realtime_async.urls")``, then ``get_url()``.
_POLL_URL_NAMES = ("realtime_async:progress", "async-progress")
#: The Server-Sent Events endpoint, when the project includes ``realtime_async.urls``; without it the widget skips SSE.
_EVENTS_URL_NAME = "realtime_async:events"
#: Tried in order to find the cancel endpoint: ``include("realtime_async.urls")``, then ``get_cancel_url()``.
_CANCEL_URL_NAMES = ("realtime_async:cancel", "async-cancel")


def _context(
    task_name: str,
    record: StateRecord | None,
    *,
    mode: Mode,
    label: str | None = None,
    transport: Transport = "auto",
    token: str | None = None,
    ws_url: str | None = None,
    poll_url: str | None = None,
    htmx_url: str | None = None,
    cancel: dict[str, str] | None = None,
    log: bool = False,
    breakdown: dict[str, Any] | None = None,
) -> dict[str, Any]:
    shown = display(record)
    final = shown["final"]
    percent = shown["percent"]
    poll_ms = max(100, round(get_settings().poll_interval * 1000))
    return {
        "mode": mode,
        "task": task_name,
        **shown,
        # Numbers go out as strings: the template would localise them ("42,5").
        "seq": str(record.get("seq", 0)) if record else "0",
        "label": _label(label, record),
        "stages_label": gettext("Stages"),
        "percent_width": f"{percent:.2f}" if percent is not None else "0",
        "transport": transport,
        "token": token or "",
        "ws_url": ws_url or DEFAULT_WS_PATH,
        "events_url": _default_events_url() if mode == "widget" and transport in ("auto", "sse") else "",
        "poll_url": poll_url or "",
        "poll_ms": str(poll_ms),
        "htmx_url": htmx_url if htmx_url and not final and record is not None else "",
        "i18n": json.dumps(i18n(), separators=(",", ":")) if mode == "widget" else "",
        "cancel": cancel if mode == "widget" and not final and record is not None else None,
        # The result link and downloads of a succeeded task (widget.js redraws them from live records).
        "results": display_results(record, token=token),
        "log": log and mode == "widget" and record is not None,
        "log_label": gettext("Log"),
        "breakdown": breakdown if mode == "widget" else None,
    }


def _label(label: str | None, record: StateRecord | None) -> str:
    """The bar's name: the one given, else the task's title, else "Progress"."""
    return label or (record.get("title") if record else None) or gettext("Progress")


def _breakdown(task_name: str, record: StateRecord | None) -> dict[str, Any] | None:
    """A group parent's parts as first shown (``shown_parts``); None for any other task."""
    if record is None or not record.get("group"):
        return None
    return shown_parts(group_breakdown(task_name, record, get_store().group_entries(task_name)))


def _default_poll_url(task_name: str, token: str | None) -> str | None:
    for name in _POLL_URL_NAMES:
        try:
            url = reverse(name, kwargs={"task_name": task_name})
        except NoReverseMatch:
            continue
        return f"{url}?{urlencode({'token': token})}" if token else url
    return None


def _default_events_url() -> str:
    try:
        return reverse(_EVENTS_URL_NAME)
    except NoReverseMatch:
        return ""


def _default_cancel_url(task_name: str) -> str | None:
    for name in _CANCEL_URL_NAMES:
        try:
            return reverse(name, kwargs={"task_name": task_name})
        except NoReverseMatch:
            continue
    return None


def _cancel_button(
    task_name: str,
    record: StateRecord | None,
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
    reach the server: the WebSocket, or the cancel endpoint when the widget
    may not use it (polling and Server-Sent Events carry no cancel).
    """
    if record is None or is_final(record):
        return None
    if not (manager.can_view(user, record) and manager.can_cancel(user, record)):
        return None
    url = cancel_url or _default_cancel_url(task_name)
    if not url and transport in ("poll", "sse"):
        return None
    return {
        "url": url or "",
        # Only the POST fallback needs it; widget.js also reads the csrftoken cookie.
        "csrf": get_token(request) if request is not None else "",
        "text": gettext("Cancel"),
        "label": gettext("Cancel %(label)s") % {"label": _label(label, record)},
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
    log: bool = True,
    breakdown: bool = False,
) -> SafeString:
    """The widget for ``task_name``, showing its current state as ``user`` (or ``token``) may see it.

    ``transport`` is ``"auto"`` (WebSocket, else Server-Sent Events, else
    polling, climbing back up when a better one works again), ``"ws"``,
    ``"sse"`` or ``"poll"``. The assets are included unless ``include_assets`` is false.
    ``user`` defaults to ``request.user``; the request also provides the CSRF
    token of the Cancel button's POST fallback (to ``cancel_url``, by default
    the ``realtime_async:cancel`` or ``async-cancel`` URL). With ``log`` (the
    default) the task's log lines show under the bar, collapsed, once it has any.
    With ``breakdown``, a group's parent lists its parts (title, state, percent;
    the failed ones with their error) under a summary, up to ``BREAKDOWN_LIMIT``.
    """
    checked = _transport(transport)
    if not isinstance(task_name, str):
        raise ValueError(f"live_progress(): the task name must be a string, got {task_name!r}.")
    if user is None and request is not None:
        user = getattr(request, "user", None)
    manager = manager or resolve_manager()
    record = visible_record(manager, user, task_name, token=token)
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
        log=log,
        breakdown=_breakdown(task_name, record) if breakdown else None,
    )
    html = _safe(render_to_string(TEMPLATE_NAME, context))
    return format_html("{}{}", html, render_assets(nonce=nonce)) if include_assets else html


def render_fragment(
    task_name: str, record: StateRecord | None, *, htmx_url: str | None = None, label: str | None = None
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
