"""What kinds of objects the development cluster serves: the built-ins it preloads and the custom
resources a CustomResourceDefinition registers. Pure data; storage and HTTP live elsewhere."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from localdev.kubeapi.errors import FieldError

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ResourceType:
    """One REST resource (a plural under a group), served at one or more versions."""

    group: str
    versions: tuple[str, ...]
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = False
    builtin: bool = True
    # per version: openAPIV3Schema and additionalPrinterColumns (custom resources only)
    schemas: dict[str, Obj] = field(default_factory=dict, compare=False, hash=False)
    printer_columns: dict[str, list[Obj]] = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def storage_version(self) -> str:
        return self.versions[0]

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version

    def qualified(self) -> str:
        """``workspaces.kaito.sh`` / ``pods``: how error messages name the resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def kind_qualified(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind


def _builtin(
    group: str,
    version: str,
    kind: str,
    plural: str,
    *,
    namespaced: bool = True,
    short: tuple[str, ...] = (),
    status: bool = False,
    categories: tuple[str, ...] = (),
) -> ResourceType:
    return ResourceType(
        group=group,
        versions=(version,),
        kind=kind,
        plural=plural,
        singular=kind.lower(),
        namespaced=namespaced,
        short_names=short,
        status_subresource=status,
        categories=categories,
    )


BUILTINS: tuple[ResourceType, ...] = (
    _builtin("", "v1", "Namespace", "namespaces", namespaced=False, short=("ns",), status=True),
    _builtin("", "v1", "Node", "nodes", namespaced=False, short=("no",), status=True),
    _builtin("", "v1", "Pod", "pods", short=("po",), status=True, categories=("all",)),
    _builtin("", "v1", "Service", "services", short=("svc",), status=True, categories=("all",)),
    _builtin("", "v1", "ConfigMap", "configmaps", short=("cm",)),
    _builtin("", "v1", "Secret", "secrets"),
    _builtin("", "v1", "ServiceAccount", "serviceaccounts", short=("sa",)),
    _builtin(
        "", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", short=("pvc",), status=True
    ),
    _builtin("", "v1", "Event", "events", short=("ev",)),
    _builtin("", "v1", "Endpoints", "endpoints", short=("ep",)),
    _builtin(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        short=("deploy",),
        status=True,
        categories=("all",),
    ),
    _builtin(
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        short=("sts",),
        status=True,
        categories=("all",),
    ),
    _builtin(
        "apps", "v1", "ReplicaSet", "replicasets", short=("rs",), status=True, categories=("all",)
    ),
    _builtin(
        "apps", "v1", "DaemonSet", "daemonsets", short=("ds",), status=True, categories=("all",)
    ),
    _builtin("apps", "v1", "ControllerRevision", "controllerrevisions"),
    _builtin("batch", "v1", "Job", "jobs", status=True, categories=("all",)),
    _builtin("coordination.k8s.io", "v1", "Lease", "leases"),
    _builtin("events.k8s.io", "v1", "Event", "events", short=("ev",)),
    _builtin(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        namespaced=False,
        short=("crd", "crds"),
        status=True,
    ),
    _builtin(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        namespaced=False,
    ),
)

CRD_TYPE = next(r for r in BUILTINS if r.plural == "customresourcedefinitions")
NAMESPACE_TYPE = next(r for r in BUILTINS if r.plural == "namespaces")
INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def resource_type_from_crd(crd: Obj) -> ResourceType:
    """The resource a CRD defines, from its served versions (storage version first)."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    versions = [v for v in spec.get("versions") or [] if v.get("served", True)]
    versions.sort(key=lambda v: not v.get("storage", False))
    schemas: dict[str, Obj] = {}
    columns: dict[str, list[Obj]] = {}
    for v in versions:
        schema = (v.get("schema") or {}).get("openAPIV3Schema")
        if schema:
            schemas[v["name"]] = schema
        columns[v["name"]] = list(v.get("additionalPrinterColumns") or [])
    return ResourceType(
        group=spec["group"],
        versions=tuple(v["name"] for v in versions),
        kind=names["kind"],
        plural=names["plural"],
        singular=names.get("singular") or names["kind"].lower(),
        namespaced=spec.get("scope", "Namespaced") == "Namespaced",
        short_names=tuple(names.get("shortNames") or ()),
        categories=tuple(names.get("categories") or ()),
        status_subresource=any("status" in (v.get("subresources") or {}) for v in versions),
        builtin=False,
        schemas=schemas,
        printer_columns=columns,
    )


def validate_crd(crd: Obj) -> list[FieldError]:
    """The checks kube-apiserver makes before it accepts a CRD that this emulator relies on."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    required = [f"spec.{k}" for k in ("group", "names", "scope", "versions") if not spec.get(k)]
    if spec.get("names") is not None:
        required += [f"spec.names.{k}" for k in ("plural", "kind") if not names.get(k)]
    errors = [FieldError(path, "FieldValueRequired", "Required value") for path in required]
    if names.get("plural") and spec.get("group"):
        expected = f"{names['plural']}.{spec['group']}"
        name = (crd.get("metadata") or {}).get("name")
        if name != expected:
            errors.append(
                FieldError(
                    "metadata.name",
                    "FieldValueInvalid",
                    f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group',
                )
            )
    versions = spec.get("versions") or []
    if versions and sum(1 for v in versions if v.get("storage")) != 1:
        errors.append(
            FieldError(
                "spec.versions",
                "FieldValueInvalid",
                "Invalid value: must have exactly one version marked as storage version",
            )
        )
    return errors
