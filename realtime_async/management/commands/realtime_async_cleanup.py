"""``manage.py realtime_async_cleanup``: end lost tasks and drop stale registry entries."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from realtime_async.async_manager import AsyncManager


class Command(BaseCommand):
    help = "End tasks whose worker died and drop stale entries from the registry of active tasks."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Report what would be cleaned; change nothing.")
        parser.add_argument("--json", action="store_true", help="Print the summary as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        summary = AsyncManager.resolve_manager().cleanup_completed_tasks(dry_run=options["dry_run"])
        if options["json"]:
            self.stdout.write(json.dumps(summary, indent=2, sort_keys=True))
            return
        verb = "Would clean" if summary["dry_run"] else "Cleaned"
        self.stdout.write(f"Active tasks seen: {summary['active']}")
        for item in summary["cleaned"]:
            self.stdout.write(f"{verb} {item['task']}: {item['reason']}")
        for item in summary["skipped"]:
            self.stdout.write(f"Skipped {item['task']}: {item['reason']}")
        if summary.get("files"):
            deleted = "Would delete" if summary["dry_run"] else "Deleted"
            self.stdout.write(f"{deleted} {len(summary['files'])} attached file(s) past FILE_RETENTION.")
        self.stdout.write(self.style.SUCCESS(f"{verb} {len(summary['cleaned'])}, skipped {len(summary['skipped'])}."))
