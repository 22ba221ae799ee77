"""Admin integration: launch a worker function from an admin action and watch it live.

::

    from realtime_async.admin import AsyncActionsMixin, async_action

    @admin.register(Project)
    class ProjectAdmin(AsyncActionsMixin, admin.ModelAdmin):
        actions = [async_action("myapp.tasks.rebuild_projects", description="Rebuild in background")]

The worker receives the selected primary keys as its first argument:
``rebuild_projects(pks, *, task_key=None, manager_class=None, **kwargs)``.
The action locks the selected objects; on conflict it names the task that
holds them and launches nothing. On success it redirects to a live progress
page inside the admin (``AsyncActionsMixin`` adds it to the model's URLs).

With ``chunk_size=N`` the action launches one group instead: a part per N
selected objects, run in parallel by as many workers as there are, each part
the same worker call on its own chunk of pks, watched as one task.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.utils import model_ngettext
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.functional import lazy
from django.utils.html import format_html
from django.utils.translation import gettext

from realtime_async._core.access import visible_record
from realtime_async._writing.groups import Part
from realtime_async._writing.launch import default_title
from realtime_async.async_manager import AsyncManager
from realtime_async.conf import get_settings
from realtime_async.exceptions import ConflictError

__all__ = ["MAX_AFFECTED_OBJECTS", "AsyncActionsMixin", "async_action"]

#: How many selected objects are named in ``affected_objects`` (the pks are all locked).
MAX_AFFECTED_OBJECTS = 100

AdminAction = Callable[[Any, HttpRequest, "QuerySet[Any]"], HttpResponse | None]


def async_action(
    func: str | Callable[..., Any],
    *,
    description: str | None = None,
    task_kwargs: dict[str, Any] | None = None,
    permissions: list[str] | None = None,
    lock: bool = True,
    name: str | None = None,
    title: str | None = None,
    chunk_size: int | None = None,
) -> AdminAction:
    """An admin action that launches ``func`` for the selected objects, in one task or, with ``chunk_size``, one group.

    The task's title is ``title`` followed by how many objects were selected
    ("Rebuild: 3 projects"); without ``title``, the function's (see ``launch_async_task``).
    ``name`` is the action's name (default ``async_<function name>``); the admin
    requires unique names, so give one to each further action of the same function.

    ``chunk_size=N`` launches a group (``launch_async_group``) of one part per N
    selected objects, each weighted by its number of objects and titled by its
    range ("Rebuild: 500 projects (1–500)"); the locks of every selected object
    are reserved once, for the group. A size, not a number of chunks, because it
    is what bounds each part's run time (and so its time limits) whatever the
    selection; chunks grow past it only when the selection would need more than
    ``GROUP_MAX_PARTS`` parts.
    """
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"async_action(): chunk_size must be a positive int (objects per part), got {chunk_size!r}.")
    label = description or _run_in_background(getattr(func, "__name__", str(func).rsplit(".", 1)[-1]))

    def action(modeladmin: Any, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        model: type[Model] = queryset.model
        pks = list(queryset.values_list("pk", flat=True))
        manager = AsyncManager.resolve_manager()
        heading = title or default_title(func)
        options: dict[str, Any] = {
            # In the launching user's language: a title is stored, like a message the worker writes.
            "title": _counted(heading, queryset, len(pks)),
            "conflict_ids": {model._meta.label: pks} if lock else None,
            "user": request.user,
            "affected_objects": [str(obj) for obj in queryset[:MAX_AFFECTED_OBJECTS]],
        }
        try:
            if chunk_size is None:
                task_name = manager.launch_async_task(func, [str(pk) for pk in pks], task_kwargs=task_kwargs, **options)
            else:
                parts = _split(func, pks, chunk_size, task_kwargs, heading, queryset)
                task_name = manager.launch_async_group(parts, **options)
        except ConflictError as exc:
            modeladmin.message_user(
                request,
                gettext("Nothing was launched: task %(task)s is already working on some of these %(objects)s.")
                % {"task": exc.holder, "objects": model._meta.verbose_name_plural},
                level=messages.ERROR,
            )
            return None
        url = _progress_url(modeladmin, task_name)
        if url is None:
            modeladmin.message_user(
                request, gettext("Task %(task)s launched.") % {"task": task_name}, level=messages.SUCCESS
            )
            return None
        text = gettext('Task {task} launched. <a href="{url}">Watch its progress</a>.')
        modeladmin.message_user(request, format_html(text, task=task_name, url=url))
        return HttpResponseRedirect(url)

    action.__name__ = name or f"async_{getattr(func, '__name__', str(func).rsplit('.', 1)[-1])}"
    return admin.action(description=label, permissions=permissions)(action)


def _counted(heading: str, queryset: QuerySet[Any], count: int) -> str:
    """The title of ``count`` objects ("Rebuild: 3 projects"), in the request's language."""
    return gettext("%(title)s: %(count)s %(objects)s") % {
        "title": heading,
        "count": count,
        "objects": model_ngettext(queryset, count),
    }


def _split(
    func: str | Callable[..., Any],
    pks: list[Any],
    chunk_size: int,
    task_kwargs: dict[str, Any] | None,
    heading: str,
    queryset: QuerySet[Any],
) -> list[Part]:
    """One part per ``chunk_size`` pks (more per part if the selection would need over ``GROUP_MAX_PARTS``)."""
    size = max(chunk_size, math.ceil(len(pks) / get_settings().group_max_parts))
    parts = []
    for start in range(0, len(pks), size):
        chunk = pks[start : start + size]
        # The range is numbers and a dash: no new string to translate.
        span = f"{start + 1}–{start + len(chunk)}" if len(chunk) > 1 else f"{start + 1}"
        part_title = f"{_counted(heading, queryset, len(chunk))} ({span})"
        parts.append(Part(func, ([str(pk) for pk in chunk],), task_kwargs, weight=len(chunk), title=part_title))
    return parts


def _run_in_background_text(name: str) -> str:
    return gettext("Run %(name)s in the background") % {"name": name}


#: The default description of an action: lazy, since actions are made at import, before any request's language.
_run_in_background = lazy(_run_in_background_text, str)


def _progress_url(modeladmin: Any, task_name: str) -> str | None:
    if not isinstance(modeladmin, AsyncActionsMixin):
        return None
    opts = modeladmin.model._meta
    return reverse(f"{modeladmin.admin_site.name}:{opts.app_label}_{opts.model_name}_async_progress", args=[task_name])


if TYPE_CHECKING:
    _Base = admin.ModelAdmin[Any]
else:
    _Base = object


class AsyncActionsMixin(_Base):
    """Adds a live progress page for tasks launched from this model's admin."""

    async_progress_template = "realtime_async/admin/progress.html"

    def get_urls(self) -> list[URLPattern]:
        opts = self.model._meta
        view = self.admin_site.admin_view(self.async_progress_view)
        name = f"{opts.app_label}_{opts.model_name}_async_progress"
        urls: list[URLPattern] = [path("task/<str:task_name>/", view, name=name)]
        return urls + super().get_urls()

    def async_progress_view(self, request: HttpRequest, task_name: str) -> HttpResponse:
        """The live progress page; the same permission rule as every transport."""
        record = visible_record(AsyncManager.resolve_manager(), request.user, task_name)
        if record is None:
            raise Http404("No such task.")
        opts = self.model._meta
        context = {
            **self.admin_site.each_context(request),
            "opts": opts,
            "title": record.get("title") or gettext("Task %(task)s") % {"task": task_name},
            "task_name": task_name,
            "record": record,
            "is_group": bool(record.get("group")),  # the page shows a group's parts under its bar
            "changelist_url": reverse(f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_changelist"),
        }
        return TemplateResponse(request, self.async_progress_template, context)
