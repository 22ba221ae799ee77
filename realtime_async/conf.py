"""The one place that reads the ``REALTIME_ASYNC`` setting.

Every key is optional; unknown keys raise ``ImproperlyConfiguredError`` so a
misspelt setting fails loudly instead of being ignored. Values are read once
and cached until Django's ``setting_changed`` signal says otherwise.

========================== =============================================== ==========
Key                        Meaning                                         Default
========================== =============================================== ==========
ASYNC_MANAGER_CLASS_PATH   ``AsyncManager`` subclass used everywhere        the base class
CACHE_ALIAS                cache holding state, locks and heartbeats        ``"default"``
                           (and naming their keys, with ``SHARDS`` too)
SHARDS                     Redis servers of the state instead of the        ``None``
                           cache's (a list in channels_redis' ``hosts``
                           format; Sentinel services too; see
                           ``_core/store/shards.py`` and the README)
CHANNEL_LAYER_ALIAS        channel layer used for broadcasts                ``"default"``
PROGRESS_TTL               seconds a non-final state lives without updates  ``3600``
FINAL_STATE_TTL            seconds a final state is kept                    ``86400``
LOCK_TTL                   seconds a conflict lock lives unless renewed     ``3600``
QUEUED_TIMEOUT             seconds a queued task may wait before ``lost``   ``86400``
HEARTBEAT_INTERVAL         seconds between a running task's heartbeats      ``10``
HEARTBEAT_TIMEOUT          seconds without heartbeat before ``lost``        ``3 * HEARTBEAT_INTERVAL``
PROGRESS_RATE              max state writes and broadcasts a second a task  ``10``
WATCH_TOKEN_MAX_AGE        seconds a signed watch token stays valid         ``3600``
MAX_SUBSCRIPTIONS          task subscriptions per WebSocket connection      ``50``
MAX_MESSAGE_BYTES          largest client WebSocket message accepted        ``4096``
MAX_MESSAGES_PER_SECOND    sustained client message rate per connection    ``20``
MAX_CONNECTIONS_PER_USER   WebSocket connections and event streams per      ``20``
                           user (or client address) per process
POLL_INTERVAL              seconds between HTMX polls of the widget         ``1.0``
FAST_BROADCAST             the write script publishes each record itself    ``True``
                           (see ``_core.publishing``)
GROUP_MAX_PARTS            parts one group may have                        ``10000``
LOG_MAX_LINES              log lines kept per task (oldest dropped)        ``500``
LOG_MAX_BYTES              bytes of log lines kept per task                 ``65536``
STALLED_CLOSE_AFTER        seconds a WebSocket client may read nothing      ``10``
                           while updates wait before it is closed (4408;
                           daphne and uvicorn; None: never); an event
                           stream's too, behind ``ProgressHttpRouter``
SSE_HEARTBEAT              seconds between an event stream's heartbeats     ``15``
SSE_MAX_BYTES              bytes one event stream sends before it ends      ``1048576``
                           (the browser reconnects at once and resumes)
FILE_STORAGE_ALIAS         storage (``STORAGES``) of attached files         ``"default"``
FILE_MAX_BYTES             largest file a task may attach                   ``52428800``
FILE_MAX_PER_TASK          files one task may attach                        ``10``
FILE_RETENTION             seconds an attached file and its download URL    ``86400``
                           last; cleanup deletes it after
========================== =============================================== ==========
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from django.conf import settings

from realtime_async.exceptions import ImproperlyConfiguredError

__all__ = ["DEFAULT_MANAGER_CLASS_PATH", "Settings", "get_settings", "reset_on_setting_changed"]

#: The manager class used where ``ASYNC_MANAGER_CLASS_PATH`` names none.
DEFAULT_MANAGER_CLASS_PATH = "realtime_async.async_manager.AsyncManager"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Parsed ``REALTIME_ASYNC`` values; see the module docstring."""

    async_manager_class_path: str = DEFAULT_MANAGER_CLASS_PATH
    cache_alias: str = "default"
    #: The store's own Redis servers (``_core.store.shards``); None: the cache's.
    shards: Any = None
    channel_layer_alias: str = "default"
    progress_ttl: float = 3600
    final_state_ttl: float = 86400
    lock_ttl: float = 3600
    queued_timeout: float = 86400
    heartbeat_interval: float = 10
    #: Derived as ``3 * heartbeat_interval`` by ``get_settings`` when not given.
    heartbeat_timeout: float = 30
    progress_rate: float = 10
    watch_token_max_age: float = 3600
    max_subscriptions: int = 50
    max_message_bytes: int = 4096
    max_messages_per_second: float = 20
    max_connections_per_user: int = 20
    poll_interval: float = 1.0
    fast_broadcast: bool = True
    group_max_parts: int = 10000
    log_max_lines: int = 500
    log_max_bytes: int = 65536
    #: Seconds a connection's transport may stay full before it is closed with 4408 (None: never).
    stalled_close_after: float | None = 10.0
    #: Server-Sent Events (``_delivery.events``): a comment line this often keeps proxies from closing the stream.
    sse_heartbeat: float = 15.0
    #: Bytes one stream sends before it ends (the browser resumes): what any server buffers for one client at most.
    sse_max_bytes: int = 1024 * 1024
    #: Attached files (``attach_file``): where they are kept, their limits, how long they last.
    file_storage_alias: str = "default"
    file_max_bytes: int = 50 * 1024 * 1024
    file_max_per_task: int = 10
    file_retention: float = 86400

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type in ("float", "int") and (not isinstance(value, (int, float)) or value <= 0):
                raise ImproperlyConfiguredError(
                    f"REALTIME_ASYNC[{field.name.upper()!r}] must be a positive number, got {value!r}."
                )
        if self.shards is not None and (not isinstance(self.shards, (list, tuple)) or not self.shards):
            raise ImproperlyConfiguredError(
                f"REALTIME_ASYNC['SHARDS'] must be a non-empty list of Redis servers or None, got {self.shards!r}."
            )
        if not isinstance(self.fast_broadcast, bool):
            raise ImproperlyConfiguredError(
                f"REALTIME_ASYNC['FAST_BROADCAST'] must be True or False, got {self.fast_broadcast!r}."
            )
        stalled = self.stalled_close_after
        if stalled is not None and (isinstance(stalled, bool) or not isinstance(stalled, (int, float)) or stalled <= 0):
            raise ImproperlyConfiguredError(
                f"REALTIME_ASYNC['STALLED_CLOSE_AFTER'] must be a positive number or None, got {stalled!r}."
            )
        if not isinstance(self.file_storage_alias, str) or not self.file_storage_alias:
            raise ImproperlyConfiguredError(
                f"REALTIME_ASYNC['FILE_STORAGE_ALIAS'] must name one of STORAGES, got {self.file_storage_alias!r}."
            )
        if self.heartbeat_timeout <= self.heartbeat_interval:
            raise ImproperlyConfiguredError(
                "REALTIME_ASYNC['HEARTBEAT_TIMEOUT'] must be longer than HEARTBEAT_INTERVAL."
            )


_FIELDS = {field.name.upper(): field.name for field in dataclasses.fields(Settings)}


@functools.cache
def get_settings() -> Settings:
    """Return the parsed ``REALTIME_ASYNC`` setting."""
    raw: Any = getattr(settings, "REALTIME_ASYNC", {}) or {}
    if not isinstance(raw, dict):
        raise ImproperlyConfiguredError("REALTIME_ASYNC must be a dict.")
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise ImproperlyConfiguredError(
            f"Unknown REALTIME_ASYNC key(s) {', '.join(map(repr, unknown))}; "
            f"valid keys are {', '.join(sorted(_FIELDS))}."
        )
    values = {_FIELDS[key]: value for key, value in raw.items()}
    if "heartbeat_timeout" not in values:
        interval = values.get("heartbeat_interval", Settings.heartbeat_interval)
        if isinstance(interval, (int, float)):  # else __post_init__ says what is wrong with it
            values["heartbeat_timeout"] = 3 * interval
    return Settings(**values)


def reset_on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    """Forget the cached settings; connected in ``AppConfig.ready`` (beside the store's own reset)."""
    if setting == "REALTIME_ASYNC":
        get_settings.cache_clear()
