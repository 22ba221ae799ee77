"""Results of a task: its link and the files it attaches, stored through Django's storage API.

``attach_file`` copies the file to the storage named by ``FILE_STORAGE_ALIAS``
under ``realtime_async_files/<expires_at>-<random id>`` (``_core/results.py``) and
adds an entry to the record's ``files``; the entry's ``url`` is a signed
download URL of ``downloads.py``. Limits: ``FILE_MAX_BYTES`` per file and
``FILE_MAX_PER_TASK`` per task, each refused with a ``ValueError`` naming the
setting, before anything is kept. ``sweep`` (run by cleanup) deletes the files
whose ``FILE_RETENTION`` passed by listing the storage's folder: no index in
Redis to keep in step with the storage, and files outlive a record that
expired first. ``delete_files`` removes a task's files at once.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from typing import IO, Any

from django.core.files import File
from django.core.files.storage import Storage, storages
from django.urls import NoReverseMatch, reverse

from realtime_async._core.naming import validate_task_name
from realtime_async._core.records import FileInfo, StateRecord, is_final
from realtime_async._core.results import (
    FILES_DIRECTORY,
    ResultLink,
    clean_filename,
    content_type_for,
    expiry_of,
    make_link,
    sign_download,
    storage_name,
)
from realtime_async._core.store import get_store
from realtime_async.conf import get_settings
from realtime_async.exceptions import ImproperlyConfiguredError

__all__ = [
    "DOWNLOAD_URL_NAMES",
    "delete_file",
    "delete_files",
    "delete_final_task",
    "file_change",
    "link_change",
    "storage",
    "store_file",
    "sweep",
]

logger = logging.getLogger("realtime_async")

#: Tried in order to build download URLs: ``include("realtime_async.urls")``, then ``get_download_url()``.
DOWNLOAD_URL_NAMES = ("realtime_async:download", "async-download")
_CHUNK = 64 * 1024
#: Files up to this size are copied in memory before they reach the storage; larger ones go to a temporary file.
_SPOOL = 1024 * 1024


def storage() -> Storage:
    """The storage of attached files (``FILE_STORAGE_ALIAS``)."""
    return storages[get_settings().file_storage_alias]


def link_change(link: ResultLink) -> Callable[[StateRecord], None]:
    """The change ``set_result_link`` makes: the task's one link, checked now (``ValueError``)."""
    entry = make_link(link.url, link.label)

    def apply(record: StateRecord) -> None:
        record["links"] = [entry]

    return apply


def _download_url(task_name: str, file_id: str) -> str:
    token = sign_download(task_name, file_id)
    for name in DOWNLOAD_URL_NAMES:
        try:
            return reverse(name, kwargs={"signed": token})
        except NoReverseMatch:
            continue
    raise ImproperlyConfiguredError(
        "attach_file() needs the download URL: add include('realtime_async.urls') or "
        "AsyncManager.get_download_url() to your urlpatterns."
    )


def _too_large(name: str, size: int, limit: int) -> ValueError:
    return ValueError(f"attach_file(): {name!r} has {size} bytes; FILE_MAX_BYTES allows {limit}.")


def _copy(source: IO[Any], name: str, limit: int) -> tuple[IO[bytes], int]:
    """A copy of ``source`` (text is encoded as UTF-8) and its size; refused past ``limit`` bytes."""
    copy: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_SPOOL)  # noqa: SIM115 (closed by store_file)
    size = 0
    try:
        while chunk := source.read(_CHUNK):
            data = chunk.encode() if isinstance(chunk, str) else bytes(chunk)
            size += len(data)
            if size > limit:
                raise _too_large(name, size, limit)
            copy.write(data)
    except BaseException:
        copy.close()
        raise
    copy.seek(0)
    return copy, size


def store_file(
    task_name: str, path_or_file: Any, *, filename: str | None = None, content_type: str | None = None
) -> FileInfo:
    """Copy a file (a path, or a file object in binary or text mode) to the storage; return its record entry."""
    settings = get_settings()
    limit = settings.file_max_bytes
    if isinstance(path_or_file, (str, os.PathLike)):
        path = os.fspath(path_or_file)
        name = clean_filename(filename if filename is not None else os.path.basename(path))
        if os.path.getsize(path) > limit:
            raise _too_large(name, os.path.getsize(path), limit)
        with open(path, "rb") as source:
            copy, size = _copy(source, name, limit)
    elif callable(getattr(path_or_file, "read", None)):
        name = clean_filename(filename if filename is not None else os.path.basename(getattr(path_or_file, "name", "")))
        if getattr(path_or_file, "seekable", lambda: False)():
            path_or_file.seek(0)  # a buffer just written to stands at its end: the whole file is meant
        copy, size = _copy(path_or_file, name, limit)
    else:
        raise TypeError(f"attach_file(): give a path or a file object, got {type(path_or_file).__name__}.")
    with copy:
        file_id = secrets.token_hex(16)
        entry: FileInfo = {
            "id": file_id,
            "name": name,
            "size": size,
            "content_type": content_type_for(name, content_type),
            "url": _download_url(task_name, file_id),
            "expires_at": math.ceil(time.time() + settings.file_retention),
        }
        wanted = storage_name(entry)
        saved = storage().save(wanted, File(copy, name=name))
    if saved != wanted:  # a storage that renames files would break the names cleanup reads
        storage().delete(saved)
        raise ImproperlyConfiguredError(f"The storage {settings.file_storage_alias!r} saved {wanted!r} as {saved!r}.")
    return entry


def file_change(entry: FileInfo, added: list[FileInfo]) -> Callable[[StateRecord], None]:
    """``attach_file``'s change: one more file, up to ``FILE_MAX_PER_TASK`` (``ValueError``); put in ``added``."""
    limit = get_settings().file_max_per_task

    def apply(record: StateRecord) -> None:
        files = list(record.get("files") or ())
        if len(files) >= limit:
            raise ValueError(f"attach_file(): the task has {len(files)} files; FILE_MAX_PER_TASK allows {limit}.")
        record["files"] = [*files, entry]
        added.append(entry)

    return apply


def delete_file(entry: FileInfo | dict[str, Any]) -> bool:
    """Delete one attached file from the storage; False when it was not there or could not be deleted."""
    try:
        name = storage_name(entry)
        found = storage().exists(name)
        if found:
            storage().delete(name)
    except Exception as exc:  # one file the storage refuses must not stop the others
        logger.warning("realtime_async: deleting an attached file failed (%s)", type(exc).__name__)
        return False
    return found


def delete_files(record: StateRecord | dict[str, Any] | None) -> int:
    """Delete the files the record lists; return how many were deleted."""
    entries = (record or {}).get("files") or ()
    return sum(delete_file(entry) for entry in entries if isinstance(entry, dict))


def delete_final_task(task_name: str) -> bool:
    """Delete a final task's files and record, and a group's parts; False when unknown or unfinished."""
    try:
        validate_task_name(task_name)
    except ValueError:
        return False
    stored = get_store().read_state(task_name)
    record = json.loads(stored) if stored else None
    if not is_final(record):
        return False
    if record and record.get("group"):  # a group's parts (and fan-in step) go with it
        for part in get_store().group_parts(task_name):
            part_record = get_store().read_state(part)
            if part_record:
                delete_files(json.loads(part_record))
            get_store().delete_task(part)
    delete_files(record)
    get_store().delete_task(task_name)
    return True


def sweep(*, dry_run: bool = False, now: float | None = None) -> list[str]:
    """Delete the stored files whose retention passed; return their storage names."""
    now = time.time() if now is None else now
    kept = storage()
    try:
        _, names = kept.listdir(FILES_DIRECTORY)
    except (FileNotFoundError, NotADirectoryError):  # nothing was ever attached
        return []
    expired = []
    for name in sorted(names):
        expires = expiry_of(name)
        if expires is None or expires > now:
            continue
        path = f"{FILES_DIRECTORY}/{name}"
        if not dry_run:
            try:
                kept.delete(path)
            except Exception as exc:
                logger.warning("realtime_async: deleting %r failed (%s)", path, type(exc).__name__)
                continue
        expired.append(path)
    return expired
