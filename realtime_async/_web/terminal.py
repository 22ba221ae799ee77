"""A task seen from a shell: a status line redrawn in place on a terminal, plain lines anywhere else.

Two things feed it state records and log lines: ``AsyncManager.run_inline`` (a
worker function run in this process, its record kept by ``_writing/terminal.py``)
and whatever follows a Celery task from a shell (the demo's
``launch_demo_task --follow``). Either way it says what the widget says, in the
same words: the percent, ETA, stage, state and log level texts come from
``display.py``, translated into the active language.

On a terminal one status line (title, bar, percent, "Stage 2 of 3: Process",
message, ETA) is redrawn in place, at most every ``redraw_interval`` seconds
unless the state or the stage changed; a log line clears it, prints itself and
redraws it below; the end replaces it with a final line ("Done", "Failed: ...",
"Cancelled"). Anywhere else (a pipe, a file, CI logs) every line stays, so it
prints one only when something worth a line happened: a new state or stage,
else at most one a second or one per ``percent_step`` percent. A loop of ten
thousand updates prints a few dozen lines, not ten thousand.

Rendering never breaks the work it shows: an error while rendering (a closed
stream, a broken pipe) turns the renderer off for good, silently.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Concatenate, ParamSpec, TextIO, TypeAlias

from realtime_async._core.records import StateRecord
from realtime_async._web.display import Display, display, log_level_labels

__all__ = ["TerminalRenderer"]

logger = logging.getLogger("realtime_async")
_P = ParamSpec("_P")
_Method: TypeAlias = Callable[Concatenate["TerminalRenderer", _P], None]
#: A state record, or one read back from the store as plain JSON.
_Record: TypeAlias = StateRecord | dict[str, Any]

_CLEAR = "\r\x1b[2K"  # to the start of the line, and erase it
_RESET = "\x1b[0m"
_COLORS = {"debug": "\x1b[2m", "success": "\x1b[32m", "warning": "\x1b[33m", "error": "\x1b[31m"}
#: The states whose final line says why: the error is the point.
_EXPLAINED = ("failure", "lost")


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:  # a closed stream, or an object with no notion of one
        return False


def _encodes(stream: TextIO, text: str) -> bool:
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _safe(method: _Method[_P]) -> _Method[_P]:
    """Never let rendering break the work it shows: the first error turns the renderer off."""

    @functools.wraps(method)
    def guarded(self: TerminalRenderer, /, *args: _P.args, **kwargs: _P.kwargs) -> None:
        with self._lock:
            if self._broken:
                return
            try:
                method(self, *args, **kwargs)
            except Exception:
                self._broken = True
                logger.debug("realtime_async: terminal rendering stopped", exc_info=True)

    return guarded


class TerminalRenderer:
    """Shows one task's records and log lines on ``stream`` (stderr by default).

    ``tty`` (default: ``stream.isatty()``) picks the status line or plain lines;
    ``color`` (default: on a terminal, unless ``NO_COLOR`` is set) colours the
    log levels; ``width`` (default: the terminal's) bounds the status line so it
    never wraps. Safe to call from several threads.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        tty: bool | None = None,
        color: bool | None = None,
        width: int | None = None,
        redraw_interval: float = 0.05,
        line_interval: float = 1.0,
        percent_step: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = _isatty(self.stream) if tty is None else tty
        self.color = (self.tty and not os.environ.get("NO_COLOR")) if color is None else color
        self.width = width
        self.redraw_interval = redraw_interval
        self.line_interval = line_interval
        self.percent_step = percent_step
        self.clock = clock
        fancy = _encodes(self.stream, "█░·…")
        self._full, self._empty = ("█", "░") if fancy else ("#", "-")
        self._sep, self._ellipsis = (" · ", "…") if fancy else (" - ", "...")
        self._lock = threading.RLock()
        self._broken = False
        self._ended = False
        self._status = ""  # the status line now on the terminal ("" when none)
        self._record: _Record | None = None  # the newest record shown
        self._key: tuple[object, object] | None = None  # (state, stage) of the last line or drawing
        self._last_at = -math.inf
        self._last_text: tuple[object, int | None] | None = None  # (message, percent bucket) of the last plain line
        self._frame = 0

    # -- what callers hand it -------------------------------------------
    @_safe
    def show(self, record: _Record) -> None:
        """A new state of the task: redrawn or printed when it is worth it (see the module's docstring)."""
        if self._ended:
            return
        self._record = record
        key = (record.get("state"), record.get("stage"))
        now = self.clock()
        # A stage left (None) is not news by itself: the next one entered, or the end, is.
        urgent = self._key is None or key[0] != self._key[0] or (key[1] != self._key[1] and key[1] is not None)
        if not self.tty:
            self._plain(record, key, urgent, now)
        elif urgent or key != self._key or now - self._last_at >= self.redraw_interval:
            self._key, self._last_at = key, now
            self._draw(display(record))

    @_safe
    def log(self, entry: Mapping[str, Any]) -> None:
        """A log line (``{"level", "text"}``, a ``LogEntry`` or a stored ``LogLine``), printed above the status line."""
        level = str(entry.get("level") or "info")
        label = log_level_labels().get(level, level)
        lines = str(entry.get("text") or "").split("\n")
        if self.color and level in _COLORS:
            label = f"{_COLORS[level]}{label}{_RESET}"
        self._above("\n".join([f"{label}: {lines[0]}", *(f"  {line}" for line in lines[1:])]))

    @_safe
    def note(self, text: str) -> None:
        """A line of the caller's own, printed above the status line like a log line."""
        self._above(text)

    @_safe
    def end(self, record: _Record) -> None:
        """The task's final state: the status line gives way to a final line ("Done", "Failed: ...")."""
        if self._ended:
            return
        self._ended = True
        self._record = record
        shown = display(record)
        state, label = shown["state"], shown["state_label"]
        if state in _EXPLAINED and shown["message"]:
            label = f"{label}: {shown['message']}"
        parts = [self._title(record), "" if state == "success" else shown["percent_text"], label]
        line = self._sep.join(part for part in parts if part)
        self._write((_CLEAR if self._status else "") + line + "\n")
        self._status = ""

    @_safe
    def close(self) -> None:
        """Take the status line off the terminal (following stopped before the end); nothing else."""
        self._ended = True
        if self._status:
            self._write(_CLEAR)
            self._status = ""

    # -- drawing ---------------------------------------------------------
    def _title(self, record: _Record) -> str:
        return " ".join(str(record.get("title") or "").split())

    def _columns(self) -> int:
        if self.width:
            return self.width
        try:
            return os.get_terminal_size(self.stream.fileno()).columns or 80
        except (AttributeError, OSError, ValueError):
            return 80

    def _bar(self, shown: Display, size: int) -> str:
        if shown["indeterminate"]:  # a block sliding back and forth, one step per drawing
            self._frame += 1
            block, span = 3, size - 3
            step = self._frame % (2 * span) if span > 0 else 0
            at = step if step <= span else 2 * span - step
            return "[" + self._empty * at + self._full * block + self._empty * (size - block - at) + "]"
        filled = round((shown["percent"] or 0.0) * size / 100)
        return "[" + self._full * filled + self._empty * (size - filled) + "]"

    def _status_line(self, shown: Display) -> str:
        record = self._record or {}
        columns = self._columns()
        head = [self._title(record)]
        if shown["state"] == "running":
            head.append(self._bar(shown, 20 if columns >= 80 else 10))
            head.append(f"{shown['percent_text']:>4}" if shown["percent_text"] else "")
            tail = []
        else:  # queued: no bar yet, its state in words
            tail = [shown["state_label"]]
        tail += [shown["stage_text"], shown["message"], shown["eta_text"]]
        line = " ".join(part for part in head if part)
        rest = self._sep.join(" ".join(part.split()) for part in tail if part)  # one line, whatever they hold
        line = self._sep.join(part for part in (line, rest) if part)
        if len(line) > columns - 1:  # a wrapped line could not be redrawn in place
            line = line[: max(0, columns - 1 - len(self._ellipsis))] + self._ellipsis
        return line

    def _draw(self, shown: Display) -> None:
        self._status = self._status_line(shown)
        self._write(_CLEAR + self._status)

    def _above(self, text: str) -> None:
        if not self.tty:
            self._write(text + "\n")
            return
        self._write(_CLEAR + text + "\n" + self._status)

    def _plain(self, record: _Record, key: tuple[object, object], urgent: bool, now: float) -> None:
        raw = record.get("percent")
        bucket = None
        if isinstance(raw, (int, float)) and self.percent_step > 0:
            bucket = math.floor(raw / self.percent_step)
        if record.get("stages") and record.get("stage") is None and self._last_text is not None:
            bucket = self._last_text[1]  # a stage just left: the next one, or the end, says more
        text = (record.get("message"), bucket)
        if not urgent:
            if text == self._last_text:
                return
            if bucket == (self._last_text or (None, None))[1] and now - self._last_at < self.line_interval:
                return
        shown = display(record)
        lines = []
        if key[0] != (self._key or (None,))[0]:
            lines.append(self._sep.join(part for part in (self._title(record), shown["state_label"]) if part))
        parts = (shown["percent_text"], shown["stage_text"], shown["message"], shown["eta_text"])
        progress = self._sep.join(" ".join(part.split()) for part in parts if part)
        if progress and (not lines or shown["state"] == "running"):
            lines.append(progress)
        self._key, self._last_at, self._last_text = key, now, text
        if lines:
            self._write("\n".join(lines) + "\n")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
