"""The Workspace CustomResourceDefinition, generated from the pydantic models (``kaiten crd``):
a structural OpenAPI v3 schema, both versions served (``v1beta1`` stored), the status subresource,
short names, printer columns, and the CEL rules that need no catalog. The committed
``deploy/crds/kaito.sh_workspaces.yaml`` must equal what this module generates."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from shared.workspace.models import GROUP, KIND, PLURAL, STORAGE_VERSION, VERSIONS, Workspace

Schema = dict[str, Any]

# JSON-schema keys that carry over into a structural schema; everything else (title, $defs,
# anyOf for Optional, ...) is resolved or dropped.
_KEPT = (
    "description",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "format",
    "default",
)
_V1ALPHA1_DEFAULT_INSTANCE = "Standard_NC24ads_A100_v4"

_IMMUTABLE = {"rule": "self == oldSelf", "message": "field is immutable"}

# Rules per dotted property path ("" is the root). Rules with oldSelf run on update only.
_RULES: dict[str, list[Schema]] = {
    "": [
        {
            "rule": "has(self.inference) != has(self.tuning)",
            "messageExpression": "has(self.inference) ? 'Either Inference or Tuning must be "
            "specified, but not both' : 'Either Inference or Tuning must be specified, not "
            "neither'",
        },
        {
            "rule": "has(self.inference) == has(oldSelf.inference)",
            "message": "Inference field cannot be toggled once set",
            "fieldPath": ".inference",
        },
        {
            "rule": "has(self.tuning) == has(oldSelf.tuning)",
            "message": "Tuning field cannot be toggled once set",
            "fieldPath": ".tuning",
        },
    ],
    "inference": [
        {
            "rule": "has(self.preset) != has(self.template)",
            "messageExpression": "has(self.preset) ? 'Preset and Template cannot be set at the "
            "same time' : 'Preset or Template must be specified'",
        },
        {
            "rule": "has(self.template) == has(oldSelf.template)",
            "message": "field cannot be unset/set if it was set/unset",
            "fieldPath": ".template",
        },
    ],
    "resource.count": [_IMMUTABLE],
    "resource.instanceType": [_IMMUTABLE],
    "resource.labelSelector": [_IMMUTABLE],
    "inference.preset": [_IMMUTABLE],
    "tuning.preset": [{"rule": "self == oldSelf", "message": "Preset cannot be changed"}],
    "tuning.method": [{"rule": "self == oldSelf", "message": "Method cannot be changed"}],
}

_CONDITION_COLUMNS = (
    ("ResourceReady", "ResourceReady"),
    ("InferenceReady", "InferenceReady"),
    ("JobStarted", "JobStarted"),
    ("WorkspaceReady", "WorkspaceSucceeded"),
)


def openapi_schema() -> Schema:
    """The Workspace's structural OpenAPI v3 schema (the stored version's)."""
    source = Workspace.model_json_schema(by_alias=True, mode="validation")
    schema = _structural(source, source.get("$defs", {}))
    schema["properties"]["metadata"] = {"type": "object"}
    _add_rules(schema)
    return schema


def _structural(node: Schema, defs: Schema) -> Schema:
    if "$ref" in node:
        resolved = dict(defs[node["$ref"].rsplit("/", 1)[-1]])
        resolved.update({k: v for k, v in node.items() if k != "$ref"})
        return _structural(resolved, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express a union in a structural schema: {node}")
        merged = dict(options[0])
        merged.update({k: v for k, v in node.items() if k != "anyOf"})
        return _structural(merged, defs)
    out: Schema = {k: node[k] for k in _KEPT if k in node and node[k] is not None}
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            **({"description": node["description"]} if "description" in node else {}),
        }
    if "const" in node:
        out["enum"] = [node["const"]]
    out.update(_shape(node, defs))
    return out


def _shape(node: Schema, defs: Schema) -> Schema:
    """The type and the nested schemas of ``node``."""
    kind = node.get("type")
    if kind == "object" or "properties" in node:
        out: Schema = {"type": "object"}
        if "properties" in node:
            out["properties"] = {k: _structural(v, defs) for k, v in node["properties"].items()}
            if node.get("required"):
                out["required"] = sorted(node["required"])
        elif isinstance(node.get("additionalProperties"), dict):
            out["additionalProperties"] = _structural(node["additionalProperties"], defs)
        return out
    if kind == "array":
        return {"type": "array", "items": _structural(node.get("items", {}), defs)}
    if kind in ("string", "integer", "number", "boolean"):
        return {"type": kind}
    if "enum" in node:
        return {"type": "string"}
    raise ValueError(f"cannot express {node} in a structural schema")


def _add_rules(schema: Schema) -> None:
    for path, rules in _RULES.items():
        node = schema
        for part in filter(None, path.split(".")):
            node = node["properties"][part]
        node["x-kubernetes-validations"] = copy.deepcopy(rules)


def _printer_columns() -> list[Schema]:
    columns: list[Schema] = [
        {
            "name": "Instance",
            "type": "string",
            "jsonPath": ".resource.instanceType",
            "description": "GPU instance type",
        },
    ]
    for name, condition in _CONDITION_COLUMNS:
        columns.append(
            {
                "name": name,
                "type": "string",
                "jsonPath": f'.status.conditions[?(@.type=="{condition}")].status',
                "description": f"status of the {condition} condition",
            }
        )
    columns.append({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})
    return columns


def workspace_crd() -> Schema:
    """The CustomResourceDefinition, as it is committed to deploy/crds/."""
    stored = openapi_schema()
    versions = []
    for version in VERSIONS:
        schema = copy.deepcopy(stored)
        if version == "v1alpha1":
            schema["properties"]["resource"]["properties"]["instanceType"]["default"] = (
                _V1ALPHA1_DEFAULT_INSTANCE
            )
        versions.append(
            {
                "name": version,
                "served": True,
                "storage": version == STORAGE_VERSION,
                "schema": {"openAPIV3Schema": schema},
                "subresources": {"status": {}},
                "additionalPrinterColumns": _printer_columns(),
            }
        )
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": "workspace",
                "shortNames": ["wk", "wks"],
                "categories": ["workspace"],
            },
            "scope": "Namespaced",
            "versions": versions,
        },
    }


class _NoAliases(yaml.SafeDumper):
    """Writes repeated values out in full: anchors would make the file hard to read."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def workspace_crd_yaml() -> str:
    header = "# Generated by `kaiten crd` from shared/workspace/models.py; do not edit.\n"
    body = yaml.dump(workspace_crd(), Dumper=_NoAliases, sort_keys=False, width=100)
    return header + body
