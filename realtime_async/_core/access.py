"""Who may see and cancel a task: the one place every transport asks.

The rule: a viewer may see a task when the manager's ``can_view`` says so for
their session's user, or when they hold a valid watch token for that task. A
watch token shows a task; it never cancels it and never opens a user's feed.
Unknown and forbidden tasks get the same answer everywhere, so task names
cannot be probed. Store errors propagate: each transport answers them its own
way (503, close code 4503).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Literal

from django.conf import settings
from django.core import signing

from realtime_async._core.naming import validate_task_name
from realtime_async._core.records import StateRecord, is_final
from realtime_async._core.store import get_store
from realtime_async.conf import get_settings

if TYPE_CHECKING:
    from realtime_async.async_manager import AsyncManager

__all__ = [
    "WATCH_SALT",
    "CancelOutcome",
    "cancel_outcome",
    "check_watch_token",
    "make_watch_token",
    "may_view",
    "read_visible",
    "visible_record",
]

CancelOutcome = Literal["accepted", "forbidden", "not_found"]
#: The salt of watch tokens: a token signed for anything else never shows a task.
WATCH_SALT = "realtime_async.watch"


def make_watch_token(task_name: str) -> str:
    """A signed token that lets its bearer watch ``task_name`` until ``WATCH_TOKEN_MAX_AGE`` passes."""
    return signing.TimestampSigner(salt=WATCH_SALT).sign(validate_task_name(task_name))


def check_watch_token(token: str, task_name: str) -> bool:
    """Whether ``token`` is a valid, unexpired watch token for ``task_name``.

    A signature, once checked, is remembered with its timestamp (``_SIGNED``,
    bounded): a viewer polling with a token every second pays for the HMAC once,
    and its age is still checked on every call.
    """
    key = (token, settings.SECRET_KEY)
    signed = _SIGNED.get(key)
    if signed is None:
        signer = signing.TimestampSigner(salt=WATCH_SALT)
        try:
            # The base class's unsign checks the signature and keeps "<value>:<timestamp>" (no age check yet).
            value, _, stamp = super(signing.TimestampSigner, signer).unsign(token).rpartition(":")
            signed = (value, signing.b62_decode(stamp))
        except (signing.BadSignature, TypeError, ValueError):
            return False
        if len(_SIGNED) >= _SIGNED_MAX:
            del _SIGNED[next(iter(_SIGNED))]
        _SIGNED[key] = signed
    value, issued = signed
    return value == task_name and time.time() - issued <= get_settings().watch_token_max_age


#: Watch tokens whose signature was checked: (token, SECRET_KEY) -> (task name, signing time); oldest dropped first.
_SIGNED: dict[tuple[str, str], tuple[str, int]] = {}
_SIGNED_MAX = 4096


def may_view(
    manager: AsyncManager, user: Any, task_name: str, record: StateRecord, *, token: str | None = None
) -> bool:
    """Whether ``user`` (or the watch ``token``) may see the task of ``record``."""
    if manager.can_view(user, record):
        return True
    return bool(token) and manager.check_watch_token(str(token), task_name)


def read_visible(
    manager: AsyncManager, user: Any, task_name: str, *, token: str | None = None
) -> tuple[str, StateRecord] | None:
    """The stored JSON and the record of ``task_name`` when the viewer may see it, else None."""
    try:
        validate_task_name(task_name)
    except ValueError:
        return None
    stored = get_store().read_state(task_name)
    if stored is None:
        return None
    record: StateRecord = json.loads(stored)
    return (stored, record) if may_view(manager, user, task_name, record, token=token) else None


def visible_record(manager: AsyncManager, user: Any, task_name: str, *, token: str | None = None) -> StateRecord | None:
    """The record of ``task_name`` when the viewer may see it, else None."""
    found = read_visible(manager, user, task_name, token=token)
    return found[1] if found is not None else None


def cancel_outcome(manager: AsyncManager, user: Any, task_name: str, *, token: str | None = None) -> CancelOutcome:
    """Cancel ``task_name`` as ``user`` would: ``accepted``, ``forbidden`` or ``not_found``.

    ``not_found`` for unknown tasks and tasks the user may not see (the same
    answer, so names cannot be probed); ``forbidden`` when they may see it but
    ``can_cancel`` says no. A valid watch ``token`` shows a task without letting
    its bearer cancel it: ``forbidden``. A task already final is ``accepted``
    and stays as it is. Synchronous: it reads the cache and may revoke the
    Celery task.
    """
    record = manager.get_progress(task_name)  # None for an invalid name too
    if record is None:
        return "not_found"
    if not manager.can_view(user, record):
        return "forbidden" if token and manager.check_watch_token(token, task_name) else "not_found"
    if not manager.can_cancel(user, record):
        return "forbidden"
    if is_final(record) or manager.cancel(task_name, user=user):
        return "accepted"
    # cancel() refused after all: the task ended meanwhile (nothing left to do) or went away.
    record = manager.get_progress(task_name)
    if record is None:
        return "not_found"
    return "accepted" if is_final(record) else "forbidden"
