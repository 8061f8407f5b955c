"""The image definitions, checked statically (no Docker engine here): everything they COPY
exists, the runtime images' entry points are modules of this repository, and the services'
image installs the project without the ML runtime and runs `kaiten` as a non-root user."""

from __future__ import annotations

import importlib.util
import json
import re
import tomllib
from pathlib import Path

import pytest

from services.watcher.webhook import WebhookSettings
from shared.settings import DEFAULT_HEALTH_PORTS

ROOT = Path(__file__).resolve().parents[2]
IMAGES = sorted((ROOT / "deploy" / "images").glob("*.Dockerfile"))
RUNTIME_IMAGES = [p for p in IMAGES if p.name.startswith("runtime-")]
KAITEN_IMAGE = ROOT / "deploy" / "images" / "kaiten.Dockerfile"


def copied_sources(dockerfile: Path) -> list[str]:
    """The build-context paths a Dockerfile's COPY instructions read (a COPY --from=STAGE reads
    another stage, not the context, and is left out)."""
    sources: list[str] = []
    for line in dockerfile.read_text().splitlines():
        if not line.startswith("COPY "):
            continue
        words = line.split()[1:]
        flags = [w for w in words if w.startswith("--")]
        if any(f.startswith("--from=") for f in flags):
            continue
        sources += [w for w in words if not w.startswith("--")][:-1]
    return sources


def instructions(dockerfile: Path, keyword: str) -> list[str]:
    """The arguments of every ``keyword`` instruction, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    prefix = keyword + " "
    return [line[len(prefix) :].strip() for line in text.splitlines() if line.startswith(prefix)]


def test_there_is_a_transformers_a_vllm_and_a_services_image() -> None:
    assert {p.name for p in IMAGES} == {
        "kaiten.Dockerfile",
        "runtime-transformers.Dockerfile",
        "runtime-vllm.Dockerfile",
    }


@pytest.mark.parametrize("dockerfile", IMAGES, ids=lambda p: p.name)
def test_every_copied_path_exists(dockerfile: Path) -> None:
    sources = copied_sources(dockerfile)
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"{dockerfile.name} copies missing {source}"


@pytest.mark.parametrize("dockerfile", RUNTIME_IMAGES, ids=lambda p: p.name)
def test_the_entry_point_is_a_module_of_the_repository(dockerfile: Path) -> None:
    match = re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile.read_text(), re.MULTILINE)
    assert match, "no exec-form ENTRYPOINT"
    argv = json.loads(match.group(1))
    assert argv[1] == "-m"
    assert importlib.util.find_spec(argv[2]) is not None
    assert (ROOT / argv[2].replace(".", "/")).with_suffix(".py").is_file()


def test_torch_is_pinned_to_the_projects_version() -> None:
    text = (ROOT / "deploy" / "images" / "runtime-transformers.Dockerfile").read_text()
    assert "torch==2.13.0" in text


def test_the_services_image_runs_the_kaiten_command() -> None:
    (entrypoint,) = instructions(KAITEN_IMAGE, "ENTRYPOINT")
    argv = json.loads(entrypoint)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert argv == ["kaiten"]
    assert scripts["kaiten"] == "kaiten.cli:main"


def test_the_services_image_is_slim_python_311_without_the_ml_runtime() -> None:
    assert {f.split()[0] for f in instructions(KAITEN_IMAGE, "FROM")} == {"python:3.11-slim"}
    runs = instructions(KAITEN_IMAGE, "RUN")
    installs = [r for r in runs if "pip install" in r]
    assert installs
    for run in installs:  # the base install only: no extras, no extra packages
        assert run.split("pip install", 1)[1].split() == ["."], run
    assert not [r for r in runs if "torch" in r or "runtime" in r]


def test_the_services_image_runs_as_uid_65532_and_serves_health_on_every_interface() -> None:
    users = instructions(KAITEN_IMAGE, "USER")
    assert users
    assert users[-1].split(":")[0] == "65532"
    env = " ".join(instructions(KAITEN_IMAGE, "ENV"))
    assert "KAITEN_HEALTH_HOST=0.0.0.0" in env.split()
    exposed = {int(p) for e in instructions(KAITEN_IMAGE, "EXPOSE") for p in e.split()}
    assert set(DEFAULT_HEALTH_PORTS.values()) <= exposed
    assert WebhookSettings.model_fields["port"].default in exposed
