"""Stages: a task's named steps, each with its own bar, combined by weight into the task's percent.

Declared at launch (``launch_async_task(..., stages=["Load", "Process", "Save"])``,
or ``{"Load": 1, "Process": 3, "Save": 1}`` for weights) or by the worker
(``manager.declare_stages``), entered with ``with manager.stage(task_key, "Process"):``.
The record carries every stage's state and percent; ``update_progress`` inside a
stage moves that stage's bar, and the record's ``percent`` is the weighted sum.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from realtime_async._core.records import MAX_STAGE_NAME_LENGTH, Stage, StageState, StateRecord
from realtime_async.exceptions import TaskCancelled

if TYPE_CHECKING:
    from realtime_async._writing.reporting import Reporting

__all__ = ["StageSpec", "enter", "leave", "make_stages", "overall_percent", "stage_context"]

#: What ``stages=`` accepts: names in order (equal weights), or names with their weights.
StageSpec = Iterable[str] | Mapping[str, float]


def _name(value: object) -> str:
    text = " ".join(str(value).split())[:MAX_STAGE_NAME_LENGTH]
    if not text:
        raise ValueError("A stage needs a name.")
    return text


def make_stages(spec: StageSpec | None) -> list[Stage] | None:
    """The record's ``stages`` for ``spec``, every one pending; ``ValueError`` for duplicates or bad weights."""
    if spec is None:
        return None
    if isinstance(spec, str):
        raise ValueError('stages must be a list of names or a dict of names and weights, e.g. ["Load", "Save"].')
    pairs = list(spec.items()) if isinstance(spec, Mapping) else [(name, 1.0) for name in spec]
    stages: list[Stage] = []
    for raw, weight in pairs:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
            raise ValueError(f"The weight of stage {raw!r} must be a positive number, got {weight!r}.")
        stages.append({"name": _name(raw), "state": "pending", "weight": float(weight), "percent": None})
    names = [stage["name"] for stage in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"Stage names must differ: {names!r}.")
    return stages or None


def overall_percent(stages: list[Stage]) -> float:
    """The stages combined by weight: a done stage counts whole, any other by its own percent."""
    total = sum(stage["weight"] for stage in stages)
    done = sum(
        stage["weight"] * (1.0 if stage["state"] == "done" else (stage["percent"] or 0.0) / 100) for stage in stages
    )
    return round(min(100.0, done * 100.0 / total), 2) if total else 0.0


def _find(record: StateRecord, name: str) -> Stage:
    stages = record.get("stages")
    if not stages:
        raise ValueError(f"Task {record.get('task')!r} has no stages: declare them at launch or with declare_stages().")
    for stage in stages:
        if stage["name"] == name:
            return stage
    raise ValueError(f"Unknown stage {name!r}; the stages of this task are {[s['name'] for s in stages]!r}.")


def enter(record: StateRecord, name: str) -> None:
    """Make ``name`` the active stage (another still active counts as done); its bar starts empty."""
    target = _find(record, _name(name))
    for stage in record.get("stages") or ():
        if stage["state"] == "active" and stage is not target:
            stage["state"], stage["percent"] = "done", 100.0
    target["state"], target["percent"] = "active", 0.0
    record["stage"], record["current"], record["total"], record["eta"] = target["name"], None, None, None
    record["percent"] = overall_percent(record.get("stages") or [])


def leave(record: StateRecord, name: str, state: StageState) -> None:
    """End stage ``name`` as ``state`` (done, failed or cancelled)."""
    target = _find(record, _name(name))
    target["state"] = state
    if state == "done":
        target["percent"] = 100.0
    if record.get("stage") == target["name"]:
        record["stage"] = None
    record["percent"] = overall_percent(record.get("stages") or [])


@contextlib.contextmanager
def stage_context(manager: Reporting, task_key: str | None, name: str) -> Iterator[None]:
    """The body of ``AsyncManager.stage``: active inside, then done, failed or cancelled."""
    manager._stage_change(task_key, name, None)
    try:
        yield
    except TaskCancelled:
        manager._stage_change(task_key, name, "cancelled")
        raise
    except BaseException:
        manager._stage_change(task_key, name, "failed")
        raise
    manager._stage_change(task_key, name, "done")
