"""The offline commands as users run them: `kaiten validate`, `kaiten presets`, `kaiten crd`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from shared.workspace.crd import workspace_crd_yaml
from tests.unit.workspace.cases import SEEDS

KAITEN = str(Path(sys.executable).parent / "kaiten")

BAD = """\
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata: {name: tune-me}
resource: {count: 2, instanceType: Standard_NC6s_v3, labelSelector: {matchLabels: {app: x}}}
tuning:
  preset: {name: phi-3-mini-4k-instruct}
  method: dora
  input: {urls: ["http://169.254.169.254/latest"]}
  output: {image: "registry.io/out:1"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: not-a-workspace}
"""


def kaiten(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KAITEN, *args], input=stdin, capture_output=True, text=True, check=False, timeout=60
    )


def test_validate_accepts_the_seeds() -> None:
    result = kaiten("validate", *sorted(str(p) for p in SEEDS.glob("*.yaml")))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": valid") == 5


def test_validate_prints_each_denial_with_its_field_and_exits_1() -> None:
    result = kaiten("validate", "-", stdin=BAD)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert (
        "-: Workspace tune-me: tuning.method: invalid value: dora: supported methods are "
        "lora, qlora" in lines
    )
    assert any(
        line.startswith("-: Workspace tune-me: resource.count: Tuning does not") for line in lines
    )
    assert any("tuning.input.urls[0]" in line for line in lines)
    assert any("tuning.output.imagePushSecret" in line for line in lines)
    assert "not-a-workspace" not in result.stdout  # other kinds are skipped


def test_validate_checks_an_update_against_the_old_workspace(tmp_path: Path) -> None:
    old = SEEDS / "tuning-phi-3.yaml"
    new = tmp_path / "new.yaml"
    new.write_text(old.read_text().replace("method: qlora", "method: lora"))
    result = kaiten("validate", "--old", str(old), str(new))
    assert result.returncode == 1
    assert "tuning.method: Method cannot be changed" in result.stdout


def test_presets_and_skus_list_the_catalog() -> None:
    presets = kaiten("presets")
    assert presets.returncode == 0
    assert any(
        line.split()[0] == "phi-3-mini-4k-instruct" for line in presets.stdout.splitlines()[1:]
    )
    skus = kaiten("presets", "--skus", "--cloud", "azure")
    assert any(line.split()[0] == "Standard_NC6s_v3" for line in skus.stdout.splitlines()[1:])
    assert "p4d.24xlarge" not in skus.stdout


def test_crd_prints_the_generated_crd() -> None:
    assert kaiten("crd").stdout == workspace_crd_yaml()
