"""`kaiten events`, the pure parts: options, subject filters, summaries, table and JSON lines."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import ClassVar

import pytest

from kaiten.events import (
    DEADLETTER,
    PIPE_SUMMARY_WIDTH,
    Options,
    Renderer,
    Row,
    Stored,
    UsageError,
    build_options,
    deadletter_row,
    envelope_row,
    format_row,
    format_time,
    json_line,
    parse_since,
    parse_type,
    redact,
    short_correlation,
    subject_filter,
    summary,
    table_header,
    type_choices,
)
from shared.events import (
    EVENT_MODELS,
    CleanupDone,
    Condition,
    ConditionReported,
    DeadLetter,
    Envelope,
    EventData,
    EventType,
    FieldProblem,
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
    WorkspaceRef,
    event_subject,
    new_event,
)
from shared.plan import Price, RuntimeChoice
from tests.support.plans import minimal_plan

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
UID = "3f1c2a9b-7d4e-4c1a-9b2f-0123456789ab"
WS = WorkspaceRef(uid=UID, namespace="team-a", name="phi-3.mini", generation=2)
PREFIX = "kaiten"

# One plausible event of every type, with the facts its summary must show.
CASES: list[tuple[EventData, list[str]]] = [
    (
        WorkspaceObserved(
            workspace={
                "metadata": {"name": "phi-3.mini", "namespace": "team-a"},
                "resource": {"count": 2, "instanceType": "Standard_NC24ads_A100_v4"},
                "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
            },
            spec_hash="ab12cd34ef56ab12cd34",
            trigger="changed",
        ),
        ["changed", "inference phi-3-mini-4k-instruct", "2 x Standard_NC24ads_A100_v4", "ab12cd34"],
    ),
    (
        WorkspaceDeleting(deletion_timestamp=NOW),
        ["deletion", "2026-11-21T12:00:00Z"],
    ),
    (
        PlanReady(
            mode="inference",
            preset="phi-3-mini-4k-instruct",
            instance_type="Standard_NC24ads_A100_v4",
            node_count=2,
            plan=minimal_plan(
                node_count=2,
                instance_type="Standard_NC24ads_A100_v4",
                runtime=RuntimeChoice(name="vllm", reason="A100"),
                price=Price(usd_per_hour_per_node=3.67, usd_per_hour=7.34, source="azure"),
            ),
        ),
        ["2 nodes x Standard_NC24ads_A100_v4, vllm", "phi-3-mini-4k-instruct", "$7.34/h"],
    ),
    (
        PlanRejected(
            reason="InvalidInstanceType",
            message="Standard_X is not a GPU instance type",
            problems=(FieldProblem(field="resource.instanceType", message="unknown SKU"),),
        ),
        ["InvalidInstanceType", "not a GPU instance type", "resource.instanceType: unknown SKU"],
    ),
    (
        ResourcesReady(node_names=("aks-ws1-0", "aks-ws1-1")),
        ["2 nodes", "aks-ws1-0", "aks-ws1-1"],
    ),
    (
        ResourcesPending(
            reason="NodeClaimNotReady", message="1 of 2 ready", ready_nodes=("n1",), wanted=2
        ),
        ["1/2 nodes ready", "NodeClaimNotReady", "1 of 2 ready"],
    ),
    (
        ResourcesFailed(reason="QuotaExceeded", message="need 48 vCPUs, 24 left"),
        ["QuotaExceeded: need 48 vCPUs, 24 left"],
    ),
    (
        ConditionReported(
            condition=Condition(
                type="InferenceReady",
                status="True",
                reason="WorkspaceInferenceStatusSuccess",
                message="",
                observed_generation=2,
            )
        ),
        ["InferenceReady=True WorkspaceInferenceStatusSuccess"],
    ),
    (
        CleanupDone(deleted=("Deployment/phi", "Service/phi")),
        ["removed 2", "Deployment/phi", "Service/phi"],
    ),
    (
        InferenceReady(workload="Deployment/phi", ready_replicas=2, service="phi"),
        ["Deployment/phi", "2 ready", "service phi"],
    ),
    (
        InferenceFailed(reason="ContainerOOMKilled", message="OOMKilled after 3 restarts"),
        ["ContainerOOMKilled: OOMKilled after 3 restarts"],
    ),
    (TuningStarted(job="phi-tuning"), ["job phi-tuning", "started"]),
    (
        TuningProgress(
            job="phi-tuning", step=120, total_steps=500, loss=0.43219, epoch=1.2, eta_seconds=310
        ),
        ["step 120/500", "24%", "loss 0.4322", "epoch 1.20", "eta 5m10s"],
    ),
    (
        TuningSucceeded(job="phi-tuning", output="registry.io/adapters/phi:1@sha256:abc"),
        ["job phi-tuning", "registry.io/adapters/phi:1@sha256:abc"],
    ),
    (
        TuningFailed(job="phi-tuning", reason="BackoffLimitExceeded", message="failed 3 times"),
        ["phi-tuning", "BackoffLimitExceeded: failed 3 times"],
    ),
]


def env(data: EventData, ws: WorkspaceRef = WS, source: str = "planner") -> Envelope[EventData]:
    return new_event(data, source=source, workspace=ws, now=NOW)


def letter(workspace: WorkspaceRef | None = WS) -> DeadLetter:
    return DeadLetter(
        service="deployer",
        consumer="deployer-plan-ready",
        subject="kaiten.v1.plan.ready.team-a.phi-3_mini",
        stream_sequence=42,
        deliveries=5,
        error="RuntimeError: boom\nsecond line",
        failed_at=NOW,
        payload="{}",
        payload_encoding="utf-8",
        workspace=workspace,
    )


def stored(raw: bytes, subject: str, seq: int = 7) -> Stored:
    return Stored(subject=subject, data=raw, sequence=seq, stored_at=NOW)


def stored_event(e: Envelope[EventData]) -> Stored:
    ws = e.workspace
    return stored(e.to_json(), event_subject(PREFIX, e.type, ws.namespace, ws.name))


# --- --since ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "delta"),
    [
        ("45s", timedelta(seconds=45)),
        ("10m", timedelta(minutes=10)),
        ("2h", timedelta(hours=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("3d", timedelta(days=3)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("0s", timedelta(0)),
    ],
)
def test_since_reads_a_duration_back_from_now(text: str, delta: timedelta) -> None:
    assert parse_since(text, now=NOW) == NOW - delta


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-21T10:00:00Z", datetime(2026, 11, 21, 10, 0, tzinfo=UTC)),
        ("2026-11-21T11:00:00+01:00", datetime(2026, 11, 21, 10, 0, tzinfo=UTC)),
        ("2026-11-21 10:00:00.250Z", datetime(2026, 11, 21, 10, 0, 0, 250000, tzinfo=UTC)),
    ],
)
def test_since_reads_an_rfc3339_time(text: str, expected: datetime) -> None:
    got = parse_since(text, now=NOW)
    assert got == expected
    assert got.tzinfo is UTC


def test_since_without_a_zone_is_local_time() -> None:
    naive = datetime(2026, 11, 21, 10, 0)  # noqa: DTZ001 -- a naive time is the point
    assert parse_since("2026-11-21T10:00:00", now=NOW) == naive.astimezone(UTC)


@pytest.mark.parametrize("text", ["", "10", "5x", "1m2h", "yesterday", "10 m", "-5m"])
def test_since_refuses_other_text_naming_the_flag_and_the_forms(text: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_since(text, now=NOW)
    message = str(err.value)
    assert message.startswith("--since:")
    for form in ("45s", "10m", "1h30m", "3d", "RFC 3339"):
        assert form in message


def test_since_refuses_a_duration_longer_than_the_calendar() -> None:
    with pytest.raises(UsageError, match=r"^--since: '9999999d' is before the calendar begins"):
        parse_since("9999999d", now=NOW)


# --- --type, filters -------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", list(EventType))
def test_type_takes_every_event_type_by_value_and_by_model_name(event_type: EventType) -> None:
    assert parse_type(event_type.value) is event_type
    assert parse_type(event_type.value.upper()) is event_type
    assert parse_type(EVENT_MODELS[event_type].__name__) is event_type


def test_type_takes_deadletter_and_refuses_others_listing_the_choices() -> None:
    assert parse_type("deadletter") == DEADLETTER
    with pytest.raises(UsageError) as err:
        parse_type("plan.readyy")
    message = str(err.value)
    assert message.startswith("--type:")
    assert "'plan.readyy'" in message
    for choice in type_choices():
        assert choice in message
    assert len(type_choices()) == len(EventType) + 1


@pytest.mark.parametrize(
    ("event_type", "namespace", "workspace", "expected"),
    [
        (None, None, None, "kaiten.v1.>"),
        (EventType.PLAN_READY, None, None, "kaiten.v1.plan.ready.*.*"),
        (None, "team-a", None, "kaiten.v1.*.*.team-a.*"),
        (None, None, "phi-3.mini", "kaiten.v1.*.*.*.phi-3_mini"),
        (None, "team-a", "phi-3.mini", "kaiten.v1.*.*.team-a.phi-3_mini"),
        (EventType.CONDITION_REPORTED, "team-a", "w", "kaiten.v1.condition.reported.team-a.w"),
        (DEADLETTER, None, None, "kaiten.v1.deadletter.*"),
        (DEADLETTER, "team-a", "w", "kaiten.v1.deadletter.*"),
    ],
)
def test_subject_filter_narrows_on_the_server(
    event_type: EventType | None, namespace: str | None, workspace: str | None, expected: str
) -> None:
    assert subject_filter(PREFIX, event_type, namespace, workspace) == expected


def test_the_filter_matches_the_subjects_events_are_published_on() -> None:
    subject = event_subject(PREFIX, EventType.PLAN_READY, "team-a", "phi-3.mini")
    pattern = subject_filter(PREFIX, EventType.PLAN_READY, "team-a", "phi-3.mini")
    assert subject == pattern
    wild = subject_filter(PREFIX, None, None, "phi-3.mini").split(".")
    tokens = subject.split(".")
    assert len(wild) == len(tokens)
    assert all(w in ("*", t) for w, t in zip(wild, tokens, strict=True))


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"namespace": "a*"}, "-n/--namespace"),
        ({"workspace": "my ws"}, "--workspace"),
        ({"workspace": "a_b"}, "--workspace"),
        ({"output": "yaml"}, "-o/--output"),
        ({"event_type": "nope"}, "--type"),
        ({"since": "soon"}, "--since"),
    ],
)
def test_build_options_names_the_bad_flag(kwargs: dict[str, str], flag: str) -> None:
    with pytest.raises(UsageError, match=f"^{flag}:"):
        build_options(**kwargs)  # type: ignore[arg-type]


def test_build_options_keeps_what_was_asked() -> None:
    options = build_options(
        follow=True,
        since="10m",
        namespace="team-a",
        workspace="phi",
        event_type="TuningProgress",
        output="json",
        now=NOW,
    )
    assert options == Options(
        follow=True,
        since=NOW - timedelta(minutes=10),
        namespace="team-a",
        workspace="phi",
        event_type=EventType.TUNING_PROGRESS,
        output="json",
    )


# --- summaries -------------------------------------------------------------------------------


def test_every_event_type_has_a_summary_case() -> None:
    assert {type(data).event_type for data, _ in CASES} == set(EventType)


@pytest.mark.parametrize(("data", "facts"), CASES, ids=lambda c: getattr(c, "event_type", ""))
def test_summary_is_one_line_with_the_key_facts(data: EventData, facts: list[str]) -> None:
    text = summary(data)
    assert text
    assert "\n" not in text
    assert text == text.strip()
    for fact in facts:
        assert fact in text, f"{fact!r} not in {text!r}"


def test_summaries_match_the_examples_of_the_issue() -> None:
    plan, condition = CASES[2][0], CASES[7][0]
    assert "2 nodes x Standard_NC24ads_A100_v4, vllm" in summary(plan)
    assert summary(condition) == "InferenceReady=True WorkspaceInferenceStatusSuccess"


def test_multi_line_messages_become_one_line() -> None:
    data = ResourcesFailed(reason="QuotaExceeded", message="first line\n  second\tline\n")
    assert summary(data) == "QuotaExceeded: first line second line"


def test_progress_without_a_known_total_or_loss() -> None:
    text = summary(TuningProgress(job="j", step=7, total_steps=0))
    assert text == "job j step 7"


def test_an_event_model_without_a_formatter_falls_back_to_key_values() -> None:
    class Extra(EventData):
        event_type: ClassVar[EventType] = EventType.TUNING_STARTED
        job: str
        nodes: tuple[str, ...]
        attempt: int

    text = summary(Extra(job="j1", nodes=("a", "b"), attempt=2))
    assert text == 'job=j1 nodes=["a","b"] attempt=2'


def test_deadletter_row_says_who_gave_up_on_what() -> None:
    row = deadletter_row(letter())
    assert row.type == DEADLETTER
    assert row.source == "deployer"
    assert row.workspace == "team-a/phi-3.mini"
    assert row.summary == (
        "deployer gave up on kaiten.v1.plan.ready.team-a.phi-3_mini (#42) after 5 deliveries: "
        "RuntimeError: boom second line"
    )
    assert deadletter_row(letter(workspace=None)).workspace == "-"


# --- table and JSON lines --------------------------------------------------------------------


def test_short_correlation_keeps_a_uid_prefix_and_the_generation() -> None:
    assert short_correlation(f"{UID}/2") == "3f1c2a9b/2"
    assert short_correlation("3f1c/2") == "3f1c/2"
    assert short_correlation("opaque") == "opaque"


def test_table_row_has_every_column_in_order() -> None:
    e = env(CASES[2][0])
    header = table_header()
    line = format_row(envelope_row(e))
    assert header.split() == ["TIME", "TYPE", "SOURCE", "WORKSPACE", "CORRELATION", "SUMMARY"]
    cells = line.split(None, 5)
    assert cells[:5] == [
        "2026-11-21T12:00:00.000Z",
        "plan.ready",
        "planner",
        "team-a/phi-3.mini",
        "3f1c2a9b/2",
    ]
    assert cells[5] == summary(e.data)
    # The columns line up with the header's.
    for name in ("TYPE", "SOURCE", "WORKSPACE", "CORRELATION", "SUMMARY"):
        start = header.index(name)
        assert line[start - 2 : start] == "  "
        assert line[start] != " "


def test_summary_is_cut_to_120_characters_off_a_terminal() -> None:
    long = ResourcesFailed(reason="QuotaExceeded", message="x" * 500)
    line = format_row(envelope_row(env(long)))
    head = format_row(Row(NOW, "t", "s", "w", "c", ""))
    assert len(line) == len(head) + PIPE_SUMMARY_WIDTH
    assert line.endswith("...")


@pytest.mark.parametrize("columns", [150, 200])
def test_summary_is_cut_to_the_terminal_width(columns: int) -> None:
    long = ResourcesFailed(reason="QuotaExceeded", message="x" * 500)
    line = format_row(envelope_row(env(long)), columns=columns)
    assert len(line) == columns
    assert line.endswith("...")
    short = format_row(envelope_row(env(CASES[6][0])), columns=columns)
    assert short.endswith("QuotaExceeded: need 48 vCPUs, 24 left")


def test_a_narrow_terminal_still_shows_some_summary() -> None:
    long = ResourcesFailed(reason="QuotaExceeded", message="x" * 500)
    line = format_row(envelope_row(env(long)), columns=40)
    head = format_row(Row(NOW, "t", "s", "w", "c", ""))
    assert len(line) == len(head) + 20


def test_time_is_utc_with_milliseconds() -> None:
    t = datetime(2026, 11, 21, 13, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert format_time(t) == "2026-11-21T12:00:00.123Z"


def test_json_line_is_the_stored_envelope_on_one_line() -> None:
    e = env(CASES[0][0])
    raw = e.to_json()
    assert json_line(raw) == raw.decode()
    pretty = json.dumps(json.loads(raw), indent=2).encode()
    line = json_line(pretty)
    assert "\n" not in line
    assert json.loads(line) == json.loads(raw)
    with pytest.raises(ValueError, match="not an object"):
        json_line(b"[1, 2]")
    with pytest.raises(ValueError, match="Expecting value"):
        json_line(b"garbage")


# --- rendering stored messages ---------------------------------------------------------------


def test_renderer_shows_an_envelope_as_a_row_or_as_stored() -> None:
    e = env(CASES[12][0])
    table = Renderer(Options(), PREFIX)
    assert table.header() == table_header()
    assert table.render(stored_event(e)).line == format_row(envelope_row(e))
    as_json = Renderer(Options(output="json"), PREFIX)
    assert as_json.header() is None
    rendered = as_json.render(stored_event(e))
    assert rendered.line == e.to_json().decode()
    assert rendered.note is None
    assert table.shown == as_json.shown == 1


def test_unreadable_messages_are_shown_with_their_subject_and_why() -> None:
    table = Renderer(Options(), PREFIX)
    subject = "kaiten.v1.plan.ready.team-a.phi-3_mini"
    line = table.render(stored(b"not json", subject)).line
    assert line is not None
    cells = line.split(None, 5)
    assert cells[1:5] == ["plan.ready", "?", "team-a/phi-3.mini", "-"]
    assert f"unreadable message #7 on {subject}: not a Kaiten event envelope" in cells[5]

    body = json.loads(env(CASES[1][0]).to_json())
    body["type"] = "plan.exploded"
    line = table.render(stored(json.dumps(body).encode(), subject)).line
    assert line is not None
    assert "unknown event type 'plan.exploded'" in line

    body["type"], body["schema_version"] = "plan.ready", 9
    line = table.render(stored(json.dumps(body).encode(), subject)).line
    assert line is not None
    assert "schema_version 9 is not supported" in line


def test_unreadable_messages_in_json_mode_are_a_note_not_a_line() -> None:
    as_json = Renderer(Options(output="json"), PREFIX)
    rendered = as_json.render(stored(b"\xff\xfe", "kaiten.v1.plan.ready.a.b", seq=9))
    assert rendered.line is None
    assert rendered.note is not None
    assert rendered.note.startswith("warning: message #9 on kaiten.v1.plan.ready.a.b")
    assert as_json.shown == 0
    # An envelope of a type this build does not know is still stored JSON: shown as it is.
    body = json.loads(env(CASES[1][0]).to_json())
    body["type"] = "plan.exploded"
    raw = json.dumps(body, separators=(",", ":")).encode()
    assert as_json.render(stored(raw, "kaiten.v1.plan.exploded.a.b")).line == raw.decode()


def test_dead_letters_are_rows_and_filtered_by_their_workspace() -> None:
    subject = "kaiten.v1.deadletter.deployer"
    raw = letter().model_dump_json().encode()
    every = Renderer(Options(event_type=DEADLETTER), PREFIX)
    line = every.render(stored(raw, subject)).line
    assert line is not None
    assert line.split(None, 5)[1:5] == [DEADLETTER, "deployer", "team-a/phi-3.mini", "-"]
    same_ns = Renderer(Options(event_type=DEADLETTER, namespace="team-a"), PREFIX)
    assert same_ns.render(stored(raw, subject)).line == line
    other_ns = Renderer(Options(event_type=DEADLETTER, namespace="team-b"), PREFIX)
    assert other_ns.render(stored(raw, subject)).line is None
    other_name = Renderer(Options(event_type=DEADLETTER, workspace="other"), PREFIX)
    assert other_name.render(stored(raw, subject)).line is None
    no_ws = letter(workspace=None).model_dump_json().encode()
    assert same_ns.render(stored(no_ws, subject)).line is None
    as_json = Renderer(Options(output="json"), PREFIX)
    assert as_json.render(stored(raw, subject)).line == raw.decode()
    bad = every.render(stored(b'{"bad": 1}', subject)).line
    assert bad is not None
    assert bad.split(None, 5)[1:3] == [DEADLETTER, "deployer"]
    assert "not a dead letter: service: Field required (and" in bad


def test_redact_drops_credentials_from_urls() -> None:
    assert redact("nats://user:secret@nats.example:4222") == "nats://nats.example:4222"
    assert redact("nats://a:4222, tls://t0ken@b") == "nats://a:4222,tls://b"
    assert redact("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"
