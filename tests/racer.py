"""A lock racer run in a spawned process by tests/integration/test_store_locks.py."""

from __future__ import annotations


def race(index: int, rounds: int, barrier, results) -> None:
    import django

    django.setup()
    from realtime_async.async_manager import AsyncManager

    manager = AsyncManager()
    for r in range(rounds):
        base = r * 100
        # Every racer wants the shared object base+50 plus one of its own.
        conflict_ids = {"testapp.Thing": {base + 50, base + index}}
        barrier.wait(timeout=30)
        won = manager.add_conflict_ids(f"racer{index}-r{r}", conflict_ids)
        results.put((r, index, won))


def finish_last_parts(index: int, groups: list[str], barrier, results) -> None:
    """Finish part ``index`` of each group at the same moment as the other racer finishes its own."""
    import django

    django.setup()
    from realtime_async._core.store import get_store
    from realtime_async.async_manager import AsyncManager

    class CountingManager(AsyncManager):
        """Counts fan-in starts in Redis instead of enqueueing them."""

        def _enqueue(self, spec, args):
            get_store().client.rpush(f"{get_store().prefix}:test-then:{spec['task']}", json.dumps(args[0]))

    import json

    manager = CountingManager()
    for parent in groups:
        name = f"{parent}.{index}"
        record = manager.get_progress(name)
        barrier.wait(timeout=30)
        manager.finish(name, "success", result={"part": index}, base=record)
        results.put((parent, index))
