"""Groups: one parent task over many parts, each an ordinary worker call, aggregated in the store.

``AsyncManager.launch_async_group(parts, ...)`` records the parent (with the
conflict locks, once) and one part per entry, then enqueues the parts on
commit. Each part's write changes the parent's counts and weighted percent by
its own difference in the same atomic step (``_core/store/group.lua``), so a
part's ``update_progress`` costs the same whatever the group's size; the parent
is published at most ``PROGRESS_RATE`` times a second and ends when every part
ended (``continue``) or at the first part that failed (``fail_fast``, which
cancels the others). docs/architecture.md, "Groups", says why.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, Protocol, cast

from django.db import transaction
from django.utils.module_loading import import_string

from realtime_async._core.locks import ConflictIds, to_lock_ids
from realtime_async._core.naming import MAX_TASK_NAME_LENGTH, new_task_name, validate_task_name
from realtime_async._core.records import GROUP_STATES, MAX_STAGE_NAME_LENGTH, GroupCounts, GroupPolicy, StateRecord
from realtime_async._core.store import NewGroup, Store, WriteMode, get_store
from realtime_async._writing.launch import OnCommit, callable_path, default_title, title_text, user_info
from realtime_async._writing.stages import StageSpec, make_stages
from realtime_async._writing.writer import get_writer
from realtime_async.conf import get_settings

__all__ = [
    "POLICIES",
    "GroupKind",
    "GroupLauncher",
    "Part",
    "PlannedPart",
    "launch_group",
    "parent_stages",
    "plan_parts",
    "plan_then",
    "record_group",
]

POLICIES: tuple[GroupPolicy, ...] = ("continue", "fail_fast")
#: A group runs its parts side by side; a chain one after another.
GroupKind = Literal["group", "chain"]


@dataclasses.dataclass(frozen=True)
class Part:
    """One part of a group: a worker function (callable or dotted path) with its arguments.

    ``weight`` is its share of the parent's percent (any positive number; equal
    by default); ``title`` names it in the breakdown (default: the function's, as for a task).
    """

    func: str | Callable[..., Any]
    args: Sequence[Any] = ()
    kwargs: dict[str, Any] | None = None
    weight: float = 1.0
    title: str | None = None


@dataclasses.dataclass(frozen=True)
class PlannedPart:
    """A part checked and named, ready to be recorded and enqueued."""

    name: str
    func_path: str
    args: list[Any]
    kwargs: dict[str, Any]
    weight: float
    title: str


def _plan(raw: Part | str | Callable[..., Any], name: str, what: str) -> PlannedPart:
    part = raw if isinstance(raw, Part) else Part(raw)
    weight = part.weight
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < float("inf"):
        raise ValueError(f"{what}: the weight must be a positive number, got {weight!r}.")
    path = callable_path(part.func)
    try:
        import_string(path)
    except ImportError as exc:
        raise ValueError(f"{what}: {path!r} cannot be imported ({exc}).") from None
    title = title_text(part.title) or default_title(part.func)
    return PlannedPart(name, path, list(part.args), dict(part.kwargs or {}), float(weight), title)


def plan_then(
    then: Part | str | Callable[..., Any] | None, parent: str, parts: list[PlannedPart]
) -> PlannedPart | None:
    """The fan-in step, checked like a part; its weight defaults to the parts' mean (it counts as one more part)."""
    if then is None:
        return None
    if not isinstance(then, Part):
        then = Part(then, weight=sum(part.weight for part in parts) / len(parts))
    return _plan(then, f"{parent}.then", "then")


def plan_parts(parts: Iterable[Part | str | Callable[..., Any]], parent: str) -> list[PlannedPart]:
    """Check every part before anything is reserved or enqueued; ``ValueError`` says which part and why."""
    given = list(parts)
    limit = get_settings().group_max_parts
    if len(parent) + 1 + len(str(limit)) > MAX_TASK_NAME_LENGTH:
        raise ValueError(f"launch_async_group(): the parent's name {parent!r} leaves no room for its parts' names.")
    if not given:
        raise ValueError("launch_async_group(): a group needs at least one part.")
    if len(given) > limit:
        raise ValueError(f"launch_async_group(): {len(given)} parts, more than GROUP_MAX_PARTS ({limit}).")
    return [_plan(raw, f"{parent}.{index}", f"Part {index}") for index, raw in enumerate(given)]


def record_group(
    parent: StateRecord,
    planned: list[PlannedPart],
    then: PlannedPart | None,
    policy: GroupPolicy,
    meta: dict[str, Any],
    store: Store,
    kind: GroupKind,
) -> None:
    """Write every part's record (queued, with its ``part``; the fan-in step last) and set up the aggregate."""
    now = time.time()
    records: list[tuple[StateRecord, dict[str, Any]]] = []
    for index, part in enumerate([*planned, *([then] if then else [])]):
        record: StateRecord = {
            "task": part.name,
            "title": part.title,
            "state": "queued",
            "owner": parent.get("owner"),
            "created_at": now,
            "updated_at": now,
            "part": {"group": parent["task"], "index": index, "weight": part.weight},
        }
        part_meta = {**meta, "task_kwargs": part.kwargs, "func": part.func_path, "locks": []}
        part_meta.pop("pending", None)
        records.append((record, part_meta))
    for (record, _), created in zip(records, get_writer().create_quietly(records), strict=True):
        if not created.written:
            raise ValueError(f"Task name {record['task']!r} belongs to a task that has not finished.")
    weights = {part.name: (part.weight, part.title) for part in planned}
    fan_in = (then.name, then.weight, then.title) if then else None
    store.create_group(NewGroup(parent["task"], weights, policy, fan_in, kind))


def _unique(names: list[str]) -> list[str]:
    """Stage names from titles, cut as stages cut them and made distinct ("Load", "Load (2)")."""
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        base = " ".join(name.split())[: MAX_STAGE_NAME_LENGTH - 6] or "-"
        seen[base] = seen.get(base, 0) + 1
        unique.append(base if seen[base] == 1 else f"{base} ({seen[base]})")
    return unique


def parent_stages(
    title: str, planned: list[PlannedPart], then: PlannedPart | None, kind: GroupKind
) -> StageSpec | None:
    """A chain's steps (and fan-in step) as stages; a group with a fan-in step: its parts, then the step."""
    if kind == "chain":
        steps = [*planned, *([then] if then else [])]
        return dict(zip(_unique([step.title for step in steps]), (step.weight for step in steps), strict=True))
    if then is not None:
        first, last = _unique([title, then.title])
        return {first: sum(part.weight for part in planned), last: then.weight}
    return None


def _spec(part: PlannedPart, extra: dict[str, Any], *, results: bool = False) -> dict[str, Any]:
    """How ``Ending`` enqueues a part later: its task, function, arguments, and the launch's manager and options."""
    spec = {"task": part.name, "func": part.func_path, "args": part.args, "kwargs": part.kwargs, **extra}
    return {**spec, "results": True} if results else spec


class GroupLauncher(Protocol):
    """What ``launch_group`` needs of the manager."""

    def _refuse_unfinished(self, task_name: str) -> None: ...
    def _reserve(self, store: Store, task_name: str, lock_ids: list[str]) -> None: ...
    def _forget(self, task_name: str) -> None: ...
    def _revoke(self, task_names: list[str]) -> None: ...
    def _emit(self, event: Any, task_name: str, *, meta: dict[str, Any] | None = None, **payload: Any) -> None: ...


def launch_group(
    manager: GroupLauncher,
    parts: Iterable[Part | str | Callable[..., Any]],
    enqueue: Callable[[PlannedPart], None],
    *,
    task_name: str | None,
    title: str | None,
    conflict_ids: ConflictIds | None,
    user: Any,
    affected_objects: Iterable[Any] | None,
    on_failure: GroupPolicy,
    then: Part | str | Callable[..., Any] | None = None,
    enqueue_meta: dict[str, Any] | None = None,
    kind: GroupKind = "group",
) -> str:
    """The body of ``launch_async_group`` and ``launch_async_chain``: check, record, reserve, enqueue on commit.

    A group enqueues every part; a chain its first step, the others waiting in the
    parent's meta (``pending``) until the step before them ended (``Ending``).
    """
    if on_failure not in POLICIES:
        raise ValueError(f"launch_async_group(): on_failure must be one of {', '.join(POLICIES)}, got {on_failure!r}.")
    parent = validate_task_name(task_name) if task_name is not None else new_task_name("group")
    planned = plan_parts(parts, parent)  # nothing reserved or enqueued before every part passed
    step = plan_then(then, parent, planned)
    lock_ids = to_lock_ids(conflict_ids)
    owner = user_info(user)
    meta = {
        "user": owner,
        "affected_objects": [str(obj) for obj in affected_objects or ()],
        "task_kwargs": {},
        "func": None,
        "locks": lock_ids,
    }
    extra = enqueue_meta or {}
    later = planned[1:] if kind == "chain" else []
    pending = {part.name: _spec(part, extra) for part in later}
    if step is not None:
        pending[step.name] = _spec(step, extra, results=True)
    meta["pending"] = pending  # what ``Ending`` enqueues when its time comes
    store = get_store()
    if lock_ids:
        manager._refuse_unfinished(parent)
        manager._reserve(store, parent, lock_ids)
    now, count = time.time(), len(planned)
    group_title = title_text(title) or f"{planned[0].title} ({count})"
    counts = dict.fromkeys(GROUP_STATES, 0) | {"queued": count}
    record: StateRecord = {
        "task": parent,
        "title": group_title,
        "stages": make_stages(parent_stages(group_title, planned, step, kind)),
        "state": "queued",
        "owner": owner["id"] if owner else None,
        "created_at": now,
        "updated_at": now,
        "group": {"parts": count, "policy": on_failure, "counts": cast(GroupCounts, counts)},
    }
    names = [parent, *(part.name for part in planned), *([step.name] if step else [])]

    def forget() -> None:
        for name in names:
            manager._forget(name)

    try:
        created = get_writer().commit(record, mode=WriteMode.CREATE, meta=meta)
        if not created.written:
            raise ValueError(f"Task name {parent!r} belongs to a task that has not finished.")
        record_group(record, planned, step, on_failure, meta, store, kind)
        store.add_active_many(names)
    except BaseException:
        forget()
        raise
    queued = created.record()

    def enqueue_all() -> None:
        sent: list[str] = []
        try:
            for part in planned[:1] if kind == "chain" else planned:
                enqueue(part)
                sent.append(part.name)
        except BaseException:  # nothing of a group runs unless all of it was enqueued
            if sent:
                manager._revoke(sent)
            forget()
            raise
        manager._emit("create", parent, meta=meta, record=queued)

    if transaction.get_connection().in_atomic_block:
        transaction.on_commit(OnCommit(enqueue_all, forget))
    else:
        enqueue_all()
    return parent
