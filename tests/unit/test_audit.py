"""The audit log's pure decisions: what a message is stored as, which phases it marks, the
timelines and status phases built from them, and ``kaiten history``'s rendering."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from kaiten import history
from services.watcher import audit
from services.watcher.audit import (
    PHASES,
    AuditRecord,
    PhaseRow,
    phase_marks,
    record_of,
    rfc3339_ms,
    status_phases,
    timelines,
)
from shared.bus import DEADLETTER_REASON, Delivered
from shared.events import (
    DeadLetter,
    EventData,
    EventType,
    InferenceReady,
    PlanRejected,
    ResourcesFailed,
    ResourcesPending,
    ResourcesReady,
    TuningFailed,
    TuningStarted,
    TuningSucceeded,
    WorkspaceObserved,
    WorkspaceRef,
    condition_reported,
    deadletter_subject,
    duration,
    event_subject,
    new_event,
)
from shared.settings import Settings
from shared.workspace.models import WorkspacePhases

PREFIX = "kaiten"
T0 = datetime(2026, 11, 22, 6, 40, 1, 123456, tzinfo=UTC)
REF = WorkspaceRef(uid="uid-1", namespace="default", name="ws.a", generation=2)


def delivered(data: EventData, source: str = "tester", seq: int = 7) -> Delivered:
    env = new_event(data, source=source, workspace=REF, now=T0)
    subject = event_subject(PREFIX, env.type, REF.namespace, REF.name)
    return Delivered(subject, env.to_json(), seq, T0)


def record(data: EventData, source: str = "tester", at: datetime = T0) -> AuditRecord:
    env = new_event(data, source=source, workspace=REF, now=at)
    subject = event_subject(PREFIX, env.type, REF.namespace, REF.name)
    return record_of(Delivered(subject, env.to_json(), 1, at), PREFIX)


# --- record_of --------------------------------------------------------------------------------


def test_an_event_is_stored_with_its_envelope_fields() -> None:
    message = delivered(ResourcesReady(node_names=("n1",)), source="provisioner")
    rec = record_of(message, PREFIX)
    env = json.loads(message.body)
    assert rec.id == env["id"]
    assert (rec.type, rec.source, rec.sequence) == ("resources.ready", "provisioner", 7)
    assert (rec.namespace, rec.name, rec.uid, rec.generation) == ("default", "ws.a", "uid-1", 2)
    assert rec.correlation_id == "uid-1/2"
    assert rec.occurred_at == T0
    assert rec.data == {"node_names": ["n1"]}


def test_a_dead_letter_is_stored_with_the_workspace_it_names() -> None:
    letter = DeadLetter(
        service="deployer",
        consumer="deployer-plan-ready",
        subject="kaiten.v1.plan.ready.default.ws_a",
        stream_sequence=3,
        deliveries=5,
        error="boom",
        failed_at=T0,
        payload="{}",
        payload_encoding="utf-8",
        workspace=REF,
        event_id=uuid.uuid4(),
    )
    message = Delivered(
        deadletter_subject(PREFIX, "deployer"), letter.model_dump_json().encode(), 9, T0
    )
    rec = record_of(message, PREFIX)
    assert (rec.type, rec.source, rec.uid, rec.generation) == ("deadletter", "deployer", "uid-1", 2)
    assert rec.data["error"] == "boom"
    assert rec.causation_id == str(letter.event_id)
    assert record_of(message, PREFIX).id == rec.id  # a redelivery is the same row


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe not json",
        b'{"type": "plan.ready"}',
        b'{"type": "nope", "schema_version": 1, "data": {}}',
    ],
)
def test_an_unreadable_body_is_kept_raw_with_the_workspace_its_subject_names(body: bytes) -> None:
    subject = f"{PREFIX}.v1.plan.ready.default.ws_a"
    rec = record_of(Delivered(subject, body, 11, T0), PREFIX)
    assert rec.type == "unreadable"
    assert (rec.namespace, rec.name, rec.uid, rec.generation) == ("default", "ws.a", "", -1)
    assert rec.data["payload"] == body.decode("utf-8", errors="replace")
    assert rec.data["error"]
    assert rec.occurred_at == T0


def test_an_unreadable_body_on_an_unknown_subject_has_no_workspace() -> None:
    rec = record_of(Delivered(f"{PREFIX}.v1.other", b"x", 1, T0), PREFIX)
    assert (rec.namespace, rec.name) == ("", "")
    assert phase_marks(rec) == ()


# --- phase_marks ------------------------------------------------------------------------------


def observed() -> WorkspaceObserved:
    return WorkspaceObserved(workspace={"metadata": {}}, spec_hash="h", trigger="added")


@pytest.mark.parametrize(
    ("data", "source", "marks"),
    [
        (observed(), "watcher", ("observed",)),
        (PlanRejected(reason="r", message="m"), "planner", ("failed",)),
        (
            ResourcesPending(reason="r", message="m", wanted=1),
            "provisioner",
            ("nodesRequested",),
        ),
        (ResourcesReady(node_names=("n",)), "provisioner", ("nodesRequested", "nodesReady")),
        (
            ResourcesFailed(reason="QuotaExceeded", message="m"),
            "provisioner",
            ("nodesRequested", "failed"),
        ),
        (
            InferenceReady(workload="Deployment/x", ready_replicas=1, service="x"),
            "deployer",
            ("workloadCreated", "podsReady"),
        ),
        (TuningStarted(job="j"), "tuner", ("workloadCreated", "tuningStarted")),
        (
            TuningSucceeded(job="j", output="o"),
            "tuner",
            ("workloadCreated", "tuningStarted", "tuningFinished"),
        ),
        (
            TuningFailed(job="j", reason="r", message="m"),
            "tuner",
            ("workloadCreated", "tuningFinished", "failed"),
        ),
        (
            condition_reported(REF, "NodeClaimReady", "Unknown", "Pending", "m"),
            "provisioner",
            ("nodesRequested",),
        ),
        (
            condition_reported(REF, "InferenceReady", "False", "Pending", "m"),
            "deployer",
            ("workloadCreated",),
        ),
        (
            condition_reported(REF, "JobStarted", "False", "Pending", "m"),
            "tuner",
            ("workloadCreated",),
        ),
        (
            condition_reported(REF, "WorkspaceSucceeded", "True", "workspaceSucceeded", "m"),
            "deployer",
            ("workloadCreated", "succeeded"),
        ),
        (
            condition_reported(REF, "WorkspaceSucceeded", "False", DEADLETTER_REASON, "m"),
            "deployer",
            (),
        ),
        (condition_reported(REF, "WorkspaceSucceeded", "False", "Invalid", "m"), "planner", ()),
    ],
)
def test_phase_marks(data: EventData, source: str, marks: tuple[str, ...]) -> None:
    assert phase_marks(record(data, source)) == marks


def test_every_event_type_is_considered() -> None:
    """A new event type must be placed in the timeline (or deliberately marked nothing)."""
    unmarked = {EventType.CONDITION_REPORTED, EventType.CLEANUP_DONE}
    assert set(EventType) - set(audit._MARKS) == unmarked


# --- timelines --------------------------------------------------------------------------------


def row(phase: str, seconds: float, uid: str = "u", generation: int = 1) -> PhaseRow:
    return PhaseRow("ns", "w", uid, generation, phase, T0 + timedelta(seconds=seconds))


def test_a_timeline_orders_phases_by_time_with_the_duration_of_each() -> None:
    rows = [row("podsReady", 4.5), row("observed", 0), row("planned", 0.25), row("nodesReady", 3.0)]
    [timeline] = timelines(rows)
    assert [p.name for p in timeline.phases] == ["observed", "planned", "nodesReady", "podsReady"]
    assert [p.since_previous.total_seconds() for p in timeline.phases] == [0, 0.25, 2.75, 1.5]
    assert timeline.total == timedelta(seconds=4.5)
    assert timeline.at("planned") == T0 + timedelta(seconds=0.25)
    assert timeline.at("failed") is None


def test_simultaneous_phases_keep_the_rollout_order() -> None:
    [timeline] = timelines([row("nodesReady", 1), row("nodesRequested", 1), row("observed", 0)])
    assert [p.name for p in timeline.phases] == ["observed", "nodesRequested", "nodesReady"]


def test_one_timeline_per_uid_and_generation_oldest_first() -> None:
    rows = [row("observed", 10, generation=2), row("observed", 0), row("observed", 20, uid="v")]
    assert [(t.uid, t.generation) for t in timelines(rows)] == [("u", 1), ("u", 2), ("v", 1)]


def test_status_phases_name_the_generation_and_each_time_in_milliseconds() -> None:
    [timeline] = timelines([row("observed", 0), row("planned", 0.5)])
    assert status_phases(timeline) == {
        "generation": 1,
        "observed": "2026-11-22T06:40:01.123Z",
        "planned": "2026-11-22T06:40:01.623Z",
    }
    WorkspacePhases.model_validate(status_phases(timeline))  # the CRD's schema accepts it


def test_the_status_model_has_a_field_for_every_phase() -> None:
    fields = {f.alias or n for n, f in WorkspacePhases.model_fields.items()}
    assert fields == {*PHASES, "generation"}


def test_rfc3339_ms_is_in_utc() -> None:
    plus_two = T0.astimezone(timezone(timedelta(hours=2)))
    assert plus_two.hour == 8
    assert rfc3339_ms(plus_two) == "2026-11-22T06:40:01.123Z"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0123, "12ms"), (0.35, "350ms"), (1.234, "1.23s"), (12.34, "12.3s"), (125, "2m05s")],
)
def test_precise_durations(seconds: float, text: str) -> None:
    assert duration(seconds, precise=True) == text


def test_plain_durations_are_unchanged() -> None:
    assert duration(0.35) == "0s"
    assert duration(45) == "45s"


# --- kaiten history ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["default", "/x", "x/", "a/b/c", ""])
def test_history_needs_namespace_slash_name(value: str) -> None:
    with pytest.raises(history.UsageError, match="NAMESPACE/NAME"):
        history.workspace_key(value)


def test_history_text_shows_every_phase_with_its_duration() -> None:
    rows = [
        row("observed", 0),
        row("planned", 0.05),
        row("nodesRequested", 0.1),
        row("nodesReady", 1.6),
        row("workloadCreated", 1.7),
        row("podsReady", 2.2),
        row("succeeded", 2.2),
    ]
    text = history.render_text("ns/w", timelines(rows), now=T0 + timedelta(seconds=60))
    lines = text.splitlines()
    assert lines[0] == "ns/w generation 1: succeeded in 2.20s"
    assert lines[1].split() == ["PHASE", "AT", "(UTC)", "TOOK", "SINCE", "START"]
    table = {line.split()[0]: line.split()[2:] for line in lines[2:]}
    assert table["observed"] == ["-", "0ms"]
    assert table["planned"] == ["50ms", "50ms"]
    assert table["nodesReady"] == ["1.50s", "1.60s"]
    assert table["podsReady"] == ["500ms", "2.20s"]


def test_history_says_what_an_unfinished_generation_waits_after() -> None:
    [timeline] = timelines([row("observed", 0), row("planned", 1)])
    assert history.outcome(timeline, T0 + timedelta(seconds=31)) == "in progress: planned 30.0s ago"
    [failed] = timelines([row("observed", 0), row("failed", 2)])
    assert history.outcome(failed, T0) == "failed after 2.00s"
    [relapsed] = timelines([row("observed", 0), row("succeeded", 0.5), row("failed", 12)])
    assert history.outcome(relapsed, T0) == "failed after 12.0s (first succeeded in 500ms)"


def test_history_names_the_uid_when_the_name_was_reused() -> None:
    rows = [row("observed", 0), row("observed", 10, uid="v")]
    text = history.render_text("ns/w", timelines(rows), now=T0)
    assert "ns/w uid u generation 1" in text
    assert "ns/w uid v generation 1" in text


def test_history_json() -> None:
    [timeline] = timelines([row("observed", 0), row("planned", 0.5)])
    assert history.to_json(timeline) == {
        "namespace": "ns",
        "name": "w",
        "uid": "u",
        "generation": 1,
        "total_seconds": 0.5,
        "phases": [
            {
                "phase": "observed",
                "at": "2026-11-22T06:40:01.123Z",
                "seconds": 0.0,
                "since_start_seconds": 0.0,
            },
            {
                "phase": "planned",
                "at": "2026-11-22T06:40:01.623Z",
                "seconds": 0.5,
                "since_start_seconds": 0.5,
            },
        ],
    }


def test_history_refuses_bad_arguments_before_touching_the_database() -> None:
    err = io.StringIO()
    settings = Settings(database_url="postgresql://nobody@127.0.0.1:1/none")
    assert history.main("nonamespace", "text", settings, io.StringIO(), err) == 2
    assert "expected NAMESPACE/NAME" in err.getvalue()
    err = io.StringIO()
    assert history.main("a/b", "yaml", settings, io.StringIO(), err) == 2
    assert "choose text or json" in err.getvalue()


def test_history_says_when_postgres_cannot_be_read() -> None:
    err = io.StringIO()
    settings = Settings(database_url="postgresql://nobody@127.0.0.1:1/none")
    assert history.main("a/b", "text", settings, io.StringIO(), err) == 2
    assert "cannot read the audit log in PostgreSQL" in err.getvalue()
    assert "DATABASE_URL" in err.getvalue()
