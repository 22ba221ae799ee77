"""``{% live_progress task_name %}`` and ``{% live_progress_assets %}``: thin adapters over ``realtime_async.widgets``.

::

    {% load realtime_async %}
    {% live_progress task_name label="Import" %}
    {% live_progress other_task transport="poll" token=watch_token %}
    {% live_progress group_task breakdown=True %}

Viewers whose session may cancel the task (``AsyncManager.can_cancel``) get a
Cancel button while it runs; ``cancel_url`` overrides the endpoint it POSTs to
when the WebSocket is not in use.

The widget's stylesheet and script come with the first widget of a page; put
``{% live_progress_assets %}`` in ``<head>`` to load them there instead. A CSP
nonce is taken from the ``nonce`` or ``csp_nonce`` context variable, else from
``request.csp_nonce`` (django-csp, Django 6's CSP middleware).
"""

from __future__ import annotations

from typing import Any

from django import template
from django.http import HttpRequest
from django.utils.safestring import SafeString

from realtime_async.widgets import render_assets, render_live_progress

__all__ = ["live_progress", "live_progress_assets"]

register = template.Library()

_ASSETS_KEY = "_realtime_async_assets"


@register.simple_tag(takes_context=True)
def live_progress(
    context: template.Context,
    task_name: str,
    transport: str = "auto",
    token: str | None = None,
    label: str | None = None,
    ws_url: str | None = None,
    poll_url: str | None = None,
    cancel_url: str | None = None,
    log: bool = True,
    breakdown: bool = False,
) -> SafeString:
    """The live progress widget of ``task_name``; see ``realtime_async.widgets.render_live_progress``."""
    request = _request(context)
    return render_live_progress(
        task_name,
        request=request,
        user=getattr(request, "user", None) if request is not None else context.get("user"),
        transport=transport,
        token=token or None,
        label=label,
        ws_url=ws_url or None,
        poll_url=poll_url or None,
        cancel_url=cancel_url or None,
        log=bool(log),
        breakdown=bool(breakdown),
        nonce=_nonce(context, request),
        include_assets=_first_assets(context, request),
    )


@register.simple_tag(takes_context=True)
def live_progress_assets(context: template.Context) -> SafeString:
    """The widget's stylesheet and script, unless this page has them already."""
    request = _request(context)
    if not _first_assets(context, request):
        return SafeString("")
    return render_assets(nonce=_nonce(context, request))


def _request(context: template.Context) -> HttpRequest | None:
    request = context.get("request")
    return request if isinstance(request, HttpRequest) else None


def _nonce(context: template.Context, request: HttpRequest | None) -> str | None:
    nonce: Any = context.get("nonce") or context.get("csp_nonce") or getattr(request, "csp_nonce", None)
    return str(nonce) if nonce else None


def _first_assets(context: template.Context, request: HttpRequest | None) -> bool:
    """True the first time a page asks for the assets; later widgets of the page skip them.

    Remembered on the request, so templates rendered separately into one page
    (``render_to_string`` in a view) still include them once, and in the
    render context when there is no request.
    """
    if request is not None:
        if getattr(request, _ASSETS_KEY, False):
            return False
        setattr(request, _ASSETS_KEY, True)
        return True
    if context.render_context.get(_ASSETS_KEY):
        return False
    context.render_context[_ASSETS_KEY] = True
    return True
