"""The Table format (``Accept: application/json;as=Table;g=meta.k8s.io;v=v1``) that kubectl asks
for: a custom resource's ``additionalPrinterColumns``, else Name and Age."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from localdev.kubeapi.jsonpath import printer_value
from localdev.kubeapi.resources import ResourceType
from localdev.kubeapi.store import Obj

_NAME = {
    "name": "Name",
    "type": "string",
    "format": "name",
    "description": "Name must be unique within a namespace.",
    "priority": 0,
}
_AGE = {
    "name": "Age",
    "type": "date",
    "format": "",
    "description": "CreationTimestamp is a timestamp representing the server time when this "
    "object was created.",
    "priority": 0,
}


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def columns_for(rt: ResourceType, version: str) -> list[Obj]:
    custom = rt.printer_columns.get(version) or []
    if not custom:
        return [_NAME, _AGE]
    return [_NAME] + [
        {
            "name": c["name"],
            "type": c.get("type", "string"),
            "format": c.get("format", ""),
            "description": c.get("description", ""),
            "priority": c.get("priority", 0),
        }
        for c in custom
    ]


def to_table(rt: ResourceType, version: str, items: list[Obj], resource_version: str) -> Obj:
    custom = rt.printer_columns.get(version) or []
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns_for(rt, version),
        "rows": [_row(obj, custom, datetime.now(UTC)) for obj in items],
    }


def _row(obj: Obj, custom: list[Obj], now: datetime) -> Obj:
    columns = custom or [{"jsonPath": ".metadata.creationTimestamp", "type": "date"}]
    cells: list[Any] = [obj["metadata"]["name"]]
    cells += [printer_value(c["jsonPath"], obj, c.get("type", "string"), now=now) for c in columns]
    return {
        "cells": cells,
        "object": {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj["metadata"],
        },
    }
