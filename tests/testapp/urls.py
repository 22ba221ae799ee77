from __future__ import annotations

from django.urls import path

from tests.testapp import views

urlpatterns = [
    path("widgets/", views.widgets_page, name="demo-widgets"),
    path("client/", views.client_page, name="demo-client"),
    path("htmx/", views.htmx_page, name="demo-htmx"),
    path("tasks/", views.dashboard_page, name="demo-tasks"),
]
