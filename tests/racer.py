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
