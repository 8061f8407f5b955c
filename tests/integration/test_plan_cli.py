"""`kaiten plan` as users run it: the planner offline on Workspace YAML, as text or JSON."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from kaiten.cli import app
from services.planner.report import WIDTH, render_text
from shared.plan import Plan
from tests.unit.workspace.cases import SEEDS

SEED_FILES = sorted(SEEDS.glob("*.yaml"))
A100 = "Standard_NC24ads_A100_v4"

TOO_BIG = """\
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata: {name: too-big}
resource: {instanceType: Standard_NC6s_v3, labelSelector: {matchLabels: {app: big}}}
inference:
  preset: {name: phi-3-medium-4k-instruct}
"""

WITH_CONFIG = f"""\
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata: {{name: with-config}}
resource: {{instanceType: {A100}, labelSelector: {{matchLabels: {{app: cfg}}}}}}
inference:
  preset: {{name: phi-3-mini-4k-instruct}}
  config: my-cfg
"""

CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: my-cfg}
data:
  inference_config.yaml: "vllm:\\n  max-model-len: 2048\\n"
"""


def kaiten(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=stdin)


def plan_json(*args: str, stdin: str | None = None) -> Any:
    result = kaiten("plan", "-o", "json", *args, stdin=stdin)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def flat(text: str) -> str:
    """The text with line continuations and wrapping undone, runs of spaces as one."""
    return " ".join(text.replace(" \\\n", " ").split())


@pytest.mark.parametrize("seed", SEED_FILES, ids=lambda p: p.stem)
def test_each_seed_plans_as_json(seed: Path) -> None:
    document = plan_json(str(seed))
    assert document["workspace"].startswith("workspace-")
    plan = document["plan"]
    assert plan["node_count"] == 1
    assert plan["runtime"]["name"] == "transformers"
    assert plan["dtype"] == "float16"
    assert plan["price"]["usd_per_hour"] > 0


@pytest.mark.parametrize("seed", SEED_FILES, ids=lambda p: p.stem)
def test_each_seed_plans_as_text(seed: Path) -> None:
    command = plan_json(str(seed))["plan"]["command"]
    result = kaiten("plan", str(seed))
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "nodes:" in text
    assert "transformers" in text
    assert "float16" in text
    assert "$" in text
    assert "Standard_NC6s_v3" in text
    assert "NVIDIA V100" in text
    assert "price source:" in text
    assert shlex.join(command) in flat(text)
    assert max(len(line) for line in text.splitlines()) <= WIDTH


def test_instance_type_override_switches_an_inference_seed_to_vllm() -> None:
    seed = str(SEEDS / "inference-phi-3-mini.yaml")
    plan = plan_json(seed, "--instance-type", A100)["plan"]
    assert plan["instance_type"] == A100
    assert plan["runtime"]["name"] == "vllm"
    assert plan["gpu"]["model"] == "NVIDIA A100"
    assert plan["gpu_memory_utilization"] > 0
    text = kaiten("plan", seed, "--instance-type", A100).stdout
    assert "vllm" in text
    assert "gpu-memory-utilization:" in text
    assert "tokens in the KV cache" in text


def test_a_model_too_big_for_the_gpu_is_rejected_with_instance_types_that_fit(
    tmp_path: Path,
) -> None:
    path = tmp_path / "too-big.yaml"
    path.write_text(TOO_BIG)
    result = kaiten("plan", str(path))
    assert result.exit_code == 1
    assert "REJECTED (InsufficientGPUMemory)" in result.stdout
    assert "Instance types that fit" in flat(result.stdout)
    assert "resource.instanceType" in result.stdout

    as_json = kaiten("plan", str(path), "-o", "json")
    assert as_json.exit_code == 1
    document = json.loads(as_json.stdout)
    assert document["workspace"] == "too-big"
    assert document["rejected"]["reason"] == "InsufficientGPUMemory"
    assert document["rejected"]["problems"][0]["field"] == "resource.instanceType"


def test_a_missing_file_exits_2_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = kaiten("plan", str(missing))
    assert result.exit_code == 2
    assert str(missing) in result.stderr
    assert result.stdout == ""


def test_a_file_without_a_workspace_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "cm.yaml"
    path.write_text(CONFIGMAP)
    result = kaiten("plan", str(path))
    assert result.exit_code == 2
    assert f"{path}: no Workspace" in result.stderr


def test_several_workspaces_give_a_json_list(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text(
        "\n---\n".join([(SEEDS / "inference-phi-3-mini.yaml").read_text(), CONFIGMAP, TOO_BIG])
    )
    result = kaiten("plan", str(path), "-o", "json")
    assert result.exit_code == 1  # one of them is rejected
    documents = json.loads(result.stdout)
    assert isinstance(documents, list)
    assert [d["workspace"] for d in documents] == ["workspace-phi-3-mini", "too-big"]
    assert "plan" in documents[0]
    assert "rejected" in documents[1]

    text = kaiten("plan", str(path)).stdout
    assert text.count("workspace:") == 2


def test_stdin_is_read_with_a_dash() -> None:
    seed = (SEEDS / "tuning-phi-3.yaml").read_text()
    plan = plan_json("-", stdin=seed)["plan"]
    assert plan["mode"] == "tuning"
    assert plan["tuning"]["method"] == "qlora"


def test_a_configmap_file_feeds_the_inference_config(tmp_path: Path) -> None:
    workspace = tmp_path / "ws.yaml"
    workspace.write_text(WITH_CONFIG)
    configmap = tmp_path / "cm.yaml"
    configmap.write_text(CONFIGMAP)
    plan = plan_json(str(workspace), "--configmap", str(configmap))["plan"]
    assert plan["inference_config"] == "my-cfg"
    assert plan["runtime"]["name"] == "vllm"
    assert plan["memory"]["context_tokens"] == 2048
    assert "/mnt/config/inference_config.yaml" in plan["command"]

    missing = kaiten("plan", str(workspace), "-o", "json")
    assert missing.exit_code == 1
    rejected = json.loads(missing.stdout)["rejected"]
    assert rejected["reason"] == "ConfigMapNotFound"
    assert "my-cfg" in rejected["message"]


def test_a_configmap_in_the_same_file_is_used(tmp_path: Path) -> None:
    path = tmp_path / "both.yaml"
    path.write_text(f"{CONFIGMAP}---\n{WITH_CONFIG}")
    assert plan_json(str(path))["plan"]["memory"]["context_tokens"] == 2048


def test_byo_and_cloud_reach_the_planner(tmp_path: Path) -> None:
    byo = kaiten("plan", str(SEEDS / "inference-phi-3-mini.yaml"), "--byo")
    assert byo.exit_code == 1
    assert "node auto-provisioning is disabled" in flat(byo.stdout)
    path = tmp_path / "too-big.yaml"
    path.write_text(TOO_BIG)
    aws = kaiten("plan", str(path), "--cloud", "aws", "-o", "json")
    assert aws.exit_code == 1
    message = json.loads(aws.stdout)["rejected"]["message"]
    assert "g5.12xlarge" in message  # the instance types suggested are AWS's
    assert "Standard_NC24ads_A100_v4" not in message


def test_unknown_output_and_cloud_are_usage_errors() -> None:
    seed = str(SEEDS / "inference-phi-3-mini.yaml")
    assert kaiten("plan", seed, "-o", "yaml").exit_code == 2
    assert kaiten("plan", seed, "--cloud", "gcp").exit_code == 2


def test_a_plan_without_a_price_says_so() -> None:
    document = plan_json(str(SEEDS / "inference-phi-3-mini.yaml"))
    plan = Plan.model_validate(document["plan"]).model_copy(update={"price": None})
    text = render_text(document["workspace"], plan)
    assert "price:                  unknown (not in presets/catalog/prices.yaml)" in text
    assert "price source:" not in text
