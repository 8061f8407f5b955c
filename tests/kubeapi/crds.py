"""A test CRD shaped like Kaito's Workspace: top-level fields instead of spec, two served
versions, a status subresource, printer columns read from conditions, defaults and CEL rules."""

from __future__ import annotations

from typing import Any

GROUP, PLURAL, KIND = "example.kaiten.dev", "widgets", "Widget"

_SCHEMA: dict[str, Any] = {
    "type": "object",
    "x-kubernetes-validations": [
        {
            "rule": "has(self.inference) != has(self.tuning)",
            "message": "exactly one of inference or tuning must be set",
        },
    ],
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "resource": {
            "type": "object",
            "required": ["instanceType"],
            "properties": {
                "count": {"type": "integer", "minimum": 1, "default": 1},
                "instanceType": {"type": "string", "pattern": "^Standard_[A-Za-z0-9_]+$"},
                "labelSelector": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
        },
        "inference": {
            "type": "object",
            "properties": {
                "preset": {
                    "type": "object",
                    "properties": {"name": {"type": "string", "minLength": 1}},
                }
            },
        },
        "tuning": {
            "type": "object",
            "properties": {"method": {"type": "string", "enum": ["lora", "qlora"]}},
        },
        "status": {
            "type": "object",
            "properties": {
                "conditions": {
                    "type": "array",
                    "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                },
                "state": {"type": "string"},
            },
        },
    },
}

_COLUMNS = [
    {"name": "Instance", "type": "string", "jsonPath": ".resource.instanceType"},
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def _version(name: str, storage: bool) -> dict[str, Any]:
    return {
        "name": name,
        "served": True,
        "storage": storage,
        "schema": {"openAPIV3Schema": _SCHEMA},
        "subresources": {"status": {}},
        "additionalPrinterColumns": _COLUMNS,
    }


WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {
            "plural": PLURAL,
            "singular": "widget",
            "kind": KIND,
            "listKind": "WidgetList",
            "shortNames": ["wd"],
            "categories": ["kaiten"],
        },
        "versions": [_version("v1alpha1", False), _version("v1beta1", True)],
    },
}


def widget(name: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/v1beta1",
        "kind": KIND,
        "metadata": {"name": name, "namespace": "default"},
        "resource": {"instanceType": "Standard_NC6s_v3"},
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
    }
    body.update(fields)
    return body
