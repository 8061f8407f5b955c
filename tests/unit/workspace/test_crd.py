"""The generated Workspace CRD: the committed file is current, and the schema passes the
structural checks kube-apiserver applies before it accepts a CRD."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cel
import pytest
import yaml

from localdev.kubeapi.schema import validate
from shared.workspace.crd import workspace_crd, workspace_crd_yaml

COMMITTED = Path(__file__).resolve().parents[3] / "deploy" / "crds" / "kaito.sh_workspaces.yaml"
ALLOWED_KEYS = {
    "type",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "description",
    "enum",
    "default",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "format",
    "nullable",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations",
}


def nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, child in (schema.get("properties") or {}).items():
        yield from nodes(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}{{}}")


def version_schemas() -> list[tuple[str, dict[str, Any]]]:
    crd = workspace_crd()
    return [(v["name"], v["schema"]["openAPIV3Schema"]) for v in crd["spec"]["versions"]]


def test_the_committed_crd_is_what_kaiten_crd_generates() -> None:
    assert COMMITTED.read_text() == workspace_crd_yaml(), "run: kaiten crd -o " + str(COMMITTED)


def test_both_versions_are_served_and_v1beta1_is_stored_with_status() -> None:
    spec = workspace_crd()["spec"]
    assert [(v["name"], v["served"], v["storage"]) for v in spec["versions"]] == [
        ("v1alpha1", True, False),
        ("v1beta1", True, True),
    ]
    assert all(v["subresources"] == {"status": {}} for v in spec["versions"])
    assert spec["names"]["shortNames"] == ["wk", "wks"]
    assert spec["names"]["categories"] == ["workspace"]
    assert spec["scope"] == "Namespaced"


def test_printer_columns_are_the_ones_the_seeds_tell_users_to_watch() -> None:
    for version in workspace_crd()["spec"]["versions"]:
        columns = version["additionalPrinterColumns"]
        assert [c["name"] for c in columns] == [
            "Instance",
            "ResourceReady",
            "InferenceReady",
            "JobStarted",
            "WorkspaceReady",
            "Age",
        ]
        ready = next(c for c in columns if c["name"] == "WorkspaceReady")
        assert ready["jsonPath"] == '.status.conditions[?(@.type=="WorkspaceSucceeded")].status'


@pytest.mark.parametrize(
    ("version", "schema"), version_schemas(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_schema_is_structural(version: str, schema: dict[str, Any]) -> None:
    """Types everywhere except schemaless fields; only structural keywords; no
    additionalProperties beside properties; required names exist; metadata is a plain object."""
    assert schema["properties"]["metadata"] == {"type": "object"}
    for path, node in nodes(schema):
        assert set(node) <= ALLOWED_KEYS, f"{version}{path}: {set(node) - ALLOWED_KEYS}"
        assert "type" in node, f"{version}{path} has no type"
        if node.get("x-kubernetes-preserve-unknown-fields"):
            assert node["type"] == "object"
        assert not ("properties" in node and "additionalProperties" in node), path
        for name in node.get("required", []):
            assert name in node.get("properties", {}), f"{version}{path}: required {name}"
        if "default" in node:
            assert validate(node, node["default"]) == [], f"{version}{path}: bad default"


@pytest.mark.parametrize(
    ("version", "schema"), version_schemas(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_cel_rule_compiles(version: str, schema: dict[str, Any]) -> None:
    rules = [r for _, node in nodes(schema) for r in node.get("x-kubernetes-validations", [])]
    assert len(rules) >= 10
    for rule in rules:
        cel.compile(rule["rule"])
        assert rule.get("message") or rule.get("messageExpression")


def test_the_generated_yaml_has_no_anchors_and_round_trips() -> None:
    text = workspace_crd_yaml()
    assert "&id" not in text
    assert yaml.safe_load(text) == workspace_crd()
