"""The Table format (``Accept: application/json;as=Table;g=meta.k8s.io;v=v1``) that kubectl asks
for: a custom resource's ``additionalPrinterColumns``; for Services, Deployments, StatefulSets and
Pods the columns kube-apiserver prints (``kubectl get svc`` shows ``PORT(S)`` as ``80/TCP``);
else Name and Age."""

from __future__ import annotations

from collections.abc import Callable
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


Cell = Callable[[Obj], Any]


def _ports(obj: Obj) -> str:
    ports = [
        f"{p.get('port')}{':' + str(p['nodePort']) if p.get('nodePort') else ''}"
        f"/{p.get('protocol', 'TCP')}"
        for p in (obj.get("spec") or {}).get("ports") or []
    ]
    return ",".join(ports) or "<none>"


def _external_ip(obj: Obj) -> str:
    if (obj.get("spec") or {}).get("type") != "LoadBalancer":
        return "<none>"
    ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return ",".join(i.get("ip") or i.get("hostname", "") for i in ingress) or "<pending>"


def _ready_replicas(obj: Obj) -> str:
    status = obj.get("status") or {}
    return f"{status.get('readyReplicas', 0)}/{(obj.get('spec') or {}).get('replicas', 1)}"


def _pod_ready(obj: Obj) -> str:
    statuses = (obj.get("status") or {}).get("containerStatuses") or []
    total = len((obj.get("spec") or {}).get("containers") or [])
    return f"{sum(1 for c in statuses if c.get('ready'))}/{total}"


def _pod_status(obj: Obj) -> str:
    """What kubectl's STATUS column shows: a waiting or terminated reason, else the phase."""
    status = obj.get("status") or {}
    if obj["metadata"].get("deletionTimestamp"):
        return "Terminating"
    for c in status.get("initContainerStatuses") or []:
        state = c.get("state") or {}
        waiting = (state.get("waiting") or {}).get("reason")
        terminated = state.get("terminated") or {}
        if waiting and waiting != "PodInitializing":
            return f"Init:{waiting}"
        if terminated and terminated.get("exitCode"):
            return f"Init:{terminated.get('reason') or 'Error'}"
    for c in status.get("containerStatuses") or []:
        state = c.get("state") or {}
        reason = (state.get("waiting") or {}).get("reason") or (state.get("terminated") or {}).get(
            "reason"
        )
        if reason:
            return str(reason)
    return str(status.get("reason") or status.get("phase") or "Pending")


def _job_status(obj: Obj) -> str:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed"):
            return str(condition["type"])
    return "Running"


def _completions(obj: Obj) -> str:
    succeeded = (obj.get("status") or {}).get("succeeded", 0)
    return f"{succeeded}/{(obj.get('spec') or {}).get('completions', 1)}"


def _restarts(obj: Obj) -> int:
    return sum(
        int(c.get("restartCount") or 0)
        for c in (obj.get("status") or {}).get("containerStatuses") or []
    )


_BUILTIN: dict[tuple[str, str], list[tuple[str, str, Cell]]] = {
    ("", "services"): [
        ("Type", "string", lambda o: (o.get("spec") or {}).get("type", "ClusterIP")),
        ("Cluster-IP", "string", lambda o: (o.get("spec") or {}).get("clusterIP") or "<none>"),
        ("External-IP", "string", _external_ip),
        ("Port(s)", "string", _ports),
    ],
    ("apps", "deployments"): [
        ("Ready", "string", _ready_replicas),
        ("Up-to-date", "integer", lambda o: (o.get("status") or {}).get("updatedReplicas", 0)),
        ("Available", "integer", lambda o: (o.get("status") or {}).get("availableReplicas", 0)),
    ],
    ("apps", "statefulsets"): [("Ready", "string", _ready_replicas)],
    ("batch", "jobs"): [("Status", "string", _job_status), ("Completions", "string", _completions)],
    ("", "pods"): [
        ("Ready", "string", _pod_ready),
        ("Status", "string", _pod_status),
        ("Restarts", "integer", _restarts),
    ],
}


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def columns_for(rt: ResourceType, version: str) -> list[Obj]:
    custom = rt.printer_columns.get(version) or []
    builtin = _BUILTIN.get(rt.key)
    if builtin is not None:
        return [
            _NAME,
            *(
                {"name": n, "type": t, "format": "", "description": "", "priority": 0}
                for n, t, _ in builtin
            ),
            _AGE,
        ]
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
        "rows": [_row(obj, rt, custom, datetime.now(UTC)) for obj in items],
    }


def _row(obj: Obj, rt: ResourceType, custom: list[Obj], now: datetime) -> Obj:
    age = {"jsonPath": ".metadata.creationTimestamp", "type": "date"}
    cells: list[Any] = [obj["metadata"]["name"]]
    builtin = _BUILTIN.get(rt.key)
    if builtin is not None:
        cells += [cell(obj) for _, _, cell in builtin]
        cells.append(printer_value(age["jsonPath"], obj, age["type"], now=now))
    else:
        columns = custom or [age]
        cells += [
            printer_value(c["jsonPath"], obj, c.get("type", "string"), now=now) for c in columns
        ]
    return {
        "cells": cells,
        "object": {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj["metadata"],
        },
    }
