from django.db import models


class Project(models.Model):
    name = models.CharField(max_length=100)
    files = models.PositiveIntegerField(default=12)
    rebuilt_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.name


class Report(models.Model):
    title = models.CharField(max_length=100)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="reports")
    pages = models.PositiveIntegerField(default=20)
    generated_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.title
