from __future__ import annotations

from django.urls import path

from realtime_async.contrib.dashboard import views

app_name = "realtime_async_dashboard"
urlpatterns = [
    path("", views.my_tasks, name="my-tasks"),
    path("<str:task_name>/", views.task_page, name="task"),
]
