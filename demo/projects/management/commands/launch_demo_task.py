"""``manage.py launch_demo_task report``: launch from the shell and follow it in the terminal."""

import time

from django.core.management.base import BaseCommand, CommandError

from projects.launchers import KINDS, launch_kind
from realtime_async.async_manager import AsyncManager


class Command(BaseCommand):
    help = "Launch one of the demo's tasks; with --follow, print its progress until it ends."

    def add_arguments(self, parser):
        parser.add_argument("kind", choices=sorted(KINDS))
        parser.add_argument("--follow", action="store_true", help="Poll the state until the task ends.")

    def handle(self, *args, kind, follow, **options):
        try:
            task_name = launch_kind(kind)
        except Exception as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Launched {task_name} (staff can watch it at /tasks/)")
        manager = AsyncManager()
        seq = None
        while follow:
            record = manager.get_progress(task_name) or {}
            if record.get("seq") != seq:
                seq = record.get("seq")
                self.stdout.write(f"[{record.get('state')}] {record.get('percent')}% {record.get('message') or ''}")
            if record.get("state") not in ("queued", "running"):
                break
            time.sleep(0.5)
