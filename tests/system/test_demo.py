"""The demo's smoke mode, from a fresh virtual environment, as a newcomer would run it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.services import ROOT


@pytest.mark.slow
def test_demo_smoke_from_a_fresh_virtualenv(tmp_path):
    env = {**os.environ, "VENV": str(tmp_path / "venv"), "PYTHON": sys.executable}
    for key in ("DJANGO_SETTINGS_MODULE", "REDIS_URL", "PYTHONPATH"):
        env.pop(key, None)  # the demo starts its own Redis and uses its own settings
    done = subprocess.run(
        [str(ROOT / "run.sh"), "demo", "--smoke"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=400
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "installing realtime_async[demo]" in done.stdout  # it really built a new environment
    assert "smoke: OK" in done.stdout
