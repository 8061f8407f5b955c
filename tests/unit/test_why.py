"""``kaiten why``: the diagnosis of a Workspace from hand-made objects, pods, logs and audit
records, each case with the next step naming the concrete things."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from kaiten import why
from kaiten.why import Diagnosis, Finding, diagnose, render, to_json
from presets.catalog import default_catalog, vcpus_of
from presets.catalog.prices import default_prices
from services.watcher.audit import AuditRecord
from shared.settings import Settings

NOW = datetime(2026, 11, 22, 6, 40, tzinfo=UTC)
CATALOG = default_catalog()
PRICES = default_prices()
SEEDS = Path(__file__).resolve().parents[1] / "fixtures" / "seeds"
RUNTIME = "ghcr.io/kaiten-dev/runtime-vllm:0.1.0"
QUOTA_MESSAGE = (
    "Operation could not be completed as it results in exceeding approved standardNC24adsFamily "
    "Cores quota. Additional details - Deployment Model: Resource Manager, Location: eastus, "
    "Current Limit: 0, Current Usage: 0, Additional Required: 24, (Minimum) New Limit Required: "
    "24. Submit a request for Quota increase."
)


# --- builders ------------------------------------------------------------------------------------


def seed(
    file: str = "inference-phi-3-mini.yaml", *, generation: int = 1, instance_type: str = ""
) -> dict[str, Any]:
    """A seed Workspace as the API serves it (v1beta1, namespaced, with uid and generation)."""
    ws: dict[str, Any] = yaml.safe_load((SEEDS / file).read_text())
    ws["apiVersion"] = "kaito.sh/v1beta1"
    ws["metadata"].update(namespace="default", uid="uid-1", generation=generation)
    if instance_type:
        ws["resource"]["instanceType"] = instance_type
    return ws


def cond(
    ctype: str,
    status: str,
    reason: str,
    message: str = "",
    *,
    gen: int = 1,
    at: str = "2026-11-22T06:30:00Z",
) -> dict[str, Any]:
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": gen,
        "lastTransitionTime": at,
    }


def with_status(
    ws: dict[str, Any], *conditions: dict[str, Any], phases: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    out = copy.deepcopy(ws)
    out["status"] = {"conditions": list(conditions)}
    if phases is not None:
        out["status"]["phases"] = dict(phases)
    return out


def ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def record(
    type_: str, data: dict[str, Any], *, source: str = "provisioner", gen: int = 1, seq: int = 1
) -> AuditRecord:
    return AuditRecord(
        id=f"id-{seq}",
        sequence=seq,
        subject=f"kaiten.v1.{type_}.default.workspace-phi-3-mini",
        type=type_,
        source=source,
        namespace="default",
        name="workspace-phi-3-mini",
        uid="uid-1",
        generation=gen,
        correlation_id=f"uid-1/{gen}",
        causation_id=None,
        occurred_at=NOW - timedelta(seconds=60 - seq),
        data=data,
    )


def status_of(
    name: str,
    image: str = RUNTIME,
    *,
    restarts: int = 0,
    ready: bool = False,
    waiting: dict[str, Any] | None = None,
    running: dict[str, Any] | None = None,
    terminated: dict[str, Any] | None = None,
    last: dict[str, Any] | None = None,
) -> dict[str, Any]:
    states = (("waiting", waiting), ("running", running), ("terminated", terminated))
    state = {key: value for key, value in states if value is not None}
    entry: dict[str, Any] = {
        "name": name,
        "image": image,
        "ready": ready,
        "restartCount": restarts,
        "state": state,
    }
    if last is not None:
        entry["lastState"] = {"terminated": last}
    return entry


def pod(
    name: str,
    *statuses: dict[str, Any],
    init: Sequence[dict[str, Any]] = (),
    phase: str = "Running",
    conditions: Sequence[dict[str, Any]] = (),
    spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    containers = [{"name": s["name"], "image": s["image"]} for s in statuses]
    body: dict[str, Any] = {
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": containers, **(spec or {})},
        "status": {"phase": phase, "conditions": list(conditions), "containerStatuses": []},
    }
    body["status"]["containerStatuses"] = list(statuses)
    if init:
        body["spec"]["initContainers"] = [{"name": s["name"], "image": s["image"]} for s in init]
        body["status"]["initContainerStatuses"] = list(init)
    return body


def run(
    ws: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]] = (),
    logs: Mapping[tuple[str, str], str] | None = None,
    records: Sequence[AuditRecord] = (),
) -> Diagnosis:
    return diagnose(ws, pods, logs or {}, records, catalog=CATALOG, prices=PRICES, now=NOW)


def first(diagnosis: Diagnosis) -> Finding:
    assert diagnosis.findings, diagnosis
    return diagnosis.findings[0]


def text_of(finding: Finding) -> str:
    return "\n".join([finding.cause, *finding.detail, finding.next_step])


# --- 1. ready and succeeded ----------------------------------------------------------------------


def test_a_ready_workspace_says_nothing_is_wrong_and_since_when() -> None:
    ws = with_status(
        seed(),
        cond("ResourceReady", "True", "workspaceResourceStatusSuccess"),
        cond("InferenceReady", "True", "WorkspaceInferenceStatusSuccess"),
        cond("WorkspaceSucceeded", "True", "workspaceSucceeded", "workspace succeeds"),
        phases={"generation": 1, "observed": ago(600), "podsReady": ago(300)},
    )
    d = run(ws)
    assert d.state == "ready"
    assert d.exit_code == 0
    assert d.findings == ()
    assert d.summary.startswith("nothing is wrong: the inference server is ready since ")
    assert "2026-11-22T06:35:00Z (5m00s ago, 5m00s after it was observed)" in d.summary
    assert "nothing is wrong" in render(d)


def test_a_succeeded_tuning_run_says_succeeded() -> None:
    ws = with_status(
        seed("tuning-phi-3-mini.yaml"),
        cond("JobStarted", "True", "WorkspaceTuningJobStatusStarted"),
        cond("WorkspaceSucceeded", "True", "workspaceSucceeded", "workspace succeeds"),
        phases={"generation": 1, "observed": ago(900), "succeeded": ago(60)},
    )
    d = run(ws)
    assert (d.state, d.exit_code) == ("succeeded", 0)
    assert "the tuning run succeeded at 2026-11-22T06:39:00Z" in d.summary


def test_success_of_an_older_generation_is_not_ready() -> None:
    ws = with_status(
        seed(generation=2),
        cond("WorkspaceSucceeded", "True", "workspaceSucceeded", gen=1),
        phases={"generation": 2, "observed": ago(3)},
    )
    d = run(ws)
    assert (d.state, d.exit_code) == ("waiting", 1)
    assert first(d).cause == "observed 3s ago, waiting for a plan (planner)"


# --- 2. plan rejected ----------------------------------------------------------------------------


def test_a_rejected_plan_names_the_fields_to_fix() -> None:
    problems = [
        {"field": "resource.instanceType", "message": "Unsupported instance type Standard_X"},
        {"field": "inference.preset.name", "message": "Unsupported preset llama-9"},
    ]
    rejected = record(
        "plan.rejected",
        {"reason": "UnsupportedInstanceType", "message": "two problems", "problems": problems},
        source="planner",
    )
    d = run(seed(), records=[rejected])
    f = first(d)
    assert d.state == "failed"
    assert f.cause == "the planner rejected generation 1 (UnsupportedInstanceType)"
    assert "resource.instanceType: Unsupported instance type Standard_X" in f.detail
    assert f.next_step.startswith("fix resource.instanceType, inference.preset.name in the")
    assert "re-apply" in f.next_step
    assert "kubectl delete workspace workspace-phi-3-mini -n default" in f.next_step
    assert f.source == "event plan.rejected"


def test_a_rejection_condition_alone_is_enough() -> None:
    message = "ConfigMap my-config named by inference.config does not exist"
    ws = with_status(
        seed(), cond("WorkspaceSucceeded", "False", "ConfigMapNotFound", message=message)
    )
    f = first(run(ws))
    assert f.cause == "the planner rejected generation 1 (ConfigMapNotFound)"
    assert f.detail == (f"planner: {message}",)
    assert f.source == "condition WorkspaceSucceeded"


def test_a_rejection_a_later_plan_replaced_is_not_the_cause() -> None:
    rejected = record("plan.rejected", {"reason": "InvalidWorkspace", "message": "x"}, seq=1)
    ready = record("plan.ready", {"mode": "inference"}, source="planner", seq=2)
    d = run(seed(), records=[rejected, ready])
    assert not any("rejected" in f.cause for f in d.findings)


# --- 3. quota ------------------------------------------------------------------------------------


def quota_workspace(**kwargs: Any) -> dict[str, Any]:
    return with_status(
        seed(instance_type="Standard_NC24ads_A100_v4"),
        cond("NodeClaimReady", "False", "QuotaExceeded", QUOTA_MESSAGE[:256]),
        cond("NodesReady", "False", "NodeNotReady", "Not enough Nodes are ready: 0 of 1"),
        cond("ResourceReady", "False", "QuotaExceeded", QUOTA_MESSAGE),
        cond("WorkspaceSucceeded", "False", "workspaceFailed", QUOTA_MESSAGE),
        **kwargs,
    )


def test_quota_exceeded_names_the_numbers_and_the_instance_types_that_fit() -> None:
    d = run(quota_workspace())
    f = first(d)
    assert d.state == "failed"
    assert len(d.findings) == 1  # no node is coming: not "waiting for nodes" too
    assert f.cause == (
        "Azure refused the GPU node: the standardNC24adsFamily vCPU quota in eastus is too "
        "small for Standard_NC24ads_A100_v4"
    )
    assert f.facts["quota"] == {
        "family": "standardNC24adsFamily",
        "location": "eastus",
        "current_limit": 0,
        "current_usage": 0,
        "additional_required": 24,
        "new_limit_required": 24,
    }
    assert (
        "quota standardNC24adsFamily in eastus: current limit 0, current usage 0, additional "
        "required 24, new limit required 24 (vCPUs)"
    ) in f.detail
    # phi-3-mini-4k-instruct re-planned on the other Azure GPU instance types
    alternatives = {a["instance_type"]: a for a in f.facts["alternatives"]}
    assert "Standard_NC24ads_A100_v4" not in alternatives
    assert "Standard_NV6" not in alternatives  # 8 GiB: the planner rejects it
    assert "Standard_NG32ads_V620_v1" not in alternatives  # not NVIDIA
    t4 = alternatives["Standard_NC4as_T4_v3"]
    assert (t4["node_count"], t4["gpus_per_node"], t4["vcpus_per_node"]) == (1, 1, 4)
    assert t4["usd_per_hour"] == pytest.approx(0.526)
    assert alternatives["Standard_NV36ads_A10_v5"]["vcpus_per_node"] == 36
    assert alternatives["Standard_NC48ads_A100_v4"]["same_family"] is True
    assert f.facts["alternatives"][0]["instance_type"] == "Standard_NC4as_T4_v3"  # cheapest
    table = "\n".join(f.detail)
    assert "instance types the planner fits phi-3-mini-4k-instruct on:" in table
    assert "Standard_NC4as_T4_v3" in table
    assert "Standard_NV36ads_A10_v5" in table
    assert "0.53" in table
    step = f.next_step
    assert "request a quota increase for standardNC24adsFamily in eastus to at least 24" in step
    assert (
        "kubectl delete nodeclaim -l kaito.sh/workspace=workspace-phi-3-mini,"
        "kaito.sh/workspacenamespace=default"
    ) in step
    assert "resource.instanceType is immutable" in step
    assert "for example Standard_NC4as_T4_v3" in step


def test_quota_from_the_audit_log_when_the_status_does_not_say() -> None:
    failed = record("resources.failed", {"reason": "QuotaExceeded", "message": QUOTA_MESSAGE})
    d = run(seed(instance_type="Standard_NC24ads_A100_v4"), records=[failed])
    f = first(d)
    assert f.source == "event resources.failed"
    assert f.facts["quota"]["new_limit_required"] == 24


def test_a_quota_failure_of_an_older_generation_is_not_the_cause() -> None:
    ws = with_status(
        seed(generation=2, instance_type="Standard_NC24ads_A100_v4"),
        cond("ResourceReady", "False", "QuotaExceeded", QUOTA_MESSAGE, gen=1),
        phases={"generation": 2, "observed": ago(5), "planned": ago(4)},
    )
    d = run(ws)
    assert d.state == "waiting"
    assert "quota" not in render(d)
    assert first(d).cause == "planned 4s ago, waiting for GPU nodes (provisioner)"


def test_parse_quota_tolerates_missing_pieces() -> None:
    quota = why.parse_quota(
        "Operation results in exceeding approved Total Regional Cores quota. Location: westus2"
    )
    assert quota.family == "Total Regional"
    assert quota.location == "westus2"
    assert quota.current_limit is None
    assert quota.new_limit_required is None
    assert why.parse_quota("nothing to see") == why.Quota(None, None, None, None, None, None)


@pytest.mark.parametrize(
    ("name", "vcpus"),
    [
        ("Standard_NC24ads_A100_v4", 24),
        ("Standard_ND96isr_H100_v5", 96),
        ("Standard_NCC40ads_H100_v5", 40),
        ("Standard_NV6", 6),
        ("p4d.24xlarge", None),
    ],
)
def test_vcpus_come_from_the_azure_name(name: str, vcpus: int | None) -> None:
    assert vcpus_of(name) == vcpus


def test_a_quota_failure_without_numbers_still_gives_a_next_step() -> None:
    ws = with_status(
        seed(instance_type="Standard_NC24ads_A100_v4"),
        cond("ResourceReady", "False", "QuotaExceeded", "quota exceeded"),
    )
    f = first(run(ws))
    assert "request a quota increase for the instance type's family" in f.next_step
    assert f.facts["alternatives"]


# --- 4. other cloud refusals ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "what"),
    [("SkuNotAvailable", "is not available there"), ("AllocationFailed", "has no capacity now")],
)
def test_capacity_refusals_list_the_other_instance_types(reason: str, what: str) -> None:
    ws = with_status(
        seed(instance_type="Standard_NC24ads_A100_v4"),
        cond("ResourceReady", "False", reason, "Allocation failed. We do not have capacity"),
    )
    f = first(run(ws))
    assert f.failed
    assert f.cause == f"the cloud refused the GPU node ({reason}): Standard_NC24ads_A100_v4 {what}"
    assert "Standard_NV36ads_A10_v5" in "\n".join(f.detail)
    assert "re-create the Workspace with another instance type" in f.next_step
    assert "kubectl delete nodeclaim -l kaito.sh/workspace=workspace-phi-3-mini" in f.next_step


def test_another_refusal_quotes_the_cloud() -> None:
    ws = with_status(
        seed(), cond("ResourceReady", "False", "InvalidParameter", "osDiskSizeGB is too large")
    )
    f = first(run(ws))
    assert f.cause == "the cloud refused to create the GPU node (InvalidParameter)"
    assert f.detail == ("cloud: osDiskSizeGB is too large",)


# --- 5. nodes ------------------------------------------------------------------------------------


def test_nodes_being_provisioned_say_for_how_long() -> None:
    ws = with_status(
        seed(),
        cond("NodeClaimReady", "Unknown", "CreateNodeClaimPending", "creating 1 nodeClaims"),
        cond("NodesReady", "False", "NodeNotReady", "Not enough Nodes are ready: 0 of 1"),
        cond("ResourceReady", "False", "CreateNodeClaimPending", "creating 1 nodeClaims"),
        phases={"generation": 1, "observed": ago(200), "nodesRequested": ago(180)},
    )
    d = run(ws)
    f = first(d)
    assert d.state == "waiting"
    assert f.cause == "waiting for 3m00s for GPU nodes to be provisioned (CreateNodeClaimPending)"
    assert "NodeClaimReady: CreateNodeClaimPending: creating 1 nodeClaims" in f.detail
    assert "kubectl get nodeclaims -l kaito.sh/workspace=workspace-phi-3-mini" in f.next_step


def test_bring_your_own_nodes_says_which_labels_to_put_on_nodes() -> None:
    message = (
        "Not enough Nodes are ready: 0 of 1 Ready nodes of instance type Standard_NC6s_v3 "
        "labelled apps=phi-3"
    )
    ws = with_status(
        seed(),
        cond("NodesReady", "False", "NodeNotReady", message, at="2026-11-22T06:39:30Z"),
        cond("ResourceReady", "False", "NodeNotReady", message, at="2026-11-22T06:39:30Z"),
    )
    f = first(run(ws))
    assert f.cause == f"waiting for 30s for nodes: {message}"
    assert "kubectl label node NODE apps=phi-3" in f.next_step
    assert "of instance type Standard_NC6s_v3" in f.next_step


# --- 6. images -----------------------------------------------------------------------------------


def test_an_image_that_cannot_be_pulled_is_named_with_the_secrets_to_check() -> None:
    ws = seed("inference-phi-3-mini-adapter.yaml")
    image = "myregistry.azurecr.io/runtime:9.9"
    waiting = {"reason": "ErrImagePull", "message": f'failed to pull "{image}": not found'}
    p = pod(
        "ws-0",
        status_of("ws", image, waiting=waiting),
        phase="Pending",
        spec={"imagePullSecrets": [{"name": "acr-secret"}]},
    )
    d = run(with_status(ws), [p])
    f = first(d)
    assert d.state == "failed"
    assert f.cause == f'container ws of pod ws-0 cannot pull image "{image}" (ErrImagePull)'
    assert f'kubelet: failed to pull "{image}": not found' in f.detail
    assert f"check the image name and tag ({image})" in f.next_step
    assert "the registry myregistry.azurecr.io" in f.next_step
    assert "the pod's imagePullSecrets (acr-secret)" in f.next_step
    assert "inference.adapters[].source.imagePullSecrets" in f.next_step
    assert f.facts["image"] == image


def test_image_pull_back_off_of_an_init_container_on_a_tuning_workspace() -> None:
    waiting = {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "bad:tag"'}
    p = pod(
        "tune-abc",
        status_of("trainer", waiting={"reason": "PodInitializing"}),
        init=[status_of("data-puller", "bad:tag", waiting=waiting)],
        phase="Pending",
    )
    f = first(run(with_status(seed("tuning-phi-3-mini.yaml")), [p]))
    assert f.cause.startswith(
        'init container data-puller of pod tune-abc cannot pull image "bad:tag"'
    )
    assert "registry docker.io" in f.next_step
    assert "the pod has no imagePullSecrets" in f.next_step
    assert "tuning.input.imagePullSecrets" in f.next_step


# --- 7. crash loops ------------------------------------------------------------------------------


def crash_pod(reason: str = "Error", code: int = 1, message: str = "") -> dict[str, Any]:
    last: dict[str, Any] = {"exitCode": code, "reason": reason}
    if message:
        last["message"] = message
    waiting = {"reason": "CrashLoopBackOff", "message": "back-off 5m0s restarting failed"}
    return pod(
        "workspace-phi-3-mini-0",
        status_of("workspace-phi-3-mini", restarts=5, waiting=waiting, last=last),
    )


def test_a_crash_loop_shows_restarts_exit_and_the_last_log_lines() -> None:
    ws = seed()
    ws["inference"]["config"] = "phi-3-inference-params"
    log = "\n".join(f"line {i}" for i in range(30)) + "\nValueError: bad max_model_len\n"
    p = crash_pod(message="ValueError: bad max_model_len")
    logs = {("workspace-phi-3-mini-0", "workspace-phi-3-mini"): log}
    d = run(with_status(ws), [p], logs)
    f = first(d)
    assert d.state == "failed"
    assert f.cause == (
        "container workspace-phi-3-mini of pod workspace-phi-3-mini-0 is crash-looping "
        "(CrashLoopBackOff); last exit: Error, exit code 1"
    )
    assert (
        "pod workspace-phi-3-mini-0, container workspace-phi-3-mini, restarted 5 times; last "
        "exit: Error, exit code 1"
    ) in f.detail
    assert "termination message: ValueError: bad max_model_len" in f.detail
    shown = [line for line in f.detail if line.startswith("  | ")]
    assert len(shown) == 20  # the last 20 lines, no more
    assert shown[-1] == "  | ValueError: bad max_model_len"
    assert shown[0] == "  | line 11"
    assert "the inference ConfigMap phi-3-inference-params (inference.config" in f.next_step
    assert "kubectl delete pod workspace-phi-3-mini-0 -n default" in f.next_step


def test_an_oom_kill_says_bigger_instance_type_or_fewer_tokens() -> None:
    f = first(run(with_status(seed()), [crash_pod("OOMKilled", 137)]))
    assert "was killed for lack of memory (OOMKilled)" in f.cause
    assert "last exit: OOMKilled, exit code 137" in f.cause
    assert "bigger instance type" in f.next_step
    assert "max tokens" in f.next_step


def test_a_restarted_container_that_is_not_ready_counts_as_crashing() -> None:
    status = status_of(
        "workspace-phi-3-mini",
        restarts=2,
        running={"startedAt": ago(5)},
        last={"exitCode": 1, "reason": "Error"},
    )
    f = first(run(with_status(seed()), [pod("workspace-phi-3-mini-0", status)]))
    assert "is crash-looping" in f.cause
    assert why.log_requests([pod("workspace-phi-3-mini-0", status)]) == [
        why.LogRequest("workspace-phi-3-mini-0", "workspace-phi-3-mini", previous=True)
    ]


# --- 8. init containers, scheduling, readiness ---------------------------------------------------


def test_a_failing_init_container_names_what_feeds_it() -> None:
    last = {"exitCode": 1, "reason": "Error", "message": "unauthorized: authentication required"}
    init = status_of(
        "puller-phi-3-adapter",
        restarts=3,
        waiting={"reason": "CrashLoopBackOff", "message": "back-off"},
        last=last,
    )
    main = status_of("ws", waiting={"reason": "PodInitializing"})
    p = pod("ws-0", main, init=[init], phase="Pending")
    logs = {
        ("ws-0", "puller-phi-3-adapter"): "pulling ACR_REPO_HERE.azurecr.io/ADAPTER\nerror 401\n"
    }
    f = first(run(with_status(seed("inference-phi-3-mini-adapter.yaml")), [p], logs))
    assert f.cause.startswith("init container puller-phi-3-adapter of pod ws-0 is crash-looping")
    assert "termination message: unauthorized: authentication required" in f.detail
    assert "  | error 401" in f.detail
    assert "inference.adapters[].source.image" in f.next_step


def test_an_unschedulable_pod_quotes_the_scheduler() -> None:
    message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    p = pod(
        "ws-0",
        phase="Pending",
        conditions=[cond("PodScheduled", "False", "Unschedulable", message)],
    )
    d = run(with_status(seed(), cond("ResourceReady", "True", "ok")), [p])
    f = first(d)
    assert d.state == "waiting"
    assert f.cause == "pod ws-0 cannot be scheduled"
    assert f.detail == (f"scheduler: {message}",)
    assert "no node has a free GPU" in f.next_step
    assert "kubectl describe nodes -l apps=phi-3" in f.next_step


def test_a_running_pod_that_is_not_ready_may_be_loading_weights() -> None:
    status = status_of("workspace-phi-3-mini", running={"startedAt": ago(90)})
    p = pod(
        "workspace-phi-3-mini-0",
        status,
        conditions=[cond("Ready", "False", "ContainersNotReady")],
    )
    f = first(run(with_status(seed(), cond("ResourceReady", "True", "ok")), [p]))
    assert not f.failed
    assert f.cause == (
        "pod workspace-phi-3-mini-0 is running but not ready for 1m30s: its readiness probe "
        "does not pass yet"
    )
    assert "loading the model weights" in f.detail[0]
    assert "kubectl logs workspace-phi-3-mini-0 -n default -c workspace-phi-3-mini" in f.next_step


# --- 9. tuning -----------------------------------------------------------------------------------


def test_a_failed_tuning_run_gives_the_reason_and_the_failed_pods_log() -> None:
    message = (
        "pod tune-abc failed: init container data-downloader exited with Error (exit code 1): "
        "404 Not Found: https://example.com/data.parquet"
    )
    failed = record(
        "tuning.failed",
        {"job": "workspace-phi-3-mini", "reason": "DataDownloadFailed", "message": message},
        source="tuner",
    )
    terminated = {"exitCode": 1, "reason": "Error", "message": "404 Not Found"}
    p = pod(
        "tune-abc",
        status_of("trainer", waiting={"reason": "PodInitializing"}),
        init=[status_of("data-downloader", terminated=terminated)],
        phase="Failed",
    )
    logs = {("tune-abc", "data-downloader"): "GET https://example.com/data.parquet\n404\n"}
    d = run(with_status(seed("tuning-phi-3-mini.yaml")), [p], logs, [failed])
    assert d.state == "failed"
    assert len(d.findings) == 1  # the pod's own finding would repeat it
    f = first(d)
    assert f.cause == "the tuning run failed (DataDownloadFailed)"
    assert f"tuner: {message}" in f.detail
    assert "last log lines of tune-abc/data-downloader:" in f.detail
    assert "  | 404" in f.detail
    assert "tuning.input.urls" in f.next_step
    assert "kubectl delete workspace workspace-phi-3-mini -n default" in f.next_step


def test_a_failed_tuning_condition_alone_infers_the_reason() -> None:
    message = "pod tune-abc failed: container pusher exited with Error (exit code 1): denied"
    ws = with_status(
        seed("tuning-phi-3-mini.yaml"),
        cond("JobStarted", "False", "WorkspaceTuningJobStatusFailed", message),
        cond("WorkspaceSucceeded", "False", "workspaceFailed", message),
    )
    f = first(run(ws))
    assert f.cause == "the tuning run failed (AdapterPushFailed)"
    assert "tuning.output.imagePushSecret" in f.next_step


# --- 10. dead letters ----------------------------------------------------------------------------


def test_a_dead_letter_condition_says_which_service_gave_up() -> None:
    message = (
        "deployer gave up on resources.ready after 5 deliveries: boom. The event is kept on "
        "kaiten.v1.deadletter.deployer; fix the cause, then re-apply the Workspace or wait for "
        "the next resync."
    )
    ws = with_status(seed(), cond("WorkspaceSucceeded", "False", "EventDeadLettered", message))
    d = run(ws)
    f = first(d)
    assert d.state == "failed"
    assert f.cause == "deployer gave up on resources.ready after 5 deliveries"
    assert "re-apply the Workspace" in f.next_step


def test_a_dead_letter_record_gives_service_event_and_error() -> None:
    letter = record(
        "deadletter",
        {
            "service": "provisioner",
            "consumer": "provisioner-plan-ready",
            "subject": "kaiten.v1.plan.ready.default.workspace-phi-3-mini",
            "deliveries": 5,
            "error": "PermanentError: nodeclaims.karpenter.sh is forbidden",
        },
    )
    f = first(run(seed(), records=[letter]))
    assert f.cause == "the provisioner gave up on plan.ready after 5 deliveries"
    assert "error: PermanentError: nodeclaims.karpenter.sh is forbidden" in f.detail
    assert f.source == "event deadletter"


def test_a_dead_letter_a_later_event_of_that_service_superseded_is_dropped() -> None:
    letter = record("deadletter", {"service": "provisioner", "subject": "s"}, seq=1)
    later = record("resources.pending", {"reason": "Launching", "message": "m"}, seq=2)
    d = run(seed(), records=[letter, later])
    assert not any("gave up" in f.cause for f in d.findings)


# --- 11. deleting --------------------------------------------------------------------------------


def test_a_deleting_workspace_waits_on_cleanup() -> None:
    ws = with_status(
        seed(),
        cond("WorkspaceDeleting", "True", "workspaceDeleted", "workspace is being deleted"),
        cond("ResourceReady", "False", "QuotaExceeded", QUOTA_MESSAGE),
    )
    ws["metadata"]["deletionTimestamp"] = "2026-11-22T06:39:00Z"
    d = run(ws)
    assert (d.state, d.exit_code) == ("deleting", 1)
    assert len(d.findings) == 1
    f = first(d)
    assert f.cause == (
        "the Workspace is being deleted since 2026-11-22T06:39:00Z (1m00s ago): waiting for the "
        "services to clean up"
    )
    assert f.detail == ("WorkspaceDeleting: workspaceDeleted: workspace is being deleted",)


# --- 12. nothing known but the phases ------------------------------------------------------------


@pytest.mark.parametrize(
    ("phases", "tuning", "cause"),
    [
        (
            {"observed": 10, "planned": 3},
            False,
            "planned 3s ago, waiting for GPU nodes (provisioner)",
        ),
        (
            {"observed": 100, "nodesReady": 40, "workloadCreated": 30},
            False,
            "workloadCreated 30s ago, waiting for pods to be ready (deployer)",
        ),
        (
            {"observed": 100, "workloadCreated": 30, "tuningStarted": 20},
            True,
            "tuningStarted 20s ago, waiting for the tuning run to finish (tuner)",
        ),
        (
            {"observed": 100, "nodesReady": 61},
            True,
            "nodesReady 1m01s ago, waiting for the workload to be created (deployer or tuner)",
        ),
    ],
)
def test_the_phases_say_what_it_waits_on_and_who_owns_it(
    phases: dict[str, int], tuning: bool, cause: str
) -> None:
    file = "tuning-phi-3-mini.yaml" if tuning else "inference-phi-3-mini.yaml"
    stamps = {"generation": 1, **{k: ago(v) for k, v in phases.items()}}
    f = first(run(with_status(seed(file), phases=stamps)))
    assert f.cause == cause
    assert f.source == "status.phases"


def test_a_failure_nothing_explains_is_still_a_failure() -> None:
    ws = with_status(
        seed(),
        cond("WorkspaceSucceeded", "False", "workspaceFailed", "something broke"),
        phases={"generation": 1, "observed": ago(9), "failed": ago(2)},
    )
    d = run(ws)
    assert d.state == "failed"
    f = first(d)
    assert f.cause == "the Workspace failed: something broke"
    assert "kaiten events --workspace workspace-phi-3-mini -n default" in f.next_step


def test_nothing_recorded_yet_points_at_the_watcher() -> None:
    d = run(seed())
    assert d.state == "waiting"
    f = first(d)
    assert f.cause == "generation 1 is not observed yet"
    assert "watcher" in f.next_step


# --- output --------------------------------------------------------------------------------------


def test_render_numbers_the_findings_with_source_detail_and_next_step() -> None:
    ws = quota_workspace()
    letter = cond("InferenceReady", "False", "EventDeadLettered", "deployer gave up on x: boom")
    ws["status"]["conditions"].append(letter)
    d = run(ws)
    text = render(d)
    lines = text.splitlines()
    assert lines[0] == "default/workspace-phi-3-mini (generation 1): FAILED"
    assert "Cause 1 of 2: Azure refused the GPU node" in text
    assert "Cause 2 of 2: deployer gave up on x" in text
    assert "  seen in: condition ResourceReady" in lines
    assert any(line.startswith("  next step: request a quota increase") for line in lines)
    assert all(len(line) <= 100 for line in lines if "next step" in line)  # wrapped


def test_render_adds_notes() -> None:
    d = run(seed())
    noted = dataclasses.replace(d, notes=("the audit log was not read",))
    assert render(noted).endswith("note: the audit log was not read")


def test_to_json_is_plain_json_with_the_facts() -> None:
    d = run(quota_workspace())
    doc = json.loads(json.dumps(to_json(d)))
    assert doc["state"] == "failed"
    assert doc["namespace"] == "default"
    assert doc["generation"] == 1
    finding = doc["findings"][0]
    assert finding["failed"] is True
    assert finding["source"] == "condition ResourceReady"
    assert finding["facts"]["quota"]["family"] == "standardNC24adsFamily"
    assert finding["next_step"].startswith("request a quota increase")
    assert isinstance(finding["detail"], list)


# --- the command's argument checks ---------------------------------------------------------------


@pytest.mark.parametrize("target", ["foo", "/x", "ns/", "a/b/c"])
def test_a_bad_target_exits_2_naming_the_form(target: str) -> None:
    err = io.StringIO()
    assert why.main(target, "text", Settings(), io.StringIO(), err) == 2
    assert "expected NAMESPACE/NAME" in err.getvalue()


def test_a_bad_output_exits_2() -> None:
    err = io.StringIO()
    assert why.main("default/ws", "yaml", Settings(), io.StringIO(), err) == 2
    assert "choose text or json" in err.getvalue()


def test_a_missing_kubeconfig_exits_2_naming_kubeconfig(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    err = io.StringIO()
    assert why.main("default/ws", "text", Settings(), io.StringIO(), err) == 2
    assert "KUBECONFIG" in err.getvalue()
