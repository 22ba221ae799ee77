"""Live progress for background work in Django: Celery workers report, browsers watch."""

from __future__ import annotations

__version__ = "0.1.0"
