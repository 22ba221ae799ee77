"""Settings of the test project. Services come from the environment (see tests/conftest.py)."""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from typing import Any

import dj_database_url

# setdefault: the test session's worker and server subprocesses inherit these,
# so every process of one session shares the same keys, queue and database.
REDIS_URL = os.environ.setdefault("RA_TEST_REDIS_URL", os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/11"))
PREFIX = os.environ.setdefault("RA_TEST_PREFIX", f"ratest-{uuid.uuid4().hex[:8]}")
TEST_DB = os.environ.setdefault("RA_TEST_DB", os.path.join(tempfile.gettempdir(), f"{PREFIX}.sqlite3"))

SECRET_KEY = "realtime-async-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
USE_TZ = True
ROOT_URLCONF = "tests.project.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "realtime_async",
    "realtime_async.contrib.dashboard",
    "tests.testapp",
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
DATABASES: dict[str, dict[str, Any]] = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": TEST_DB,
        "TEST": {"NAME": TEST_DB},
        # Several processes (tests, daphne, workers) share this file.
        "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
    }
}
# RA_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test runs the suite on that server instead (.ci/run's
# PostgreSQL pass). The session creates and drops a database of its own, "<name>_<prefix>": NAME and TEST NAME
# are both that, so the daphne and worker subprocesses, which inherit RA_TEST_PREFIX, reach the database
# pytest-django made (as they reach the SQLite file above), and two sessions at once never share one.
if TEST_DATABASE_URL := os.environ.get("RA_TEST_DATABASE_URL"):
    _database = dj_database_url.parse(TEST_DATABASE_URL)
    _session_name = f"{_database['NAME'] or 'test'}_{PREFIX}".replace("-", "_")
    DATABASES = {"default": {**_database, "NAME": _session_name, "TEST": {"NAME": _session_name}}}
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": PREFIX,
    }
}
#: The two channel layers the suite knows: RedisPubSubChannelLayer (the documented one, for which the
#: write script publishes the layer's messages itself) and RedisChannelLayer (still supported).
PUBSUB_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": None}], "prefix": f"{PREFIX}:asgi"},
    }
}
CORE_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [{"address": REDIS_URL, "socket_timeout": None}],
            "prefix": f"{PREFIX}:asgi",
            "channel_capacity": {"realtime_async.hub*": 1000},
        },
    }
}
#: Which one the suite runs on ("pubsub" or "core"); CI runs both. Tests of one layer's own
#: machinery pick it themselves (the ``core_layer`` and ``pubsub_layer`` fixtures).
LAYER = os.environ.setdefault("RA_TEST_LAYER", "pubsub")
if LAYER not in ("pubsub", "core"):
    raise ValueError(f"RA_TEST_LAYER must be pubsub or core, got {LAYER!r}")
CHANNEL_LAYERS = PUBSUB_LAYERS if LAYER == "pubsub" else CORE_LAYERS
#: RA_TEST_SHARDS (a JSON list of SHARDS entries) puts the store and the layer on those servers, in that order
#: (tests/system/test_shards.py starts its servers and passes them to the processes it starts).
SHARDS: list[Any] | None = json.loads(os.environ["RA_TEST_SHARDS"]) if os.environ.get("RA_TEST_SHARDS") else None
if SHARDS is not None:
    _layer: dict[str, Any] = CHANNEL_LAYERS["default"]
    _hosts = [{"address": shard, "socket_timeout": None} if isinstance(shard, str) else shard for shard in SHARDS]
    CHANNEL_LAYERS = {"default": {**_layer, "CONFIG": {**_layer["CONFIG"], "hosts": _hosts}}}
ASGI_APPLICATION = "tests.project.asgi.application"
STATIC_URL = "/static/"
# Files that tasks attach (attach_file), shared by every process of one session; never the working directory.
FILES_DIR = os.environ.setdefault("RA_TEST_FILES_DIR", os.path.join(tempfile.gettempdir(), f"{PREFIX}-files"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": FILES_DIR}},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
SESSION_ENGINE = "django.contrib.sessions.backends.cache"

CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_DEFAULT_QUEUE = f"{PREFIX}-tasks"
CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": f"{PREFIX}:celery:"}
CELERY_TASK_SERIALIZER = "json"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

CELERY_WORKER_PREFETCH_MULTIPLIER = int(os.environ.get("RA_TEST_PREFETCH", "4"))
# As the README configures it; tests that run a real `celery beat` shorten the interval.
CELERY_BEAT_SCHEDULE = {
    "realtime-async-cleanup": {
        "task": "realtime_async.schedules.cleanup_async_artifacts",
        "schedule": float(os.environ.get("RA_TEST_BEAT_INTERVAL", "60")),
    },
}

REALTIME_ASYNC = {
    "ASYNC_MANAGER_CLASS_PATH": "tests.testapp.managers.RecordingManager",
    "MAX_CONNECTIONS_PER_USER": int(os.environ.get("RA_TEST_MAX_CONNECTIONS", "20")),
    "HEARTBEAT_INTERVAL": float(os.environ.get("RA_TEST_HEARTBEAT", "1")),
    "LOCK_TTL": float(os.environ.get("RA_TEST_LOCK_TTL", "3")),
}
if SHARDS is not None:
    REALTIME_ASYNC["SHARDS"] = SHARDS
# Servers started by a test with a setting of their own (the event streams' bounds, for one).
for _key in ("SSE_HEARTBEAT", "SSE_MAX_BYTES", "STALLED_CLOSE_AFTER", "MAX_SUBSCRIPTIONS"):
    if _value := os.environ.get(f"RA_TEST_{_key}"):
        REALTIME_ASYNC[_key] = int(_value) if _key in ("SSE_MAX_BYTES", "MAX_SUBSCRIPTIONS") else float(_value)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"realtime_async": {"handlers": ["console"], "level": "INFO"}},
}
