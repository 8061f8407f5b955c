"""The Workspace API as users meet it: the committed CRD and the watcher's admission webhook in
the development cluster, driven with kubectl and the seeds' YAML files."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client as aclient

from localdev import infra
from presets.catalog import default_catalog
from services.watcher.webhook import WEBHOOK_NAME, WebhookSettings, serve_webhook
from shared.workspace.validation import ValidationContext
from tests.kubeapi.conftest import Kubectl
from tests.unit.workspace.cases import CASES, SEEDS, Case

CRD_FILE = Path(__file__).resolve().parents[2] / "deploy" / "crds" / "kaito.sh_workspaces.yaml"


@pytest.fixture
async def workspace_api(
    kubectl: Kubectl, api_client: aclient.ApiClient, tmp_path: Path
) -> AsyncIterator[Kubectl]:
    await kubectl("apply", "-f", str(CRD_FILE))
    await kubectl("wait", "--for=condition=Established", "crd/workspaces.kaito.sh", "--timeout=10s")
    settings = WebhookSettings(port=infra.free_port(), cert_dir=tmp_path / "webhook")
    ctx = ValidationContext(catalog=default_catalog())
    async with serve_webhook(settings, ctx, api_client):
        yield kubectl


async def namespace(kubectl: Kubectl, name: str) -> None:
    await kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


async def test_the_webhook_registers_itself_with_its_ca_bundle(
    workspace_api: Kubectl,
) -> None:
    _, out, _ = await workspace_api(
        "get", "validatingwebhookconfiguration", WEBHOOK_NAME, "-o", "json"
    )
    hook = json.loads(out)["webhooks"][0]
    assert hook["clientConfig"]["url"].startswith("https://127.0.0.1:")
    assert hook["clientConfig"]["caBundle"]
    assert hook["rules"][0]["resources"] == ["workspaces"]


async def test_every_seed_applies_unchanged_with_crd_defaults_and_seed_columns(
    workspace_api: Kubectl,
) -> None:
    for i, path in enumerate(sorted(SEEDS.glob("*.yaml"))):
        await namespace(workspace_api, f"seed-{i}")
        out = (await workspace_api("apply", "-n", f"seed-{i}", "-f", str(path)))[1]
        assert "created" in out, out
    _, listing, _ = await workspace_api("get", "workspaces", "-A", "-o", "json")
    items = json.loads(listing)["items"]
    assert len(items) == 5
    assert all(ws["resource"]["count"] == 1 for ws in items)  # CRD default
    presets = [(ws.get("inference") or ws.get("tuning"))["preset"] for ws in items]
    assert all(p["accessMode"] == "public" for p in presets)  # CRD default
    _, table, _ = await workspace_api("get", "wk", "-n", "seed-1")
    assert table.splitlines()[0].split() == [
        "NAME",
        "INSTANCE",
        "RESOURCEREADY",
        "INFERENCEREADY",
        "JOBSTARTED",
        "WORKSPACEREADY",
        "AGE",
    ]
    assert table.splitlines()[1].split()[:2] == ["workspace-phi-3-mini", "Standard_NC6s_v3"]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_kubectl_apply_of_an_invalid_workspace_shows_the_denial(
    workspace_api: Kubectl, case: Case
) -> None:
    if case.old is not None:
        await workspace_api.apply(case.old())
    code, _, err = await workspace_api(
        "apply", "-f", "-", stdin=json.dumps(case.make()), check=False
    )
    assert code != 0
    assert case.message in err, err
    if case.field:
        assert case.field in err, err
    if case.webhook_only:
        assert f'admission webhook "{WEBHOOK_NAME}" denied the request' in err, err
