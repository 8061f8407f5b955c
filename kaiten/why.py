"""``kaiten why NAMESPACE/NAME``: what a Workspace is waiting on, or why it failed, with a concrete
next step that names things (fields, quota numbers, instance types, images, pods, commands).

``diagnose`` decides from data only: the Workspace as the API serves it, its pods, the last log
lines of its failing containers and the audit log's events of its current generation. ``gather``
and ``main`` do the I/O. Exit 0 when the Workspace is ready (or its tuning succeeded), 1 when it
is waiting or failed (a diagnosis was printed), 2 when it does not exist or the Kubernetes API
cannot be reached.

What it recognises, most telling first: a plan the planner rejected; the cloud refusing the GPU
node (quota, with the numbers and the instance types that would fit instead; capacity); a failed
tuning run; images that cannot be pulled; crash-looping, OOM-killed or failing (init)
containers, with their last log lines; dead-lettered events; then what it waits on: nodes being
provisioned (or, bringing your own nodes, nodes to label), pods that cannot be scheduled or are
not ready yet, a deletion's cleanup, and otherwise the next step of ``status.phases`` and which
service owns it. Conditions of an older generation are never taken as the current cause.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TextIO

import aiohttp
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config import ConfigException

from kaiten.history import workspace_argument
from presets.catalog import AZURE_SIZE_NAME, Catalog, GpuSku, default_catalog, vcpus_of
from presets.catalog.prices import PriceTable, default_prices
from services.planner.planning import PlanOptions, configmaps_needed, plan_workspace
from services.watcher.audit import (
    DEADLETTER,
    FAILED,
    NODES_READY,
    NODES_REQUESTED,
    OBSERVED,
    PHASES,
    PLANNED,
    PODS_READY,
    SUCCEEDED,
    TUNING_FINISHED,
    TUNING_STARTED,
    WORKLOAD_CREATED,
    AuditLog,
    AuditRecord,
)
from shared.bus import DEADLETTER_REASON
from shared.db import Database
from shared.errors import ConfigError
from shared.events import duration
from shared.kube import WORKSPACES, call_raw, new_api_client
from shared.labels import WORKSPACE_LABEL, WORKSPACE_NAMESPACE_LABEL
from shared.plan import Plan
from shared.pods import (
    IMAGE_PULL_REASONS,
    START_WAITING_REASONS,
    dig,
    int_field,
    pod_name,
    pod_ready,
)
from shared.settings import Settings

# Diagnosis.state
STATE_READY = "ready"
STATE_SUCCEEDED = "succeeded"
STATE_WAITING = "waiting"
STATE_FAILED = "failed"
STATE_DELETING = "deleting"
DONE_STATES = frozenset({STATE_READY, STATE_SUCCEEDED})

MAX_LOG_LINES = 20
MAX_ALTERNATIVES = 8
MAX_QUOTED = 600  # characters of a cloud's or a service's message quoted in a detail line

# Reasons the planner gives a rejection (services.planner.planning).
PLANNER_REASONS = frozenset(
    {
        "InvalidWorkspace",
        "UnsupportedPreset",
        "PresetDeprecated",
        "UnsupportedInstanceType",
        "ConfigMapNotFound",
        "InsufficientGPUMemory",
        "InvalidConfigMap",
        "InvalidInferenceConfig",
        "InvalidTuningConfig",
    }
)
# ResourceReady / NodeClaimReady / NodesReady reasons that mean "not yet", not "refused".
PENDING_RESOURCE_REASONS = frozenset(
    {
        "CreateNodeClaimPending",
        "NodeClaimNotReady",
        "AwaitingReconciliation",
        "Launching",
        "LaunchRetrying",
        "NodeNotReady",
        "NodePluginsNotReady",
        "workspaceResourceStatusNotReady",
        "ModelMirrorNotReady",
    }
)
CAPACITY_CODES = ("SkuNotAvailable", "AllocationFailed", "OverconstrainedAllocationRequest")
# The deployer's InferenceReady reasons that are failures (shared.pods).
INFERENCE_FAILURES = frozenset(
    {
        "ContainerOOMKilled",
        "ContainerCrashLoopBackOff",
        "ImagePullError",
        "ContainerStartError",
        "PodEvicted",
    }
)
TUNING_JOB_FAILED = "WorkspaceTuningJobStatusFailed"
CLEANUP_TIMED_OUT = "CleanupTimedOut"

# The step after each phase of status.phases, and the service that owns it.
_NEXT_STEP: dict[str, tuple[str, str]] = {
    OBSERVED: ("a plan", "planner"),
    PLANNED: ("GPU nodes", "provisioner"),
    NODES_REQUESTED: ("the nodes to be ready", "provisioner"),
    NODES_READY: ("the workload to be created", "deployer or tuner"),
    PODS_READY: ("the Workspace to be marked ready", "deployer"),
    TUNING_STARTED: ("the tuning run to finish", "tuner"),
    TUNING_FINISHED: ("the tuning result to be reported", "tuner"),
}
# Tuning failure reasons (services.tuner.status) -> what to check.
_TUNING_NEXT: dict[str, str] = {
    "DataDownloadFailed": "check tuning.input.urls: each must be reachable over http(s) from "
    "the cluster's nodes and serve the file",
    "DataPullFailed": "check tuning.input.image (name and tag) and tuning.input.imagePullSecrets "
    "(a docker-registry Secret that can read it)",
    "WeightsPullFailed": "the model weights image could not be pulled: check the registry is "
    "reachable and inference/tuning preset.presetOptions.imagePullSecrets",
    "AdapterPushFailed": "check tuning.output.image (a registry that accepts the push) and "
    "tuning.output.imagePushSecret (a docker-registry Secret with push rights)",
    "TrainingFailed": "fix what the trainer's log says: the data format, the training "
    "ConfigMap (tuning.config), or memory (method qlora or a bigger instance type)",
    "JobFailed": "the Job gave up after its retries: read its pods' logs",
}
# Containers Kaiten adds to pods -> the Workspace fields that feed them.
_INIT_FIELDS: dict[str, str] = {
    "data-downloader": "tuning.input.urls",
    "data-puller": "tuning.input.image and tuning.input.imagePullSecrets",
    "model-weights-downloader": "the preset's weights image and "
    "preset.presetOptions.imagePullSecrets",
    "pusher": "tuning.output.image and tuning.output.imagePushSecret",
}

_QUOTA_FAMILY = re.compile(r"exceeding approved (.+?) (?:Cores|vCPUs?) quota", re.IGNORECASE)
_QUOTA_LOCATION = re.compile(r"Location: ([^,.\s]+)", re.IGNORECASE)
_QUOTA_NUMBERS = {
    "current_limit": re.compile(r"Current Limit: (\d+)", re.IGNORECASE),
    "current_usage": re.compile(r"Current Usage: (\d+)", re.IGNORECASE),
    "additional_required": re.compile(r"Additional Required: (\d+)", re.IGNORECASE),
    "new_limit_required": re.compile(r"New Limit Required: (\d+)", re.IGNORECASE),
}
_POD_IN_MESSAGE = re.compile(r"\bpod (\S+)")
# The cloud of a catalog SKU -> the planner's cloud option.
_PLAN_CLOUD = {"azure": "azure", "azure-arc": "arc", "aws": "aws"}


# --- the result ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """One cause: what is wrong or awaited, the facts that show it, what to do, and where it was
    seen (a condition, an event of the audit log, a pod). ``failed``: it will not fix itself."""

    cause: str
    detail: tuple[str, ...]
    next_step: str
    source: str
    failed: bool = False
    facts: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class Diagnosis:
    namespace: str
    name: str
    uid: str
    generation: int
    state: str  # ready | succeeded | waiting | failed | deleting
    summary: str
    findings: tuple[Finding, ...]
    notes: tuple[str, ...] = ()  # about the diagnosis itself (what could not be read)

    @property
    def exit_code(self) -> int:
        return 0 if self.state in DONE_STATES else 1


@dataclass(frozen=True, slots=True)
class Quota:
    """The numbers of an Azure quota refusal; None where the message does not say."""

    family: str | None
    location: str | None
    current_limit: int | None
    current_usage: int | None
    additional_required: int | None
    new_limit_required: int | None


@dataclass(frozen=True, slots=True)
class Alternative:
    """An instance type the Workspace's model was planned on successfully."""

    instance_type: str
    node_count: int
    gpus_per_node: int
    gpu_model: str
    vcpus_per_node: int | None
    usd_per_hour: float | None  # all nodes
    same_family: bool  # likely counted against the same vCPU quota family


@dataclass(frozen=True, slots=True)
class LogRequest:
    """A container whose last log lines tell why it fails; ``previous``: the instance before
    the current one (a crash loop's current instance has not written anything yet)."""

    pod: str
    container: str
    previous: bool


# --- the workspace, read once --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Workspace:
    obj: Mapping[str, Any]
    namespace: str
    name: str
    uid: str
    generation: int
    tuning: bool
    preset: str
    instance_type: str
    match_labels: Mapping[str, str]
    deletion: str
    conditions: Mapping[str, Mapping[str, Any]]  # of the current generation, by type
    phases: Mapping[str, datetime]  # of the current generation

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def nodeclaim_selector(self) -> str:
        return f"{WORKSPACE_LABEL}={self.name},{WORKSPACE_NAMESPACE_LABEL}={self.namespace}"

    def condition(self, ctype: str) -> Mapping[str, Any]:
        return self.conditions.get(ctype) or {}

    def is_false(self, ctype: str) -> bool:
        return self.condition(ctype).get("status") in ("False", "Unknown")


def _view(obj: Mapping[str, Any]) -> _Workspace:
    meta = _map(obj.get("metadata"))
    generation = int_field(meta.get("generation"))
    status = _map(obj.get("status"))
    section = _map(obj.get("tuning")) or _map(obj.get("inference"))
    resource = _map(obj.get("resource"))
    return _Workspace(
        obj=obj,
        namespace=_str(meta.get("namespace")),
        name=_str(meta.get("name")),
        uid=_str(meta.get("uid")),
        generation=generation,
        tuning=obj.get("tuning") is not None,
        preset=_str(dig(section, "preset", "name")),
        instance_type=_str(resource.get("instanceType")),
        match_labels={
            str(k): str(v) for k, v in _map(dig(resource, "labelSelector", "matchLabels")).items()
        },
        deletion=_str(meta.get("deletionTimestamp")),
        conditions=_current_conditions(status.get("conditions"), generation),
        phases=_current_phases(status.get("phases"), generation),
    )


def _current_conditions(raw: Any, generation: int) -> dict[str, Mapping[str, Any]]:
    """The conditions about ``generation``: one observed for an older generation says nothing
    about the current one."""
    found: dict[str, Mapping[str, Any]] = {}
    for cond in _maps(raw):
        observed = cond.get("observedGeneration")
        if isinstance(observed, int) and observed < generation:
            continue
        found[_str(cond.get("type"))] = cond
    return found


def _current_phases(raw: Any, generation: int) -> dict[str, datetime]:
    phases = _map(raw)
    if phases.get("generation") not in (None, generation):
        return {}
    found = {}
    for phase in PHASES:
        at = _time(phases.get(phase))
        if at is not None:
            found[phase] = at
    return found


# --- the decision --------------------------------------------------------------------------------


def diagnose(
    workspace: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    logs: Mapping[tuple[str, str], str],
    records: Sequence[AuditRecord],
    *,
    catalog: Catalog,
    now: datetime,
    prices: PriceTable | None = None,
    configmaps: Mapping[str, Mapping[str, str] | None] | None = None,
) -> Diagnosis:
    """What ``workspace`` waits on or why it failed. ``logs``: the last lines of the failing
    containers by (pod, container); ``records``: the audit log's events of its current uid and
    generation, in order (may be empty); ``configmaps``: those it names, for re-planning it on
    other instance types (missing ones make those plans fail, which only shortens the list)."""
    ws = _view(workspace)
    if ws.deletion:
        return _diagnosis(ws, STATE_DELETING, [_deleting(ws, now)])
    done = _done(ws, now)
    if done is not None:
        return done
    live = [p for p in pods if not dig(p, "metadata", "deletionTimestamp")]
    ctx = _Context(catalog, prices, configmaps or {})
    latest = _latest(records, ws.generation)
    tuning, covered = _tuning_findings(ws, latest, live, logs)
    pod_findings = _pod_findings(ws, live, logs, covered, now)
    cloud = _cloud_findings(ws, latest, ctx)
    findings = [
        *_plan_findings(ws, latest),
        *cloud,
        *([] if cloud else _node_findings(ws, latest, now)),  # refused: nothing comes
        *tuning,
        *pod_findings,
        *([] if pod_findings else _workload_findings(ws, latest)),
        *_deadletter_findings(ws, records),
    ]
    if not any(f.failed for f in findings):
        findings = _unexplained_failure(ws) + findings
    if not findings:
        findings = [_phase_finding(ws, now)]
    ordered = sorted(findings, key=lambda f: not f.failed)  # stable: failures first
    state = STATE_FAILED if ordered[0].failed else STATE_WAITING
    return _diagnosis(ws, state, ordered)


@dataclass(frozen=True, slots=True)
class _Context:
    catalog: Catalog
    prices: PriceTable | None
    configmaps: Mapping[str, Mapping[str, str] | None]


def _diagnosis(ws: _Workspace, state: str, findings: Sequence[Finding]) -> Diagnosis:
    first = findings[0].cause if findings else ""
    more = len(findings) - 1
    summary = first + (f" (and {more} more finding{'s' if more > 1 else ''})" if more > 0 else "")
    return Diagnosis(ws.namespace, ws.name, ws.uid, ws.generation, state, summary, tuple(findings))


def _latest(records: Sequence[AuditRecord], generation: int) -> dict[str, AuditRecord]:
    """The last event of each stage (plan, resources, inference, tuning) of ``generation``: an
    earlier failure that a later event superseded is not the current cause."""
    latest: dict[str, AuditRecord] = {}
    for record in records:
        if record.generation >= 0 and record.generation != generation:
            continue
        stage = record.type.split(".")[0]
        if stage in ("plan", "resources", "inference", "tuning"):
            latest[stage] = record
    return latest


# --- done and deleting ---------------------------------------------------------------------------


def _done(ws: _Workspace, now: datetime) -> Diagnosis | None:
    succeeded = ws.condition("WorkspaceSucceeded")
    if succeeded.get("status") != "True":
        return None
    state = STATE_SUCCEEDED if ws.tuning else STATE_READY
    phase = SUCCEEDED if ws.tuning else PODS_READY
    at = (
        ws.phases.get(phase)
        or ws.phases.get(SUCCEEDED)
        or _time(succeeded.get("lastTransitionTime"))
    )
    what = "the tuning run succeeded" if ws.tuning else "the inference server is ready"
    when = ""
    if at is not None:
        verb = "at" if ws.tuning else "since"
        when = f" {verb} {_stamp(at)} ({_ago(at, now)} ago"
        start = ws.phases.get(OBSERVED)
        if start is not None:
            when += f", {duration(_seconds(at - start), precise=True)} after it was observed"
        when += ")"
    return Diagnosis(
        ws.namespace,
        ws.name,
        ws.uid,
        ws.generation,
        state,
        f"nothing is wrong: {what}{when}",
        (),
    )


def _deleting(ws: _Workspace, now: datetime) -> Finding:
    cond = ws.condition("WorkspaceDeleting")
    since = _time(ws.deletion)
    when = f" since {_stamp(since)} ({_ago(since, now)} ago)" if since else ""
    detail = [f"WorkspaceDeleting: {cond.get('reason')}: {cond.get('message')}"] if cond else []
    if cond.get("reason") == CLEANUP_TIMED_OUT:
        return Finding(
            f"the Workspace is being deleted{when}; a service did not confirm its cleanup",
            tuple(detail),
            "check the service the message names for objects left behind (`kubectl get "
            f"deploy,sts,job,svc,cm -n {ws.namespace} -l {WORKSPACE_LABEL}={ws.name}` and "
            f"`kubectl get nodeclaims -l {ws.nodeclaim_selector}`) and delete them",
            "condition WorkspaceDeleting",
        )
    return Finding(
        f"the Workspace is being deleted{when}: waiting for the services to clean up",
        tuple(detail),
        "nothing to do: each service removes what it made (workloads, NodeClaims) and answers; "
        "then the watcher removes the finalizer (after 5 minutes at most, by default). If it "
        f"stays, `kaiten events --workspace {ws.name} -n {ws.namespace}` shows which service "
        "has not sent cleanup.done",
        "metadata.deletionTimestamp",
    )


# --- the planner ---------------------------------------------------------------------------------


def _plan_findings(ws: _Workspace, latest: Mapping[str, AuditRecord]) -> list[Finding]:
    record = latest.get("plan")
    cond = ws.condition("WorkspaceSucceeded")
    if record is not None and record.type == "plan.rejected":
        reason = _str(record.data.get("reason"))
        message = _str(record.data.get("message"))
        problems = [
            (_str(p.get("field")), _str(p.get("message")))
            for p in _maps(record.data.get("problems"))
        ]
        source = "event plan.rejected"
    elif record is None and cond.get("status") == "False" and cond.get("reason") in PLANNER_REASONS:
        reason, message, problems = _str(cond.get("reason")), _str(cond.get("message")), []
        source = "condition WorkspaceSucceeded"
    else:
        return []
    fields = [f for f, _ in problems if f]
    detail = [f"planner: {message}"] if message and not problems else []
    detail += [f"{f}: {m}" if f else m for f, m in problems]
    where = ", ".join(dict.fromkeys(fields)) or "the fields the message names"
    step = (
        f"fix {where} in the Workspace YAML and re-apply it (`kaiten plan FILE` checks it "
        "offline first)"
    )
    if any(f.startswith("resource.") for f in fields):
        step += (
            "; resource fields are immutable: delete the Workspace "
            f"(`kubectl delete workspace {ws.name} -n {ws.namespace}`) and apply it again"
        )
    return [
        Finding(
            f"the planner rejected generation {ws.generation} ({reason})",
            tuple(detail),
            step,
            source,
            failed=True,
            facts={"reason": reason, "message": message, "problems": dict(problems)},
        )
    ]


# --- the cloud -----------------------------------------------------------------------------------


def _cloud_findings(
    ws: _Workspace, latest: Mapping[str, AuditRecord], ctx: _Context
) -> list[Finding]:
    refusal = _cloud_refusal(ws, latest)
    if refusal is None:
        return []
    reason, message, source = refusal
    if _is_quota(reason, message):
        return [_quota_finding(ws, reason, message, source, ctx)]
    if any(code.lower() in reason.lower() for code in CAPACITY_CODES):
        return [_capacity_finding(ws, reason, message, source, ctx)]
    return [
        Finding(
            f"the cloud refused to create the GPU node ({reason})",
            (f"cloud: {_cut(message)}",),
            "fix what the cloud's message says, then make Kaiten try again: "
            f"`kubectl delete nodeclaim -l {ws.nodeclaim_selector}`",
            source,
            failed=True,
            facts={"reason": reason, "message": message},
        )
    ]


def _cloud_refusal(
    ws: _Workspace, latest: Mapping[str, AuditRecord]
) -> tuple[str, str, str] | None:
    """(reason, message, where seen) of the cloud's refusal of the current generation's node."""
    if ws.condition("ResourceReady").get("status") == "True":
        return None
    record = latest.get("resources")
    if record is not None and record.type == "resources.failed":
        return (
            _str(record.data.get("reason")),
            _str(record.data.get("message")),
            ("event resources.failed"),
        )
    for ctype in ("ResourceReady", "NodeClaimReady"):
        cond = ws.condition(ctype)
        reason = _str(cond.get("reason"))
        if cond.get("status") == "False" and reason and reason not in PENDING_RESOURCE_REASONS:
            return reason, _str(cond.get("message")), f"condition {ctype}"
    return None


def _is_quota(reason: str, message: str) -> bool:
    text = message.lower()
    return "quota" in reason.lower() or ("quota" in text and "exceed" in text)


def parse_quota(message: str) -> Quota:
    """The numbers of Azure's quota message (``...exceeding approved standardNC24adsFamily Cores
    quota. Additional details - ... Location: eastus, Current Limit: 0, Current Usage: 0,
    Additional Required: 24, (Minimum) New Limit Required: 24...``); None where missing."""
    family = _QUOTA_FAMILY.search(message)
    location = _QUOTA_LOCATION.search(message)
    numbers = {k: _int_match(p.search(message)) for k, p in _QUOTA_NUMBERS.items()}
    return Quota(
        family=family.group(1).strip() if family else None,
        location=location.group(1) if location else None,
        **numbers,
    )


def _family_key(instance_type: str) -> tuple[str, str] | None:
    match = AZURE_SIZE_NAME.match(instance_type)
    return (match.group(1).lower(), match.group(3).lower()) if match else None


def alternatives(
    workspace: Mapping[str, Any],
    instance_type: str,
    *,
    catalog: Catalog,
    prices: PriceTable | None = None,
    configmaps: Mapping[str, Mapping[str, str] | None] | None = None,
) -> list[Alternative]:
    """The other NVIDIA instance types of ``instance_type``'s cloud that the planner plans the
    Workspace on, cheapest first (unpriced last); the ones of the same quota family last."""
    from kaiten.plan import with_instance_type  # noqa: PLC0415 -- kaiten.plan imports azure

    failed = catalog.sku(instance_type) if instance_type else None
    cloud = failed.cloud if failed is not None else "azure"
    options = PlanOptions(
        catalog=catalog,
        prices=prices,
        cloud=_PLAN_CLOUD.get(cloud, cloud),
        node_auto_provisioning=True,
    )
    given = configmaps or {}
    named = {n: given.get(n) for n in configmaps_needed(workspace)}
    family = _family_key(instance_type)
    found = []
    for sku in catalog.skus(cloud):
        if sku.vendor != "nvidia" or sku.name.lower() == instance_type.lower():
            continue
        result = plan_workspace(with_instance_type(workspace, sku.name), named, options)
        if isinstance(result, Plan):
            found.append(_alternative(sku, result, family))
    return sorted(
        found,
        key=lambda a: (
            a.same_family,
            a.usd_per_hour if a.usd_per_hour is not None else float("inf"),
            a.instance_type,
        ),
    )


def _alternative(sku: GpuSku, plan: Plan, family: tuple[str, str] | None) -> Alternative:
    return Alternative(
        instance_type=sku.name,
        node_count=plan.node_count,
        gpus_per_node=plan.gpu.count_per_node if plan.gpu else sku.gpu_count,
        gpu_model=sku.gpu_model,
        vcpus_per_node=vcpus_of(sku.name) if sku.cloud.startswith("azure") else None,
        usd_per_hour=plan.price.usd_per_hour if plan.price else None,
        same_family=family is not None and _family_key(sku.name) == family,
    )


def _alternatives_detail(ws: _Workspace, found: Sequence[Alternative]) -> list[str]:
    model = ws.preset or "the Workspace"
    if not found:
        return [f"no other instance type of the catalog fits {model} (or it could not be planned)"]
    lines = [
        f"instance types the planner fits {model} on:",
        f"  {'INSTANCE TYPE':<28} {'NODES':>5}  {'GPUS PER NODE':<22} {'VCPUS/NODE':>10} "
        f"{'$/HOUR':>8}",
    ]
    for alt in found[:MAX_ALTERNATIVES]:
        gpus = f"{alt.gpus_per_node} x {alt.gpu_model}"
        vcpus = str(alt.vcpus_per_node) if alt.vcpus_per_node is not None else "-"
        price = f"{alt.usd_per_hour:.2f}" if alt.usd_per_hour is not None else "-"
        note = "  (same quota family)" if alt.same_family else ""
        lines.append(
            f"  {alt.instance_type:<28} {alt.node_count:>5}  {gpus:<22} {vcpus:>10} {price:>8}"
            f"{note}"
        )
    if len(found) > MAX_ALTERNATIVES:
        more = len(found) - MAX_ALTERNATIVES
        lines.append(f"  ... and {more} more (`kaiten why -o json` lists them all)")
    return lines


def _quota_finding(
    ws: _Workspace, reason: str, message: str, source: str, ctx: _Context
) -> Finding:
    quota = parse_quota(message)
    found = alternatives(
        ws.obj, ws.instance_type, catalog=ctx.catalog, prices=ctx.prices, configmaps=ctx.configmaps
    )
    family = quota.family or "the instance type's family"
    where = f" in {quota.location}" if quota.location else ""
    numbers = [
        f"{label} {value}"
        for label, value in (
            ("current limit", quota.current_limit),
            ("current usage", quota.current_usage),
            ("additional required", quota.additional_required),
            ("new limit required", quota.new_limit_required),
        )
        if value is not None
    ]
    detail = [f"quota {family}{where}: " + ", ".join(numbers) + " (vCPUs)"] if numbers else []
    detail += [f"cloud ({reason}): {_cut(message)}", *_alternatives_detail(ws, found)]
    target = (
        f" to at least {quota.new_limit_required} vCPUs"
        if quota.new_limit_required is not None
        else ""
    )
    step = (
        f"request a quota increase for {family}{where}{target} (Azure portal: Quotas > "
        f"Compute), then make Kaiten try again: `kubectl delete nodeclaim -l "
        f"{ws.nodeclaim_selector}`. Or, since resource.instanceType is immutable, re-create the "
        f"Workspace with another instance type{_example(found)}: `kubectl delete workspace "
        f"{ws.name} -n {ws.namespace}`, then apply it with the new resource.instanceType"
    )
    it = ws.instance_type or "the instance type"
    cloud = "Azure" if quota.family or "Quota increase" in message else "the cloud"
    return Finding(
        f"{cloud} refused the GPU node: the {family} vCPU quota{where} is too small for {it}",
        tuple(detail),
        step,
        source,
        failed=True,
        facts={
            "reason": reason,
            "message": message,
            "instance_type": ws.instance_type,
            "quota": _asdict(quota),
            "alternatives": [_asdict(a) for a in found],
        },
    )


def _capacity_finding(
    ws: _Workspace, reason: str, message: str, source: str, ctx: _Context
) -> Finding:
    found = alternatives(
        ws.obj, ws.instance_type, catalog=ctx.catalog, prices=ctx.prices, configmaps=ctx.configmaps
    )
    it = ws.instance_type or "the instance type"
    what = "is not available there" if "SkuNotAvailable" in reason else "has no capacity now"
    return Finding(
        f"the cloud refused the GPU node ({reason}): {it} {what}",
        (f"cloud: {_cut(message)}", *_alternatives_detail(ws, found)),
        "since resource.instanceType is immutable, re-create the Workspace with another "
        f"instance type{_example(found)} (`kubectl delete workspace {ws.name} -n "
        f"{ws.namespace}`, then apply it with the new resource.instanceType), or use another "
        f"region; to try {it} again later: `kubectl delete nodeclaim -l {ws.nodeclaim_selector}`",
        source,
        failed=True,
        facts={
            "reason": reason,
            "message": message,
            "instance_type": ws.instance_type,
            "alternatives": [_asdict(a) for a in found],
        },
    )


def _example(found: Sequence[Alternative]) -> str:
    other = next((a for a in found if not a.same_family), None) or (found[0] if found else None)
    return f" listed above (for example {other.instance_type})" if other else ""


# --- nodes ---------------------------------------------------------------------------------------


def _node_findings(
    ws: _Workspace, latest: Mapping[str, AuditRecord], now: datetime
) -> list[Finding]:
    if ws.condition("ResourceReady").get("status") == "True":
        return []
    blocking = next(
        (
            (ctype, ws.condition(ctype))
            for ctype in ("NodeClaimReady", "NodesReady", "ResourceReady")
            if ws.is_false(ctype)
            and _str(ws.condition(ctype).get("reason")) in PENDING_RESOURCE_REASONS
        ),
        None,
    )
    record = latest.get("resources")
    if blocking is None and record is not None and record.type == "resources.pending":
        data: Mapping[str, Any] = record.data
        blocking = ("event resources.pending", data)
    if blocking is None:
        return []
    where, cond = blocking
    source = where if where.startswith("event") else f"condition {where}"
    reason, message = _str(cond.get("reason")), _str(cond.get("message"))
    since = ws.phases.get(NODES_REQUESTED) or _time(cond.get("lastTransitionTime"))
    waited = f" for {_ago(since, now)}" if since else ""
    detail = tuple(
        f"{ctype}: {c.get('reason')}: {c.get('message')}"
        for ctype in ("NodeClaimReady", "NodesReady")
        if (c := ws.condition(ctype)) and c.get("status") != "True"
    ) or (f"{reason}: {message}",)
    byo = "NodeClaimReady" not in ws.conditions and reason == "NodeNotReady"
    if byo:
        return [_byo_finding(ws, message, waited, source, detail)]
    if reason == "NodePluginsNotReady":
        return [
            Finding(
                f"waiting{waited} for the GPU plugin: the node joined but shows no nvidia.com/gpu "
                "capacity yet",
                detail,
                "wait a minute for the NVIDIA device plugin to start on the node; if it does not, "
                "check its pods: `kubectl get pods -A -o wide | grep -i nvidia`",
                source,
            )
        ]
    return [
        Finding(
            f"waiting{waited} for GPU nodes to be provisioned ({reason})",
            detail,
            "nothing to do yet: a GPU node takes minutes to join (often 5 to 15). If it takes "
            f"much longer: `kubectl get nodeclaims -l {ws.nodeclaim_selector}` and `kubectl "
            "describe nodeclaim NAME` show what the cloud says; the provisioner's log too",
            source,
        )
    ]


def _byo_finding(
    ws: _Workspace, message: str, waited: str, source: str, detail: tuple[str, ...]
) -> Finding:
    labels = ",".join(f"{k}={v}" for k, v in sorted(ws.match_labels.items()))
    labels = labels or "the labels of resource.labelSelector"
    kind = f" of instance type {ws.instance_type}" if ws.instance_type else ""
    return Finding(
        f"waiting{waited} for nodes: {message or 'not enough Nodes are ready'}",
        detail,
        "bringing your own nodes, Kaiten creates none: label enough Ready GPU nodes"
        f"{kind} with {labels}: `kubectl label node NODE {labels.replace(',', ' ')}` (or list "
        "them in resource.preferredNodes when you create the Workspace)",
        source,
    )


# --- tuning --------------------------------------------------------------------------------------


def _tuning_findings(
    ws: _Workspace,
    latest: Mapping[str, AuditRecord],
    pods: Sequence[Mapping[str, Any]],
    logs: Mapping[tuple[str, str], str],
) -> tuple[list[Finding], set[str]]:
    """The tuning run's failure with the logs of its failed pod; also the pods it covers (their
    container findings would repeat it)."""
    record = latest.get("tuning")
    job = ws.condition("JobStarted")
    if record is not None and record.type == "tuning.failed":
        reason, message = _str(record.data.get("reason")), _str(record.data.get("message"))
        source = "event tuning.failed"
    elif job.get("status") == "False" and job.get("reason") == TUNING_JOB_FAILED:
        message = _str(job.get("message"))
        reason, source = _tuning_reason(message), "condition JobStarted"
    else:
        return [], set()
    named = _POD_IN_MESSAGE.search(message)
    failed_pods = [
        p for p in pods if pod_name(p) == (named.group(1) if named else None) or _errored(p)
    ]
    detail = [f"tuner: {_cut(message)}"]
    for pod in failed_pods:
        detail += _log_lines(pod_name(pod), _error_containers(pod), logs)
    step = _TUNING_NEXT.get(reason, "fix what the message and the log say")
    return [
        Finding(
            f"the tuning run failed ({reason})",
            tuple(detail),
            f"{step}; then delete the Workspace (`kubectl delete workspace {ws.name} -n "
            f"{ws.namespace}`) and apply it again to start a new run",
            source,
            failed=True,
            facts={"reason": reason, "message": message},
        )
    ], {pod_name(p) for p in failed_pods}


def _tuning_reason(message: str) -> str:
    for container, reason in (
        ("data-downloader", "DataDownloadFailed"),
        ("data-puller", "DataPullFailed"),
        ("model-weights-downloader", "WeightsPullFailed"),
        ("pusher", "AdapterPushFailed"),
    ):
        if f" {container} " in f" {message} ":
            return reason
    return "JobFailed" if "tuning Job" in message else "TrainingFailed"


# --- pods ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Container:
    pod: Mapping[str, Any]
    name: str
    init: bool
    image: str
    restarts: int
    ready: bool
    waiting: Mapping[str, Any]
    running: Mapping[str, Any]
    terminated: Mapping[str, Any]
    last: Mapping[str, Any]  # lastState.terminated

    @property
    def label(self) -> str:
        return f"{'init container' if self.init else 'container'} {self.name}"

    @property
    def crashed(self) -> bool:
        """Crash-looping, restarted after dying and not ready, or ended with an error."""
        if self.waiting.get("reason") == "CrashLoopBackOff":
            return True
        if self.restarts > 0 and self.last and not self.ready and not self.terminated:
            return True
        return bool(self.terminated) and int_field(self.terminated.get("exitCode")) != 0

    @property
    def death(self) -> Mapping[str, Any]:
        """The termination that tells why: the current one, else the last one."""
        return self.terminated if self.terminated else self.last


def _containers(pod: Mapping[str, Any]) -> list[_Container]:
    status = _map(pod.get("status"))
    images = {
        _str(c.get("name")): _str(c.get("image"))
        for key in ("initContainers", "containers")
        for c in _maps(dig(pod, "spec", key))
    }
    found = []
    for key, init in (("initContainerStatuses", True), ("containerStatuses", False)):
        for s in _maps(status.get(key)):
            name = _str(s.get("name"))
            found.append(
                _Container(
                    pod=pod,
                    name=name,
                    init=init,
                    image=_str(s.get("image")) or images.get(name, ""),
                    restarts=int_field(s.get("restartCount")),
                    ready=s.get("ready") is True,
                    waiting=_map(dig(s, "state", "waiting")),
                    running=_map(dig(s, "state", "running")),
                    terminated=_map(dig(s, "state", "terminated")),
                    last=_map(dig(s, "lastState", "terminated")),
                )
            )
    return found


def log_requests(pods: Sequence[Mapping[str, Any]]) -> list[LogRequest]:
    """The containers whose logs ``diagnose`` shows: those crash-looping or ended with an error.
    A container that restarted is asked for its previous instance's log."""
    return [
        LogRequest(pod_name(c.pod), c.name, previous=not c.terminated and bool(c.last))
        for pod in pods
        if not dig(pod, "metadata", "deletionTimestamp")
        for c in _containers(pod)
        if c.crashed
    ]


def _pod_findings(
    ws: _Workspace,
    pods: Sequence[Mapping[str, Any]],
    logs: Mapping[tuple[str, str], str],
    covered: set[str],
    now: datetime,
) -> list[Finding]:
    findings: list[Finding] = []
    for pod in sorted(pods, key=pod_name):
        if pod_name(pod) in covered or dig(pod, "status", "phase") == "Succeeded":
            continue
        found = [f for c in _containers(pod) if (f := _container_finding(ws, c, logs)) is not None]
        findings += found or _pod_level_findings(ws, pod, now)
    return findings


def _container_finding(
    ws: _Workspace, c: _Container, logs: Mapping[tuple[str, str], str]
) -> Finding | None:
    reason = _str(c.waiting.get("reason"))
    if reason in IMAGE_PULL_REASONS:
        return _image_finding(ws, c, reason)
    if reason in START_WAITING_REASONS:
        return _start_finding(ws, c, reason)
    if c.crashed:
        return _crash_finding(ws, c, logs)
    return None


def _image_finding(ws: _Workspace, c: _Container, reason: str) -> Finding:
    pod = pod_name(c.pod)
    message = _str(c.waiting.get("message"))
    detail = [f"pod {pod}, {c.label}", f"image: {c.image}"]
    detail += [f"kubelet: {message}"] if message else []
    return Finding(
        f'{c.label} of pod {pod} cannot pull image "{c.image}" ({reason})',
        tuple(detail),
        f"check the image name and tag ({c.image}), that the nodes can reach the registry "
        f"{_registry(c.image)}, and the pull credentials: {_pull_secrets_hint(ws, c.pod)}",
        f"pod {pod}",
        failed=True,
        facts={"pod": pod, "container": c.name, "image": c.image, "reason": reason},
    )


def _registry(image: str) -> str:
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def _pull_secrets_hint(ws: _Workspace, pod: Mapping[str, Any]) -> str:
    secrets = [_str(s.get("name")) for s in _maps(dig(pod, "spec", "imagePullSecrets"))]
    hint = (
        f"the pod's imagePullSecrets ({', '.join(secrets)})"
        if secrets
        else "the pod has no imagePullSecrets (a private registry needs one)"
    )
    fields = []
    inference = _map(ws.obj.get("inference"))
    if any(dig(a, "source", "image") for a in _maps(inference.get("adapters"))):
        fields.append("inference.adapters[].source.imagePullSecrets")
    if ws.tuning:
        fields += ["tuning.input.imagePullSecrets", "tuning.output.imagePushSecret"]
    if fields:
        hint += f"; the Workspace sets them in {' and '.join(fields)}"
    if "kaiten-dev/runtime-" in _pod_images(pod):
        hint += (
            "; the runtime image is the planner's (KAITEN_PLANNER_VLLM_IMAGE, "
            "KAITEN_PLANNER_TRANSFORMERS_IMAGE)"
        )
    return hint


def _pod_images(pod: Mapping[str, Any]) -> str:
    return " ".join(
        _str(c.get("image"))
        for key in ("initContainers", "containers")
        for c in _maps(dig(pod, "spec", key))
    )


def _start_finding(ws: _Workspace, c: _Container, reason: str) -> Finding:
    pod = pod_name(c.pod)
    message = _str(c.waiting.get("message"))
    return Finding(
        f"{c.label} of pod {pod} cannot start ({reason})",
        (f"kubelet: {message}",) if message else (),
        "fix what the kubelet says (often a ConfigMap or Secret the pod mounts does not exist: "
        f"`kubectl get cm,secret -n {ws.namespace}`); the pod retries on its own",
        f"pod {pod}",
        failed=True,
        facts={"pod": pod, "container": c.name, "reason": reason, "message": message},
    )


def _crash_finding(ws: _Workspace, c: _Container, logs: Mapping[tuple[str, str], str]) -> Finding:
    pod = pod_name(c.pod)
    death = c.death
    exit_reason = _str(death.get("reason")) or "terminated"
    code = death.get("exitCode")
    exit_text = f"{exit_reason}" + (f", exit code {code}" if isinstance(code, int) else "")
    looping = c.waiting.get("reason") == "CrashLoopBackOff" or (c.restarts and not c.terminated)
    restarts = f", restarted {c.restarts} time{'s' if c.restarts != 1 else ''}"
    what = "is crash-looping (CrashLoopBackOff)" if looping else "failed"
    if exit_reason == "OOMKilled":
        what = "was killed for lack of memory (OOMKilled)" + (
            ", crash-looping (CrashLoopBackOff)" if looping else ""
        )
    detail = [f"pod {pod}, {c.label}{restarts}; last exit: {exit_text}"]
    message = _str(death.get("message")).strip()
    if message:
        detail.append(f"termination message: {_cut(message)}")
    detail += _log_lines(pod, [c.name], logs)
    return Finding(
        f"{c.label} of pod {pod} {what}; last exit: {exit_text}",
        tuple(detail),
        _crash_next_step(ws, c, exit_reason),
        f"pod {pod}",
        failed=True,
        facts={
            "pod": pod,
            "container": c.name,
            "init": c.init,
            "restarts": c.restarts,
            "exit_reason": exit_reason,
            "exit_code": code if isinstance(code, int) else None,
            "termination_message": message,
        },
    )


def _crash_next_step(ws: _Workspace, c: _Container, exit_reason: str) -> str:
    pod = pod_name(c.pod)
    retry = f"; it restarts on its own, or `kubectl delete pod {pod} -n {ws.namespace}`"
    if exit_reason == "OOMKilled":
        return (
            "give it more memory: re-create the Workspace on a bigger instance type "
            "(resource.instanceType is immutable), or make it need less: fewer max tokens "
            "(max-model-len) in the inference ConfigMap (inference.config), or for tuning a "
            "smaller batch or method qlora"
        )
    if c.init:
        fed = next((v for k, v in _INIT_FIELDS.items() if c.name.startswith(k)), None)
        if c.name.startswith("puller-"):
            fed = "inference.adapters[].source.image and its imagePullSecrets"
        where = f" (it is fed by {fed})" if fed else ""
        return f"fix what the log and the termination message say{where}{retry}"
    if ws.tuning:
        return (
            "fix what the log says: the training ConfigMap (tuning.config), the data "
            "(tuning.input) or the model's access"
        )
    config = _str(dig(ws.obj, "inference", "config"))
    configmap = (
        f"the inference ConfigMap {config} (inference.config, key inference_config.yaml)"
        if config
        else "the inference settings (the default inference ConfigMap; set inference.config to "
        "your own)"
    )
    secret = _str(dig(ws.obj, "inference", "preset", "presetOptions", "modelAccessSecret"))
    gated = f", the model access Secret {secret}" if secret else ""
    return f"fix what the log says: check {configmap}{gated}{retry}"


def _pod_level_findings(ws: _Workspace, pod: Mapping[str, Any], now: datetime) -> list[Finding]:
    name = pod_name(pod)
    status = _map(pod.get("status"))
    if status.get("reason") == "Evicted":
        return [
            Finding(
                f"pod {name} was evicted",
                (f"kubelet: {_str(status.get('message'))}",),
                "its controller makes a new pod; if evictions repeat, the node runs short of "
                "memory or disk: re-create the Workspace on a bigger instance type",
                f"pod {name}",
            )
        ]
    scheduled = next(
        (c for c in _maps(status.get("conditions")) if c.get("type") == "PodScheduled"), {}
    )
    if scheduled.get("status") == "False":
        return [_unschedulable_finding(ws, name, _str(scheduled.get("message")))]
    if status.get("phase") == "Running" and not pod_ready(pod):
        return [_not_ready_finding(ws, pod, now)]
    if status.get("phase") == "Pending":
        waiting = [c for c in _containers(pod) if c.waiting]
        why = ", ".join(sorted({_str(c.waiting.get("reason")) for c in waiting}))
        return [
            Finding(
                f"pod {name} is starting" + (f" ({why})" if why else ""),
                (),
                "nothing to do yet: its images are pulled and its containers created; "
                f"`kubectl describe pod {name} -n {ws.namespace}` shows the progress",
                f"pod {name}",
            )
        ]
    return []


def _unschedulable_finding(ws: _Workspace, pod: str, message: str) -> Finding:
    labels = ",".join(f"{k}={v}" for k, v in sorted(ws.match_labels.items()))
    if "Insufficient nvidia.com/gpu" in message:
        step = (
            "no node has a free GPU: the GPU node may still be joining, or other pods hold its "
            f"GPUs: `kubectl describe nodes -l {labels or 'accelerator=nvidia'}`"
        )
    elif "affinity/selector" in message:
        kind = f" of instance type {ws.instance_type}" if ws.instance_type else ""
        step = (
            f"no Ready node{kind} carries the labels resource.labelSelector asks for "
            f"({labels or 'none'}): label one, or wait for the provisioned node"
        )
    elif "taint" in message:
        step = "the nodes carry a taint the pod does not tolerate: use nodes without it"
    else:
        step = (
            "make a node fit what the scheduler says: "
            f"`kubectl describe pod {pod} -n {ws.namespace}`"
        )
    return Finding(
        f"pod {pod} cannot be scheduled",
        (f"scheduler: {message}",) if message else (),
        step,
        f"pod {pod}",
        facts={"pod": pod, "message": message},
    )


def _not_ready_finding(ws: _Workspace, pod: Mapping[str, Any], now: datetime) -> Finding:
    name = pod_name(pod)
    started = [
        at for c in _containers(pod) if (at := _time(c.running.get("startedAt"))) is not None
    ]
    since = min(started) if started else None
    waited = f" for {_ago(since, now)}" if since else ""
    main = next((c.name for c in _containers(pod) if not c.init), "")
    return Finding(
        f"pod {name} is running but not ready{waited}: its readiness probe does not pass yet",
        ("the server may still be loading the model weights (large models take minutes)",),
        "wait; if it stays not ready, read the server's log: "
        f"`kubectl logs {name} -n {ws.namespace}" + (f" -c {main}`" if main else "`"),
        f"pod {name}",
    )


def _errored(pod: Mapping[str, Any]) -> bool:
    return dig(pod, "status", "phase") == "Failed" or any(c.crashed for c in _containers(pod))


def _error_containers(pod: Mapping[str, Any]) -> list[str]:
    return [c.name for c in _containers(pod) if c.crashed]


def _log_lines(
    pod: str, containers: Sequence[str], logs: Mapping[tuple[str, str], str]
) -> list[str]:
    lines: list[str] = []
    for container in containers:
        text = logs.get((pod, container), "")
        tail = [line.rstrip() for line in text.rstrip().splitlines()][-MAX_LOG_LINES:]
        if tail:
            lines.append(f"last log lines of {pod}/{container}:")
            lines += [f"  | {line}" for line in tail]
    return lines


# --- the workload as the deployer reports it (when its pods are gone) ----------------------------


def _workload_findings(ws: _Workspace, latest: Mapping[str, AuditRecord]) -> list[Finding]:
    if ws.tuning:
        return []
    record = latest.get("inference")
    cond = ws.condition("InferenceReady")
    if record is not None and record.type == "inference.failed":
        reason, message = _str(record.data.get("reason")), _str(record.data.get("message"))
        source = "event inference.failed"
    elif cond.get("status") == "False" and cond.get("reason") in INFERENCE_FAILURES:
        reason, message = _str(cond.get("reason")), _str(cond.get("message"))
        source = "condition InferenceReady"
    else:
        return []
    return [
        Finding(
            f"the deployer reports the inference pods fail ({reason})",
            (f"deployer: {_cut(message)}",),
            "fix what the message says; `kubectl get pods -n "
            f"{ws.namespace} -l {WORKSPACE_LABEL}={ws.name}` and `kubectl logs` show the pods",
            source,
            failed=True,
            facts={"reason": reason, "message": message},
        )
    ]


# --- dead letters --------------------------------------------------------------------------------


def _deadletter_findings(ws: _Workspace, records: Sequence[AuditRecord]) -> list[Finding]:
    letters = _live_letters(records)
    if letters:
        return [_letter_finding(ws, r) for r in letters]
    return [
        Finding(
            _str(cond.get("message")).split(": ", 1)[0] or "an event about it was dead-lettered",
            (f"{ctype}: {_cut(_str(cond.get('message')))}",),
            "as the message says: fix the cause, then re-apply the Workspace or wait for the "
            "next resync (`kaiten events --type deadletter` shows the letter)",
            f"condition {ctype}",
            failed=True,
        )
        for ctype, cond in ws.conditions.items()
        if cond.get("reason") == DEADLETTER_REASON and cond.get("status") != "True"
    ]


def _live_letters(records: Sequence[AuditRecord]) -> list[AuditRecord]:
    """Dead letters no later event of the same service supersedes (one per subject)."""
    found: dict[tuple[str, str], AuditRecord] = {}
    for record in records:
        if record.type == DEADLETTER:
            found[(record.source, _str(record.data.get("subject")))] = record
        elif not _is_deadletter_report(record):
            for key in [k for k in found if k[0] == record.source]:
                del found[key]
    return list(found.values())


def _is_deadletter_report(record: AuditRecord) -> bool:
    condition = _map(record.data.get("condition"))
    return record.type == "condition.reported" and condition.get("reason") == DEADLETTER_REASON


def _letter_finding(ws: _Workspace, record: AuditRecord) -> Finding:
    data = record.data
    service = _str(data.get("service")) or record.source or "a service"
    subject = _str(data.get("subject"))
    parts = subject.split(".")
    event = ".".join(parts[2:4]) if len(parts) >= 4 else subject or "an event"  # noqa: PLR2004
    deliveries = int_field(data.get("deliveries"))
    after = f" after {deliveries} deliveries" if deliveries else ""
    error = _str(data.get("error"))
    return Finding(
        f"the {service} gave up on {event}{after}",
        (f"error: {_cut(error)}", f"the event is kept on the {service}'s dead-letter subject"),
        "fix the cause the error names, then re-apply the Workspace (any change starts it "
        "again) or wait for the next resync; `kaiten events --type deadletter` shows the letter",
        "event deadletter",
        failed=True,
        facts={"service": service, "event": event, "deliveries": deliveries, "error": error},
    )


# --- a failure nothing above explains ----------------------------------------------------------


def _unexplained_failure(ws: _Workspace) -> list[Finding]:
    """The Workspace says it failed (or its phases do) but no finding above says why."""
    cond = ws.condition("WorkspaceSucceeded")
    failed = cond.get("status") == "False" and cond.get("reason") == "workspaceFailed"
    if not failed and FAILED not in ws.phases:
        return []
    message = _str(cond.get("message")) if failed else ""
    return [
        Finding(
            "the Workspace failed" + (f": {_cut(message)}" if message else ""),
            (f"failed at {_stamp(ws.phases[FAILED])}",) if FAILED in ws.phases else (),
            "fix what the message says; `kaiten events --workspace "
            f"{ws.name} -n {ws.namespace}` shows what each service reported",
            "condition WorkspaceSucceeded" if failed else "status.phases",
            failed=True,
        )
    ]


# --- nothing else known: the phases --------------------------------------------------------------


def _phase_finding(ws: _Workspace, now: datetime) -> Finding:
    reached = [p for p in PHASES if p in ws.phases and p != FAILED]
    pending = [
        f"{t}: {c.get('reason')}: {c.get('message')}"
        for t, c in ws.conditions.items()
        if c.get("status") != "True" and t != "WorkspaceDeleting"
    ]
    if not reached:
        if pending:
            return Finding(
                "waiting: " + pending[0],
                tuple(pending[1:]),
                f"nothing to do yet; `kaiten events --workspace {ws.name} -n {ws.namespace}` "
                "shows what each service reported",
                "conditions",
            )
        return Finding(
            f"generation {ws.generation} is not observed yet",
            (),
            "the watcher has not recorded it: check that the watcher runs (`kaiten status` on "
            "the local stack) and read its log",
            "status.phases",
        )
    last = reached[-1]
    what, owner = _NEXT_STEP.get(last, ("the next step", "the services"))
    if last == WORKLOAD_CREATED:
        what, owner = (
            ("tuning to start", "tuner") if ws.tuning else ("pods to be ready", "deployer")
        )
    at = ws.phases[last]
    return Finding(
        f"{last} {_ago(at, now)} ago, waiting for {what} ({owner})",
        tuple(pending),
        f"nothing to do yet; if it stays like this, read the {owner}'s log (`kaiten logs "
        f"{owner.split()[0]}` on the local stack) and `kaiten events --workspace {ws.name} -n "
        f"{ws.namespace}`",
        "status.phases",
        facts={"phase": last, "at": _stamp(at), "waiting_for": what, "owner": owner},
    )


# --- output --------------------------------------------------------------------------------------


def render(diagnosis: Diagnosis) -> str:
    """The diagnosis for people: the verdict, then each finding with its facts and next step."""
    d = diagnosis
    lines = [f"{d.namespace}/{d.name} (generation {d.generation}): {d.state.upper()}"]
    if not d.findings:
        lines.append(d.summary)
    for i, f in enumerate(d.findings, start=1):
        lines.append("")
        count = f" {i} of {len(d.findings)}" if len(d.findings) > 1 else ""
        lines.append(f"{'Cause' if f.failed else 'Waiting'}{count}: {f.cause}")
        lines.append(f"  seen in: {f.source}")
        lines += [f"  {line}" for line in f.detail]
        lines += textwrap.wrap(
            f.next_step,
            width=100,
            initial_indent="  next step: ",
            subsequent_indent="    ",
            break_on_hyphens=False,
            break_long_words=False,
        )
    if d.notes:
        lines.append("")
        lines += [f"note: {n}" for n in d.notes]
    return "\n".join(lines)


def to_json(diagnosis: Diagnosis) -> dict[str, Any]:
    d = diagnosis
    return {
        "namespace": d.namespace,
        "name": d.name,
        "uid": d.uid,
        "generation": d.generation,
        "state": d.state,
        "summary": d.summary,
        "findings": [
            {
                "cause": f.cause,
                "failed": f.failed,
                "source": f.source,
                "detail": list(f.detail),
                "next_step": f.next_step,
                "facts": dict(f.facts),
            }
            for f in d.findings
        ],
        "notes": list(d.notes),
    }


# --- helpers -------------------------------------------------------------------------------------


def _asdict(obj: Quota | Alternative) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds(delta: Any) -> float:
    return max(0.0, float(delta.total_seconds()))


def _ago(at: datetime, now: datetime) -> str:
    return duration(_seconds(now - at))


def _cut(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_QUOTED else flat[: MAX_QUOTED - 3] + "..."


def _int_match(match: re.Match[str] | None) -> int | None:
    return int(match.group(1)) if match else None


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _maps(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


# --- I/O -----------------------------------------------------------------------------------------


class WorkspaceNotFoundError(Exception):
    """The Workspace does not exist (HTTP 404)."""


@dataclass(frozen=True, slots=True)
class Gathered:
    """Everything ``diagnose`` reads, and what could not be read."""

    workspace: dict[str, Any]
    pods: list[dict[str, Any]]
    logs: dict[tuple[str, str], str]
    records: list[AuditRecord]
    configmaps: dict[str, dict[str, str] | None]
    notes: tuple[str, ...] = ()


AUDIT_TIMEOUT_S = 5.0
KUBE_TIMEOUT_S = 15


async def gather(
    kube: client.ApiClient, namespace: str, name: str, *, database_url: str | None
) -> Gathered:
    """Read the Workspace, its pods, the last log lines of its failing containers, the
    ConfigMaps it names and (with ``database_url``) the audit log's events of its current
    generation. Raises ``WorkspaceNotFoundError``; Kubernetes errors other than a missing log or
    ConfigMap propagate; an unreachable database becomes a note."""
    custom = client.CustomObjectsApi(kube)
    core = client.CoreV1Api(kube)
    try:
        workspace = await call_raw(
            custom.get_namespaced_custom_object,
            WORKSPACES.group,
            WORKSPACES.version,
            namespace,
            WORKSPACES.plural,
            name,
            _request_timeout=KUBE_TIMEOUT_S,
        )
    except ApiException as e:
        if e.status == 404:  # noqa: PLR2004
            raise WorkspaceNotFoundError(f"{namespace}/{name}") from e
        raise
    listing = await call_raw(
        core.list_namespaced_pod,
        namespace,
        label_selector=f"{WORKSPACE_LABEL}={name}",
        _request_timeout=KUBE_TIMEOUT_S,
    )
    pods = [p for p in listing.get("items") or [] if isinstance(p, dict)]
    logs = {
        (r.pod, r.container): text
        for r in log_requests(pods)
        if (text := await _read_log(core, namespace, r))
    }
    configmaps = {
        n: await _read_configmap(core, namespace, n) for n in configmaps_needed(workspace)
    }
    meta = workspace.get("metadata") or {}
    records: list[AuditRecord] = []
    notes: tuple[str, ...] = ()
    if database_url:
        records, note = await read_records(
            database_url,
            namespace,
            name,
            str(meta.get("uid") or ""),
            int(meta.get("generation") or 0),
        )
        notes = (note,) if note else ()
    return Gathered(workspace, pods, logs, records, configmaps, notes)


async def _read_log(core: client.CoreV1Api, namespace: str, request: LogRequest) -> str:
    """The last lines of one container: its previous instance first when it restarted, else
    (or when that has none) the current one; "" when neither can be read."""
    for previous in (True, False) if request.previous else (False,):
        try:
            text = await core.read_namespaced_pod_log(
                request.pod,
                namespace,
                container=request.container,
                tail_lines=MAX_LOG_LINES,
                previous=previous,
                _request_timeout=KUBE_TIMEOUT_S,
            )
        except ApiException:
            continue
        if isinstance(text, str) and text.strip():
            return text
    return ""


async def _read_configmap(
    core: client.CoreV1Api, namespace: str, name: str
) -> dict[str, str] | None:
    try:
        body = await call_raw(
            core.read_namespaced_config_map, name, namespace, _request_timeout=KUBE_TIMEOUT_S
        )
    except ApiException:
        return None
    return {str(k): str(v) for k, v in (body.get("data") or {}).items()}


async def read_records(
    database_url: str, namespace: str, name: str, uid: str, generation: int
) -> tuple[list[AuditRecord], str | None]:
    """The audit log's events of one generation, or none and a note saying why."""
    db: Database | None = None
    try:
        db = Database(database_url, pool_size=1)
        records = await asyncio.wait_for(
            AuditLog(db).events(namespace, name, uid=uid, generation=generation), AUDIT_TIMEOUT_S
        )
    except Exception as e:  # noqa: BLE001 -- the audit log is optional: any failure is a note
        return [], (
            f"the audit log was not read (PostgreSQL at DATABASE_URL: {type(e).__name__}); "
            "this diagnosis uses the Workspace and its pods only"
        )
    finally:
        if db is not None:
            await db.close()
    return records, None


def main(
    target: str,
    output: str,
    settings: Settings,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """``kaiten why``: print the diagnosis; the exit code as the module doc says."""
    key = workspace_argument(target, output, err)
    if key is None:
        return 2
    namespace, name = key
    return asyncio.run(_main(namespace, name, output=output, settings=settings, out=out, err=err))


async def _main(
    namespace: str, name: str, *, output: str, settings: Settings, out: TextIO, err: TextIO
) -> int:
    where = f"KUBECONFIG={settings.kubeconfig}" if settings.kubeconfig else "KUBECONFIG is not set"
    try:
        kube = await new_api_client(settings)
    except (ConfigError, ConfigException, yaml.YAMLError, OSError, ValueError) as e:
        text = " ".join(str(e).split())
        print(f"error: cannot reach the Kubernetes API: {text} (check KUBECONFIG)", file=err)
        return 2
    try:
        gathered = await gather(kube, namespace, name, database_url=settings.database_url)
    except WorkspaceNotFoundError:
        print(f"error: workspace {namespace}/{name} not found", file=err)
        return 2
    except ApiException as e:
        print(
            f"error: the Kubernetes API at {kube.configuration.host} answered {e.status} "
            f"{e.reason}: check KUBECONFIG ({where}) and your permissions",
            file=err,
        )
        return 2
    except (aiohttp.ClientError, OSError, TimeoutError) as e:
        print(
            f"error: cannot reach the Kubernetes API at {kube.configuration.host} "
            f"({type(e).__name__}: {e}): check KUBECONFIG ({where}) and that the cluster runs",
            file=err,
        )
        return 2
    finally:
        await kube.close()
    diagnosis = diagnose(
        gathered.workspace,
        gathered.pods,
        gathered.logs,
        gathered.records,
        catalog=default_catalog(),
        now=datetime.now(UTC),
        prices=default_prices(),
        configmaps=gathered.configmaps,
    )
    diagnosis = replace(diagnosis, notes=diagnosis.notes + gathered.notes)
    if output == "json":
        print(json.dumps(to_json(diagnosis), indent=2), file=out)
    else:
        print(render(diagnosis), file=out)
    return diagnosis.exit_code
