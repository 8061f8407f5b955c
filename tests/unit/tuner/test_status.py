"""``services.tuner.status`` (and the tuner's pure helpers): where a fine-tuning run stands, from
the Job, its pods and their nodes shaped as the API server and the kubelet serve them; the
trainer's progress report as ``presets.tuning.progress`` writes it; and the conditions and events
Kaito's tuning reconcile reports for each phase (reference 1.6, 5.4)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from presets.tuning.progress import ProgressSink
from services.tuner.render import DOWNLOADER, PULLER, PUSHER
from services.tuner.service import _current, _revision, output_of
from services.tuner.status import (
    ABSENT_MESSAGE,
    ADAPTER_PUSH_FAILED,
    DATA_DOWNLOAD_FAILED,
    DATA_PULL_FAILED,
    FAILED_REASON,
    JOB_FAILED,
    PENDING_REASON,
    STARTED_MESSAGE,
    STARTED_REASON,
    TRAINING_FAILED,
    WEIGHTS_PULL_FAILED,
    Assessment,
    Phase,
    Progress,
    assess,
    outcome,
    parse_progress,
    progress_message,
    started,
)
from shared.events import (
    ConditionReported,
    EventData,
    TuningFailed,
    TuningProgress,
    TuningStarted,
    TuningSucceeded,
    WorkspaceRef,
    duration,
)
from shared.labels import REVISION_ANNOTATION
from shared.pods import (
    IMAGE_PULL_ERROR,
    NODE_DISK_PRESSURE,
    OOM_KILLED,
    UNSCHEDULABLE,
)
from tests.unit.tuner.cases import (
    OUTPUT_IMAGE,
    SEED_OUTPUT_IMAGE,
    USER_OUTPUT_DIR,
    case,
    plan_for,
    ref_for,
    rendered,
)

Obj = dict[str, Any]

WS = "workspace-tuning-phi-3"  # the seed's name: its trainer sorts after "pusher"
NAMESPACE = "default"
POD = f"{WS}-x7k2p"
NODE = "aks-tuning-12345678-vmss000000"
URL = "https://huggingface.co/datasets/example/chat/resolve/main/train.parquet?download=true"
DIGEST = "sha256:abc"
PUSHED = f"{SEED_OUTPUT_IMAGE}@{DIGEST}"
NO_GPU = (
    "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available."
)
BACKOFF = "Job has reached the specified backoff limit"
REF = WorkspaceRef(
    uid="0b5c7a2e-1f3d-4c6b-9a8e-2d4f6b8c0e1a", namespace=NAMESPACE, name=WS, generation=3
)
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/workspace/presets/tuning/train.py", line 88, in train\n'
    "ValueError: the dataset has no 'messages' column"
)
NOTHING_TO_PUSH = "the trainer exited without writing fine_tuning_completed.txt: nothing to push"


# --- builders: objects as the API server and the kubelet write them -----------------------------


def job(
    *,
    active: int | None = None,
    ready: int | None = None,
    succeeded: int | None = None,
    failed: int | None = None,
    conditions: list[Obj] | None = None,
    with_status: bool = True,
) -> Obj:
    """A batch/v1 Job; None leaves a counter out, as the API server does."""
    obj: Obj = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": WS, "namespace": NAMESPACE, "uid": "job-uid"},
        "spec": {"backoffLimit": 0},
    }
    if not with_status:
        return obj
    status: Obj = {}
    for key, value in (
        ("active", active),
        ("ready", ready),
        ("succeeded", succeeded),
        ("failed", failed),
    ):
        if value is not None:
            status[key] = value
    if conditions is not None:
        status["conditions"] = conditions
    obj["status"] = status
    return obj


def job_condition(type_: str, reason: str, message: str) -> Obj:
    return {
        "type": type_,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-11-22T09:30:00Z",
    }


def pod(
    *,
    phase: str,
    init: list[Obj] | None = None,
    containers: list[Obj] | None = None,
    conditions: list[Obj] | None = None,
    node: str | None = NODE,
    name: str = POD,
) -> Obj:
    spec: Obj = {"containers": [{"name": WS, "image": "img:1"}], "restartPolicy": "Never"}
    if node is not None:
        spec["nodeName"] = node
    status: Obj = {
        "phase": phase,
        "conditions": conditions
        if conditions is not None
        else [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}],
    }
    if init is not None:
        status["initContainerStatuses"] = init
    if containers is not None:
        status["containerStatuses"] = containers
    return {"metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec, "status": status}


def status_of(name: str, state: Obj, *, ready: bool = False, restarts: int = 0) -> Obj:
    return {
        "name": name,
        "image": "ghcr.io/kaiten-dev/runtime-transformers:0.1.0",
        "ready": ready,
        "restartCount": restarts,
        "state": state,
        "lastState": {},
    }


def terminated(code: int, reason: str | None = None, message: str | None = None) -> Obj:
    state: Obj = {
        "exitCode": code,
        "reason": reason or ("Completed" if code == 0 else "Error"),
        "startedAt": "2026-11-22T09:00:00Z",
        "finishedAt": "2026-11-22T09:20:00Z",
    }
    if message is not None:
        state["message"] = message
    return {"terminated": state}


def waiting(reason: str, message: str | None = None) -> Obj:
    state: Obj = {"reason": reason}
    if message is not None:
        state["message"] = message
    return {"waiting": state}


RUNNING: Obj = {"running": {"startedAt": "2026-11-22T09:05:00Z"}}
INITIALIZING = waiting("PodInitializing")


def done_init(*names: str) -> list[Obj]:
    return [status_of(n, terminated(0)) for n in names]


def main_statuses(trainer: Obj, pusher: Obj | None) -> list[Obj]:
    """``containerStatuses`` in the kubelet's order: sorted by container name."""
    statuses = [status_of(WS, trainer)]
    if pusher is not None:
        statuses.append(status_of(PUSHER, pusher))
    return sorted(statuses, key=lambda s: str(s["name"]))


def running_pod() -> Obj:
    return pod(
        phase="Running",
        init=done_init("model-weights-downloader", DOWNLOADER),
        containers=main_statuses(RUNNING, RUNNING),
        conditions=[
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "True"},
        ],
    )


def succeeded_pod(pusher_message: str | None) -> Obj:
    return pod(
        phase="Succeeded",
        init=done_init("model-weights-downloader", DOWNLOADER),
        containers=main_statuses(terminated(0), terminated(0, message=pusher_message)),
    )


def unschedulable_pod() -> Obj:
    return pod(
        phase="Pending",
        node=None,
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": NO_GPU,
            }
        ],
    )


# --- assess: pending and running ---------------------------------------------------------------


def test_no_job_is_pending() -> None:
    assessed = assess(None, [], {})
    assert assessed == Assessment("pending", PENDING_REASON, ABSENT_MESSAGE)
    assert assessed.running_pod is None


def test_a_job_without_status_is_pending() -> None:
    assessed = assess(job(with_status=False), [], {})
    assert assessed.phase == "pending"
    assert assessed.reason == PENDING_REASON
    assert WS in assessed.message
    assert assessed.running_pod is None


def test_a_job_with_an_empty_status_is_pending() -> None:
    assert assess(job(), [], {}).phase == "pending"


def test_an_active_job_has_started_even_while_its_pod_initialises() -> None:
    """Kaito: ``active > 0`` means the tuning Job has started (the pod downloads the data)."""
    initialising = pod(
        phase="Pending",
        init=[
            status_of("model-weights-downloader", terminated(0)),
            status_of(DOWNLOADER, RUNNING),
        ],
        containers=main_statuses(INITIALIZING, INITIALIZING),
    )
    assessed = assess(job(active=1), [initialising], {})
    assert assessed.phase == "running"
    assert assessed.reason == STARTED_REASON
    assert assessed.running_pod is None
    assert POD in assessed.message


def test_a_running_pod_is_the_one_to_ask_for_progress() -> None:
    assessed = assess(job(active=1, ready=1), [running_pod()], {})
    assert assessed.phase == "running"
    assert assessed.reason == STARTED_REASON
    assert assessed.running_pod == POD
    assert assessed.message == f"pod {POD} is running"


def test_ready_alone_means_started() -> None:
    assert assess(job(ready=1), [running_pod()], {}).phase == "running"


# --- assess: succeeded -------------------------------------------------------------------------


def test_a_complete_job_has_succeeded_and_names_the_pushed_digest() -> None:
    done = job(
        succeeded=1,
        conditions=[job_condition("Complete", "CompletionsReached", "Reached expected number")],
    )
    assessed = assess(done, [succeeded_pod(f"pushed {PUSHED}\n")], {})
    assert assessed.phase == "succeeded"
    assert assessed.reason == STARTED_REASON
    assert assessed.pushed == PUSHED
    assert WS in assessed.message


def test_a_complete_job_without_a_push_report_names_nothing() -> None:
    done = job(conditions=[job_condition("Complete", "CompletionsReached", "done")])
    assert assess(done, [succeeded_pod(None)], {}).pushed is None
    assert assess(done, [succeeded_pod("uploaded somewhere")], {}).pushed is None
    volume_output = pod(
        phase="Succeeded",
        init=done_init("model-weights-downloader", DOWNLOADER),
        containers=main_statuses(terminated(0), None),
    )
    assert assess(done, [volume_output], {}).pushed is None
    assert assess(done, [], {}).phase == "succeeded"


def test_succeeded_counts_without_the_condition_yet() -> None:
    assessed = assess(job(succeeded=1), [succeeded_pod(f"pushed {PUSHED}")], {})
    assert assessed.phase == "succeeded"
    assert assessed.pushed == PUSHED


# --- assess: failures, named by the container that failed --------------------------------------


def _failed_in_init(failing: str, message: str) -> Obj:
    """A pod whose init container ``failing`` exited 1 (the ones before it completed)."""
    order = ["model-weights-downloader", DOWNLOADER if failing != PULLER else PULLER]
    index = order.index(failing)
    init = [
        *done_init(*order[:index]),
        status_of(failing, terminated(1, message=message)),
        *(status_of(n, INITIALIZING) for n in order[index + 1 :]),
    ]
    return pod(phase="Failed", init=init, containers=main_statuses(INITIALIZING, INITIALIZING))


@pytest.mark.parametrize(
    ("failing", "reason", "cause"),
    [
        (DOWNLOADER, DATA_DOWNLOAD_FAILED, f"cannot download {URL}: HTTP 404 Not Found"),
        (PULLER, DATA_PULL_FAILED, "cannot pull registry.example.test/datasets/dolly:1.0: 401"),
        (
            "model-weights-downloader",
            WEIGHTS_PULL_FAILED,
            "cannot pull mcr.microsoft.com/aks/kaito/kaito-phi-3-mini-128k-instruct:0.1.1",
        ),
    ],
    ids=["downloader", "puller", "weights"],
)
def test_an_init_container_that_failed_names_its_cause(
    failing: str, reason: str, cause: str
) -> None:
    assessed = assess(job(failed=1), [_failed_in_init(failing, cause)], {})
    assert assessed.phase == "failed"
    assert assessed.reason == reason
    assert cause in assessed.message
    assert POD in assessed.message
    assert failing in assessed.message
    assert assessed.running_pod is None


def test_a_failed_download_quotes_the_url() -> None:
    message = f"cannot download {URL}: HTTP 404 Not Found"
    assessed = assess(job(active=1), [_failed_in_init(DOWNLOADER, message)], {})
    assert assessed.reason == "DataDownloadFailed"
    assert URL in assessed.message


def test_a_failed_push_is_the_pushers() -> None:
    failed = pod(
        phase="Failed",
        init=done_init("model-weights-downloader", DOWNLOADER),
        containers=main_statuses(
            terminated(0), terminated(1, message="push refused: 401 Unauthorized")
        ),
    )
    assessed = assess(job(failed=1), [failed], {})
    assert assessed.phase == "failed"
    assert assessed.reason == ADAPTER_PUSH_FAILED
    assert "401 Unauthorized" in assessed.message
    assert POD in assessed.message


def test_a_failed_trainer_is_a_training_failure() -> None:
    """Volume output: the trainer is the only container."""
    failed = pod(
        phase="Failed",
        init=done_init("model-weights-downloader", DOWNLOADER),
        containers=main_statuses(terminated(1, message=TRACEBACK), None),
    )
    assessed = assess(job(failed=1), [failed], {})
    assert assessed.phase == "failed"
    assert assessed.reason == TRAINING_FAILED
    assert "no 'messages' column" in assessed.message
    assert "\n" not in assessed.message
    assert POD in assessed.message


def test_a_failed_trainer_is_not_blamed_on_the_pusher_that_gave_up_after_it() -> None:
    """Image output: when the trainer dies the pusher exits 1 too ("nothing to push"), and the
    kubelet lists ``containerStatuses`` sorted by name, so ``pusher`` comes before the seed's
    trainer ``workspace-tuning-phi-3``. The cause is still the training."""
    failed = pod(
        phase="Failed",
        init=done_init("model-weights-downloader", DOWNLOADER),
        containers=main_statuses(
            terminated(1, message=TRACEBACK), terminated(1, message=NOTHING_TO_PUSH)
        ),
    )
    assert [s["name"] for s in failed["status"]["containerStatuses"]] == [PUSHER, WS]
    assessed = assess(job(failed=1), [failed], {})
    assert assessed.phase == "failed"
    assert assessed.reason == TRAINING_FAILED
    assert "no 'messages' column" in assessed.message


def test_an_oom_killed_trainer_says_so() -> None:
    failed = pod(
        phase="Failed",
        init=done_init("model-weights-downloader", DOWNLOADER),
        containers=main_statuses(terminated(137, reason="OOMKilled"), None),
    )
    assessed = assess(job(failed=1), [failed], {})
    assert assessed.phase == "failed"
    assert assessed.reason == OOM_KILLED == "ContainerOOMKilled"
    assert "OOMKilled" in assessed.message
    assert WS in assessed.message


def test_an_image_that_cannot_be_pulled_fails_the_active_job() -> None:
    stuck = pod(
        phase="Pending",
        init=[
            status_of(
                "model-weights-downloader",
                waiting("ImagePullBackOff", 'Back-off pulling image "ghcr.io/kaiten-dev/x:0"'),
            ),
            status_of(DOWNLOADER, INITIALIZING),
        ],
        containers=main_statuses(INITIALIZING, INITIALIZING),
    )
    assessed = assess(job(active=1), [stuck], {})
    assert assessed.phase == "failed"
    assert assessed.reason == IMAGE_PULL_ERROR == "ImagePullError"
    assert "ImagePullBackOff" in assessed.message


@pytest.mark.parametrize("active", [None, 1], ids=["not-counted", "active"])
def test_an_unschedulable_pod_waits_and_quotes_the_scheduler(active: int | None) -> None:
    assessed = assess(job(active=active), [unschedulable_pod()], {})
    assert assessed.phase in {"pending", "running"}  # waiting, not failed
    assert assessed.reason != UNSCHEDULABLE
    assert NO_GPU in assessed.message
    assert assessed.running_pod is None


def test_an_unschedulable_pod_of_a_job_not_yet_active_is_pending() -> None:
    assessed = assess(job(), [unschedulable_pod()], {})
    assert assessed.phase == "pending"
    assert assessed.reason == PENDING_REASON


def test_a_node_under_pressure_is_waited_for() -> None:
    pressured = pod(
        phase="Pending",
        init=[status_of("model-weights-downloader", waiting("ContainerCreating"))],
        containers=main_statuses(INITIALIZING, INITIALIZING),
    )
    nodes = {
        NODE: {
            "status": {
                "conditions": [
                    {
                        "type": "DiskPressure",
                        "status": "True",
                        "message": "kubelet has disk pressure",
                    }
                ]
            }
        }
    }
    assessed = assess(job(active=1), [pressured], nodes)
    assert assessed.phase != "failed"
    assert assessed.reason != NODE_DISK_PRESSURE
    assert "DiskPressure" in assessed.message


def test_a_job_that_gave_up_with_no_pod_left_is_a_job_failure() -> None:
    gone = job(
        failed=1,
        conditions=[job_condition("Failed", "BackoffLimitExceeded", BACKOFF)],
    )
    assessed = assess(gone, [], {})
    assert assessed.phase == "failed"
    assert assessed.reason == JOB_FAILED == "JobFailed"
    assert BACKOFF in assessed.message
    assert WS in assessed.message


def test_a_failed_pod_says_more_than_the_jobs_condition() -> None:
    gone = job(failed=1, conditions=[job_condition("Failed", "BackoffLimitExceeded", BACKOFF)])
    failed = _failed_in_init(DOWNLOADER, f"cannot download {URL}: HTTP 404")
    assessed = assess(gone, [failed], {})
    assert assessed.reason == DATA_DOWNLOAD_FAILED
    assert URL in assessed.message


def test_a_false_condition_is_not_taken() -> None:
    not_yet = job(active=1, conditions=[{"type": "Failed", "status": "False"}])
    assert assess(not_yet, [running_pod()], {}).phase == "running"


# --- progress ----------------------------------------------------------------------------------


def _served(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The snapshot as ``GET /progress`` serves it (JSON), as the tuner reads it."""
    body: dict[str, Any] = json.loads(json.dumps(snapshot))
    return body


def test_the_progress_writers_reports_are_accepted(tmp_path: Path) -> None:
    sink = ProgressSink(tmp_path)
    first = parse_progress(_served(sink.snapshot()))
    assert first is not None
    assert (first.state, first.step, first.total_steps) == ("starting", 0, None)
    sink.report(
        step=40, total_steps=120, loss=1.2345, eta_seconds=130.0, epoch=1.0, elapsed_seconds=65.0
    )
    training = parse_progress(_served(sink.snapshot()))
    assert training == Progress(
        state="training", step=40, total_steps=120, loss=1.2345, epoch=1.0, eta_seconds=130.0
    )
    sink.complete()
    completed = parse_progress(_served(sink.snapshot()))
    assert completed is not None
    assert completed.state == "completed"
    assert completed.eta_seconds == 0.0
    on_disk = json.loads((tmp_path / "progress.json").read_text())
    assert parse_progress(on_disk) == completed


def test_the_writers_keys_are_the_ones_read(tmp_path: Path) -> None:
    snapshot = ProgressSink(tmp_path).snapshot()
    assert {"step", "total_steps", "loss", "eta_seconds", "epoch", "state"} <= set(snapshot)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"total_steps": 10},
        {"step": -1},
        {"step": True},
        {"step": False},
        {"step": "3"},
        {"step": 3.0},
        {"step": None},
    ],
    ids=["empty", "missing", "negative", "true", "false", "string", "float", "null"],
)
def test_a_report_without_a_valid_step_is_not_one(body: dict[str, Any]) -> None:
    assert parse_progress(body) is None


def test_bad_numbers_are_dropped_not_trusted() -> None:
    progress = parse_progress(
        {
            "step": 3,
            "total_steps": -5,
            "loss": math.nan,
            "epoch": "one",
            "eta_seconds": -1.0,
        }
    )
    assert progress == Progress(
        state="training", step=3, total_steps=None, loss=None, epoch=None, eta_seconds=None
    )
    assert parse_progress({"step": 3, "loss": math.inf}) == Progress(
        "training", 3, None, None, None, None
    )
    assert parse_progress({"step": 3, "loss": True}) == Progress(
        "training", 3, None, None, None, None
    )


def test_a_report_parsed_from_json_nan_drops_the_loss() -> None:
    body = json.loads('{"step": 7, "total_steps": 10, "loss": NaN, "state": "training"}')
    progress = parse_progress(body)
    assert progress is not None
    assert progress.loss is None
    assert progress.step == 7


def test_a_report_without_a_state_is_training() -> None:
    progress = parse_progress({"step": 1})
    assert progress is not None
    assert progress.state == "training"


def test_a_boolean_total_is_not_a_total() -> None:
    """``step: true`` is refused; ``total_steps: true`` must not become 1 (TuningProgress is
    strict and refuses a boolean, so ``outcome`` would raise on it)."""
    progress = parse_progress({"step": 1, "total_steps": True})
    assert progress is not None
    assert progress.total_steps is None


@pytest.mark.parametrize(
    "body",
    [
        {"step": 1, "total_steps": True},
        {"step": 1, "epoch": -0.5},
    ],
    ids=["boolean-total", "negative-epoch"],
)
def test_whatever_parse_progress_accepts_outcome_can_report(body: dict[str, Any]) -> None:
    """A foreign or buggy trainer must not make the reconcile pass raise: what the parser lets
    through has to fit TuningProgress (total_steps an int >= 0, epoch >= 0)."""
    progress = parse_progress(body)
    assert progress is not None
    running = Assessment("running", STARTED_REASON, "pod x is running", running_pod="x")
    events = outcome(REF, WS, running, progress, OUTPUT_IMAGE)
    assert isinstance(events[-1], TuningProgress)


def test_progress_message_while_starting_and_when_completed() -> None:
    assert progress_message(Progress("starting", 0, None, None, None, None)) == (
        "training: starting (loading the model and the data)"
    )
    assert progress_message(Progress("completed", 120, 120, 0.5, 3.0, 0.0)) == (
        "training: completed; saving the results"
    )


def test_progress_message_while_training() -> None:
    progress = Progress("training", 40, 120, 1.2345, 1.0, 130.0)
    assert progress_message(progress) == (
        "training: step 40/120 (33%), epoch 1.00, loss 1.234, about 2m10s left"
    )


@pytest.mark.parametrize(
    ("progress", "message"),
    [
        (Progress("training", 5, None, None, None, None), "training: step 5"),
        (Progress("training", 5, 0, None, None, None), "training: step 5"),
        (Progress("training", 119, 120, None, None, None), "training: step 119/120 (99%)"),
        (Progress("training", 5, None, 0.5, None, None), "training: step 5, loss 0.5"),
        (Progress("training", 5, None, None, 0.25, None), "training: step 5, epoch 0.25"),
        (Progress("training", 5, None, None, None, 3700.0), "training: step 5, about 1h01m left"),
    ],
    ids=["step-only", "zero-total", "floor", "loss-only", "epoch-only", "eta-only"],
)
def test_progress_message_leaves_out_what_is_unknown(progress: Progress, message: str) -> None:
    assert progress_message(progress) == message


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (5, "5s"),
        (59.4, "59s"),
        (60, "1m00s"),
        (130, "2m10s"),
        (3600, "1h00m"),
        (3700, "1h01m"),
        (90061, "25h01m"),
    ],
)
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


# --- outcome: the conditions and events per phase ----------------------------------------------


def conditions_of(events: list[EventData]) -> list[tuple[str, str, str, str]]:
    return [
        (e.condition.type, e.condition.status, e.condition.reason, e.condition.message)
        for e in events
        if isinstance(e, ConditionReported)
    ]


def others(events: list[EventData]) -> list[EventData]:
    return [e for e in events if not isinstance(e, ConditionReported)]


def test_succeeded_reports_kaitos_conditions_and_the_pushed_image() -> None:
    assessed = Assessment("succeeded", STARTED_REASON, "done", pushed=PUSHED)
    events = outcome(REF, WS, assessed, None, SEED_OUTPUT_IMAGE)
    assert conditions_of(events) == [
        ("JobStarted", "True", "WorkspaceTuningJobStatusStarted", "Tuning job has started"),
        ("WorkspaceSucceeded", "True", "workspaceSucceeded", "workspace succeeds"),
    ]
    assert others(events) == [TuningSucceeded(job=WS, output=PUSHED)]
    for event in events:
        if isinstance(event, ConditionReported):
            assert event.condition.observed_generation == REF.generation


def test_succeeded_without_a_digest_names_the_given_output() -> None:
    assessed = Assessment("succeeded", STARTED_REASON, "done")
    events = outcome(REF, WS, assessed, None, "results volume at /mnt/results")
    assert others(events) == [TuningSucceeded(job=WS, output="results volume at /mnt/results")]


def test_failed_reports_kaitos_conditions_and_the_cause() -> None:
    message = f"pod {POD} failed: init container {DOWNLOADER} exited with Error: {URL}"
    assessed = Assessment("failed", DATA_DOWNLOAD_FAILED, message)
    events = outcome(REF, WS, assessed, None, OUTPUT_IMAGE)
    assert conditions_of(events) == [
        ("JobStarted", "False", "WorkspaceTuningJobStatusFailed", message),
        ("WorkspaceSucceeded", "False", "workspaceFailed", message),
    ]
    assert others(events) == [TuningFailed(job=WS, reason="DataDownloadFailed", message=message)]
    assert FAILED_REASON == "WorkspaceTuningJobStatusFailed"


def test_pending_reports_kaitos_conditions_only() -> None:
    assessed = Assessment("pending", PENDING_REASON, ABSENT_MESSAGE)
    events = outcome(REF, WS, assessed, None, OUTPUT_IMAGE)
    assert conditions_of(events) == [
        ("JobStarted", "False", "WorkspaceTuningJobStatusPending", ABSENT_MESSAGE),
        ("WorkspaceSucceeded", "False", "workspacePending", ABSENT_MESSAGE),
    ]
    assert others(events) == []


def test_running_without_progress_says_what_it_knows() -> None:
    assessed = Assessment("running", STARTED_REASON, f"pod {POD} is running", running_pod=POD)
    events = outcome(REF, WS, assessed, None, OUTPUT_IMAGE)
    assert conditions_of(events) == [
        ("JobStarted", "True", STARTED_REASON, STARTED_MESSAGE),
        ("WorkspaceSucceeded", "False", "workspacePending", f"pod {POD} is running"),
    ]
    assert others(events) == []


def test_running_with_training_progress_reports_it() -> None:
    assessed = Assessment("running", STARTED_REASON, f"pod {POD} is running", running_pod=POD)
    progress = Progress("training", 40, 120, 1.2345, 1.0, 130.0)
    events = outcome(REF, WS, assessed, progress, OUTPUT_IMAGE)
    assert conditions_of(events) == [
        ("JobStarted", "True", STARTED_REASON, STARTED_MESSAGE),
        ("WorkspaceSucceeded", "False", "workspacePending", progress_message(progress)),
    ]
    assert others(events) == [
        TuningProgress(job=WS, step=40, total_steps=120, loss=1.2345, epoch=1.0, eta_seconds=130.0)
    ]


def test_an_unknown_total_is_reported_as_zero() -> None:
    assessed = Assessment("running", STARTED_REASON, "", running_pod=POD)
    progress = Progress("training", 3, None, None, None, None)
    (event,) = others(outcome(REF, WS, assessed, progress, OUTPUT_IMAGE))
    assert event == TuningProgress(job=WS, step=3, total_steps=0)


@pytest.mark.parametrize("state", ["starting", "completed"])
def test_progress_outside_training_is_a_message_not_an_event(state: str) -> None:
    assessed = Assessment("running", STARTED_REASON, "", running_pod=POD)
    progress = Progress(state, 0, None, None, None, None)
    events = outcome(REF, WS, assessed, progress, OUTPUT_IMAGE)
    assert others(events) == []
    assert conditions_of(events)[1][3] == progress_message(progress)


def test_progress_is_ignored_outside_running() -> None:
    progress = Progress("training", 3, 10, None, None, None)
    phases: list[tuple[Phase, str]] = [("pending", PENDING_REASON), ("failed", TRAINING_FAILED)]
    for phase, reason in phases:
        events = outcome(REF, WS, Assessment(phase, reason, "m"), progress, OUTPUT_IMAGE)
        assert not [e for e in events if isinstance(e, TuningProgress)]


# --- started -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("previous", "phase", "announced"),
    [
        (None, "running", True),
        ("pending", "running", True),
        ("failed", "running", True),
        (None, "succeeded", True),
        ("pending", "succeeded", True),
        ("running", "running", False),
        ("running", "succeeded", False),
        ("succeeded", "succeeded", False),
        (None, "pending", False),
        ("pending", "pending", False),
        ("running", "failed", False),
        (None, "failed", False),
    ],
)
def test_tuning_started_is_announced_on_the_way_in(
    previous: str | None, phase: Phase, announced: bool
) -> None:
    events = started(previous, phase, WS)
    assert events == ([TuningStarted(job=WS)] if announced else [])


# --- the service's pure helpers ------------------------------------------------------------------


def test_output_of_an_image_output_is_the_image() -> None:
    assert output_of(plan_for(case("urls-to-image"))) == OUTPUT_IMAGE
    assert output_of(plan_for(case("seed-tuning-phi-3"))) == SEED_OUTPUT_IMAGE


def test_output_of_a_volume_output_names_the_output_dir() -> None:
    assert "/mnt/results" in output_of(plan_for(case("urls-to-volume")))
    assert USER_OUTPUT_DIR in output_of(plan_for(case("output-dir-to-volume")))


def test_output_of_refuses_an_inference_plan() -> None:
    plan = plan_for(case("urls-to-image")).model_copy(update={"mode": "inference"})
    with pytest.raises(ValueError, match="not a tuning plan"):
        output_of(plan)


def test_a_live_job_of_this_workspace_and_revision_is_current() -> None:
    c = case("revised")
    desired = rendered(c).workload
    ref = ref_for(c.workspace)
    assert _revision(desired) == "7"
    assert _current(desired, desired, ref)
    older: Obj = json.loads(json.dumps(desired))
    older["metadata"]["annotations"][REVISION_ANNOTATION] = "6"
    assert not _current(older, desired, ref)
    foreign: Obj = json.loads(json.dumps(desired))
    foreign["metadata"]["ownerReferences"][0]["uid"] = "someone-else"
    assert not _current(foreign, desired, ref)
    unannotated: Obj = json.loads(json.dumps(desired))
    del unannotated["metadata"]["annotations"]
    assert _revision(unannotated) is None
    assert not _current(unannotated, desired, ref)
