"""Audit on the whole local stack: after a seed Workspace becomes ready, ``kaiten events
--workspace`` shows its causal chain under one correlation id, ``kaiten history`` every phase
with a duration (and the Workspace's status the same phases); after a simulated quota failure
and a simulated CrashLoopBackOff, ``kaiten why`` names each cause and the next step."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.stack import Stack, running_stack, wait_until

SEEDS = Path(__file__).resolve().parents[1] / "fixtures" / "seeds"
SEED = SEEDS / "inference-phi-3-mini.yaml"
SEED_NAME = "workspace-phi-3-mini"
QUOTA_SKU = "Standard_NC24ads_A100_v4"
INFERENCE_PHASES = [
    "observed",
    "planned",
    "nodesRequested",
    "nodesReady",
    "workloadCreated",
    "podsReady",
    "succeeded",
]
CRASH_LOG = "ValueError: max_model_len (9000) is larger than the model's context (4096)"


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, bundled_nats_url: str, postgres_server_url: str
) -> Iterator[Stack]:
    with running_stack(
        tmp_path_factory.mktemp("audit"),
        bundled_nats_url,
        postgres_server_url,
        KAITEN_PROVISIONER_SIMULATED_FAILURES=f"{QUOTA_SKU}=QuotaExceeded",
    ) as running:
        yield running


def apply_seed(stack: Stack, namespace: str) -> None:
    stack.namespace(namespace)
    stack.kubectl("apply", "-n", namespace, "-f", str(SEED))
    stack.kubectl(
        "wait",
        "--for=condition=WorkspaceSucceeded",
        f"workspace/{SEED_NAME}",
        "-n",
        namespace,
        "--timeout=60s",
        timeout=70,
    )


def events_of(stack: Stack, namespace: str, name: str) -> list[dict[str, Any]]:
    out = stack.kaiten("events", "-n", namespace, "--workspace", name, "-o", "json").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_a_ready_seed_has_one_causal_chain_and_a_history_of_every_phase(stack: Stack) -> None:
    namespace = "audit-ready"
    apply_seed(stack, namespace)
    obj = json.loads(
        stack.kubectl("get", "workspace", SEED_NAME, "-n", namespace, "-o", "json").stdout
    )
    uid = obj["metadata"]["uid"]

    def whole_chain() -> list[dict[str, Any]] | None:
        found = events_of(stack, namespace, SEED_NAME)
        return found if "inference.ready" in {e["type"] for e in found} else None

    events = wait_until(whole_chain, timeout=20, what="the inference.ready event")
    assert events is not None
    assert {e["correlation_id"] for e in events} == {f"{uid}/1"}
    assert {e["workspace"]["uid"] for e in events} == {uid}
    types = [e["type"] for e in events]
    for expected in ("workspace.observed", "plan.ready", "resources.ready", "inference.ready"):
        assert expected in types, types
    assert types.index("workspace.observed") < types.index("plan.ready")
    assert types.index("plan.ready") < types.index("resources.ready")
    assert types.index("resources.ready") < types.index("inference.ready")
    # Every caused event names a cause inside the same chain, back to the observation.
    by_id = {e["id"]: e for e in events}
    plan = next(e for e in events if e["type"] == "plan.ready")
    assert by_id[plan["causation_id"]]["type"] == "workspace.observed"
    for event in events:
        if event["causation_id"] is not None:
            assert event["causation_id"] in by_id, event
    table = stack.kaiten("events", "-n", namespace, "--workspace", SEED_NAME).stdout
    assert f"{uid[:8]}" in table

    history = wait_until(
        lambda: _history_with(stack, namespace, "succeeded"), timeout=20, what="history"
    )
    assert history is not None
    [generation] = history
    assert generation["uid"] == uid
    assert generation["generation"] == 1
    names = [p["phase"] for p in generation["phases"]]
    assert names == INFERENCE_PHASES
    assert all(p["seconds"] >= 0 for p in generation["phases"])
    assert generation["total_seconds"] > 0

    text = stack.kaiten("history", f"{namespace}/{SEED_NAME}").stdout
    assert text.splitlines()[0].startswith(f"{namespace}/{SEED_NAME} generation 1: succeeded in ")
    for phase in INFERENCE_PHASES:
        assert any(line.split()[:1] == [phase] for line in text.splitlines()), (phase, text)

    def status_phases() -> dict[str, Any] | None:
        got = json.loads(
            stack.kubectl(
                "get", "workspace", SEED_NAME, "-n", namespace, "-o", "jsonpath={.status.phases}"
            ).stdout
            or "{}"
        )
        return got if "succeeded" in got else None

    phases = wait_until(status_phases, timeout=20, what="status.phases")
    assert phases is not None
    assert phases["generation"] == 1
    assert [p for p in INFERENCE_PHASES if p in phases] == INFERENCE_PHASES
    assert phases["succeeded"] == generation["phases"][-1]["at"]


def _history_with(stack: Stack, namespace: str, phase: str) -> list[dict[str, Any]] | None:
    done = stack.kaiten("history", f"{namespace}/{SEED_NAME}", "-o", "json", check=False)
    if done.returncode != 0:
        return None
    found: list[dict[str, Any]] = json.loads(done.stdout)
    return found if phase in {p["phase"] for p in found[-1]["phases"]} else None


def test_history_of_an_unknown_workspace_says_so(stack: Stack) -> None:
    done = stack.kaiten("history", "nowhere/nothing", check=False)
    assert done.returncode == 1
    assert "no history for nowhere/nothing" in done.stderr


def quota_workspace(namespace: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(SEED.read_text())
    doc["metadata"] = {"name": "phi-3-quota", "namespace": namespace}
    doc["resource"]["instanceType"] = QUOTA_SKU
    doc["resource"]["labelSelector"] = {"matchLabels": {"apps": "phi-3-quota"}}
    return doc


def test_why_names_a_quota_failure_with_its_numbers_and_the_skus_that_fit(stack: Stack) -> None:
    namespace = "audit-quota"
    stack.namespace(namespace)
    stack.apply(quota_workspace(namespace))
    stack.kubectl(
        "wait",
        "--for=condition=ResourceReady=False",
        "workspace/phi-3-quota",
        "-n",
        namespace,
        "--timeout=30s",
        timeout=40,
    )

    def diagnosed() -> str | None:
        done = stack.kaiten("why", f"{namespace}/phi-3-quota", check=False)
        return done.stdout if done.returncode == 1 and "QuotaExceeded" in done.stdout else None

    text = wait_until(diagnosed, timeout=20, what="a quota diagnosis")
    assert text is not None
    assert "Current Limit" in text or "limit 0" in text.lower(), text
    assert "24" in text  # the vCPUs the failed instance type needs
    assert "Standard_NC6s_v3" in text  # an instance type that fits phi-3-mini
    assert "quota" in text.lower()


def test_why_names_a_crash_looping_server_with_its_last_log_lines(stack: Stack) -> None:
    namespace = "audit-crash"
    apply_seed(stack, namespace)
    pod = stack.kubectl(
        "get",
        "pods",
        "-n",
        namespace,
        "-l",
        f"kaito.sh/workspace={SEED_NAME}",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ).stdout.strip()
    assert pod
    failure = {
        "namespace": namespace,
        "name": pod,
        "mode": "CrashLoopBackOff",
        "message": CRASH_LOG,
    }
    stack.kubectl("create", "--raw", "/_kaiten/pods", "-f", "-", input=json.dumps(failure))
    stack.kubectl(
        "wait",
        "--for=condition=InferenceReady=False",
        f"workspace/{SEED_NAME}",
        "-n",
        namespace,
        "--timeout=30s",
        timeout=40,
    )
    done = stack.kaiten("why", f"{namespace}/{SEED_NAME}", check=False)
    assert done.returncode == 1, done
    assert "CrashLoopBackOff" in done.stdout
    assert pod in done.stdout
    assert CRASH_LOG in done.stdout  # the last log line
    assert json.loads(
        stack.kaiten("why", f"{namespace}/{SEED_NAME}", "-o", "json", check=False).stdout
    )["findings"]
