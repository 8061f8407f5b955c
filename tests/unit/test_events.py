"""Event envelope, payload models, message ids and subjects."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import EventDecodeError
from shared.events import (
    EVENT_MODELS,
    CleanupDone,
    Condition,
    ConditionReported,
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
    correlation_id_for,
    deadletter_subject,
    decode_event,
    event_subject,
    event_type_filter,
    new_event,
    previous_outcome,
    subject_token,
)
from tests.support.plans import minimal_plan

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
WS = WorkspaceRef(uid="3f1c", namespace="default", name="workspace-phi-3-mini", generation=2)

ONE_OF_EACH = [
    WorkspaceObserved(workspace={"metadata": {"name": "w"}}, spec_hash="ab12", trigger="added"),
    WorkspaceDeleting(deletion_timestamp=NOW),
    PlanReady(
        mode="inference",
        preset="phi-3-mini-4k-instruct",
        instance_type="Standard_NC6s_v3",
        node_count=1,
        plan=minimal_plan(),
    ),
    PlanRejected(
        reason="InvalidInstanceType",
        message="unsupported",
        problems=(FieldProblem(field="resource.instanceType", message="unknown SKU"),),
    ),
    ResourcesReady(node_names=("aks-ws1-0",)),
    ResourcesPending(reason="NodeClaimNotReady", message="1 of 2", ready_nodes=("n1",), wanted=2),
    ResourcesFailed(reason="QuotaExceeded", message="quota"),
    ConditionReported(
        condition=Condition(
            type="ResourceReady",
            status="True",
            reason="workspaceResourceStatusSuccess",
            message="workspace resource is ready",
            observed_generation=2,
        )
    ),
    CleanupDone(deleted=("Deployment/w",)),
    InferenceReady(workload="Deployment/w", ready_replicas=1, service="w"),
    InferenceFailed(reason="ContainerOOMKilled", message="OOMKilled"),
    TuningStarted(job="w"),
    TuningProgress(job="w", step=3, total_steps=30, loss=1.25, eta_seconds=12.0),
    TuningSucceeded(job="w", output="myregistry.azurecr.io/adapters/phi-3:0.0.1"),
    TuningFailed(job="w", reason="BackoffLimitExceeded", message="failed 3 times"),
]


def test_every_event_type_has_one_model_and_an_example() -> None:
    assert set(EVENT_MODELS) == set(EventType)
    assert {type(d).event_type for d in ONE_OF_EACH} == set(EventType)


@pytest.mark.parametrize("data", ONE_OF_EACH, ids=lambda d: str(d.event_type))
def test_every_event_survives_the_wire(data: Any) -> None:
    env = new_event(data, source="planner", workspace=WS, now=NOW)
    decoded = decode_event(env.to_json(), expected=data.event_type)
    assert decoded == env
    assert type(decoded.data) is type(data)


def test_caused_event_keeps_the_correlation_and_points_at_its_cause() -> None:
    cause = new_event(
        ResourcesReady(node_names=("n",)), source="provisioner", workspace=WS, now=NOW
    )
    effect = new_event(TuningStarted(job="w"), source="tuner", workspace=WS, now=NOW, cause=cause)
    assert cause.correlation_id == correlation_id_for(WS) == "3f1c/2"
    assert effect.correlation_id == cause.correlation_id
    assert effect.causation_id == cause.id


def test_msg_id_is_the_same_for_the_same_fact_and_differs_for_another() -> None:
    data = ResourcesReady(node_names=("n1",))
    a = new_event(data, source="provisioner", workspace=WS, now=NOW)
    b = new_event(data, source="provisioner", workspace=WS, now=datetime.now(UTC))
    assert a.id != b.id
    assert a.msg_id() == b.msg_id()
    assert a.msg_id().startswith("resources.ready:3f1c:2:")
    other_nodes = new_event(
        ResourcesReady(node_names=("n2",)), source="provisioner", workspace=WS, now=NOW
    )
    next_gen = new_event(
        data, source="provisioner", workspace=WS.model_copy(update={"generation": 3}), now=NOW
    )
    assert len({a.msg_id(), other_nodes.msg_id(), next_gen.msg_id()}) == 3


def test_a_fact_that_comes_back_after_another_is_not_a_duplicate() -> None:
    """Ready, then failed, then Ready again: the second Ready follows another outcome, so its
    message id differs from the first's; the same transition published twice keeps one id."""
    ready = new_event(ResourcesReady(node_names=("n1",)), source="deployer", workspace=WS, now=NOW)
    first, again = ready.msg_id(after="pending-key"), ready.msg_id(after="failed-key")
    assert first != again
    assert again == ready.msg_id(after="failed-key")


def test_a_transition_that_comes_back_a_second_time_is_news_too() -> None:
    """Pending -> Ready, then (a restart) Pending -> Ready again inside the duplicate window: the
    same transition, but recorded at another time, so JetStream must not drop it; a retry of one
    transition (the stored row unchanged) keeps its id."""
    ready = new_event(ResourcesReady(node_names=("n1",)), source="deployer", workspace=WS, now=NOW)
    once = ready.msg_id(after=previous_outcome("pending-key", NOW))
    later = NOW.replace(minute=(NOW.minute + 1) % 60)
    twice = ready.msg_id(after=previous_outcome("pending-key", later))
    assert once != twice
    assert once == ready.msg_id(after=previous_outcome("pending-key", NOW))


def envelope_dict(**overrides: Any) -> dict[str, Any]:
    env = new_event(ResourcesReady(node_names=("n",)), source="provisioner", workspace=WS, now=NOW)
    body: dict[str, Any] = json.loads(env.to_json())
    body.update(overrides)
    return body


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\xff", "not a Kaiten event envelope"),
        (b"[]", "not a Kaiten event envelope"),
        (
            json.dumps(envelope_dict(type="plan.exploded")).encode(),
            "unknown event type 'plan.exploded'",
        ),
        (json.dumps(envelope_dict(schema_version=9)).encode(), "schema_version 9 is not supported"),
        (
            json.dumps(envelope_dict(data={"node_names": []})).encode(),
            "invalid resources.ready event: data.node_names",
        ),
        (
            json.dumps(envelope_dict(data={"node_names": ["n"], "extra": 1})).encode(),
            "data.extra: Extra inputs are not permitted",
        ),
        (
            json.dumps(envelope_dict(occurred_at="2026-11-21T12:00:00")).encode(),
            "occurred_at",
        ),
    ],
    ids=[
        "binary",
        "not-object",
        "unknown-type",
        "future-version",
        "empty-nodes",
        "extra-field",
        "naive-time",
    ],
)
def test_bad_messages_are_refused_naming_the_problem(raw: bytes, message: str) -> None:
    with pytest.raises(EventDecodeError) as caught:
        decode_event(raw)
    assert message in caught.value.message


def test_an_event_of_another_type_is_refused_by_a_typed_consumer() -> None:
    env = new_event(TuningStarted(job="w"), source="tuner", workspace=WS, now=NOW)
    with pytest.raises(
        EventDecodeError, match=r"expected a plan\.ready event, got tuning\.started"
    ):
        decode_event(env.to_json(), expected=EventType.PLAN_READY)


def test_strict_models_do_not_coerce_python_values() -> None:
    with pytest.raises(ValueError, match="node_count"):
        PlanReady(
            mode="inference", preset="p", instance_type="i", node_count="1", plan=minimal_plan()
        )


def test_subjects_follow_the_scheme_and_dots_in_names_stay_one_token() -> None:
    assert (
        event_subject("kaiten", EventType.WORKSPACE_OBSERVED, "default", "workspace-phi-3-mini")
        == "kaiten.v1.workspace.observed.default.workspace-phi-3-mini"
    )
    assert (
        event_subject("kaiten", EventType.PLAN_READY, "ml", "phi.v2")
        == "kaiten.v1.plan.ready.ml.phi_v2"
    )
    assert event_type_filter("kaiten", EventType.PLAN_READY) == "kaiten.v1.plan.ready.*.*"
    assert deadletter_subject("kaiten", "planner") == "kaiten.v1.deadletter.planner"


@pytest.mark.parametrize("bad", ["", "a b", "a*", ">", "a_b"])
def test_names_that_would_break_a_subject_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="cannot be a subject token"):
        subject_token(bad)


@given(st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,60}[a-z0-9])?", fullmatch=True))
def test_subject_token_is_reversible_for_every_kubernetes_name(name: str) -> None:
    token = subject_token(name)
    assert "." not in token
    assert token.replace("_", ".") == name


def test_envelope_ids_are_uuids() -> None:
    env = new_event(CleanupDone(), source="deployer", workspace=WS, now=NOW)
    assert isinstance(env.id, uuid.UUID)
    assert env.schema_version == 1
