"""The download endpoint of attached files: the same rule as watching the task, then the file.

``GET <prefix>/realtime-async/download/<signed>/[?token=<watch token>]`` answers:

- ``200`` with the file, ``Content-Disposition: attachment`` (the name safely
  encoded), its ``Content-Type``, ``X-Content-Type-Options: nosniff`` and a
  sandboxing ``Content-Security-Policy``, for viewers who may see the task
  (``_core.access``: their session, or a watch token for it);
- ``404`` for a signature that is not ours (tampered, another salt, cut short),
  an unknown task, a task the viewer may not see, and a file the task does
  not list, all alike, so neither task names nor file ids can be probed;
- ``410`` for a viewer who may see the task when the link is older than
  ``FILE_RETENTION`` or the file is no longer in the storage;
- ``503`` when the store or the storage fails (no detail for the client).

The signed part names the task and the file's id; the storage name comes
from the task's record (``_core/results.py``), never from the URL, so no path
can be smuggled in: an encoded slash or ``..`` only breaks the signature.
"""

from __future__ import annotations

import logging

from django.core import signing
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseBase
from django.utils.translation import gettext
from django.views.decorators.http import require_safe

from realtime_async._core.results import clean_filename, content_type_for, find_file, storage_name, unsign_download
from realtime_async._web.http import Unavailable, every_answer, unavailable, viewer_record
from realtime_async._writing.files import storage
from realtime_async.conf import get_settings

__all__ = ["download_view"]

logger = logging.getLogger("realtime_async")

_TEXT = "text/plain; charset=utf-8"


@every_answer()
@require_safe
def download_view(request: HttpRequest, signed: str) -> HttpResponseBase:
    """The attached file, as an attachment; see the module docstring for every other answer."""
    try:
        task_name, file_id = unsign_download(signed)
    except signing.BadSignature:
        return _not_found()
    try:
        record = viewer_record(request, task_name, "download for")
    except Unavailable:
        return unavailable()
    entry = find_file(record, file_id) if record is not None else None
    if entry is None:
        return _not_found()
    try:
        unsign_download(signed, max_age=get_settings().file_retention)
        name = storage_name(entry)
    except signing.SignatureExpired:
        return _gone()
    except ValueError:  # an entry not made by attach_file
        return _not_found()
    try:
        handle = storage().open(name, "rb")
    except (FileNotFoundError, IsADirectoryError):
        return _gone()
    except Exception:
        logger.exception("realtime_async: opening %r failed", name)
        return unavailable()
    filename = _filename(entry.get("name"))
    try:
        content_type = content_type_for(filename, entry.get("content_type"))
    except ValueError:
        content_type = "application/octet-stream"
    response = FileResponse(handle, as_attachment=True, filename=filename, content_type=content_type)
    response["X-Content-Type-Options"] = "nosniff"
    # Should a browser render it anyway: no script, no plugin, no request to anywhere.
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


def _filename(name: object) -> str:
    try:
        return clean_filename(name)
    except ValueError:
        return "download"


def _not_found() -> HttpResponse:
    """One answer for a bad signature, an unknown or invisible task and an unknown file."""
    return HttpResponse(gettext("No such file."), status=404, content_type=_TEXT)


def _gone() -> HttpResponse:
    return HttpResponse(gettext("This file is no longer available."), status=410, content_type=_TEXT)
