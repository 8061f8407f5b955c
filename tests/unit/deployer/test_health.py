"""InferenceReady from the inference workload, its pods and their nodes, shaped as the API server
and the kubelet serve them."""

from __future__ import annotations

from typing import Any

import pytest

from services.deployer.health import PENDING, SUCCESS, Health, assess
from shared.pods import (
    CONTAINER_START_ERROR,
    CRASH_LOOP_BACK_OFF,
    IMAGE_PULL_ERROR,
    MAX_MESSAGE,
    NODE_DISK_PRESSURE,
    NODE_MEMORY_PRESSURE,
    OOM_KILLED,
    POD_EVICTED,
    UNSCHEDULABLE,
    pod_failure,
)

Obj = dict[str, Any]

BACK_OFF = "back-off 5m0s restarting failed container=ws pod=ws-0_default(uid)"
PULL_BACK_OFF = 'Back-off pulling image "mcr.microsoft.com/aks/kaito/adapter:missing"'
NO_GPU = "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
LOW_DISK = "The node was low on resource: ephemeral-storage. Threshold quantity: 10Gi."
NODE = "aks-gpu-12345678-vmss000000"


# --- builders -----------------------------------------------------------------------------------


def workload(
    kind: str = "Deployment",
    *,
    replicas: int | None = 1,
    ready: int | None = 1,
    updated: int | None = 1,
    generation: int = 2,
    observed: int | None = 2,
) -> Obj:
    """A Deployment or StatefulSet; None leaves the field out, as the API server does."""
    spec: Obj = {} if replicas is None else {"replicas": replicas}
    status: Obj = {}
    for key, value in (
        ("readyReplicas", ready),
        ("updatedReplicas", updated),
        ("observedGeneration", observed),
    ):
        if value is not None:
            status[key] = value
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": "ws", "namespace": "default", "generation": generation},
        "spec": spec,
        "status": status,
    }


def pod(
    name: str = "ws-0",
    *,
    phase: str = "Running",
    ready: bool = False,
    containers: list[Obj] | None = None,
    init: list[Obj] | None = None,
    node: str | None = NODE,
    conditions: list[Obj] | None = None,
    **status: Any,
) -> Obj:
    """A pod; ``status`` adds fields such as ``reason`` and ``message`` to its status."""
    spec: Obj = {"containers": [{"name": "ws", "image": "img:1"}]}
    if node is not None:
        spec["nodeName"] = node
    all_conditions = [{"type": "PodScheduled", "status": "True"}] if node else []
    all_conditions.append({"type": "Ready", "status": "True" if ready else "False"})
    body: Obj = {
        "phase": phase,
        "conditions": conditions if conditions is not None else all_conditions,
        "containerStatuses": containers if containers is not None else [running(ready=ready)],
        **status,
    }
    if init is not None:
        body["initContainerStatuses"] = init
    return {"metadata": {"name": name, "namespace": "default"}, "spec": spec, "status": body}


def container(
    name: str = "ws",
    *,
    image: str = "img:1",
    ready: bool = False,
    restarts: int = 0,
    state: Obj,
    last: Obj | None = None,
) -> Obj:
    return {
        "name": name,
        "image": image,
        "ready": ready,
        "restartCount": restarts,
        "state": state,
        "lastState": last or {},
    }


def running(name: str = "ws", *, ready: bool = True) -> Obj:
    return container(name, ready=ready, state={"running": {"startedAt": "2026-11-22T09:00:00Z"}})


def waiting(reason: str, message: str | None = None) -> Obj:
    state: Obj = {"reason": reason}
    if message is not None:
        state["message"] = message
    return {"waiting": state}


def terminated(reason: str, exit_code: int, message: str | None = None) -> Obj:
    state: Obj = {"exitCode": exit_code, "reason": reason, "finishedAt": "2026-11-22T10:00:00Z"}
    if message is not None:
        state["message"] = message
    return {"terminated": state}


def crash_looping(name: str = "ws", *, restarts: int = 5, last: Obj | None = None) -> Obj:
    return container(
        name,
        restarts=restarts,
        state=waiting("CrashLoopBackOff", BACK_OFF),
        last=last if last is not None else terminated("Error", 1, "CUDA out of memory"),
    )


def node_obj(name: str = NODE, **pressure: str) -> Obj:
    """A Ready node; ``pressure`` maps a condition type to its message (status True)."""
    conditions: list[Obj] = [
        {"type": kind, "status": "False", "reason": f"KubeletHasNo{kind}"}
        for kind in ("MemoryPressure", "DiskPressure", "PIDPressure")
        if kind not in pressure
    ]
    conditions += [
        {"type": kind, "status": "True", "reason": f"KubeletHas{kind}", "message": message}
        for kind, message in pressure.items()
    ]
    conditions.append({"type": "Ready", "status": "True", "reason": "KubeletReady"})
    return {"metadata": {"name": name}, "status": {"conditions": conditions}}


def nodes(*objs: Obj) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objs} if objs else {NODE: node_obj()}


def failed(*pods: Obj, work: Obj | None = None) -> Health:
    """``assess`` of pods that must fail: checks the invariants every failure shares."""
    health = assess(work if work is not None else workload(ready=0), list(pods), nodes())
    assert not health.ready
    assert health.reason not in {SUCCESS, PENDING}
    return health


# --- ready and pending ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet"])
def test_ready_when_every_replica_is_ready_and_no_pod_fails(kind: str) -> None:
    pods = [pod("ws-0", ready=True), pod("ws-1", ready=True)]
    health = assess(workload(kind, replicas=2, ready=2, updated=2), pods, nodes())
    assert health == Health(True, SUCCESS, "Inference has been deployed successfully", 2, 2)


def test_replicas_default_to_one() -> None:
    health = assess(workload(replicas=None), [pod(ready=True)], nodes())
    assert (health.ready, health.replicas, health.ready_replicas) == (True, 1, 1)


def test_pending_while_the_workload_is_absent() -> None:
    health = assess(None, [], {})
    assert health == Health(False, PENDING, "the inference workload has not been created yet", 0, 0)


def test_pending_while_no_replica_is_ready() -> None:
    health = assess(workload(ready=None, updated=1), [pod()], nodes())
    assert (health.ready, health.reason) == (False, PENDING)
    assert health.message == "waiting for inference workload readiness: 0 of 1 replicas ready"
    assert (health.ready_replicas, health.replicas) == (0, 1)


def test_pending_while_a_deployment_rolls_out() -> None:
    work = workload(replicas=2, ready=2, updated=1)
    health = assess(work, [pod("ws-a", ready=True), pod("ws-b", ready=True)], nodes())
    assert health.reason == PENDING
    assert health.message == (
        "waiting for inference workload readiness: 2 of 2 replicas ready; rollout in progress"
    )


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet"])
def test_pending_while_the_controller_has_not_seen_the_new_generation(kind: str) -> None:
    health = assess(workload(kind, generation=3, observed=2), [pod(ready=True)], nodes())
    assert health.reason == PENDING
    assert health.message.endswith("; rollout in progress")


def test_a_statefulset_needs_no_updated_replicas() -> None:
    health = assess(workload("StatefulSet", updated=None), [pod(ready=True)], nodes())
    assert health.reason == SUCCESS


def test_generation_is_not_compared_when_observed_generation_is_missing() -> None:
    assert assess(workload(observed=None), [pod(ready=True)], nodes()).ready


def test_zero_desired_replicas_is_never_ready() -> None:
    health = assess(workload(replicas=0, ready=0, updated=0), [], nodes())
    assert (health.ready, health.reason, health.replicas) == (False, PENDING, 0)


@pytest.mark.parametrize("reason", ["ContainerCreating", "PodInitializing"])
def test_containers_being_created_are_pending(reason: str) -> None:
    creating = pod(phase="Pending", containers=[container(state=waiting(reason))])
    health = assess(workload(ready=0), [creating], nodes())
    assert health.reason == PENDING
    assert pod_failure(creating, nodes()) is None


# --- container failures ---------------------------------------------------------------------------


def test_crash_loop_quotes_the_kubelet_and_the_last_termination() -> None:
    health = failed(pod(containers=[crash_looping()]))
    assert health.reason == CRASH_LOOP_BACK_OFF
    for fact in ("ws-0", "container ws", BACK_OFF, "5 times", "Error", "exit code 1"):
        assert fact in health.message
    assert "CUDA out of memory" in health.message


def test_crash_loop_quotes_only_the_tail_of_a_long_termination_message() -> None:
    trace = "Traceback (most recent call last):\n" + "  frame\n" * 200 + "ValueError: bad config"
    looping = crash_looping(last=terminated("Error", 1, trace))
    health = failed(pod(containers=[looping]))
    assert health.reason == CRASH_LOOP_BACK_OFF
    assert BACK_OFF in health.message
    assert health.message.endswith("ValueError: bad config")
    assert "Traceback" not in health.message


def test_crash_loop_of_a_new_pod_while_the_old_one_serves_is_not_ready() -> None:
    old = pod("ws-7d9f-old", ready=True)
    new = pod("ws-5c4b-new", containers=[crash_looping()])
    health = assess(workload(ready=1, updated=1), [old, new], nodes())
    assert (health.ready, health.reason) == (False, CRASH_LOOP_BACK_OFF)
    assert "ws-5c4b-new" in health.message
    assert (health.ready_replicas, health.replicas) == (1, 1)


def test_crash_looping_init_container() -> None:
    puller = crash_looping(
        "model-weights-downloader", restarts=3, last=terminated("Error", 2, "403 Forbidden")
    )
    main = container(state=waiting("PodInitializing"))
    health = failed(pod(phase="Pending", init=[puller], containers=[main]))
    assert health.reason == CRASH_LOOP_BACK_OFF
    for fact in ("init container model-weights-downloader", "3 times", "exit code 2", "403"):
        assert fact in health.message


def test_oom_killed_now() -> None:
    killed = container(restarts=0, state=terminated("OOMKilled", 137))
    health = failed(pod(containers=[killed]))
    assert health.reason == OOM_KILLED
    for fact in ("ws-0", "container ws", "OOMKilled", "exit code 137", "0 times", "memory"):
        assert fact in health.message


def test_oom_killed_last_time_wins_over_the_crash_loop_it_causes() -> None:
    looping = crash_looping(last=terminated("OOMKilled", 137))
    health = failed(pod(containers=[looping]))
    assert health.reason == OOM_KILLED
    assert health.message == (
        "pod ws-0 container ws was OOMKilled (exit code 137), restarted 5 times: "
        "give it more memory or a smaller model/context"
    )


@pytest.mark.parametrize(
    "reason",
    [
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "ErrImageNeverPull",
        "RegistryUnavailable",
    ],
)
def test_image_pull_errors(reason: str) -> None:
    stuck = container(image="registry.example/vllm:9.9", state=waiting(reason, "pull failed"))
    health = failed(pod(phase="Pending", containers=[stuck]))
    assert health.reason == IMAGE_PULL_ERROR
    for fact in ("ws-0", "container ws", "registry.example/vllm:9.9", reason, "pull failed"):
        assert fact in health.message


def test_adapter_puller_init_container_cannot_pull() -> None:
    image = "mcr.microsoft.com/aks/kaito/adapter:missing"
    puller = container(
        "adapter-puller", image=image, state=waiting("ImagePullBackOff", PULL_BACK_OFF)
    )
    main = container(state=waiting("PodInitializing"))
    health = failed(pod(phase="Pending", init=[puller], containers=[main]))
    assert health.reason == IMAGE_PULL_ERROR
    for fact in ("ws-0", "init container adapter-puller", image, PULL_BACK_OFF):
        assert fact in health.message


@pytest.mark.parametrize(
    "reason",
    ["CreateContainerConfigError", "CreateContainerError", "RunContainerError", "StartError"],
)
def test_start_errors_while_waiting(reason: str) -> None:
    message = 'secret "hf-token" not found'
    health = failed(pod(phase="Pending", containers=[container(state=waiting(reason, message))]))
    assert health.reason == CONTAINER_START_ERROR
    for fact in ("ws-0", "container ws", reason, message):
        assert fact in health.message


@pytest.mark.parametrize("reason", ["StartError", "ContainerCannotRun"])
def test_start_errors_on_termination(reason: str) -> None:
    message = 'exec: "python3": executable file not found in $PATH'
    health = failed(pod(containers=[container(state=terminated(reason, 128, message))]))
    assert health.reason == CONTAINER_START_ERROR
    assert reason in health.message
    assert message in health.message


def test_a_container_that_exits_non_zero_in_a_failed_pod() -> None:
    done = container(state=terminated("Error", 3, "model not found"))
    health = failed(pod(phase="Failed", containers=[done]))
    assert health.reason == CONTAINER_START_ERROR
    for fact in ("ws-0", "container ws", "exit code 3", "model not found"):
        assert fact in health.message


def test_a_non_zero_exit_in_a_running_pod_is_not_a_start_error() -> None:
    restarting = container(restarts=1, state=terminated("Error", 1))
    assert pod_failure(pod(containers=[restarting]), nodes()) is None


# --- pod failures ------------------------------------------------------------------------------


def test_evicted_pod_quotes_the_kubelet() -> None:
    killed = container(state=terminated("ContainerStatusUnknown", 137))
    evicted = pod(phase="Failed", containers=[killed], reason="Evicted", message=LOW_DISK)
    health = failed(evicted)
    assert health.reason == POD_EVICTED
    assert health.message == f"pod ws-0 was evicted: {LOW_DISK}"


def test_an_evicted_pod_replaced_by_a_ready_one_is_history() -> None:
    evicted = pod("ws-0-old", phase="Failed", containers=[], reason="Evicted", message=LOW_DISK)
    health = assess(workload(), [evicted, pod("ws-1-new", ready=True)], nodes())
    assert health.reason == SUCCESS


def test_a_live_failure_is_told_before_an_old_eviction() -> None:
    evicted = pod("ws-a", phase="Failed", containers=[], reason="Evicted", message=LOW_DISK)
    health = failed(evicted, pod("ws-b", containers=[crash_looping()]))
    assert health.reason == CRASH_LOOP_BACK_OFF
    assert "ws-b" in health.message


def test_unschedulable_quotes_the_scheduler() -> None:
    waiting_pod = pod(
        phase="Pending",
        node=None,
        containers=[],
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": NO_GPU,
            }
        ],
    )
    health = failed(waiting_pod)
    assert health.reason == UNSCHEDULABLE
    assert "ws-0" in health.message
    assert NO_GPU in health.message


def test_a_scheduling_gated_pod_is_pending() -> None:
    gated = pod(
        phase="Pending",
        node=None,
        containers=[],
        conditions=[{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}],
    )
    assert assess(workload(ready=0), [gated], nodes()).reason == PENDING


@pytest.mark.parametrize(
    ("condition", "reason"),
    [("DiskPressure", NODE_DISK_PRESSURE), ("MemoryPressure", NODE_MEMORY_PRESSURE)],
)
def test_node_pressure_on_a_pod_that_is_not_ready(condition: str, reason: str) -> None:
    message = f"kubelet has {condition}"
    pressed = nodes(node_obj(**{condition: message}))
    health = assess(workload(ready=0), [pod(ready=False)], pressed)
    assert (health.ready, health.reason) == (False, reason)
    for fact in ("ws-0", NODE, condition, message):
        assert fact in health.message


def test_no_pressure_reason_for_a_ready_pod() -> None:
    pressed = nodes(node_obj(DiskPressure="kubelet has disk pressure"))
    assert pod_failure(pod(ready=True), pressed) is None
    assert assess(workload(), [pod(ready=True)], pressed).reason == SUCCESS


def test_pid_pressure_is_not_a_reason() -> None:
    pressed = nodes(node_obj(PIDPressure="kubelet has insufficient PID available"))
    assert pod_failure(pod(ready=False), pressed) is None


def test_a_pod_on_an_unknown_node_has_no_pressure() -> None:
    assert pod_failure(pod(ready=False, node="gone"), nodes()) is None


# --- choice, priority and wording -----------------------------------------------------------------


def test_the_first_failing_pod_by_name_decides() -> None:
    pull = container(state=waiting("ErrImagePull", "not found"))
    later = pod("ws-b", containers=[crash_looping()])
    earlier = pod("ws-a", containers=[pull])
    for order in ([later, earlier], [earlier, later]):
        health = failed(*order)
        assert health.reason == IMAGE_PULL_ERROR
        assert "ws-a" in health.message


def test_within_a_pod_the_more_telling_failure_wins() -> None:
    pull = container("sidecar", state=waiting("ImagePullBackOff", "back-off"))
    health = failed(pod(containers=[pull, crash_looping()]))
    assert health.reason == CRASH_LOOP_BACK_OFF
    assert "container ws" in health.message


def test_messages_are_one_line_and_capped() -> None:
    long = "line one\nline two\r\n" + "x" * 3000
    looping = container(state=waiting("CrashLoopBackOff", long), restarts=2)
    health = failed(pod(containers=[looping]))
    assert health.reason == CRASH_LOOP_BACK_OFF
    assert len(health.message) == MAX_MESSAGE
    assert health.message.endswith("...")
    assert "\n" not in health.message
    assert "\r" not in health.message
    assert "line one line two" in health.message


def test_pod_failure_returns_reason_and_message() -> None:
    assert pod_failure(pod(containers=[crash_looping()]), nodes()) == (
        CRASH_LOOP_BACK_OFF,
        "pod ws-0 container ws is in CrashLoopBackOff, restarted 5 times: "
        f"{BACK_OFF}; last termination: Error (exit code 1): CUDA out of memory",
    )
    assert pod_failure(pod(ready=True), nodes()) is None
