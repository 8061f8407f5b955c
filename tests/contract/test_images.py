"""The runtime image definitions, checked statically (no Docker engine here): everything they
COPY exists, and their entry points are modules of this repository."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGES = sorted((ROOT / "deploy" / "images").glob("*.Dockerfile"))


def test_there_is_a_transformers_and_a_vllm_image() -> None:
    assert {p.name for p in IMAGES} == {
        "runtime-transformers.Dockerfile",
        "runtime-vllm.Dockerfile",
    }


@pytest.mark.parametrize("dockerfile", IMAGES, ids=lambda p: p.name)
def test_every_copied_path_exists(dockerfile: Path) -> None:
    sources = [
        line.split()[1:-1]
        for line in dockerfile.read_text().splitlines()
        if line.startswith("COPY ")
    ]
    assert sources
    for group in sources:
        for source in group:
            assert (ROOT / source).exists(), f"{dockerfile.name} copies missing {source}"


@pytest.mark.parametrize("dockerfile", IMAGES, ids=lambda p: p.name)
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
