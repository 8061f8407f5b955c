"""Where a fine-tuning run stands, decided from data (no I/O, no clock): the Job as the API
server serves it, its pods, their nodes and the trainer's last progress report give Kaito's
JobStarted and WorkspaceSucceeded conditions (reference 1.6) and the tuner's events.

- Pending: no Job yet, or a Job whose pod has not started. JobStarted False
  ``WorkspaceTuningJobStatusPending``.
- Running: the Job has an active, ready or succeeded pod (Kaito's rule). JobStarted True
  ``WorkspaceTuningJobStatusStarted``; WorkspaceSucceeded False ``workspacePending`` whose message
  is the training progress (step/total, epoch, loss, time left) once the trainer reports it.
- Succeeded: the Job completed. WorkspaceSucceeded True ``workspaceSucceeded``.
- Failed: a pod failed (image pull, OOM kill, a container that exited non-zero: which one and
  its termination message, e.g. the URL that could not be downloaded) or the Job gave up.
  JobStarted False ``WorkspaceTuningJobStatusFailed``; WorkspaceSucceeded False
  ``workspaceFailed``.

An unschedulable pod or a node under pressure is not a failure here: the run stays Pending, or
Running once the Job counts the pod as active (Kaito's rule), and the message quotes the
scheduler or the node.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from services.tuner.render import DOWNLOADER, PULLER, PUSHER
from shared.events import (
    EventData,
    TuningFailed,
    TuningProgress,
    TuningStarted,
    TuningSucceeded,
    WorkspaceRef,
    condition_reported,
    duration,
)
from shared.pods import (
    CONTAINER_START_ERROR,
    NODE_DISK_PRESSURE,
    NODE_MEMORY_PRESSURE,
    UNSCHEDULABLE,
    dig,
    int_field,
    is_terminal,
    one_line,
    pod_failure,
    pod_name,
)

Phase = Literal["pending", "running", "succeeded", "failed"]

JOB_STARTED = "JobStarted"
SUCCEEDED = "WorkspaceSucceeded"
STARTED_REASON = "WorkspaceTuningJobStatusStarted"
PENDING_REASON = "WorkspaceTuningJobStatusPending"
FAILED_REASON = "WorkspaceTuningJobStatusFailed"
STARTED_MESSAGE = "Tuning job has started"
ABSENT_MESSAGE = "the tuning Job has not been created yet"
# TuningFailed reasons for a container that exited non-zero, by container.
DATA_DOWNLOAD_FAILED = "DataDownloadFailed"
DATA_PULL_FAILED = "DataPullFailed"
WEIGHTS_PULL_FAILED = "WeightsPullFailed"
ADAPTER_PUSH_FAILED = "AdapterPushFailed"
TRAINING_FAILED = "TrainingFailed"
JOB_FAILED = "JobFailed"
_BY_CONTAINER = {
    DOWNLOADER: DATA_DOWNLOAD_FAILED,
    PULLER: DATA_PULL_FAILED,
    "model-weights-downloader": WEIGHTS_PULL_FAILED,
    PUSHER: ADAPTER_PUSH_FAILED,
}
_WAITING = frozenset({UNSCHEDULABLE, NODE_DISK_PRESSURE, NODE_MEMORY_PRESSURE})
PUSHED_PREFIX = "pushed "


@dataclass(frozen=True, slots=True)
class Progress:
    """The trainer's ``GET /progress`` answer (``presets.tuning.progress``), checked."""

    state: str  # starting | training | completed
    step: int
    total_steps: int | None
    loss: float | None
    epoch: float | None
    eta_seconds: float | None


@dataclass(frozen=True, slots=True)
class Assessment:
    phase: Phase
    reason: str  # TuningFailed's reason when failed, else the JobStarted reason
    message: str
    running_pod: str | None = None  # the pod whose trainer reports progress
    pushed: str | None = None  # IMAGE@DIGEST from the pusher's termination message


def parse_progress(body: Mapping[str, Any]) -> Progress | None:
    """The progress report, or None when it is not one (an old or foreign server)."""
    step = body.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return None
    total = body.get("total_steps")
    counted = isinstance(total, int) and not isinstance(total, bool) and total >= 0
    return Progress(
        state=str(body.get("state") or "training"),
        step=step,
        total_steps=total if counted else None,
        loss=_number(body.get("loss")),
        epoch=_number(body.get("epoch"), minimum=0.0),
        eta_seconds=_number(body.get("eta_seconds"), minimum=0.0),
    )


def progress_message(progress: Progress) -> str:
    """``training: step 40/120 (33%), epoch 1.00, loss 1.234, about 2m10s left``."""
    if progress.state == "starting":
        return "training: starting (loading the model and the data)"
    if progress.state == "completed":
        return "training: completed; saving the results"
    parts = [f"training: step {progress.step}"]
    if progress.total_steps:
        percent = math.floor(100 * progress.step / progress.total_steps)
        parts[0] += f"/{progress.total_steps} ({percent}%)"
    if progress.epoch is not None:
        parts.append(f"epoch {progress.epoch:.2f}")
    if progress.loss is not None:
        parts.append(f"loss {progress.loss:.4g}")
    if progress.eta_seconds is not None:
        parts.append(f"about {duration(progress.eta_seconds)} left")
    return ", ".join(parts)


def assess(
    job: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    nodes: Mapping[str, Mapping[str, Any]],
) -> Assessment:
    """The run's phase from its Job (None: absent), the Job's own pods and their nodes."""
    if job is None:
        return Assessment("pending", PENDING_REASON, ABSENT_MESSAGE)
    name = str(dig(job, "metadata", "name") or "")
    ordered = sorted(pods, key=lambda p: (is_terminal(p), pod_name(p)))
    if _job_condition(job, "Complete") is not None or int_field(dig(job, "status", "succeeded")):
        done = next((p for p in ordered if dig(p, "status", "phase") == "Succeeded"), None)
        return Assessment(
            "succeeded", STARTED_REASON, f"the tuning Job {name} completed", pushed=_pushed(done)
        )
    waiting: str | None = None
    for p in ordered:
        failure = pod_failure(_pusher_last(p), nodes)
        if failure is None:
            continue
        reason, message = failure
        if reason in _WAITING:
            waiting = waiting or message
            continue
        return Assessment("failed", _failure_reason(_pusher_last(p), reason), message)
    failed = _job_condition(job, "Failed")
    if failed is not None:
        cause = str(failed.get("message") or failed.get("reason") or "the Job failed")
        return Assessment("failed", JOB_FAILED, one_line(f"the tuning Job {name} failed: {cause}"))
    status = dig(job, "status") or {}
    started = any(int_field(status.get(k)) > 0 for k in ("active", "ready", "succeeded"))
    running = next((p for p in ordered if dig(p, "status", "phase") == "Running"), None)
    if not started:
        return Assessment("pending", PENDING_REASON, waiting or _pending_message(name, pods))
    message = waiting or _pending_message(name, pods)
    if running is not None:
        message = f"pod {pod_name(running)} is running"
    return Assessment(
        "running",
        STARTED_REASON,
        message,
        running_pod=None if running is None else pod_name(running),
    )


def outcome(
    ref: WorkspaceRef,
    job_name: str,
    assessed: Assessment,
    progress: Progress | None,
    output: str,
) -> list[EventData]:
    """The conditions and tuner events that describe ``assessed``; the service publishes them
    when they differ from the last ones (``TuningStarted`` is added on the way in, by
    ``started``)."""
    if assessed.phase == "succeeded":
        return [
            condition_reported(ref, JOB_STARTED, "True", STARTED_REASON, STARTED_MESSAGE),
            condition_reported(ref, SUCCEEDED, "True", "workspaceSucceeded", "workspace succeeds"),
            TuningSucceeded(job=job_name, output=assessed.pushed or output),
        ]
    if assessed.phase == "failed":
        return [
            condition_reported(ref, JOB_STARTED, "False", FAILED_REASON, assessed.message),
            condition_reported(ref, SUCCEEDED, "False", "workspaceFailed", assessed.message),
            TuningFailed(job=job_name, reason=assessed.reason, message=assessed.message),
        ]
    if assessed.phase == "pending":
        return [
            condition_reported(ref, JOB_STARTED, "False", PENDING_REASON, assessed.message),
            condition_reported(ref, SUCCEEDED, "False", "workspacePending", assessed.message),
        ]
    events: list[EventData] = [
        condition_reported(ref, JOB_STARTED, "True", STARTED_REASON, STARTED_MESSAGE),
        condition_reported(
            ref,
            SUCCEEDED,
            "False",
            "workspacePending",
            assessed.message if progress is None else progress_message(progress),
        ),
    ]
    if progress is not None and progress.state == "training":
        events.append(
            TuningProgress(
                job=job_name,
                step=progress.step,
                total_steps=progress.total_steps or 0,
                loss=progress.loss,
                epoch=progress.epoch,
                eta_seconds=progress.eta_seconds,
            )
        )
    return events


def started(previous_phase: str | None, phase: Phase, job_name: str) -> list[EventData]:
    """``TuningStarted`` when the run enters running (or finishes before it was seen running)."""
    if phase in {"running", "succeeded"} and previous_phase not in {"running", "succeeded"}:
        return [TuningStarted(job=job_name)]
    return []


# --- helpers -------------------------------------------------------------------------------------


def _pusher_last(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    """``pod`` with the pusher's status after the trainer's: the kubelet sorts statuses by name,
    and a pusher that gave up because the trainer died must not hide the trainer's failure."""
    statuses = dig(pod, "status", "containerStatuses")
    if not isinstance(statuses, list):
        return pod
    ordered = sorted(statuses, key=lambda c: isinstance(c, Mapping) and c.get("name") == PUSHER)
    return {**pod, "status": {**pod["status"], "containerStatuses": ordered}}


def _failure_reason(pod: Mapping[str, Any], reason: str) -> str:
    """A container that exited non-zero is named by what it does (its data download, the
    training, the push); other failures keep the kubelet-derived reason."""
    if reason != CONTAINER_START_ERROR:
        return reason
    for key in ("initContainerStatuses", "containerStatuses"):
        for status in dig(pod, "status", key) or []:
            terminated = dig(status, "state", "terminated") or {}
            if int_field(terminated.get("exitCode")) != 0:
                return _BY_CONTAINER.get(str(status.get("name")), TRAINING_FAILED)
    return reason


def _pushed(pod: Mapping[str, Any] | None) -> str | None:
    if pod is None:
        return None
    for status in dig(pod, "status", "containerStatuses") or []:
        if status.get("name") != PUSHER:
            continue
        message = str(dig(status, "state", "terminated", "message") or "").strip()
        if message.startswith(PUSHED_PREFIX):
            return message.removeprefix(PUSHED_PREFIX).split()[0]
    return None


def _pending_message(job_name: str, pods: Sequence[Mapping[str, Any]]) -> str:
    if not pods:
        return f"waiting for the tuning Job {job_name} to start its pod"
    names = ", ".join(sorted(pod_name(p) for p in pods))
    return f"waiting for pod {names} of the tuning Job {job_name} to start"


def _job_condition(job: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for condition in dig(job, "status", "conditions") or []:
        if condition.get("type") == type_ and condition.get("status") == "True":
            return dict(condition)
    return None


def _number(value: Any, minimum: float | None = None) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    if not math.isfinite(number) or (minimum is not None and number < minimum):
        return None
    return number
