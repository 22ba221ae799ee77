"""``tune_gc``: what it does to the collector of the process that calls it.

Each case runs in a fresh interpreter: the collector is process-wide, and a
frozen heap cannot be given back to the test process's later tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from realtime_async.routing import GC_THRESHOLD, tune_gc


def _after(call: str) -> dict[str, object]:
    """The collector's state in a fresh interpreter set up as ``asgi.py`` is, before and after ``call``."""
    script = (
        "import gc, json, weakref, django\n"
        "django.setup()\n"
        "from realtime_async.routing import tune_gc\n"
        "before = {'threshold': gc.get_threshold(), 'frozen': gc.get_freeze_count()}\n"
        "class Node: pass\n"
        "node = Node(); node.self = node; ref = weakref.ref(node); del node  # a cycle only a collection frees\n"
        f"{call}\n"
        "print(json.dumps({'before': before, 'threshold': gc.get_threshold(), 'frozen': gc.get_freeze_count(),"
        " 'cycle_freed': ref() is None}))\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.project.settings"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_it_freezes_what_is_alive_and_collects_the_youngest_generation_less_often():
    state = _after("tune_gc()")
    before = state["before"]
    assert before["frozen"] == 0
    assert state["frozen"] > 1000  # the modules loaded so far: Django's, realtime_async's
    assert state["cycle_freed"]  # collected before the freeze, not kept for the life of the process
    assert state["threshold"] == [GC_THRESHOLD, *before["threshold"][1:]]
    assert before["threshold"][0] < GC_THRESHOLD


def test_its_parts_can_be_left_out():
    state = _after("tune_gc(freeze=False)")
    assert state["frozen"] == 0
    assert state["threshold"][0] == GC_THRESHOLD
    state = _after("tune_gc(threshold=None)")
    assert state["frozen"] > 1000
    assert state["threshold"] == state["before"]["threshold"]
    state = _after("tune_gc(threshold=50_000)")
    assert state["threshold"][0] == 50_000


@pytest.mark.parametrize("threshold", [0, -1])
def test_a_threshold_that_would_turn_the_collector_off_is_refused(threshold):
    with pytest.raises(ValueError, match="at least 1"):
        tune_gc(threshold=threshold, freeze=False)
