"""The demo's pages: each shows one way into realtime_async."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST
from projects.launchers import GROUPS, KINDS, launch_kind

from realtime_async.exceptions import ConflictError

RECENT = 6


def _recent(request: HttpRequest) -> list[dict[str, str]]:
    """The tasks this session launched, newest first, with the label of their button."""
    return request.session.get("demo_tasks", [])[-RECENT:][::-1]


@login_required
def index(request: HttpRequest) -> HttpResponse:
    return render(request, "demo/index.html", {"tasks": _recent(request), "kinds": KINDS, "transport": "auto"})


@login_required
def polling(request: HttpRequest) -> HttpResponse:
    return render(request, "demo/index.html", {"tasks": _recent(request), "kinds": KINDS, "transport": "poll"})


@login_required
def custom(request: HttpRequest) -> HttpResponse:
    return render(request, "demo/custom.html", {"kinds": KINDS})


@login_required
@require_POST
def launch(request: HttpRequest) -> HttpResponse:
    kind = request.POST.get("kind", "")
    if kind not in KINDS:
        return JsonResponse({"error": f"Unknown kind; choose one of {sorted(KINDS)}."}, status=400)
    try:
        task_name = launch_kind(kind, request.user)
    except ConflictError as exc:
        return JsonResponse({"error": f"Task {exc.holder} is already working on these objects."}, status=409)
    launched = {"task": task_name, "label": KINDS[kind], "group": kind in GROUPS}
    request.session["demo_tasks"] = [*request.session.get("demo_tasks", []), launched][-20:]
    if request.accepts("text/html") and not request.headers.get("X-Requested-With"):
        return redirect(request.POST.get("next") or "index")
    return JsonResponse({"task": task_name})
