"""Conflict ids: ``{"app_label.Model": {pk, ...}}`` turned into lock ids and back.

A lock id is ``"app_label.model:pk"``: the model label lower-cased (Django's
labels are case-insensitive) and the primary key as text, so ``5`` and ``"5"``
are the same object and UUIDs match whatever form they were given in.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["ConflictIds", "from_lock_ids", "to_lock_ids"]

ConflictIds = Mapping[str, Iterable[Any]]

_LABEL_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*")
_MAX_PK_LENGTH = 255


def _pk_text(pk: object) -> str:
    if isinstance(pk, bool) or pk is None:
        raise ValueError(f"Invalid primary key {pk!r} in conflict ids.")
    if isinstance(pk, uuid.UUID):
        return str(pk)
    if isinstance(pk, int):
        return str(pk)
    if isinstance(pk, str) and 0 < len(pk) <= _MAX_PK_LENGTH:
        try:
            return str(uuid.UUID(pk))  # the canonical spelling of a UUID given as text
        except ValueError:
            return pk
    raise ValueError(f"Invalid primary key {pk!r} in conflict ids: use int, str or UUID values.")


def to_lock_ids(conflict_ids: ConflictIds | None) -> list[str]:
    """Sorted, de-duplicated lock ids; ``ValueError`` names what is wrong."""
    if not conflict_ids:
        return []
    if not isinstance(conflict_ids, Mapping):
        raise ValueError('conflict_ids must be a dict like {"app_label.Model": {pk, ...}}.')
    lock_ids: set[str] = set()
    for label, pks in conflict_ids.items():
        if not isinstance(label, str) or not _LABEL_RE.fullmatch(label):
            raise ValueError(f'Invalid model label {label!r} in conflict ids: use "app_label.Model".')
        if isinstance(pks, (str, bytes)) or not isinstance(pks, Iterable):
            raise ValueError(f"Conflict ids for {label!r} must be a collection of primary keys.")
        lock_ids.update(f"{label.lower()}:{_pk_text(pk)}" for pk in pks)
    return sorted(lock_ids)


def from_lock_ids(holders: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """``{"app.model:pk": task}`` to ``{"app.model": {"pk": task}}``."""
    result: dict[str, dict[str, str]] = {}
    for lock_id, task in holders.items():
        label, _, pk = lock_id.partition(":")
        result.setdefault(label, {})[pk] = task
    return result
