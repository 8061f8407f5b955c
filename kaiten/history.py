"""``kaiten history NAMESPACE/NAME``: every generation of a Workspace with the time it reached each
phase and how long each took, from the watcher's audit log in Postgres (DATABASE_URL). Exit 0
with a history, 1 when the audit log has none for that name, 2 when Postgres cannot be read."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from sqlalchemy.exc import SQLAlchemyError

from services.watcher.audit import FAILED, SUCCEEDED, AuditLog, Timeline, rfc3339_ms
from shared.db import Database
from shared.events import duration
from shared.settings import Settings


class UsageError(ValueError):
    """A bad argument, said as the fix."""


def workspace_key(value: str) -> tuple[str, str]:
    """``NAMESPACE/NAME`` -> (namespace, name)."""
    namespace, sep, name = value.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise UsageError(f"{value!r}: expected NAMESPACE/NAME, for example default/my-workspace")
    return namespace, name


def workspace_argument(target: str, output: str, err: TextIO) -> tuple[str, str] | None:
    """The (namespace, name) of a ``NAMESPACE/NAME`` argument with ``-o text|json``, or None
    after saying on ``err`` what is wrong."""
    if output not in ("text", "json"):
        print(f"error: --output {output!r}: choose text or json", file=err)
        return None
    try:
        return workspace_key(target)
    except UsageError as e:
        print(f"error: {e}", file=err)
        return None


def outcome(timeline: Timeline, now: datetime) -> str:
    """How the generation ended, or what it is waiting after."""
    ends = [p.name for p in timeline.phases if p.name in (SUCCEEDED, FAILED)]
    if ends:  # the later one is how it stands (a phase is dated when first reached)
        said = {
            SUCCEEDED: f"succeeded in {duration(_seconds(timeline, SUCCEEDED), precise=True)}",
            FAILED: f"failed after {duration(_seconds(timeline, FAILED), precise=True)}",
        }
        return said[ends[-1]] + (f" (first {said[ends[0]]})" if len(ends) > 1 else "")
    last = timeline.phases[-1]
    waited = max(0.0, (now - last.at).total_seconds())
    return f"in progress: {last.name} {duration(waited, precise=True)} ago"


def _seconds(timeline: Timeline, phase: str) -> float:
    at = timeline.at(phase)
    return (at - timeline.phases[0].at).total_seconds() if at else 0.0


def render_text(key: str, timelines: Sequence[Timeline], now: datetime) -> str:
    lines: list[str] = []
    uids = {t.uid for t in timelines}
    for timeline in timelines:
        if lines:
            lines.append("")
        who = f"{key} uid {timeline.uid}" if len(uids) > 1 else key
        lines.append(f"{who} generation {timeline.generation}: {outcome(timeline, now)}")
        lines.append(f"  {'PHASE':<16} {'AT (UTC)':<25} {'TOOK':>8} {'SINCE START':>12}")
        start = timeline.phases[0].at
        for phase in timeline.phases:
            took = "-" if phase is timeline.phases[0] else _span(phase.since_previous)
            lines.append(
                f"  {phase.name:<16} {rfc3339_ms(phase.at):<25} {took:>8} "
                f"{_span(phase.at - start):>12}"
            )
    return "\n".join(lines)


def _span(delta: timedelta) -> str:
    return duration(delta.total_seconds(), precise=True)


def to_json(timeline: Timeline) -> dict[str, Any]:
    start = timeline.phases[0].at
    return {
        "namespace": timeline.namespace,
        "name": timeline.name,
        "uid": timeline.uid,
        "generation": timeline.generation,
        "total_seconds": timeline.total.total_seconds(),
        "phases": [
            {
                "phase": p.name,
                "at": rfc3339_ms(p.at),
                "seconds": p.since_previous.total_seconds(),
                "since_start_seconds": (p.at - start).total_seconds(),
            }
            for p in timeline.phases
        ],
    }


async def load(database_url: str, namespace: str, name: str) -> list[Timeline]:
    db = Database(database_url, pool_size=1)
    try:
        return await AuditLog(db).history(namespace, name)
    finally:
        await db.close()


def main(
    target: str,
    output: str,
    settings: Settings,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    key = workspace_argument(target, output, err)
    if key is None:
        return 2
    namespace, name = key
    try:
        timelines = asyncio.run(load(settings.database_url, namespace, name))
    except (OSError, SQLAlchemyError) as e:
        print(
            f"error: cannot read the audit log in PostgreSQL ({type(e).__name__}): check "
            "DATABASE_URL and that `kaiten migrate` ran",
            file=err,
        )
        return 2
    if not timelines:
        print(
            f"no history for {namespace}/{name}: the audit log has no event about it (is the "
            "name right? the watcher records events while it runs)",
            file=err,
        )
        return 1
    if output == "json":
        print(json.dumps([to_json(t) for t in timelines], indent=2), file=out)
    else:
        print(render_text(f"{namespace}/{name}", timelines, datetime.now(UTC)), file=out)
    return 0
