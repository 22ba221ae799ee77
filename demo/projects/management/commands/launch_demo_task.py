"""``manage.py launch_demo_task report``: launch a demo task from the shell, follow it, or run it right here.

``--follow`` polls the task's record and log until it ends and shows them with
the same renderer as terminal mode (a status line on a terminal, plain lines
otherwise); Ctrl-C stops following, not the task. ``--inline`` runs the worker
function in this process with ``AsyncManager.run_inline``: no Celery, no Redis.
Exit codes: 0 when the task ended ``success``, 1 otherwise, 130 after Ctrl-C.
"""

import json
import sys
import time

from django.core.management.base import BaseCommand, CommandError

from projects.launchers import GROUPS, KINDS, launch_kind, task_for
from realtime_async import ResultLink
from realtime_async._core.records import is_final
from realtime_async._core.store import get_store
from realtime_async._web.terminal import TerminalRenderer
from realtime_async.async_manager import AsyncManager
from realtime_async.exceptions import PublicTaskError

#: Seconds between two reads of a followed task's record.
POLL_INTERVAL = 0.2
INTERRUPTED = 130  # the shell's code for a process stopped by Ctrl-C


class Command(BaseCommand):
    help = "Launch one of the demo's tasks; --follow shows its progress until it ends, --inline runs it here."

    def add_arguments(self, parser):
        parser.add_argument("kind", choices=sorted(KINDS))
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--follow", action="store_true", help="Show the task's progress and log until it ends.")
        mode.add_argument("--inline", action="store_true", help="Run the worker here, without Celery (terminal mode).")
        parser.add_argument(
            "--timeout", type=float, default=3600.0, help="Stop following after this many seconds (default: 3600)."
        )

    def handle(self, *args, kind, follow, inline, timeout, **options):
        # The renderer redraws with carriage returns: it writes to the raw stream, not Django's line wrapper.
        renderer = TerminalRenderer(getattr(self.stderr, "_out", sys.stderr))
        if inline and kind in GROUPS:
            raise CommandError(f"{kind!r} is a group of Celery tasks run in parallel: launch it, with --follow.")
        if inline:
            code = self._inline(kind, renderer)
        else:
            try:
                task_name = launch_kind(kind)
            except Exception as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(f"Launched {task_name} (staff can watch it at /tasks/)")
            code = self._follow(task_name, renderer, timeout) if follow else 0
        if code:
            sys.exit(code)

    def _inline(self, kind, renderer):
        func, args, options = task_for(kind)
        try:
            result = AsyncManager.run_inline(
                func, *args, title=options.get("title"), stages=options.get("stages"), stream=renderer.stream
            )
        except PublicTaskError:
            return 1  # the final line said why; no traceback for an error meant for people
        except KeyboardInterrupt:
            return INTERRUPTED
        if isinstance(result, ResultLink):  # what the widget shows as a link, as a line
            self.stdout.write(f"{result.label or 'Open the result'}: {result.url}")
        else:
            self.stdout.write(f"Result: {json.dumps(result, default=str)}")
        return 0

    def _follow(self, task_name, renderer, timeout):
        manager = AsyncManager()
        log = _LogReader(task_name, renderer)
        deadline = time.monotonic() + timeout
        try:
            while True:
                record = manager.get_progress(task_name)
                if record is None:
                    renderer.close()
                    renderer.note(f"Task {task_name} is unknown (expired, or cleaned up).")
                    return 1
                log.show_new(record)
                if is_final(record):
                    renderer.end(record)
                    return 0 if record["state"] == "success" else 1
                renderer.show(record)
                if time.monotonic() >= deadline:
                    renderer.close()
                    renderer.note(f"Still {record['state']} after {timeout:g} s; stopped following {task_name}.")
                    return 1
                time.sleep(POLL_INTERVAL)
        except KeyboardInterrupt:
            renderer.close()
            renderer.note(f"Stopped following {task_name}; the task goes on (watch or cancel it at /tasks/).")
            return INTERRUPTED


class _LogReader:
    """The task's log lines not shown yet, read from the store when the record says there are new ones."""

    def __init__(self, task_name, renderer):
        self.task_name = task_name
        self.renderer = renderer
        self.after = 0
        self.broken = False

    def show_new(self, record):
        last = (record.get("log") or {}).get("last") or 0
        if self.broken or last <= self.after:
            return
        try:
            read = get_store().read_log(self.task_name, self.after)
        except Exception as exc:  # following goes on without the log
            self.broken = True
            self.renderer.note(f"The task's log cannot be read ({type(exc).__name__}: {exc}).")
            return
        if read.dropped > self.after:
            self.renderer.note(f"({read.dropped - self.after} older log lines were not kept)")
        for raw in read.lines:
            self.renderer.log(json.loads(raw))
        self.after = max(self.after, read.last)
