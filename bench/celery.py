"""The Celery app of the benchmark's publisher processes (configured from ``bench.settings``)."""

from __future__ import annotations

from celery import Celery

app = Celery("bench")
app.config_from_object("django.conf:settings", namespace="CELERY")
