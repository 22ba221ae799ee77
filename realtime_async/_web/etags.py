"""The ETag of a polling answer: it names one state of one task for one viewer, and proves who it was issued to.

A tag is ``"<seq>-<issued>-<mac>"``: the record's ``seq``, the time it was
issued (hex seconds) and an HMAC (``SECRET_KEY``) over the task name, the run
(``created_at``), ``seq``, the representation (``variant``: JSON and the
``log_after`` asked for, or the htmx fragment and its query string) and the
viewer's credentials (the session cookie and the watch token). So a tag
presented back is only valid for the same state, the same representation and
the same credentials that received it.

That is what lets ``ProgressHttpRouter`` answer an unchanged poll with a
``304`` from one store read, without loading the session: a valid tag proves
the client was shown this very state with these credentials, and a ``304``
tells it nothing more. It does so for ``FAST_PATH_MAX_AGE`` seconds after the
tag was issued; after that (or at the next change of state) the poll goes
through Django again, which asks ``can_view`` and issues a fresh tag, so a
revoked permission or an ended session shows within a minute.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from django.utils.crypto import constant_time_compare

__all__ = ["FAST_PATH_MAX_AGE", "credentials", "issue", "json_variant", "matches"]

_SALT = "realtime_async.poll-etag"
#: Seconds the fast path honours a tag without asking Django (the session, ``can_view``) again.
FAST_PATH_MAX_AGE = 60


def credentials(session_cookie: str | None, token: str | None) -> str:
    """What identifies the viewer of a poll: the session cookie's value and the watch token, as sent."""
    return f"{session_cookie or ''}\0{token or ''}"


def json_variant(log_after: int | None) -> str:
    """The representation of a JSON poll: the state, and the log lines above ``log_after``."""
    return f"json:{log_after}"


def _mac(task: str, record: Mapping[str, Any], variant: str, viewer: str, issued: int) -> str:
    seed = f"{task}\0{record.get('created_at')}\0{record.get('seq')}\0{variant}\0{viewer}\0{issued}"
    return hmac.new(_key(settings.SECRET_KEY), seed.encode(), hashlib.sha256).hexdigest()[:24]


@functools.lru_cache(maxsize=4)
def _key(secret: str) -> bytes:
    """The HMAC key, as ``salted_hmac`` derives it from the salt and ``SECRET_KEY`` (once, not per tag)."""
    return hashlib.sha256((_SALT + secret).encode()).digest()


def issue(task: str, record: Mapping[str, Any], variant: str, viewer: str, *, now: float | None = None) -> str:
    """A new tag for ``record`` of ``task`` as ``variant``, shown to ``viewer`` (see ``credentials``)."""
    issued = int(time.time() if now is None else now)
    return f'"{record.get("seq")}-{issued:x}-{_mac(task, record, variant, viewer, issued)}"'


def matches(
    tags: Iterable[str],
    task: str,
    record: Mapping[str, Any],
    variant: str,
    viewer: str,
    *,
    max_age: float | None = None,
    now: float | None = None,
) -> str | None:
    """The first of ``tags`` (an ``If-None-Match``'s, weak or strong) issued for this state and viewer, else None.

    With ``max_age``, a tag issued longer ago than that does not count.
    """
    seq = str(record.get("seq"))
    moment = time.time() if now is None else now
    for tag in tags:
        parts = tag.removeprefix("W/").strip('"').split("-")
        if len(parts) != 3 or parts[0] != seq or not 0 < len(parts[1]) <= 12:
            continue
        try:
            issued = int(parts[1], 16)
        except ValueError:
            continue
        if max_age is not None and not -5 <= moment - issued <= max_age:
            continue
        if constant_time_compare(parts[2], _mac(task, record, variant, viewer, issued)):
            return tag.removeprefix("W/")
    return None
