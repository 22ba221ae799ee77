"""A model for the admin's async actions in the browser tests."""

from __future__ import annotations

from django.db import models


class Widget(models.Model):
    name = models.CharField(max_length=100)
    #: Incremented by the ``admin_rebuild`` worker, once per object it got to.
    rebuilds = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return self.name
