"""kubectl apply -> watcher -> planner -> provisioner (simulated) -> tuner -> Workspace status, on
the development cluster with its simulated kubelet and job controller, real NATS JetStream and
real PostgreSQL: the tuning path, its progress, its failures, a changed input and deletion."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from localdev.kubeapi.simulate import Simulator
from services.planner.app import build_service as build_planner
from services.provisioner.app import build_service as build_provisioner
from services.tuner.app import build_service as build_tuner
from services.watcher.app import build_service as build_watcher
from shared.events import EventType, decode_event, event_type_filter
from shared.settings import Settings
from tests.kubeapi.conftest import Kubectl
from tests.kubeapi.test_deployer_flow import conditions, get_json, running_path, wait_condition
from tests.support.bus import stream_reader
from tests.support.polling import eventually

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "tests" / "fixtures" / "seeds" / "tuning-phi-3-mini.yaml"
WS = "workspace-phi-3-mini"
SEED_URL = (
    "https://huggingface.co/datasets/philschmid/dolly-15k-oai-style/resolve/main/data/"
    "train-00000-of-00001-54e3756291ca09c6.parquet?download=true"
)


@pytest.fixture
async def services(
    kubectl: Kubectl,
    kubeconfig: Path,
    settings: Settings,
    simulator: Simulator,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Simulator]:
    """The four services of the tuning path, as `kaiten run` starts them; the simulator plays
    kubelet and the job controller, and its Job pods report training progress."""
    builds = (build_watcher, build_planner, build_provisioner, build_tuner)
    async with running_path(
        builds, kubectl, kubeconfig, settings, monkeypatch, tuning_progress_s=0.2
    ):
        yield simulator


def _training_for(simulator: Simulator, seconds: float) -> None:
    simulator.options = replace(simulator.options, job_run_s=seconds)


async def succeeded(kubectl: Kubectl, **kw: Any) -> dict[str, dict[str, Any]]:
    found = await wait_condition(kubectl, WS, "WorkspaceSucceeded", "workspaceSucceeded", **kw)
    assert found["JobStarted"]["status"] == "True"
    assert found["JobStarted"]["reason"] == "WorkspaceTuningJobStatusStarted"
    return found


def table_columns(out: str) -> dict[str, str]:
    """The first row of ``kubectl get``'s table by column (cells may be empty)."""
    header, row = out.splitlines()[:2]
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
    bounds = [*starts[1:], None]
    return {header[a:b].strip(): row[a:b].strip() for a, b in zip(starts, bounds, strict=True)}


async def tuner_events(settings: Settings) -> list[tuple[EventType, dict[str, Any]]]:
    async with stream_reader(settings) as reader:
        out = []
        for type_ in (
            EventType.TUNING_STARTED,
            EventType.TUNING_PROGRESS,
            EventType.TUNING_SUCCEEDED,
            EventType.TUNING_FAILED,
        ):
            for raw in await reader.messages(event_type_filter(settings.subject_prefix, type_)):
                envelope = decode_event(raw)
                out.append((envelope.type, envelope.data.model_dump(mode="json")))
        return out


async def running_pod(kubectl: Kubectl) -> str:
    async def find() -> str | None:
        body = await get_json(kubectl, "pods", "-l", f"kaito.sh/workspace={WS}")
        for pod in body.get("items") or []:
            if (pod.get("status") or {}).get("phase") == "Running":
                return str(pod["metadata"]["name"])
        return None

    name: str = await eventually(find, timeout=30, what=f"a running pod of {WS}")
    return name


async def test_the_seed_runs_to_success_with_kaitos_conditions_and_state(
    services: Simulator, kubectl: Kubectl, settings: Settings
) -> None:
    await kubectl("apply", "-f", str(SEED))
    found = await succeeded(kubectl)
    workspace = await get_json(kubectl, "workspace", WS)
    assert workspace["status"]["state"] == "Succeeded"
    assert found["WorkspaceSucceeded"]["message"] == "workspace succeeds"
    job = await get_json(kubectl, "job", WS)
    assert job["metadata"]["annotations"]["workspace.kaito.io/revision"] == "1"
    assert job["metadata"]["ownerReferences"][0]["uid"] == workspace["metadata"]["uid"]
    pod = job["spec"]["template"]["spec"]
    downloader = pod["initContainers"][-1]
    assert downloader["name"] == "data-downloader"
    assert downloader["command"][-1] == SEED_URL
    pusher = next(c for c in pod["containers"] if c["name"] == "pusher")
    assert "ACR_REPO_HERE.azurecr.io/IMAGE_NAME_HERE:0.0.1" in pusher["command"]
    assert any(
        v.get("secret", {}).get("secretName") == "ACR_REGISTRY_SECRET_HERE" for v in pod["volumes"]
    )
    config = await get_json(kubectl, "configmap", f"{WS}-tuning-params")
    assert "training_config" in yaml.safe_load(config["data"]["training_config.yaml"])
    _, out, _ = await kubectl("get", "workspace", WS)
    columns = table_columns(out)
    assert columns["JOBSTARTED"] == "True", out
    assert columns["WORKSPACEREADY"] == "True", out
    _, out, _ = await kubectl("get", "job", WS)
    job_columns = table_columns(out)
    assert (job_columns["STATUS"], job_columns["COMPLETIONS"]) == ("Complete", "1/1"), out

    async def announced() -> list[EventType] | None:
        types = [t for t, _ in await tuner_events(settings)]
        return types if EventType.TUNING_SUCCEEDED in types else None

    types: list[EventType] = await eventually(
        announced, timeout=10, what="TuningSucceeded on the bus"
    )
    assert types.count(EventType.TUNING_STARTED) == 1
    assert types.count(EventType.TUNING_SUCCEEDED) == 1
    events = dict(await tuner_events(settings))
    assert events[EventType.TUNING_SUCCEEDED]["output"].startswith("ACR_REPO_HERE.azurecr.io/")


async def test_progress_reaches_the_status_and_the_bus_while_training(
    services: Simulator, kubectl: Kubectl, settings: Settings
) -> None:
    _training_for(services, 4.0)
    await kubectl("apply", "-f", str(SEED))

    async def training() -> str | None:
        found = conditions(await get_json(kubectl, "workspace", WS))
        message = str((found.get("WorkspaceSucceeded") or {}).get("message", ""))
        return message if message.startswith("training: step") else None

    message: str = await eventually(training, timeout=30, what="progress in WorkspaceSucceeded")
    assert "/100 (" in message
    assert "loss" in message
    assert "epoch" in message
    assert "left" in message
    workspace = await get_json(kubectl, "workspace", WS)
    assert workspace["status"]["state"] == "Running"
    await succeeded(kubectl)
    progress = [data for t, data in await tuner_events(settings) if t == EventType.TUNING_PROGRESS]
    assert len(progress) >= 2
    steps = [p["step"] for p in progress]
    assert steps == sorted(steps)
    assert all(p["total_steps"] == 100 for p in progress)
    assert all(p["loss"] is not None and p["epoch"] is not None for p in progress)


@pytest.mark.parametrize(
    ("mode", "message", "reason", "expected"),
    [
        ("OOMKilled", None, "ContainerOOMKilled", "OOMKilled"),
        (
            "InitError",
            "download of https://example.com/data/train.parquet?... failed after 3 attempts: "
            "HTTP 404 Not Found",
            "DataDownloadFailed",
            "https://example.com/data/train.parquet",
        ),
        ("Error", "CUDA out of memory. Tried to allocate 2.00 GiB", "TrainingFailed", "CUDA"),
    ],
)
async def test_a_failed_pod_fails_the_workspace_with_its_cause(
    services: Simulator,
    kubectl: Kubectl,
    settings: Settings,
    mode: str,
    message: str | None,
    reason: str,
    expected: str,
) -> None:
    _training_for(services, 60.0)
    await kubectl("apply", "-f", str(SEED))
    pod = await running_pod(kubectl)
    await services.fail_pod("default", pod, mode, message)
    found = await wait_condition(kubectl, WS, "JobStarted", "WorkspaceTuningJobStatusFailed")
    assert expected in found["JobStarted"]["message"]
    assert pod in found["JobStarted"]["message"]
    found = await wait_condition(kubectl, WS, "WorkspaceSucceeded", "workspaceFailed")
    assert expected in found["WorkspaceSucceeded"]["message"]
    workspace = await get_json(kubectl, "workspace", WS)
    assert workspace["status"]["state"] == "Failed"
    if mode == "InitError":
        _, out, _ = await kubectl("get", "pod", pod)
        assert table_columns(out)["STATUS"] == "Init:Error", out

    async def failed() -> dict[str, Any] | None:
        for t, data in await tuner_events(settings):
            if t == EventType.TUNING_FAILED:
                return data
        return None

    data = await eventually(failed, timeout=10, what="TuningFailed on the bus")
    assert data["reason"] == reason
    assert expected in data["message"]


async def test_a_changed_input_recreates_the_job(
    services: Simulator, kubectl: Kubectl, tmp_path: Path
) -> None:
    await kubectl("apply", "-f", str(SEED))
    await succeeded(kubectl)
    first = await get_json(kubectl, "job", WS)
    seed = yaml.safe_load(SEED.read_text())
    new_url = "https://example.com/datasets/other.jsonl"
    seed["tuning"]["input"]["urls"] = [new_url]
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(seed))
    await kubectl("apply", "-f", str(changed))
    await succeeded(kubectl, generation=2)
    second = await get_json(kubectl, "job", WS)
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    assert second["metadata"]["annotations"]["workspace.kaito.io/revision"] == "2"
    downloader = second["spec"]["template"]["spec"]["initContainers"][-1]
    assert downloader["command"][-1] == new_url
    body = await get_json(kubectl, "pods", "-l", f"kaito.sh/workspace={WS}")
    owners = {p["metadata"]["ownerReferences"][0]["uid"] for p in body.get("items") or []}
    assert owners == {second["metadata"]["uid"]}  # the old run's pods went with its Job


async def test_deletion_removes_the_job_and_releases_the_workspace(
    services: Simulator, kubectl: Kubectl
) -> None:
    await kubectl("apply", "-f", str(SEED))
    await succeeded(kubectl)
    await kubectl("delete", "workspace", WS, "--wait=false")

    async def gone() -> bool | None:
        code, out, _ = await kubectl(
            "get", "workspace,job,configmap,pods", "-o", "json", check=False
        )
        items = json.loads(out).get("items") if code == 0 else None
        if items is None:
            return None
        names = {(i["kind"], i["metadata"]["name"]) for i in items}
        left = {n for n in names if n[0] != "ConfigMap" or n[1].startswith(WS)}
        return True if not left else None

    await eventually(gone, timeout=30, what=f"{WS}, its Job, ConfigMap and pods gone")
