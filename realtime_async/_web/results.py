"""What a succeeded task offers its viewers: its result link and its downloads, as the pages show them.

The same rule runs in the browser (``static/realtime_async/results.js``);
the ``results`` cases of ``tests/display_cases.json`` check both. Results
show once the task succeeded, never before; a link or file whose URL is not
safe (``_core/results.safe_url``) is left out, whatever the store holds; a
watch-token viewer's downloads carry the token, since they have no session.
"""

from __future__ import annotations

from typing import Any, TypedDict
from urllib.parse import quote

from django.utils.translation import gettext

from realtime_async._core.records import StateRecord
from realtime_async._core.results import safe_url

__all__ = ["FileDisplay", "LinkDisplay", "ResultsDisplay", "display_results", "results_i18n"]

#: What ``encodeURIComponent`` leaves as it is besides letters, digits and ``-_.~``.
_URI_COMPONENT_SAFE = "!*'()"


class LinkDisplay(TypedDict):
    url: str
    #: The worker's label, else "Open the result".
    label: str


class FileDisplay(TypedDict):
    #: The download URL, with ``?token=`` for a watch-token viewer.
    url: str
    #: The file's name: the ``download`` attribute.
    name: str
    #: "Download report.csv".
    text: str


class ResultsDisplay(TypedDict):
    links: list[LinkDisplay]
    files: list[FileDisplay]


def results_i18n() -> dict[str, str]:
    """The strings of the results, in the request's language (part of ``display.i18n()``)."""
    return {"result_link": gettext("Open the result"), "download": gettext("Download %(name)s")}


def _with_token(url: str, token: str | None) -> str:
    if not token:
        return url
    # encodeURIComponent's safe characters, so results.js builds the same URL.
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}token={quote(token, safe=_URI_COMPONENT_SAFE)}"


def display_results(
    record: StateRecord | dict[str, Any] | None, i18n: dict[str, Any] | None = None, token: str | None = None
) -> ResultsDisplay:
    """The links and downloads to show of ``record``: none unless it succeeded."""
    shown: ResultsDisplay = {"links": [], "files": []}
    if record is None or record.get("state") != "success":
        return shown
    strings = i18n if i18n is not None else results_i18n()
    for entry in record.get("links") or ():
        url = safe_url(entry.get("url")) if isinstance(entry, dict) else None
        if url is not None:
            label = entry.get("label")
            shown["links"].append(
                {"url": url, "label": label if isinstance(label, str) and label else strings["result_link"]}
            )
    for entry in record.get("files") or ():
        url = safe_url(entry.get("url")) if isinstance(entry, dict) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        if url is not None and isinstance(name, str) and name:
            text = str(strings["download"]).replace("%(name)s", name)
            shown["files"].append({"url": _with_token(url, token), "name": name, "text": text})
    return shown
