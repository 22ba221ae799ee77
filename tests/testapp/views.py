"""Demo pages for the browser tests, served under a strict Content Security Policy."""

from __future__ import annotations

import secrets

from django.shortcuts import render


def _strict_csp(request, response, *, strict_dynamic=False):
    nonce = request.csp_nonce
    scripts = f"'nonce-{nonce}'" + (" 'strict-dynamic'" if strict_dynamic else "")
    response["Content-Security-Policy"] = (
        f"default-src 'none'; script-src {scripts}; style-src 'nonce-{nonce}'; "
        "connect-src 'self' ws://127.0.0.1:* ws://localhost:*; base-uri 'none'; form-action 'none'"
    )
    return response


def widgets_page(request):
    """Widgets for the tasks named in ?task= (repeatable); ?transport=, ?ws=, ?token=, ?breakdown=1 go to the tag."""
    request.csp_nonce = secrets.token_urlsafe(16)  # as django-csp and Django 6's CSP middleware do
    context = {
        "tasks": request.GET.getlist("task"),
        "transport": request.GET.get("transport", "auto"),
        "ws_url": request.GET.get("ws", ""),
        "token": request.GET.get("token", ""),
        "breakdown": request.GET.get("breakdown") == "1",
    }
    return _strict_csp(request, render(request, "testapp/widgets.html", context))


def client_page(request):
    """A custom frontend built on client.js alone (no widget)."""
    request.csp_nonce = secrets.token_urlsafe(16)
    context = {"task": request.GET.get("task", ""), "token": request.GET.get("token", "")}
    # A module importing another needs 'strict-dynamic' (or 'self') under a nonce-only policy.
    return _strict_csp(request, render(request, "testapp/client.html", context), strict_dynamic=True)


def htmx_page(request):
    """Progress through the polling endpoint's fragment and htmx alone (the test serves /htmx.min.js)."""
    request.csp_nonce = secrets.token_urlsafe(16)
    context = {"tasks": request.GET.getlist("task")}
    return _strict_csp(request, render(request, "testapp/htmx.html", context))


def dashboard_page(request):
    """The dashboard's "my tasks" view under the same strict policy (nonce-only scripts and styles)."""
    from realtime_async.contrib.dashboard.views import my_tasks

    request.csp_nonce = secrets.token_urlsafe(16)
    return _strict_csp(request, my_tasks(request))
