from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from demoproject import views

urlpatterns = [
    path("", views.index, name="index"),
    path("launch/", views.launch, name="launch"),
    path("custom/", views.custom, name="custom"),
    path("polling/", views.polling, name="polling"),
    path("accounts/login/", auth_views.LoginView.as_view(template_name="demo/login.html"), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("tasks/", include("realtime_async.contrib.dashboard.urls")),
    path("", include("realtime_async.urls")),
]
