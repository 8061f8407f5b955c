"""``kaiten validate``: the admission webhook's rules offline, for people who lint Workspace YAML
in their own CI. Prints each denial with its field path; the exit code is 1 when any document is
invalid, 2 when a file cannot be read."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from kaiten.manifests import read_documents
from presets.catalog import default_catalog
from shared.settings import Settings
from shared.workspace.models import GROUP, KIND
from shared.workspace.validation import ValidationContext, validate_workspace


def validate_files(
    files: list[Path], old: Path | None, settings: Settings, echo: Callable[[str], None]
) -> int:
    ctx = ValidationContext(
        catalog=default_catalog(),
        cloud=settings.cloud_provider,
        node_auto_provisioning=settings.node_auto_provisioning,
        local_cpu=settings.local_cpu,
    )
    try:
        previous = next(_workspaces(old), None) if old is not None else None
        documents = [(path, doc) for path in files for doc in _workspaces(path)]
    except (OSError, yaml.YAMLError) as e:
        echo(f"error: {e}")
        return 2
    invalid = 0
    for path, doc in documents:
        name = (doc.get("metadata") or {}).get("name", "<unnamed>")
        problems = validate_workspace(doc, previous, ctx)
        if not problems:
            echo(f"{path}: Workspace {name}: valid")
            continue
        invalid += 1
        for p in problems:
            echo(f"{path}: Workspace {name}: {p.field or '<workspace>'}: {p.message}")
    if not documents:
        echo("no Workspace documents found")
        return 1
    return 1 if invalid else 0


def _workspaces(path: Path) -> Iterator[dict[str, Any]]:
    """The Workspace documents of a (multi-document) YAML file; other kinds are skipped."""
    for doc in read_documents(path):
        api_version = str(doc.get("apiVersion", ""))
        if doc.get("kind") == KIND and api_version.startswith(f"{GROUP}/"):
            yield doc
