"""Create the demo login and sample data (idempotent)."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from projects.models import Project, Report

USERNAME = PASSWORD = "demo"


class Command(BaseCommand):
    help = "Create the demo superuser (demo/demo) and sample projects and reports."

    def handle(self, *args, **options):
        User = get_user_model()
        if not User.objects.filter(username=USERNAME).exists():
            User.objects.create_superuser(USERNAME, "demo@example.com", PASSWORD)
        if not Project.objects.exists():
            for i, name in enumerate(["Website", "Mobile app", "Data warehouse", "Billing", "Search"], start=1):
                project = Project.objects.create(name=name, files=6 + 3 * i)
                for n in range(1, 3):
                    Report.objects.create(title=f"{name} report {n}", project=project, pages=10 + 5 * n)
        self.stdout.write(f"Demo login: {USERNAME} / {PASSWORD}")
