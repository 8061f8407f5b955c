"""``kaiten plan``: the planner run offline on Workspace YAML, so a user sees the GPUs, the fit and
the cost before any GPU is requested. Reads the files, plans each Workspace with the service's own
code and prints it with ``services.planner.report``; the exit code is 0 when every Workspace got a
plan, 1 when any was rejected, 2 when a file cannot be read or holds no Workspace."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from kaiten import manifests
from services.planner.planning import (
    ConfigMaps,
    PlanOptions,
    Rejection,
    configmaps_needed,
    plan_workspace,
)
from services.planner.report import json_entry, render_json, render_text
from services.provisioner.azure import QuotaCheck
from shared.errors import KaitenError
from shared.plan import Plan
from shared.workspace.models import KIND

WORKSPACE_KIND = KIND
CONFIGMAP_KIND = "ConfigMap"
UNNAMED = "<unnamed>"
QuotaLookup = Callable[[str, int], QuotaCheck]


class InputError(Exception):
    """A file that cannot be used, named in the message."""


def read_documents(path: Path) -> list[dict[str, Any]]:
    """The mapping documents of a (multi-document) YAML file; ``-`` reads stdin."""
    try:
        return manifests.read_documents(path)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise InputError(f"{path}: cannot be read: {e}") from None


def configmap_data(documents: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """The ``data`` of each ConfigMap document, by ``metadata.name``."""
    found: dict[str, dict[str, str]] = {}
    for doc in documents:
        if doc.get("kind") != CONFIGMAP_KIND:
            continue
        name = (doc.get("metadata") or {}).get("name")
        data = doc.get("data") or {}
        if isinstance(name, str) and isinstance(data, Mapping):
            found[name] = {str(k): str(v) for k, v in data.items()}
    return found


def read_configmaps(files: Iterable[Path]) -> dict[str, dict[str, str]]:
    """The ConfigMaps of ``files``, by name; each file must hold at least one."""
    configmaps: dict[str, dict[str, str]] = {}
    for file in files:
        found = configmap_data(read_documents(file))
        if not found:
            raise InputError(f"{file}: no ConfigMap in it")
        configmaps.update(found)
    return configmaps


def workspace_name(doc: Mapping[str, Any]) -> str:
    metadata = doc.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    return name if isinstance(name, str) and name else UNNAMED


def with_instance_type(doc: Mapping[str, Any], instance_type: str | None) -> dict[str, Any]:
    """A copy of ``doc`` with ``resource.instanceType`` replaced (when one is given)."""
    result = copy.deepcopy(dict(doc))
    if instance_type is not None:
        resource = result.get("resource")
        result["resource"] = {**(resource if isinstance(resource, Mapping) else {})}
        result["resource"]["instanceType"] = instance_type
    return result


def plan_documents(
    documents: Sequence[Mapping[str, Any]],
    configmaps: Mapping[str, Mapping[str, str]],
    options: PlanOptions,
    instance_type: str | None = None,
) -> list[tuple[str, Plan | Rejection]]:
    """Each Workspace document's name and plan; ConfigMaps not given are planned as missing."""
    results = []
    for doc in documents:
        if doc.get("kind") != WORKSPACE_KIND:
            continue
        obj = with_instance_type(doc, instance_type)
        named: ConfigMaps = {name: configmaps.get(name) for name in configmaps_needed(obj)}
        results.append((workspace_name(obj), plan_workspace(obj, named, options)))
    return results


def plan_file(
    path: Path,
    configmap_files: Sequence[Path],
    options: PlanOptions,
    *,
    instance_type: str | None,
    output: str,
    echo: Callable[[str], None],
    echo_err: Callable[[str], None],
    quota: QuotaLookup | None = None,
) -> int:
    """Plan every Workspace of ``path`` and print the plans as ``output`` (text or json).
    With ``quota``, also say whether each plan's nodes fit the cloud's quota: exit 1 when
    one does not, 2 when the quota cannot be read."""
    try:
        documents = read_documents(path)
        configmaps = {**read_configmaps(configmap_files), **configmap_data(documents)}
    except InputError as e:
        echo_err(f"error: {e}")
        return 2
    results = plan_documents(documents, configmaps, options, instance_type)
    if not results:
        echo_err(f"error: {path}: no Workspace in it")
        return 2
    checks: dict[str, QuotaCheck] = {}
    if quota is not None:
        try:
            checks = {
                name: quota(result.instance_type, result.node_count)
                for name, result in results
                if isinstance(result, Plan) and result.instance_type
            }
        except KaitenError as e:
            echo_err(f"error: the quota check failed: {e}")
            return 2
    if output == "json":
        entries = []
        for name, result in results:
            entry = json_entry(name, result)
            if name in checks:
                entry["quota"] = quota_json(checks[name])
            entries.append(entry)
        echo(render_json(entries))
    else:
        echo(
            "\n\n".join(
                render_text(name, result) + (f"\n{checks[name].render()}" if name in checks else "")
                for name, result in results
            )
        )
    rejected = any(isinstance(result, Rejection) for _, result in results)
    return 1 if rejected or not all(c.fits for c in checks.values()) else 0


def quota_json(check: QuotaCheck) -> dict[str, Any]:
    usages = [check.family] + ([check.regional] if check.regional else [])
    return {
        "fits": check.fits,
        "location": check.location,
        "vcpus_per_node": check.vcpus_per_node,
        "vcpus_needed": check.needed,
        "usages": [{"name": u.name, "current": u.current, "limit": u.limit} for u in usages],
    }
