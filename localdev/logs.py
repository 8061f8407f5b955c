"""The local stack's logs, readable: what ``kaiten logs`` prints.

The five services write JSON lines (``KAITEN_LOG_FORMAT=json``); the development cluster,
nats-server and PostgreSQL write their own text. ``render`` turns one stored line into readable
text (pure: the unit tests call it); ``LogReader`` reads the files, only whole lines, from where it
last stopped, so ``kaiten logs --follow`` is the same reader called again.

A line's time is read from it (the JSON ``timestamp``, or a date and time at its start, as
nats-server, PostgreSQL and Python's logging write them); a line without one (a traceback, a
continuation) takes the time of the line before it, so interleaving by time keeps it in place.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

from shared.settings import SERVICE_NAMES

INFRA_SOURCES: tuple[str, ...] = ("cluster", "nats-server", "postgres")
SOURCES: tuple[str, ...] = (*SERVICE_NAMES, *INFRA_SOURCES)
SOURCE_WIDTH = max(len(s) for s in SOURCES)

# The fields every service line has; the others are printed as key=value after the event.
_HEAD = ("timestamp", "level", "service", "event")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# A date and time near the start of a text line: 2026-11-22 03:38:51,784 (Python logging),
# [123] 2026/11/22 03:38:51.094458 [INF] (nats-server), 2026-11-22 03:38:51.094 UTC (PostgreSQL).
_TEXT_TIME = re.compile(
    r"^(?:\[\d+\]\s+)?(\d{4})[-/](\d{2})[-/](\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,6}))?"
    r"(\s*(?:Z|UTC|GMT)\b)?"
)
_BARE = re.compile(r"^[^\s\"'=]+$")


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored line of one source's log, with the time it belongs to."""

    source: str
    time: datetime | None
    line: str


def local_timezone() -> tzinfo:
    """The machine's time zone, for text logs that write local time (nats-server, logging)."""
    zone = datetime.now(UTC).astimezone().tzinfo
    return zone if zone is not None else UTC


def line_time(line: str, local: tzinfo = UTC) -> datetime | None:
    """The time ``line`` was written, if it says; text without a zone is in ``local``."""
    record = _record(line)
    if record is not None:
        stamp = record.get("timestamp")
        if not isinstance(stamp, str):
            return None
        try:
            when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            return None
        return when if when.tzinfo is not None else when.replace(tzinfo=local)
    match = _TEXT_TIME.match(_ANSI.sub("", line))
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    micros = int((match.group(7) or "0").ljust(6, "0"))
    zone = UTC if match.group(8) else local
    try:
        return datetime(year, month, day, hour, minute, second, micros, tzinfo=zone)
    except ValueError:
        return None


def render(line: str, *, source: str | None = None) -> list[str]:
    """``line`` as readable text: a service's JSON line becomes
    ``TIME LEVEL SERVICE EVENT key=value ...`` (UTC, to the millisecond; an exception follows on
    its own lines), any other line is kept with its terminal colours removed. With ``source``
    (several logs interleaved) every line is prefixed ``source | ``, and a JSON line's service
    column is left out when it is that source."""
    record = _record(line)
    if record is None:
        lines = [_ANSI.sub("", line)]
    else:
        lines = _readable(record, with_service=source is None or record.get("service") != source)
    if source is None:
        return lines
    return [f"{source:<{SOURCE_WIDTH}} | {text}" for text in lines]


def _readable(record: Mapping[str, Any], *, with_service: bool = True) -> list[str]:
    parts = [_time_text(record.get("timestamp")), f"{str(record.get('level', '-')).upper():<5}"]
    if with_service:
        parts.append(f"{record.get('service', '-')!s:<{SOURCE_WIDTH}}")
    parts.append(str(record.get("event", "")))
    exception = record.get("exception")
    for key, value in record.items():
        if key in _HEAD or key == "exception" or value is None:
            continue
        parts.append(f"{key}={_value_text(value)}")
    lines = [" ".join(parts)]
    if isinstance(exception, str) and exception:
        lines += ["    " + text for text in exception.splitlines()]
    return lines


def _time_text(stamp: Any) -> str:
    if not isinstance(stamp, str):
        return "-"
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S.") + f"{when.microsecond // 1000:03d}"


def _value_text(value: Any) -> str:
    if isinstance(value, str):
        return value if _BARE.match(value) else json.dumps(value)
    return json.dumps(value, separators=(",", ":"))


def _record(line: str) -> dict[str, Any] | None:
    """The JSON object a service wrote on ``line``, else None."""
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) and "event" in value else None


def interleave(entries: Iterable[Entry]) -> list[Entry]:
    """Entries of several sources in time order. The sort is stable and a line without a time
    carries its predecessor's, so a source's multi-line record stays together."""
    oldest = datetime.min.replace(tzinfo=UTC)
    return sorted(entries, key=lambda e: e.time or oldest)


def output_lines(entries: Sequence[Entry], *, raw: bool, prefixed: bool) -> list[str]:
    """What ``kaiten logs`` prints for ``entries``: as stored with ``raw``, else readable;
    ``prefixed`` puts each line's source in front (several sources interleaved)."""
    out: list[str] = []
    for entry in entries:
        if raw:
            out.append(f"{entry.source:<{SOURCE_WIDTH}} | {entry.line}" if prefixed else entry.line)
        else:
            out += render(entry.line, source=entry.source if prefixed else None)
    return out


@dataclass
class _Cursor:
    offset: int = 0
    partial: bytes = b""
    time: datetime | None = None


@dataclass
class LogReader:
    """Reads the logs of ``files`` (source -> path): each call to ``read`` returns the whole
    lines written since the last call (the first call: everything), in time order. A file that
    shrank (truncated, replaced) is read again from its start; one that does not exist yet is
    read once it appears."""

    files: Mapping[str, Path]
    local: tzinfo = field(default_factory=local_timezone)
    _cursors: dict[str, _Cursor] = field(default_factory=dict)

    def read(self) -> list[Entry]:
        new: list[Entry] = []
        for source, path in self.files.items():
            new += self._read_one(source, path)
        return interleave(new)

    def _read_one(self, source: str, path: Path) -> list[Entry]:
        cursor = self._cursors.setdefault(source, _Cursor())
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return []
        if size < cursor.offset:
            cursor.offset, cursor.partial = 0, b""
        if size == cursor.offset:
            return []
        with path.open("rb") as f:
            f.seek(cursor.offset)
            data = cursor.partial + f.read(size - cursor.offset)
        cursor.offset = size
        *complete, cursor.partial = data.split(b"\n")
        entries = []
        for raw in complete:
            line = raw.decode("utf-8", errors="replace").rstrip("\r")
            cursor.time = line_time(line, self.local) or cursor.time
            entries.append(Entry(source, cursor.time, line))
        return entries
