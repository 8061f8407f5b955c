"""Kaiten's events: one envelope, one versioned pydantic model per event type, and the subject
scheme ``<prefix>.v1.<type>.<namespace>.<name>``.

Only this module defines what travels on the bus. Publishing, acknowledging and dead-lettering
are in ``shared.bus``. Secrets never travel in events: they are referred to by name.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Generic, Literal, TypeVar, cast

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from shared.errors import EventDecodeError
from shared.plan import Plan

SUBJECT_VERSION = "v1"
JSONObject = dict[str, Any]


class EventType(StrEnum):
    """Every event type; the value is its subject token(s)."""

    WORKSPACE_OBSERVED = "workspace.observed"
    WORKSPACE_DELETING = "workspace.deleting"
    PLAN_READY = "plan.ready"
    PLAN_REJECTED = "plan.rejected"
    RESOURCES_READY = "resources.ready"
    RESOURCES_PENDING = "resources.pending"
    RESOURCES_FAILED = "resources.failed"
    CONDITION_REPORTED = "condition.reported"
    CLEANUP_DONE = "cleanup.done"
    INFERENCE_READY = "inference.ready"
    INFERENCE_FAILED = "inference.failed"
    TUNING_STARTED = "tuning.started"
    TUNING_PROGRESS = "tuning.progress"
    TUNING_SUCCEEDED = "tuning.succeeded"
    TUNING_FAILED = "tuning.failed"


_STRICT = ConfigDict(extra="forbid", frozen=True, strict=True)


class WorkspaceRef(BaseModel):
    """The workspace an event is about, at the generation the sender acted on."""

    model_config = _STRICT

    uid: str = Field(min_length=1)
    namespace: str = Field(min_length=1, max_length=63)
    name: str = Field(min_length=1, max_length=253)
    generation: int = Field(ge=0)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class EventData(BaseModel):
    """Base of every event payload. Subclasses set ``event_type`` and ``schema_version``."""

    model_config = _STRICT
    event_type: ClassVar[EventType]
    schema_version: ClassVar[int] = 1


# --- watcher -----------------------------------------------------------------------------------


class WorkspaceObserved(EventData):
    """A Workspace appeared, its generation changed, or a resync/relist re-announced it."""

    event_type = EventType.WORKSPACE_OBSERVED
    workspace: JSONObject = Field(description="The whole Workspace object as the API served it.")
    spec_hash: str = Field(min_length=1, description="sha256 of the spec, as in Kaito.")
    trigger: Literal["added", "changed", "resync", "relist"]


class WorkspaceDeleting(EventData):
    """The Workspace has a deletionTimestamp; owners clean up and answer ``CleanupDone``."""

    event_type = EventType.WORKSPACE_DELETING
    deletion_timestamp: AwareDatetime


# --- planner -----------------------------------------------------------------------------------


class FieldProblem(BaseModel):
    """One validation problem: the field path and what to change."""

    model_config = _STRICT
    field: str
    message: str


class PlanReady(EventData):
    """A complete plan for one generation (``shared.plan.Plan``); the first fields repeat its
    summary for subscribers that need no more."""

    event_type = EventType.PLAN_READY
    mode: Literal["inference", "tuning"]
    preset: str
    instance_type: str
    node_count: int = Field(ge=1)
    plan: Plan


class PlanRejected(EventData):
    event_type = EventType.PLAN_REJECTED
    reason: str
    message: str
    problems: tuple[FieldProblem, ...] = ()


# --- provisioner -------------------------------------------------------------------------------


class ResourcesReady(EventData):
    event_type = EventType.RESOURCES_READY
    node_names: tuple[str, ...] = Field(min_length=1)


class ResourcesPending(EventData):
    event_type = EventType.RESOURCES_PENDING
    reason: str
    message: str
    ready_nodes: tuple[str, ...] = ()
    wanted: int = Field(ge=1)


class ResourcesFailed(EventData):
    event_type = EventType.RESOURCES_FAILED
    reason: str
    message: str


# --- every service -----------------------------------------------------------------------------


class Condition(BaseModel):
    """A ``metav1.Condition`` as reported; the watcher adds ``lastTransitionTime``."""

    model_config = _STRICT
    type: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9]*$")
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)
    message: str = Field(max_length=32768)
    observed_generation: int = Field(ge=0)


class ConditionReported(EventData):
    event_type = EventType.CONDITION_REPORTED
    condition: Condition


def condition_reported(
    ref: WorkspaceRef, type_: str, status: str, reason: str, message: str
) -> ConditionReported:
    """A service's report of one condition of ``ref``'s generation."""
    return ConditionReported(
        condition=Condition(
            type=type_,
            status=status,
            reason=reason,
            message=message,
            observed_generation=ref.generation,
        )
    )


class CleanupDone(EventData):
    """The sending service removed everything it created for the workspace."""

    event_type = EventType.CLEANUP_DONE
    deleted: tuple[str, ...] = Field(default=(), description="kind/name of each object removed.")


# --- deployer ----------------------------------------------------------------------------------


class InferenceReady(EventData):
    event_type = EventType.INFERENCE_READY
    workload: str = Field(description="kind/name of the Deployment or StatefulSet.")
    ready_replicas: int = Field(ge=1)
    service: str


class InferenceFailed(EventData):
    event_type = EventType.INFERENCE_FAILED
    reason: str
    message: str


# --- tuner -------------------------------------------------------------------------------------


class TuningStarted(EventData):
    event_type = EventType.TUNING_STARTED
    job: str


class TuningProgress(EventData):
    event_type = EventType.TUNING_PROGRESS
    job: str
    step: int = Field(ge=0)
    total_steps: int = Field(ge=0, description="0 when the trainer does not know it yet.")
    loss: float | None = None
    epoch: float | None = Field(default=None, ge=0)
    eta_seconds: float | None = Field(default=None, ge=0)


class TuningSucceeded(EventData):
    event_type = EventType.TUNING_SUCCEEDED
    job: str
    output: str = Field(description="Pushed image reference or results volume path.")


class TuningFailed(EventData):
    event_type = EventType.TUNING_FAILED
    job: str
    reason: str
    message: str


def duration(seconds: float, *, precise: bool = False) -> str:
    """A time span for people: ``45s``, ``2m05s``, ``1h10m``; with ``precise``, spans under a
    minute keep their fraction: ``350ms``, ``1.25s``, ``12.4s``."""
    if precise and seconds < 60:  # noqa: PLR2004
        if seconds < 1:
            return f"{round(seconds * 1000)}ms"
        return f"{seconds:.2f}s" if seconds < 10 else f"{seconds:.1f}s"  # noqa: PLR2004
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def outcome_key(events: Sequence[EventData]) -> str:
    """A digest of what a service is about to publish: equal keys, nothing new to say."""
    content = json.dumps(
        [[type(e).__name__, e.model_dump(mode="json")] for e in events], sort_keys=True
    )
    return hashlib.sha256(content.encode()).hexdigest()


def previous_outcome(published_key: str | None, published_at: datetime) -> str:
    """The ``after`` of a service's next report: what it last published and when it recorded
    that. A retry of the same transition (the row unchanged) gets the same message id and is
    dropped as a duplicate; an outcome that comes back a second time (Ready, Pending, Ready,
    Pending, Ready within JetStream's duplicate window) is news, because the record time
    differs."""
    return f"{published_key or ''}@{published_at.isoformat()}"


EVENT_MODELS: dict[EventType, type[EventData]] = {
    model.event_type: model
    for model in (
        WorkspaceObserved,
        WorkspaceDeleting,
        PlanReady,
        PlanRejected,
        ResourcesReady,
        ResourcesPending,
        ResourcesFailed,
        ConditionReported,
        CleanupDone,
        InferenceReady,
        InferenceFailed,
        TuningStarted,
        TuningProgress,
        TuningSucceeded,
        TuningFailed,
    )
}

DataT = TypeVar("DataT", bound=EventData)


class Envelope(BaseModel, Generic[DataT]):
    """What every message on the bus carries."""

    model_config = _STRICT

    id: uuid.UUID
    type: EventType
    schema_version: int = Field(ge=1)
    occurred_at: AwareDatetime
    source: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    workspace: WorkspaceRef
    correlation_id: str = Field(min_length=1)
    causation_id: uuid.UUID | None = None
    data: DataT

    def msg_id(self, after: str | None = None) -> str:
        """The ``Nats-Msg-Id``: type, workspace uid, generation and a hash of source and data,
        so a re-publish of the same fact is dropped by JetStream inside its window.

        ``after`` names what the sender said before (its previous outcome): a fact that comes
        back (Ready, then CrashLoopBackOff, then Ready again) is a new message, not a duplicate of
        the first Ready, while a re-publish of the same transition still is."""
        parts: list[Any] = [self.source, self.data.model_dump(mode="json")]
        if after is not None:
            parts.append(after)
        content = json.dumps(parts, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(content.encode()).hexdigest()[:24]
        ws = self.workspace
        return f"{self.type}:{ws.uid}:{ws.generation}:{digest}"

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


def correlation_id_for(ref: WorkspaceRef) -> str:
    """The correlation id shared by everything one workspace generation causes."""
    return f"{ref.uid}/{ref.generation}"


def new_event(
    data: DataT,
    *,
    source: str,
    workspace: WorkspaceRef,
    now: datetime,
    cause: Envelope[Any] | None = None,
) -> Envelope[DataT]:
    """Build an envelope for ``data``. A caused event inherits the cause's correlation id."""
    # Parametrized with the data's own class, so its fields serialize (not just the base's).
    envelope_type: Any = Envelope[type(data)]  # type: ignore[misc]
    envelope = envelope_type(
        id=uuid.uuid4(),
        type=data.event_type,
        schema_version=data.schema_version,
        occurred_at=now,
        source=source,
        workspace=workspace,
        correlation_id=cause.correlation_id if cause else correlation_id_for(workspace),
        causation_id=cause.id if cause else None,
        data=data,
    )
    return cast("Envelope[DataT]", envelope)


class _RawEnvelope(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    type: str
    schema_version: int
    data: JSONObject


def decode_event(raw: bytes, expected: EventType | None = None) -> Envelope[EventData]:
    """Parse a message body into its typed envelope.

    Raises ``EventDecodeError`` naming what is wrong: not JSON, an unknown type or schema
    version, a type other than ``expected``, or a field that fails validation.
    """
    try:
        head = _RawEnvelope.model_validate_json(raw, strict=False)
    except ValidationError as e:
        raise EventDecodeError(f"not a Kaiten event envelope: {_first_error(e)}") from e
    try:
        event_type = EventType(head.type)
    except ValueError as e:
        raise EventDecodeError(f"unknown event type {head.type!r}") from e
    if expected is not None and event_type is not expected:
        raise EventDecodeError(f"expected a {expected} event, got {event_type}")
    model = EVENT_MODELS[event_type]
    if head.schema_version != model.schema_version:
        raise EventDecodeError(
            f"{event_type} schema_version {head.schema_version} is not supported "
            f"(this build reads version {model.schema_version})"
        )
    try:
        envelope_type: Any = Envelope[model]  # type: ignore[valid-type]
        return cast("Envelope[EventData]", envelope_type.model_validate_json(raw))
    except ValidationError as e:
        raise EventDecodeError(f"invalid {event_type} event: {_first_error(e)}") from e


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "<root>"
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return f"{where}: {err['msg']}{more}"


# --- subjects ----------------------------------------------------------------------------------


def subject_token(value: str) -> str:
    """A Kubernetes name as one NATS token: '.' (allowed in names, a separator in subjects)
    becomes '_' (never in Kubernetes names), so the mapping is reversible."""
    if not value or any(c in value for c in " \t\r\n*>_"):
        raise ValueError(
            f"{value!r} cannot be a subject token (empty, whitespace, '*', '>' or '_')"
        )
    return value.replace(".", "_")


def event_subject(prefix: str, event_type: EventType, namespace: str, name: str) -> str:
    return (
        f"{prefix}.{SUBJECT_VERSION}.{event_type}.{subject_token(namespace)}.{subject_token(name)}"
    )


def event_type_filter(prefix: str, event_type: EventType) -> str:
    """The subject filter matching every event of one type, in every namespace."""
    return f"{prefix}.{SUBJECT_VERSION}.{event_type}.*.*"


def deadletter_subject(prefix: str, service: str) -> str:
    return f"{prefix}.{SUBJECT_VERSION}.deadletter.{service}"


def stream_subjects(prefix: str) -> list[str]:
    return [f"{prefix}.{SUBJECT_VERSION}.>"]


class DeadLetter(BaseModel):
    """What lands on ``<prefix>.v1.deadletter.<service>``: the original message and why it
    was given up. ``payload`` is the original body (UTF-8, or base64 when it is not text)."""

    model_config = _STRICT
    service: str
    consumer: str
    subject: str
    stream_sequence: int
    deliveries: int
    error: str
    failed_at: AwareDatetime
    payload: str
    payload_encoding: Literal["utf-8", "base64"]
    workspace: WorkspaceRef | None = None
    event_id: uuid.UUID | None = None
