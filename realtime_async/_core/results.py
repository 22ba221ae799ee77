"""What a finished task offers: a result link and the files it produced (the record's ``links`` and ``files``).

The rules here are pure and shared by the writer (which checks what a worker
gives), the download view (which checks what a browser asks for) and the
display (which shows only what passes, whatever the store holds):

- a link's URL is an ``http(s)`` URL or a path on this site (``/...``), in
  printable ASCII (``set_result_link`` percent-encodes the rest, as
  ``reverse()`` does); never ``javascript:``, ``data:``, ``//host`` or ``\\``;
- a file is stored under ``realtime_async_files/<expires_at>-<id>``: a random id, and
  the time it may be deleted, so cleanup needs only a listing of the storage
  (no index to keep in step, and files outlive a record that expired first);
- a download URL carries a signed ``[task, file id]`` (``DOWNLOAD_SALT``), so it
  names one file of one task and cannot be forged or pointed at a path.
"""

from __future__ import annotations

import dataclasses
import datetime
import mimetypes
import re
import unicodedata
from typing import Any

from django.core import signing
from django.utils.encoding import iri_to_uri

from realtime_async._core.records import FileInfo, ResultLinkInfo

__all__ = [
    "DOWNLOAD_SALT",
    "FILES_DIRECTORY",
    "MAX_FILENAME_LENGTH",
    "MAX_LABEL_LENGTH",
    "MAX_TOKEN_LENGTH",
    "MAX_URL_LENGTH",
    "ResultLink",
    "clean_filename",
    "content_type_for",
    "expiry_of",
    "find_file",
    "make_link",
    "safe_url",
    "sign_download",
    "storage_name",
    "unsign_download",
]

#: The salt of download URLs: a watch token or any other signed value never opens a file.
DOWNLOAD_SALT = "realtime_async.download"
#: The folder of the configured storage (``FILE_STORAGE_ALIAS``) that holds every attached file.
FILES_DIRECTORY = "realtime_async_files"
#: Longer URLs are refused.
MAX_URL_LENGTH = 2048
#: Longer labels are cut (with "…"), never refused.
MAX_LABEL_LENGTH = 200
#: Longer file names are cut, keeping their extension.
MAX_FILENAME_LENGTH = 200
#: A download token longer than this was not made here.
MAX_TOKEN_LENGTH = 1000

_URL_CHARS = re.compile(r"[!-~]+")  # printable ASCII, no space
_ABSOLUTE = re.compile(r"https?://[^/?#]+(?:[/?#].*)?", re.IGNORECASE)
_TOKEN = r"[A-Za-z0-9!#$&^_.+-]+"
_CONTENT_TYPE = re.compile(rf'{_TOKEN}/{_TOKEN}(?:\s*;\s*{_TOKEN}=(?:{_TOKEN}|"[^"\\\x00-\x1f\x7f]*"))*')
_FILE_ID = re.compile(r"[0-9a-f]{32}")
_STORED = re.compile(r"([0-9]{1,12})-([0-9a-f]{32})")


@dataclasses.dataclass(frozen=True)
class ResultLink:
    """Return one from a worker function to end with a link: ``return ResultLink(url, "Open the report")``."""

    url: str
    #: The link's text; None shows "Open the result".
    label: str | None = None


def safe_url(url: object) -> str | None:
    """``url`` when it is an ``http(s)`` URL or a path on this site, else None (``results.js`` says the same)."""
    if not isinstance(url, str) or len(url) > MAX_URL_LENGTH or not _URL_CHARS.fullmatch(url) or "\\" in url:
        return None
    if _ABSOLUTE.fullmatch(url):
        return url
    return url if url.startswith("/") and not url.startswith("//") else None


def _text(value: object, limit: int) -> str:
    text = "".join(char for char in str(value) if char.isprintable()).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def make_link(url: object, label: object = None) -> ResultLinkInfo:
    """The record's entry for a link; ``ValueError`` names what is wrong with ``url``."""
    checked = safe_url(iri_to_uri(str(url))) if isinstance(url, str) else None
    if checked is None:
        raise ValueError(
            f'The result link must be an http(s) URL or a path starting with "/" '
            f"(at most {MAX_URL_LENGTH} characters), got {url!r:.100}."
        )
    text = _text(label, MAX_LABEL_LENGTH) if label is not None else ""
    return {"url": checked, "label": text or None}


def clean_filename(name: object) -> str:
    """The last part of ``name``, printable, cut to ``MAX_FILENAME_LENGTH``; ``ValueError`` when nothing is left."""
    text = unicodedata.normalize("NFC", str(name)).replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(char for char in text if char.isprintable()).strip()
    if text in ("", ".", ".."):
        raise ValueError(f"attach_file(): {name!r:.100} is not a file name; pass filename=.")
    if len(text) > MAX_FILENAME_LENGTH:
        stem, dot, extension = text.rpartition(".")
        keep = f"{dot}{extension}" if dot and stem and len(extension) < 20 else ""
        text = text[: MAX_FILENAME_LENGTH - len(keep)] + keep
    return text


def content_type_for(filename: str, content_type: object = None) -> str:
    """``content_type`` when it is a valid media type; None guesses it from ``filename`` (else octet-stream)."""
    if content_type is None:
        return mimetypes.guess_type(filename)[0] or "application/octet-stream"
    if not isinstance(content_type, str) or len(content_type) > 200 or not _CONTENT_TYPE.fullmatch(content_type):
        raise ValueError(f"attach_file(): content_type must be a media type such as 'text/csv', got {content_type!r}.")
    return content_type


def storage_name(entry: FileInfo | dict[str, Any]) -> str:
    """Where the file of ``entry`` is kept in the storage; ``ValueError`` for an entry not made here."""
    file_id, expires = entry.get("id"), entry.get("expires_at")
    if not isinstance(file_id, str) or not _FILE_ID.fullmatch(file_id):
        raise ValueError("Not a file id.")
    if isinstance(expires, bool) or not isinstance(expires, int) or not 0 <= expires < 10**12:
        raise ValueError("Not an expiry time.")
    return f"{FILES_DIRECTORY}/{expires}-{file_id}"


def expiry_of(name: str) -> int | None:
    """The time the stored file ``name`` (a name in ``FILES_DIRECTORY``) may be deleted; None for any other name."""
    found = _STORED.fullmatch(name)
    return int(found.group(1)) if found else None


def find_file(record: dict[str, Any] | Any, file_id: str) -> FileInfo | None:
    """The entry of ``file_id`` in the record's ``files``, or None."""
    for entry in record.get("files") or ():
        if isinstance(entry, dict) and entry.get("id") == file_id:
            found: FileInfo = entry  # type: ignore[assignment]
            return found
    return None


def sign_download(task_name: str, file_id: str) -> str:
    """The signed part of a download URL: the task and the file, timestamped."""
    return signing.TimestampSigner(salt=DOWNLOAD_SALT).sign_object([task_name, file_id])


def unsign_download(token: str, *, max_age: float | None = None) -> tuple[str, str]:
    """``(task_name, file_id)`` of a download token; ``BadSignature`` (``SignatureExpired`` past ``max_age``)."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise signing.BadSignature("Not a download token.")
    age = datetime.timedelta(seconds=max_age) if max_age is not None else None
    value = signing.TimestampSigner(salt=DOWNLOAD_SALT).unsign_object(token, max_age=age)
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(part, str) for part in value)):
        raise signing.BadSignature("Not a download token.")
    return value[0], value[1]
