"""A command-line driver for fault tests whose services use a private Redis.

The test process's own settings point at the shared Redis; this runs in a
subprocess whose ``RA_TEST_REDIS_URL`` names the private one::

    python -m tests.fault_driver launch tests.testapp.workers.steps '[5]' '{"delay": 0.1}'
    python -m tests.fault_driver state <task>
    python -m tests.fault_driver token <task>
    python -m tests.fault_driver cleanup
"""

from __future__ import annotations

import json
import os
import sys


def main(argv: list[str]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.project.settings")
    import django

    django.setup()
    from realtime_async.async_manager import AsyncManager

    manager = AsyncManager.resolve_manager()
    command, *args = argv
    if command == "launch":
        func, positional, keywords = args[0], json.loads(args[1]), json.loads(args[2]) if len(args) > 2 else {}
        conflict_ids = keywords.pop("_conflict_ids", None)
        name = keywords.pop("_task_name", None)
        print(
            manager.launch_async_task(
                func, *positional, task_kwargs=keywords, conflict_ids=conflict_ids, task_name=name
            )
        )
    elif command == "launch_many":
        # launch_many N: every tenth fails on purpose; prints [[name, token, expected state], ...]
        out = []
        for i in range(int(args[0])):
            failing = i % 10 == 9
            func = "tests.testapp.workers.fail_public" if failing else "tests.testapp.workers.steps"
            name = manager.launch_async_task(
                func, *([] if failing else [3]), task_kwargs={} if failing else {"delay": 0.01}
            )
            out.append([name, manager.make_watch_token(name), "failure" if failing else "success"])
        print(json.dumps(out))
    elif command == "states":
        print(
            json.dumps({name: (manager.get_progress(name) or {}).get("state") for name in json.loads(sys.stdin.read())})
        )
    elif command == "state":
        print(json.dumps(manager.get_progress(args[0])))
    elif command == "token":
        print(manager.make_watch_token(args[0]))
    elif command == "cleanup":
        print(json.dumps(manager.cleanup_completed_tasks()))
    elif command == "events":
        from tests.testapp.managers import recorded_events

        print(json.dumps([event["event"] for event in recorded_events(args[0])]))
    elif command == "conflicts":
        print(json.dumps(manager.check_conflict(json.loads(args[0]))))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
