"""Settings of the realtime_async demo. ``demo/run.py`` sets REDIS_URL and DEMO_DB."""

import os
import tempfile
from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

SECRET_KEY = os.environ.get("DEMO_SECRET_KEY", "realtime-async-demo-only-not-secret")
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
ROOT_URLCONF = "demoproject.urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "index"

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "projects",  # first of the apps with templates, so its overrides (the dashboard's base.html) win
    "channels",
    "realtime_async",
    "realtime_async.contrib.dashboard",
]
#: The languages realtime_async ships catalogues for (realtime_async/locale).
LANGUAGES = [("en", "English"), ("de", "Deutsch"), ("fr", "Français")]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The widget, the dashboard and the admin page in the visitor's language (Accept-Language, the cookie).
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
# Three processes (daphne, the worker, beat) write this file: the dashboard recorder's rows at once.
# WAL lets readers and one writer work together; IMMEDIATE takes the write lock when a transaction
# starts, so two writers queue for it (for up to "timeout" seconds) instead of one failing with
# "database is locked" halfway. Production wants PostgreSQL (see the dashboard's docs).
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DEMO_DB", DEMO_DIR / "db.sqlite3"),
        "OPTIONS": {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        },
    }
}
# DATABASE_URL (postgres://user:password@host:5432/name, with psycopg installed) puts the demo on that
# database instead; the embedded SQLite file above stays the default.
if DATABASE_URL := os.environ.get("DATABASE_URL"):
    import dj_database_url

    DATABASES = {"default": dj_database_url.parse(DATABASE_URL)}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
CHANNEL_LAYERS = {  # on the cache's Redis: the write script publishes the layer's messages itself
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": None}]},
    }
}
SESSION_ENGINE = "django.contrib.sessions.backends.cache"
ASGI_APPLICATION = "asgi.application"
STATIC_URL = "/static/"
# Files tasks attach (the report's CSV): kept out of the source tree, downloaded through realtime_async's view.
STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": os.environ.get("DEMO_FILES", Path(tempfile.gettempdir()) / "realtime-async-demo")},
    },
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_SERIALIZER = "json"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE = {
    "realtime-async-cleanup": {"task": "realtime_async.schedules.cleanup_async_artifacts", "schedule": 30.0},
}

REALTIME_ASYNC = {"HEARTBEAT_INTERVAL": 5}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"realtime_async": {"handlers": ["console"], "level": "INFO"}},
}
