"""Whether a workspace's inference is ready, decided from data (no I/O, no clock): the
Deployment or StatefulSet as the API server serves it, its pods and the Nodes they run on give
Kaito's InferenceReady reason and a one-line message that quotes the kubelet. A failing pod
(``shared.pods``: crash loop, OOM kill, image pull, start error, eviction, scheduling, node
pressure) always wins over the replica counts, so a workspace never says Ready while one of its
pods fails.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.pods import dig, int_field, is_terminal, pod_failure, pod_name

SUCCESS = "WorkspaceInferenceStatusSuccess"
PENDING = "WorkspaceInferenceStatusPending"
SUCCESS_MESSAGE = "Inference has been deployed successfully"
ABSENT_MESSAGE = "the inference workload has not been created yet"


@dataclass(frozen=True, slots=True)
class Health:
    ready: bool  # True only when InferenceReady is True
    reason: str  # Kaito's condition reason
    message: str  # one line for people: what is wrong, with the kubelet's own message
    ready_replicas: int
    replicas: int  # desired replicas (spec.replicas, default 1); 0 when the workload is absent


def assess(
    workload: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    nodes: Mapping[str, Mapping[str, Any]],
) -> Health:
    """InferenceReady of a workspace from its inference workload (None: absent), its pods and
    their nodes. Live pods are checked first (by name); a terminal (Failed) pod counts only while
    the workload is short of its rollout, since a Deployment keeps replaced pods around."""
    if workload is None:
        return Health(False, PENDING, ABSENT_MESSAGE, 0, 0)
    desired = desired_replicas(workload)
    ready = int_field(dig(workload, "status", "readyReplicas"))
    rolled_out = _rolled_out(workload)
    live = [p for p in pods if not is_terminal(p)]
    finished = [p for p in pods if is_terminal(p)]
    failure = _first_failure(live, nodes)
    if failure is None and not rolled_out:
        failure = _first_failure(finished, nodes)
    if failure is not None:
        return Health(False, failure[0], failure[1], ready, desired)
    if rolled_out:
        return Health(True, SUCCESS, SUCCESS_MESSAGE, ready, desired)
    return Health(False, PENDING, _waiting_message(workload, ready, desired), ready, desired)


def desired_replicas(workload: Mapping[str, Any]) -> int:
    return int_field(dig(workload, "spec", "replicas"), default=1)


# --- workload -----------------------------------------------------------------------------------


def _rolled_out(workload: Mapping[str, Any]) -> bool:
    desired = desired_replicas(workload)
    ready = int_field(dig(workload, "status", "readyReplicas"))
    return desired > 0 and ready >= desired and not _rollout_in_progress(workload)


def _rollout_in_progress(workload: Mapping[str, Any]) -> bool:
    if _generation_lags(workload):
        return True
    if workload.get("kind") != "Deployment":
        return False
    updated = int_field(dig(workload, "status", "updatedReplicas"))
    return updated < desired_replicas(workload)


def _generation_lags(workload: Mapping[str, Any]) -> bool:
    observed = dig(workload, "status", "observedGeneration")
    generation = dig(workload, "metadata", "generation")
    if not isinstance(observed, int) or not isinstance(generation, int):
        return False
    return observed < generation


def _waiting_message(workload: Mapping[str, Any], ready: int, desired: int) -> str:
    if desired <= 0:
        return "the inference workload has 0 desired replicas"
    message = f"waiting for inference workload readiness: {ready} of {desired} replicas ready"
    if _rollout_in_progress(workload):
        message += "; rollout in progress"
    return message


# --- pods ---------------------------------------------------------------------------------------


def _first_failure(
    pods: Sequence[Mapping[str, Any]], nodes: Mapping[str, Mapping[str, Any]]
) -> tuple[str, str] | None:
    for pod in sorted(pods, key=pod_name):
        failure = pod_failure(pod, nodes)
        if failure is not None:
            return failure
    return None
