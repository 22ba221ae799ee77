"""Settings of the benchmark server and publishers: the test project's, minus what would skew costs.

Services come from the environment, like the test project's (``RA_TEST_REDIS_URL``
points at the benchmark's private redis-server). Differences:

- the default ``AsyncManager`` (the test project's records every lifecycle event in Redis);
- no dashboard app (its signal receiver writes rows), no test app;
- no per-user or per-address connection cap: every load client comes from 127.0.0.1;
- ``STALLED_CLOSE_AFTER`` from ``RA_BENCH_STALLED_CLOSE_AFTER`` when set (``none``: never close),
  for the slow-readers scenario;
- the channel layer from ``RA_BENCH_LAYER``: ``pubsub`` (RedisPubSubChannelLayer, the documented
  setup, for which the write script publishes the layer's messages itself) or ``core``
  (RedisChannelLayer: the layered delivery, as before issue 14);
- a Celery result backend only when ``RA_BENCH_RESULT_BACKEND`` is set: celery-progress
  needs one, realtime_async does not, and with one every ``apply_async`` also subscribes
  to the result's pub/sub channel.
"""

from __future__ import annotations

import os

from tests.project.settings import *  # noqa: F403
from tests.project.settings import CORE_LAYERS, INSTALLED_APPS, PUBSUB_LAYERS, REDIS_URL

INSTALLED_APPS = [app for app in INSTALLED_APPS if app not in ("realtime_async.contrib.dashboard", "tests.testapp")]
ROOT_URLCONF = "bench.urls"
ASGI_APPLICATION = "bench.asgi.application"

REALTIME_ASYNC = {
    "PROGRESS_RATE": float(os.environ.get("RA_BENCH_PROGRESS_RATE", "10")),
    "MAX_CONNECTIONS_PER_USER": 1_000_000,
    "MAX_SUBSCRIPTIONS": 1000,
}

if _stalled := os.environ.get("RA_BENCH_STALLED_CLOSE_AFTER"):
    REALTIME_ASYNC["STALLED_CLOSE_AFTER"] = None if _stalled == "none" else float(_stalled)

CHANNEL_LAYERS = CORE_LAYERS if os.environ.get("RA_BENCH_LAYER") == "core" else PUBSUB_LAYERS

if os.environ.get("RA_BENCH_RESULT_BACKEND"):
    CELERY_RESULT_BACKEND = REDIS_URL

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"realtime_async": {"handlers": ["console"], "level": "WARNING"}},
}
