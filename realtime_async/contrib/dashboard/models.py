from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import pgettext_lazy

__all__ = ["TaskRecord"]


class TaskRecord(models.Model):
    """What the lifecycle hooks saw of one task; the cache stays the live source of truth."""

    class State(models.TextChoices):
        # The labels are the ones of migration 0001: equal in English, so no migration is due.
        QUEUED = "queued", pgettext_lazy("task state", "Queued")
        RUNNING = "running", pgettext_lazy("task state", "Running")
        SUCCESS = "success", pgettext_lazy("task state", "Success")
        FAILURE = "failure", pgettext_lazy("task state", "Failure")
        CANCELLED = "cancelled", pgettext_lazy("task state", "Cancelled")
        LOST = "lost", pgettext_lazy("task state", "Lost")

    task_name = models.CharField(max_length=128, unique=True)
    title = models.CharField(max_length=200, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED, db_index=True)
    message = models.TextField(blank=True)
    percent = models.FloatField(null=True, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    owner_label = models.CharField(max_length=150, blank=True)
    affected_objects = models.JSONField(default=list, blank=True)
    task_kwargs = models.JSONField(default=dict, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(null=True, blank=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    #: The ``seq`` of the state record last written here: events of one run from several
    #: processes can reach the database out of order, and an older one must not win.
    seq = models.PositiveBigIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "task"

    def __str__(self) -> str:
        return f"{self.task_name} ({self.state})"
