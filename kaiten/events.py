"""``kaiten events``: read the event stream for audit, replaying it and optionally following it.

    kaiten events                                   # everything the stream keeps, then exit
    kaiten events --since 1h -n team-a              # the last hour of one namespace
    kaiten events --workspace phi-3 --type plan.ready -o json
    kaiten events --follow --since 10m              # the last 10 minutes, then new events

Filters narrow on the server: they become the consumer's subject filter
``<prefix>.v1.<type|*.*>.<namespace|*>.<name|*>`` (``--workspace`` without ``-n`` means any
namespace). Without filters the filter is ``<prefix>.v1.>``, dead letters included;
``--type deadletter`` reads only those (their subject names no workspace, so ``-n`` and
``--workspace`` are applied to the letter's ``workspace`` here).

The reader is read-only and leaves nothing behind: an ephemeral ordered push consumer (no acks,
memory storage, removed at exit and by the server when its client goes away), starting at the
first message (``deliver all``) or at ``--since`` (``by_start_time``). Without ``--follow`` it
exits once it has printed what the stream held when it started; with ``--follow`` it keeps
printing until Ctrl-C or SIGTERM (exit 0).

Output: a table (``TIME TYPE SOURCE WORKSPACE CORRELATION SUMMARY``, one line per event, the
summary cut to the terminal's width, or to 120 characters when stdout is not a terminal), or with
``-o json`` every message as stored, one JSON object per line. A message that is not a readable
event is shown with its subject and why (in JSON mode: a note on stderr) and the reader goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal, TextIO
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError

from shared.errors import EventDecodeError
from shared.events import (
    EVENT_MODELS,
    SUBJECT_VERSION,
    CleanupDone,
    ConditionReported,
    DeadLetter,
    Envelope,
    EventData,
    EventType,
    InferenceFailed,
    InferenceReady,
    PlanReady,
    PlanRejected,
    ResourcesFailed,
    ResourcesPending,
    ResourcesReady,
    TuningFailed,
    TuningProgress,
    TuningStarted,
    TuningSucceeded,
    WorkspaceDeleting,
    WorkspaceObserved,
    decode_event,
    duration,
    subject_token,
)
from shared.settings import Settings

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js.client import JetStreamContext

    PushSubscription = JetStreamContext.PushSubscription

Output = Literal["table", "json"]
DEADLETTER: Final = "deadletter"
TypeChoice = EventType | Literal["deadletter"]

PIPE_SUMMARY_WIDTH = 120  # the summary's width when stdout is not a terminal
MIN_SUMMARY_WIDTH = 20  # however narrow the terminal
CONNECT_DEADLINE_S = 5.0  # unreachable NATS: the error comes within this
CONNECT_TIMEOUT_S = 2  # one TCP connect attempt
REPLAY_RECONNECTS = 3  # without --follow, a lost connection is given up after these tries
POLL_S = 1.0  # how long a read waits before it asks the consumer whether it is caught up
HEARTBEAT_S = 5.0  # the consumer's idle heartbeat; two missed ones recreate it
CLEANUP_S = 2.0  # at exit, for deleting the consumer and closing the connection
INTERRUPTED = 130  # exit status when Ctrl-C stops a replay before it finished


class UsageError(ValueError):
    """A bad option; the message names the flag and what it accepts."""


class ReaderError(Exception):
    """NATS or the stream cannot be read; the message is the one line printed."""


# --- options -----------------------------------------------------------------------------------

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
SINCE_FORMS = (
    "a duration (45s, 10m, 2h, 1h30m, 3d) or a time (RFC 3339 / ISO 8601, e.g. "
    "2026-11-21T12:00:00Z; without a zone it is local time)"
)


def parse_since(value: str, *, now: datetime) -> datetime:
    """The start time ``--since`` means, in UTC: ``now`` minus a duration, or a time."""
    text = value.strip()
    match = _DURATION.match(text)
    try:
        if text and match:
            days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
            delta = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
            return (now - delta).astimezone(UTC)
        # A time without a zone is the local time, as a person types it.
        return datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        raise UsageError(f"--since: cannot read {value!r}; use {SINCE_FORMS}") from None
    except OverflowError:
        raise UsageError(f"--since: {value!r} is before the calendar begins") from None


def type_choices() -> list[str]:
    return [t.value for t in EventType] + [DEADLETTER]


def parse_type(value: str) -> TypeChoice:
    """``--type``: an event type (``plan.ready``, or its model's name ``PlanReady``) or
    ``deadletter``, in any case."""
    text = value.strip().lower()
    if text == DEADLETTER:
        return DEADLETTER
    by_name = {t.value: t for t in EventType}
    by_name |= {model.__name__.lower(): t for t, model in EVENT_MODELS.items()}
    if text in by_name:
        return by_name[text]
    raise UsageError(
        f"--type: unknown event type {value!r}; choose one of {', '.join(type_choices())}"
    )


def _token(flag: str, value: str) -> str:
    try:
        return subject_token(value)
    except ValueError as e:
        raise UsageError(f"{flag}: {e}") from None


@dataclass(frozen=True, slots=True)
class Options:
    """What ``kaiten events`` was asked for, validated."""

    follow: bool = False
    since: datetime | None = None
    namespace: str | None = None
    workspace: str | None = None
    event_type: TypeChoice | None = None
    output: Output = "table"


def build_options(
    *,
    follow: bool = False,
    since: str | None = None,
    namespace: str | None = None,
    workspace: str | None = None,
    event_type: str | None = None,
    output: str = "table",
    now: datetime | None = None,
) -> Options:
    """Validate the command's options; ``UsageError`` names the first bad one."""
    if output not in ("table", "json"):
        raise UsageError(f"-o/--output: choose table or json (got {output!r})")
    if namespace is not None:
        _token("-n/--namespace", namespace)
    if workspace is not None:
        _token("--workspace", workspace)
    return Options(
        follow=follow,
        since=None if since is None else parse_since(since, now=now or datetime.now(UTC)),
        namespace=namespace,
        workspace=workspace,
        event_type=None if event_type is None else parse_type(event_type),
        output="json" if output == "json" else "table",
    )


def subject_filter(
    prefix: str,
    event_type: TypeChoice | None = None,
    namespace: str | None = None,
    workspace: str | None = None,
) -> str:
    """The consumer's filter subject, so the server sends only what was asked for."""
    base = f"{prefix}.{SUBJECT_VERSION}"
    if event_type == DEADLETTER:
        return f"{base}.{DEADLETTER}.*"  # no workspace in the subject: filtered here, per letter
    if event_type is None and namespace is None and workspace is None:
        return f"{base}.>"
    kind = "*.*" if event_type is None else str(event_type)
    ns = "*" if namespace is None else _token("-n/--namespace", namespace)
    name = "*" if workspace is None else _token("--workspace", workspace)
    return f"{base}.{kind}.{ns}.{name}"


# --- summaries ---------------------------------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _reason(reason: str, message: str) -> str:
    return f"{reason}: {message}" if message else reason


def _dig(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _observed(d: WorkspaceObserved) -> str:
    ws = d.workspace
    mode = "tuning" if ws.get("tuning") else "inference" if ws.get("inference") else None
    preset = _dig(ws, "tuning", "preset", "name") or _dig(ws, "inference", "preset", "name")
    parts: list[str] = [d.trigger]
    if mode:
        parts.append(f"{mode} {preset}" if preset else f"{mode} (template)")
    count, sku = _dig(ws, "resource", "count"), _dig(ws, "resource", "instanceType")
    if sku:
        parts.append(f"{count or 1} x {sku}")
    parts.append(f"spec {d.spec_hash[:12]}")
    return ", ".join(parts)


def _plan_ready(d: PlanReady) -> str:
    text = (
        f"{d.mode} {d.preset}: {_plural(d.node_count, 'node')} x {d.instance_type}, "
        f"{d.plan.runtime.name}"
    )
    if d.plan.price is not None:
        text += f", ${d.plan.price.usd_per_hour:.2f}/h"
    return text


def _plan_rejected(d: PlanRejected) -> str:
    text = _reason(d.reason, d.message)
    if d.problems:
        text += " [" + "; ".join(f"{p.field}: {p.message}" for p in d.problems) + "]"
    return text


def _pending(d: ResourcesPending) -> str:
    return f"{len(d.ready_nodes)}/{d.wanted} nodes ready, {_reason(d.reason, d.message)}"


def _condition(d: ConditionReported) -> str:
    c = d.condition
    text = f"{c.type}={c.status} {c.reason}"
    return f"{text}: {c.message}" if c.message else text


def _cleanup(d: CleanupDone) -> str:
    if not d.deleted:
        return "nothing to remove"
    return f"removed {len(d.deleted)}: {', '.join(d.deleted)}"


def _progress(d: TuningProgress) -> str:
    if d.total_steps:
        parts = [f"job {d.job} step {d.step}/{d.total_steps} ({100 * d.step // d.total_steps}%)"]
    else:
        parts = [f"job {d.job} step {d.step}"]
    if d.loss is not None:
        parts.append(f"loss {d.loss:.4g}")
    if d.epoch is not None:
        parts.append(f"epoch {d.epoch:.2f}")
    if d.eta_seconds is not None:
        parts.append(f"eta {duration(d.eta_seconds)}")
    return ", ".join(parts)


def _key_values(data: EventData) -> str:
    """The fallback: every field as compact ``key=value``."""
    items = data.model_dump(mode="json")
    return " ".join(
        f"{k}={v if isinstance(v, str) else json.dumps(v, separators=(',', ':'))}"
        for k, v in items.items()
    )


def _at(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


_SUMMARIES: dict[type[EventData], Callable[[Any], str]] = {
    WorkspaceObserved: _observed,
    WorkspaceDeleting: lambda d: f"deletion requested at {_at(d.deletion_timestamp)}",
    PlanReady: _plan_ready,
    PlanRejected: _plan_rejected,
    ResourcesReady: lambda d: f"{_plural(len(d.node_names), 'node')}: {', '.join(d.node_names)}",
    ResourcesPending: _pending,
    ResourcesFailed: lambda d: _reason(d.reason, d.message),
    ConditionReported: _condition,
    CleanupDone: _cleanup,
    InferenceReady: lambda d: f"{d.workload} {d.ready_replicas} ready, service {d.service}",
    InferenceFailed: lambda d: _reason(d.reason, d.message),
    TuningStarted: lambda d: f"job {d.job} started",
    TuningProgress: _progress,
    TuningSucceeded: lambda d: f"job {d.job} -> {d.output}",
    TuningFailed: lambda d: f"job {d.job} {_reason(d.reason, d.message)}",
}


def one_line(text: str) -> str:
    return " ".join(text.split())


def summary(data: EventData) -> str:
    """One line saying what an event says: a formatter per event model, else key=value."""
    formatter = _SUMMARIES.get(type(data), _key_values)
    return one_line(formatter(data))


def deadletter_summary(letter: DeadLetter) -> str:
    deliveries = "1 delivery" if letter.deliveries == 1 else f"{letter.deliveries} deliveries"
    return one_line(
        f"{letter.service} gave up on {letter.subject} (#{letter.stream_sequence}) after "
        f"{deliveries}: {letter.error}"
    )


# --- rows --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    time: datetime
    type: str
    source: str
    workspace: str
    correlation: str
    summary: str


COLUMNS = ("TIME", "TYPE", "SOURCE", "WORKSPACE", "CORRELATION")
WIDTHS = (24, 18, 11, 28, 11)  # the last column, SUMMARY, takes the rest


def format_time(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def short_correlation(correlation_id: str) -> str:
    """``<uid>/<generation>`` with the uid cut to 8 characters, like a short commit hash."""
    uid, sep, generation = correlation_id.rpartition("/")
    if sep and len(uid) > 8:  # noqa: PLR2004
        return f"{uid[:8]}/{generation}"
    return correlation_id


def envelope_row(env: Envelope[EventData]) -> Row:
    return Row(
        time=env.occurred_at,
        type=env.type.value,
        source=env.source,
        workspace=env.workspace.key,
        correlation=short_correlation(env.correlation_id),
        summary=summary(env.data),
    )


def deadletter_row(letter: DeadLetter) -> Row:
    return Row(
        time=letter.failed_at,
        type=DEADLETTER,
        source=letter.service,
        workspace=letter.workspace.key if letter.workspace else "-",
        correlation="-",
        summary=deadletter_summary(letter),
    )


def _truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 3)] + "..."


def _cells(values: Sequence[str]) -> str:
    return "  ".join(v.ljust(w) for v, w in zip(values, WIDTHS, strict=True)) + "  "


def table_header() -> str:
    return _cells(COLUMNS) + "SUMMARY"


def format_row(row: Row, columns: int | None = None) -> str:
    """One table line. ``columns``: the terminal's width, which the line is cut to (the summary,
    down to 20 characters); None: the summary is cut to 120 characters."""
    head = _cells((format_time(row.time), row.type, row.source, row.workspace, row.correlation))
    width = PIPE_SUMMARY_WIDTH if columns is None else max(MIN_SUMMARY_WIDTH, columns - len(head))
    return head + _truncate(one_line(row.summary), width)


def json_line(raw: bytes) -> str:
    """A stored message as one line of JSON: as stored when it is one line already.
    ``ValueError`` when it is not a JSON object."""
    obj = json.loads(raw)
    if not isinstance(obj, dict):
        raise ValueError(f"a JSON {type(obj).__name__}, not an object")  # noqa: TRY004
    text = raw.decode("utf-8").strip()
    if "\n" in text or "\r" in text:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return text


# --- rendering one stored message --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stored:
    """A message as the stream returned it."""

    subject: str
    data: bytes
    sequence: int
    stored_at: datetime


@dataclass(frozen=True, slots=True)
class Rendered:
    line: str | None = None  # for stdout
    note: str | None = None  # for stderr


def _subject_parts(prefix: str, subject: str) -> tuple[str, str, str]:
    """The type, source and ``namespace/name`` a subject names, as far as it names them."""
    rest = subject.split(".")[len(prefix.split(".")) + 1 :]
    if rest[:1] == [DEADLETTER]:
        return DEADLETTER, ".".join(rest[1:]) or "?", "-"
    if len(rest) == 4:  # noqa: PLR2004 -- <type: 2 tokens>.<namespace>.<name>
        ns, name = (t.replace("_", ".") for t in rest[2:])
        return ".".join(rest[:2]), "?", f"{ns}/{name}"
    return ".".join(rest[:2]) or "?", "?", "-"


def _first_error(e: ValidationError) -> str:
    first = e.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "<root>"
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


class Renderer:
    """Turns stored messages into output lines, as one ``Options`` asks."""

    def __init__(self, options: Options, prefix: str, columns: int | None = None) -> None:
        self.options = options
        self.prefix = prefix
        self.columns = columns
        self.shown = 0

    def header(self) -> str | None:
        return table_header() if self.options.output == "table" else None

    def _wanted_letter(self, letter: DeadLetter) -> bool:
        o = self.options
        ws = letter.workspace
        if o.namespace is None and o.workspace is None:
            return True
        if ws is None:
            return False
        return (o.namespace in (None, ws.namespace)) and (o.workspace in (None, ws.name))

    def render(self, msg: Stored) -> Rendered:
        is_letter = msg.subject.startswith(f"{self.prefix}.{SUBJECT_VERSION}.{DEADLETTER}.")
        letter: DeadLetter | None = None
        if is_letter:
            try:
                letter = DeadLetter.model_validate_json(msg.data)
            except ValidationError as e:
                return self._unreadable(msg, f"not a dead letter: {_first_error(e)}")
            if not self._wanted_letter(letter):
                return Rendered()
        if self.options.output == "json":
            try:
                line = json_line(msg.data)
            except (ValueError, UnicodeDecodeError) as e:
                return Rendered(
                    note=f"warning: message #{msg.sequence} on {msg.subject} is not a JSON "
                    f"object ({one_line(str(e))[:200]}); skipped"
                )
            self.shown += 1
            return Rendered(line=line)
        if letter is not None:
            row = deadletter_row(letter)
        else:
            try:
                row = envelope_row(decode_event(msg.data))
            except EventDecodeError as e:
                return self._unreadable(msg, e.message)
        self.shown += 1
        return Rendered(line=format_row(row, self.columns))

    def _unreadable(self, msg: Stored, why: str) -> Rendered:
        if self.options.output == "json":
            return Rendered(note=f"warning: message #{msg.sequence} on {msg.subject}: {why}")
        kind, source, workspace = _subject_parts(self.prefix, msg.subject)
        row = Row(
            time=msg.stored_at,
            type=kind,
            source=source,
            workspace=workspace,
            correlation="-",
            summary=f"unreadable message #{msg.sequence} on {msg.subject}: {why}",
        )
        self.shown += 1
        return Rendered(line=format_row(row, self.columns))


# --- reading the stream ------------------------------------------------------------------------


def redact(url: str) -> str:
    """``url`` without its user and password."""
    parts = []
    for one in url.split(","):
        split = urlsplit(one.strip())
        if split.username or split.password:
            host = split.hostname or ""
            netloc = f"{host}:{split.port}" if split.port else host
            split = split._replace(netloc=netloc)
        parts.append(urlunsplit(split))
    return ",".join(parts)


def _describe(e: BaseException) -> str:
    text = one_line(str(e)) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."  # noqa: PLR2004


class _Reader:
    def __init__(
        self,
        settings: Settings,
        options: Options,
        out: TextIO,
        err: TextIO,
        *,
        columns: int | None,
        heartbeat_s: float,
    ) -> None:
        self.settings = settings
        self.options = options
        self.out = out
        self.err = err
        self.heartbeat_s = heartbeat_s
        self.renderer = Renderer(options, settings.subject_prefix, columns)
        self.connected = False
        self.stopping = False  # set on Ctrl-C/SIGTERM: the read loop ends at its next turn
        self.errors: list[BaseException] = []

    def write(self, line: str) -> None:
        self.out.write(line + "\n")
        if self.options.follow:
            self.out.flush()

    def note(self, line: str) -> None:
        self.err.write(line + "\n")
        self.err.flush()

    async def _on_error(self, e: Exception) -> None:
        # nats-py reports connect failures, reconnects and slow consumers here; no tracebacks.
        self.errors.append(e)
        if self.connected and self.options.follow:
            self.note(f"warning: NATS: {_describe(e)}")

    async def _on_disconnected(self) -> None:
        if self.connected and self.options.follow:
            self.note("warning: lost the connection to NATS; reconnecting")

    async def _on_reconnected(self) -> None:
        if self.options.follow:
            self.note("NATS connection restored")

    async def connect(self) -> Client:
        import nats  # noqa: PLC0415 -- keep `kaiten --help` fast

        url = self.settings.nats_url
        servers = [s.strip() for s in url.split(",") if s.strip()]
        try:
            nc = await asyncio.wait_for(
                nats.connect(
                    servers=servers,
                    name="kaiten-events",
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    connect_timeout=CONNECT_TIMEOUT_S,
                    reconnect_time_wait=1,
                    allow_reconnect=True,
                    # Two tries at start: a refused connection is reported within a second or so.
                    max_reconnect_attempts=1,
                ),
                timeout=CONNECT_DEADLINE_S,
            )
        except (TimeoutError, OSError, nats.errors.Error) as e:
            cause = self.errors[-1] if self.errors else e
            why = "no answer" if isinstance(cause, TimeoutError) else _describe(cause)
            raise ReaderError(
                f"cannot reach NATS at {redact(url)} ({why}); is Kaiten running? "
                "(NATS_URL names the server)"
            ) from None
        self.connected = True
        # Once connected, a follower rides out server restarts; a replay gives up sooner.
        nc.options["max_reconnect_attempts"] = -1 if self.options.follow else REPLAY_RECONNECTS
        return nc

    async def run(self) -> int:
        """Read; returns the exit status. ``ReaderError`` says why it could not."""
        import nats  # noqa: PLC0415
        from nats.js.api import ConsumerConfig, DeliverPolicy  # noqa: PLC0415
        from nats.js.errors import NotFoundError, ServiceUnavailableError  # noqa: PLC0415

        settings, options = self.settings, self.options
        stream = settings.stream
        nc = await self.connect()
        sub: PushSubscription | None = None
        js = nc.jetstream()
        try:
            try:
                info = await js.stream_info(stream)
            except NotFoundError:
                raise ReaderError(
                    f"no stream {stream} at {redact(settings.nats_url)}: is Kaiten running? "
                    "(KAITEN_STREAM names the stream)"
                ) from None
            except (ServiceUnavailableError, nats.errors.NoRespondersError):
                raise ReaderError(
                    f"JetStream does not answer at {redact(settings.nats_url)}: is the server "
                    "started with JetStream (-js)?"
                ) from None
            last_at_start: int = info.state.last_seq
            config = ConsumerConfig(
                description="kaiten events (read-only)",
                deliver_policy=DeliverPolicy.ALL
                if options.since is None
                else DeliverPolicy.BY_START_TIME,
                opt_start_time=options.since,
                inactive_threshold=max(5.0, 2 * self.heartbeat_s),
            )
            sub = await js.subscribe(
                subject_filter(
                    settings.subject_prefix,
                    options.event_type,
                    options.namespace,
                    options.workspace,
                ),
                stream=stream,
                config=config,
                ordered_consumer=True,
                idle_heartbeat=self.heartbeat_s,
            )
            # nats-py recreates an ordered consumer after a gap from this same config, switched
            # to by_start_sequence; the server refuses that with a start time still set.
            config.opt_start_time = None
            header = self.renderer.header()
            if header is not None:
                self.write(header)
            return await self._read(sub, last_at_start)
        finally:
            await self._cleanup(nc, js, sub)

    async def _read(self, sub: PushSubscription, last_at_start: int) -> int:
        import nats  # noqa: PLC0415

        follow = self.options.follow
        last_seen = 0
        try:
            done = not follow and await _caught_up(sub, last_seen, nothing_delivered=True)
            while not done and not self.stopping:
                try:
                    msg = await sub.next_msg(timeout=POLL_S)
                except nats.errors.TimeoutError:
                    # Nothing came for a while: caught up when the consumer has nothing left.
                    done = not follow and await _caught_up(sub, last_seen)
                    continue
                meta = msg.metadata
                last_seen = meta.sequence.stream
                rendered = self.renderer.render(
                    Stored(msg.subject, msg.data, meta.sequence.stream, meta.timestamp)
                )
                if rendered.line is not None:
                    self.write(rendered.line)
                if rendered.note is not None:
                    self.note(rendered.note)
                if not follow:
                    done = meta.num_pending == 0 or last_seen >= last_at_start
        except nats.errors.ConnectionClosedError:
            raise ReaderError(
                f"lost the connection to NATS at {redact(self.settings.nats_url)}"
            ) from None
        self.out.flush()
        if self.renderer.shown == 0 and not follow and not self.stopping:
            self.note("no events")
        return 0

    async def _cleanup(
        self, nc: Client, js: JetStreamContext, sub: PushSubscription | None
    ) -> None:
        """Remove the consumer now rather than when the server notices, and close."""

        self.connected = False  # what the connection reports from here on is our own doing

        async def close() -> None:
            if sub is not None:
                with contextlib.suppress(Exception):
                    name = (await sub.consumer_info()).name
                    await sub.unsubscribe()
                    await js.delete_consumer(self.settings.stream, name)
            await nc.close()

        with contextlib.suppress(Exception):
            await asyncio.wait_for(close(), timeout=CLEANUP_S)


async def _caught_up(
    sub: PushSubscription, last_seen: int, *, nothing_delivered: bool = False
) -> bool:
    """Whether the consumer has nothing left to send: none pending, and nothing delivered
    beyond the last message read (``nothing_delivered``: nothing delivered at all)."""
    import nats  # noqa: PLC0415

    try:
        info = await sub.consumer_info()
    except nats.errors.TimeoutError:
        return False  # ask again after the next wait
    if info.num_pending:
        return False
    delivered = info.delivered
    if nothing_delivered:
        return delivered is None or delivered.consumer_seq == 0
    return delivered is None or delivered.stream_seq <= last_seen


async def read_events(
    settings: Settings,
    options: Options,
    out: TextIO,
    err: TextIO,
    *,
    stop: asyncio.Event | None = None,
    columns: int | None = None,
    heartbeat_s: float = HEARTBEAT_S,
) -> int:
    """Print the stream's events as ``options`` asks; returns the exit status: 0 when caught
    up (or, following, when ``stop`` is set), 1 when NATS or the stream cannot be read, 130
    when ``stop`` interrupts a replay."""
    reader = _Reader(settings, options, out, err, columns=columns, heartbeat_s=heartbeat_s)
    task = asyncio.create_task(reader.run())
    waits: set[asyncio.Future[Any]] = {task}
    stopper = None if stop is None else asyncio.ensure_future(stop.wait())
    if stopper is not None:
        waits.add(stopper)
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if stopper is not None:
            stopper.cancel()
    if not task.done():
        # Cancel the wait in progress; the flag ends the loop as well, since a cancellation that
        # meets a message arriving at the same moment is lost inside asyncio.wait_for (3.11),
        # which nats-py's next_msg uses. The reader's cleanup then removes the consumer.
        reader.stopping = True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ReaderError):
            await task
        with contextlib.suppress(BrokenPipeError):
            out.flush()
        return 0 if options.follow else INTERRUPTED
    try:
        return task.result()
    except ReaderError as e:
        err.write(f"error: {e}\n")
        err.flush()
        return 1


def terminal_columns(stream: TextIO) -> int | None:
    """The terminal's width when ``stream`` is one, else None."""
    try:
        if not stream.isatty():
            return None
    except ValueError:
        return None
    return shutil.get_terminal_size().columns


def main(options: Options, settings: Settings) -> int:
    """Run ``kaiten events``; Ctrl-C or SIGTERM ends ``--follow`` with status 0."""

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await read_events(
            settings,
            options,
            sys.stdout,
            sys.stderr,
            stop=stop,
            columns=terminal_columns(sys.stdout),
        )

    try:
        return asyncio.run(run())
    except BrokenPipeError:
        # `kaiten events | head`: the reader stopped reading, which is no error. Point stdout
        # at /dev/null so the interpreter's last flush does not complain.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
