"""Benchmarks of realtime_async against its anchors: ``.venv/bin/python -m bench [--quick]``.

See ``docs/benchmarks.md`` for what is measured and the latest results.
"""
