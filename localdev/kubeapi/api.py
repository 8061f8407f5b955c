"""API semantics of the development cluster, independent of HTTP: create, read, update, patch
and delete with kube-apiserver's rules (resourceVersion conflicts, generation, the status
subresource, finalizers and deletionTimestamp, ownerReference garbage collection, namespaces,
CRD registration, schema validation with defaults, admission webhooks)."""

from __future__ import annotations

import builtins
import copy
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from localdev.kubeapi import patches, schema
from localdev.kubeapi.errors import ApiError, FieldError, invalid
from localdev.kubeapi.resources import (
    BUILTINS,
    CRD_TYPE,
    INITIAL_NAMESPACES,
    NAMESPACE_TYPE,
    ResourceType,
    resource_type_from_crd,
    validate_crd,
)
from localdev.kubeapi.selectors import (
    FieldSelector,
    LabelSelector,
    matches_fields,
    matches_labels,
)
from localdev.kubeapi.store import Key, Obj, Store


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    """A write about to be stored, for admission control to allow or deny."""

    rt: ResourceType
    version: str
    operation: str  # CREATE, UPDATE, DELETE
    obj: Obj | None
    old: Obj | None
    subresource: str | None
    dry_run: bool


# Raises ApiError to deny the write.
AdmissionHook = Callable[[AdmissionRequest], Awaitable[None]]

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    r"for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
SERVICE_KEY = ("", "services")
# Warnings for the current request (sent back as HTTP Warning headers).
WARNINGS: ContextVar[list[str]] = ContextVar("warnings")


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_about(obj: Obj, kind: str, reason: str, message: str, component: str) -> Obj:
    """A core/v1 Event about ``obj`` (a Pod unless it says otherwise), as a kubelet or the
    scheduler writes one."""
    meta = obj["metadata"]
    now = now_rfc3339()
    return {
        "metadata": {
            "name": f"{meta['name']}.{uuid.uuid4().hex[:16]}",
            "namespace": meta.get("namespace") or "default",
        },
        "involvedObject": {
            "apiVersion": obj.get("apiVersion", "v1"),
            "kind": obj.get("kind", "Pod"),
            "name": meta["name"],
            "namespace": meta.get("namespace", ""),
            "uid": meta.get("uid"),
        },
        "reason": reason,
        "message": message,
        "type": kind,
        "count": 1,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "source": {"component": component},
    }


class Api:
    """The cluster's API as method calls. The HTTP server and the simulated controllers both use
    it, so a controller's write follows exactly the rules a client's does."""

    def __init__(self, store: Store, clock: Callable[[], str] = now_rfc3339) -> None:
        self.store = store
        self.clock = clock
        self.types: dict[Key, ResourceType] = {rt.key: rt for rt in BUILTINS}
        self.admission: AdmissionHook | None = None

    async def bootstrap(self) -> None:
        """Create the initial namespaces, and register the CRDs already in the store."""
        for crd in self.store.list(CRD_TYPE.key):
            self._register_crd(crd)
        for name in INITIAL_NAMESPACES:
            if self.store.get(NAMESPACE_TYPE.key, "", name) is None:
                await self.create(NAMESPACE_TYPE, "v1", None, {"metadata": {"name": name}})

    # --- lookups ---------------------------------------------------------------------------

    def resolve(self, group: str, version: str, plural: str) -> ResourceType:
        rt = self.types.get((group, plural))
        if rt is None or version not in rt.versions:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return rt

    def by_group_version(self) -> dict[tuple[str, str], list[ResourceType]]:
        out: dict[tuple[str, str], list[ResourceType]] = {}
        for rt in self.types.values():
            for version in rt.versions:
                out.setdefault((rt.group, version), []).append(rt)
        return out

    # --- reads -----------------------------------------------------------------------------

    def get(self, rt: ResourceType, version: str, ns: str | None, name: str) -> Obj:
        obj = self.store.get(rt.key, ns or "", name)
        if obj is None:
            raise not_found(rt, name)
        return self._as_version(rt, version, obj)

    def list(
        self,
        rt: ResourceType,
        version: str,
        ns: str | None,
        labels: LabelSelector | None = None,
        fields: FieldSelector | None = None,
    ) -> tuple[list[Obj], int]:
        items = [
            self._as_version(rt, version, obj)
            for obj in self.store.list(
                rt.key, ns if rt.namespaced else None, lambda o: selected(o, labels, fields)
            )
        ]
        return items, self.store.rv

    def _as_version(self, rt: ResourceType, version: str, obj: Obj) -> Obj:
        """Objects are stored once; custom resources convert between versions by apiVersion
        alone (conversion strategy None), as kube-apiserver does without a webhook."""
        obj["apiVersion"] = rt.api_version(version)
        obj["kind"] = rt.kind
        return obj

    # --- create ----------------------------------------------------------------------------

    async def create(
        self,
        rt: ResourceType,
        version: str,
        ns: str | None,
        body: Obj,
        *,
        dry_run: bool = False,
        field_validation: str = "Strict",
    ) -> Obj:
        obj = self._check_body(rt, version, ns, body)
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(
                secrets.choice(_GENERATE_ALPHABET) for _ in range(5)
            )
        self._check_name(rt, meta.get("name"))
        if rt.namespaced and self.store.get(NAMESPACE_TYPE.key, "", meta["namespace"]) is None:
            raise ApiError(
                404,
                "NotFound",
                f'namespaces "{meta["namespace"]}" not found',
                {"name": meta["namespace"], "kind": "namespaces"},
            )
        if self.store.get(rt.key, meta.get("namespace") or "", meta["name"]) is not None:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{rt.qualified()} "{meta["name"]}" already exists',
                {"name": meta["name"], "group": rt.group, "kind": rt.plural},
            )
        for key in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(key, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=self.clock(), generation=1)
        if rt.key == SERVICE_KEY:
            self._allocate_cluster_ip(obj)
        if rt.status_subresource:
            obj.pop("status", None)
        obj = self._validated(rt, version, obj, None, field_validation)
        if rt.key == CRD_TYPE.key:
            obj = self._accept_crd(obj)
        if self.admission is not None:
            await self.admission(AdmissionRequest(rt, version, "CREATE", obj, None, None, dry_run))
        if dry_run:
            return obj
        stored = self.store.put(rt.key, obj, "ADDED")
        if rt.key == CRD_TYPE.key:
            self._register_crd(stored)
        return self._as_version(rt, version, stored)

    def _allocate_cluster_ip(self, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        if spec.get("type") == "ExternalName" or spec.get("clusterIP"):
            return
        used = {(s.get("spec") or {}).get("clusterIP") for s in self.store.scan(SERVICE_KEY)}
        ip = "10.96.0.1"
        while ip in used:  # the service CIDR 10.96.0.0/16, as kubeadm's default
            ip = f"10.96.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"
        spec["clusterIP"], spec["clusterIPs"] = ip, [ip]

    def _check_body(self, rt: ResourceType, version: str, ns: str | None, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of the request must be a JSON object")
        obj = copy.deepcopy(body)
        api_version = rt.api_version(version)
        if obj.get("kind", rt.kind) != rt.kind or obj.get("apiVersion", api_version) not in {
            rt.api_version(v) for v in rt.versions
        }:
            raise ApiError(
                400,
                "BadRequest",
                f"the API version in the data ({obj.get('apiVersion')}) does not match the "
                f"expected API version ({api_version})"
                if obj.get("kind", rt.kind) == rt.kind
                else f'{obj.get("kind")} in version "{version}" cannot be handled as a '
                f"{rt.kind}: kind mismatch",
            )
        obj["apiVersion"], obj["kind"] = api_version, rt.kind
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "BadRequest", "metadata must be an object")
        if rt.namespaced:
            if meta.get("namespace") and ns and meta["namespace"] != ns:
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request",
                )
            meta["namespace"] = ns or meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        return obj

    def _check_name(self, rt: ResourceType, name: Any) -> None:
        if not name:
            raise invalid(
                rt.kind,
                rt.group,
                "",
                [
                    FieldError(
                        "metadata.name",
                        "FieldValueRequired",
                        "Required value: name or generateName is required",
                    )
                ],
            )
        if not isinstance(name, str) or len(name) > 253 or not _SUBDOMAIN.match(name):  # noqa: PLR2004
            raise invalid(
                rt.kind,
                rt.group,
                str(name),
                [
                    FieldError(
                        "metadata.name",
                        "FieldValueInvalid",
                        f'Invalid value: "{name}": {_SUBDOMAIN_MESSAGE}',
                    )
                ],
            )

    def _validated(
        self, rt: ResourceType, version: str, obj: Obj, old: Obj | None, field_validation: str
    ) -> Obj:
        """Defaults, unknown-field handling and schema validation for custom resources."""
        if rt.key == CRD_TYPE.key:
            errors = validate_crd(obj)
            if errors:
                raise invalid(rt.kind, rt.group, obj["metadata"].get("name", ""), errors)
            return obj
        spec_schema = rt.schemas.get(version)
        if spec_schema is None:
            return obj
        metadata = obj["metadata"]
        pruned, unknown = schema.prune(spec_schema, obj)
        unknown = [u for u in unknown if u != "metadata" and not u.startswith("metadata.")]
        if unknown and field_validation == "Strict":
            listed = ", ".join(f'unknown field "{u}"' for u in unknown)
            raise ApiError(
                400,
                "BadRequest",
                f'{rt.kind} in version "{version}" cannot be handled as a {rt.kind}: '
                f"strict decoding error: {listed}",
            )
        if unknown and field_validation == "Warn":
            WARNINGS.get([]).extend(f'unknown field "{u}"' for u in unknown)
        defaulted = schema.apply_defaults(spec_schema, pruned)
        defaulted["metadata"] = metadata
        errors = schema.validate(spec_schema, defaulted, old)
        if errors:
            raise invalid(rt.kind, rt.group, metadata.get("name", ""), errors)
        return dict(defaulted)

    # --- update and patch -----------------------------------------------------------------

    async def update(
        self,
        rt: ResourceType,
        version: str,
        ns: str | None,
        name: str,
        body: Obj,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        field_validation: str = "Strict",
    ) -> Obj:
        old = self.store.get(rt.key, ns or "", name)
        if old is None:
            raise not_found(rt, name)
        obj = self._check_body(rt, version, ns, body)
        if obj["metadata"].get("name", name) != name:
            raise ApiError(
                400, "BadRequest", "the name of the object does not match the name on the URL"
            )
        expected = obj["metadata"].get("resourceVersion")
        if not expected and not rt.builtin and subresource is None:
            raise invalid(
                rt.kind,
                rt.group,
                name,
                [
                    FieldError(
                        "metadata.resourceVersion",
                        "FieldValueInvalid",
                        "Invalid value: 0x0: must be specified for an update",
                    )
                ],
            )
        if expected and expected != old["metadata"]["resourceVersion"]:
            raise conflict(rt, name)
        new = self._merge_update(rt, old, obj, subresource)
        if rt.key == SERVICE_KEY:  # a Service keeps its IP when an update leaves it out
            for key in ("clusterIP", "clusterIPs"):
                if key in (old.get("spec") or {}) and not (new.get("spec") or {}).get(key):
                    new.setdefault("spec", {})[key] = old["spec"][key]
        return await self._write(
            rt,
            version,
            old,
            new,
            subresource=subresource,
            dry_run=dry_run,
            field_validation=field_validation,
        )

    async def patch(
        self,
        rt: ResourceType,
        version: str,
        ns: str | None,
        name: str,
        *,
        content_type: str,
        body: Any,
        subresource: str | None = None,
        dry_run: bool = False,
        field_validation: str = "Strict",
    ) -> tuple[Obj, bool]:
        """Returns the object and whether it was created (server-side apply of a new name)."""
        old = self.store.get(rt.key, ns or "", name)
        if old is None:
            if content_type == "application/apply-patch+yaml" and subresource is None:
                created = await self.create(
                    rt, version, ns, body, dry_run=dry_run, field_validation=field_validation
                )
                return created, True
            raise not_found(rt, name)
        current = self._as_version(rt, version, copy.deepcopy(old))
        patched = apply_patch(rt, content_type, current, body)
        expected = (patched.get("metadata") or {}).get("resourceVersion")
        if expected and expected != old["metadata"]["resourceVersion"]:
            raise conflict(rt, name)
        obj = self._check_body(rt, version, ns, patched)
        new = self._merge_update(rt, old, obj, subresource)
        written = await self._write(
            rt,
            version,
            old,
            new,
            subresource=subresource,
            dry_run=dry_run,
            field_validation=field_validation,
        )
        return written, False

    def _merge_update(self, rt: ResourceType, old: Obj, obj: Obj, subresource: str | None) -> Obj:
        """The object to store: what the write may change, and nothing else."""
        if subresource == "status":
            new = copy.deepcopy(old)
            if "status" in obj:
                new["status"] = obj["status"]
            else:
                new.pop("status", None)
            return new
        new = obj
        meta, old_meta = new["metadata"], old["metadata"]
        for key in (
            "uid",
            "creationTimestamp",
            "namespace",
            "name",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        if rt.status_subresource:
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        if old_meta.get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if added:
                raise invalid(
                    rt.kind,
                    rt.group,
                    meta["name"],
                    [
                        FieldError(
                            "metadata.finalizers",
                            "FieldValueForbidden",
                            "Forbidden: no new finalizers can be added if the object is being "
                            "deleted, "
                            f"found new finalizers {sorted(added)}",
                        )
                    ],
                )
        if _spec_of(rt, new) != _spec_of(rt, old):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        return new

    async def _write(
        self,
        rt: ResourceType,
        version: str,
        old: Obj,
        new: Obj,
        *,
        subresource: str | None,
        dry_run: bool,
        field_validation: str,
    ) -> Obj:
        # A status write is pruned, defaulted and validated (schema and CEL rules) as the whole
        # object, like any other write (apiextensions' status strategy validates the object).
        new = self._validated(rt, version, new, old, field_validation)
        if subresource is None and rt.key == CRD_TYPE.key:
            new = self._accept_crd(new)
        if self.admission is not None:
            await self.admission(
                AdmissionRequest(rt, version, "UPDATE", new, old, subresource, dry_run)
            )
        if dry_run:
            return self._as_version(rt, version, new)
        meta = new["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            gone = self._remove(rt, meta.get("namespace") or "", meta["name"])
            return self._as_version(rt, version, gone or new)
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if _unchanged(new, old):
            return self._as_version(rt, version, old)
        stored = self.store.put(rt.key, new, "MODIFIED")
        if rt.key == CRD_TYPE.key:
            self._register_crd(stored)
        return self._as_version(rt, version, stored)

    # --- delete ----------------------------------------------------------------------------

    async def delete(
        self,
        rt: ResourceType,
        version: str,
        ns: str | None,
        name: str,
        options: Obj | None = None,
        *,
        dry_run: bool = False,
    ) -> Obj:
        old = self.store.get(rt.key, ns or "", name)
        if old is None:
            raise not_found(rt, name)
        options = options or {}
        pre = options.get("preconditions") or {}
        meta = old["metadata"]
        if pre.get("uid") and pre["uid"] != meta["uid"]:
            raise conflict(
                rt,
                name,
                f"Precondition failed: UID in precondition: {pre['uid']}, "
                f"UID in object meta: {meta['uid']}",
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
            raise conflict(rt, name)
        if self.admission is not None:
            await self.admission(AdmissionRequest(rt, version, "DELETE", None, old, None, dry_run))
        if dry_run:
            return self._as_version(rt, version, old)
        if options.get("propagationPolicy") == "Orphan":
            self._orphan(meta["uid"])
        if meta.get("finalizers"):
            if not meta.get("deletionTimestamp"):
                meta["deletionTimestamp"] = self.clock()
                meta["deletionGracePeriodSeconds"] = 0
                old = self.store.put(rt.key, old, "MODIFIED")
            return self._as_version(rt, version, old)
        gone = self._remove(rt, ns or "", name)
        return self._as_version(rt, version, gone or old)

    async def delete_collection(
        self,
        rt: ResourceType,
        version: str,
        ns: str | None,
        *,
        labels: LabelSelector | None,
        fields: FieldSelector | None,
        options: Obj | None = None,
    ) -> builtins.list[Obj]:
        items, _ = self.list(rt, version, ns, labels, fields)
        deleted: builtins.list[Obj] = []
        for obj in items:
            meta = obj["metadata"]
            try:
                deleted.append(
                    await self.delete(rt, version, meta.get("namespace"), meta["name"], options)
                )
            except ApiError as e:
                if e.code != 404:  # noqa: PLR2004 -- removed meanwhile by the garbage collector
                    raise
        return deleted

    def _remove(self, rt: ResourceType, ns: str, name: str) -> Obj | None:
        gone = self.store.remove(rt.key, ns, name)
        if gone is None:
            return None
        if rt.key == CRD_TYPE.key:
            self._unregister_crd(gone)
        if rt.key == NAMESPACE_TYPE.key:
            self._empty_namespace(name)
        self._collect_garbage(gone["metadata"]["uid"])
        return gone

    def _empty_namespace(self, namespace: str) -> None:
        for key, obj in list(self.store.all_objects()):
            meta = obj["metadata"]
            if meta.get("namespace") == namespace:
                self._remove(self.types[key], namespace, meta["name"])

    def _collect_garbage(self, owner_uid: str) -> None:
        """Delete objects whose owners are all gone; drop references to a gone owner from
        objects that still have another owner."""
        live = {obj["metadata"]["uid"] for _, obj in self.store.all_objects()}
        for key, obj in list(self.store.all_objects()):
            refs = obj["metadata"].get("ownerReferences") or []
            if not any(r.get("uid") == owner_uid for r in refs):
                continue
            rt = self.types.get(key)
            if rt is None:
                continue
            remaining = [r for r in refs if r.get("uid") in live]
            meta = copy.deepcopy(obj["metadata"])
            if remaining:
                updated = copy.deepcopy(obj)
                updated["metadata"]["ownerReferences"] = remaining
                self.store.put(key, updated, "MODIFIED")
            elif meta.get("finalizers"):
                if not meta.get("deletionTimestamp"):
                    updated = copy.deepcopy(obj)
                    updated["metadata"]["deletionTimestamp"] = self.clock()
                    self.store.put(key, updated, "MODIFIED")
            else:
                self._remove(rt, meta.get("namespace") or "", meta["name"])

    def _orphan(self, owner_uid: str) -> None:
        for key, obj in list(self.store.all_objects()):
            refs = obj["metadata"].get("ownerReferences") or []
            if any(r.get("uid") == owner_uid for r in refs):
                updated = copy.deepcopy(obj)
                updated["metadata"]["ownerReferences"] = [
                    r for r in refs if r.get("uid") != owner_uid
                ]
                self.store.put(key, updated, "MODIFIED")

    # --- CRDs ------------------------------------------------------------------------------

    def _accept_crd(self, crd: Obj) -> Obj:
        """What the apiextensions controller writes: accepted names and Established."""
        names = crd["spec"]["names"]
        now = self.clock()
        crd["status"] = {
            "acceptedNames": {k: v for k, v in names.items() if k != "listKind"}
            | {"listKind": names.get("listKind") or f"{names['kind']}List"},
            "storedVersions": [v["name"] for v in crd["spec"]["versions"] if v.get("storage")],
            "conditions": [
                {"type": t, "status": "True", "reason": r, "message": m, "lastTransitionTime": now}
                for t, r, m in (
                    ("NamesAccepted", "NoConflicts", "no conflicts found"),
                    ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
                )
            ],
        }
        return crd

    def _register_crd(self, crd: Obj) -> None:
        rt = resource_type_from_crd(crd)
        self.types[rt.key] = rt

    def _unregister_crd(self, crd: Obj) -> None:
        rt = resource_type_from_crd(crd)
        self.types.pop(rt.key, None)
        for obj in self.store.list(rt.key):
            self.store.remove(
                rt.key, obj["metadata"].get("namespace") or "", obj["metadata"]["name"]
            )


def apply_patch(rt: ResourceType, content_type: str, current: Obj, body: Any) -> Obj:
    """``current`` with ``body`` applied as ``content_type`` says."""
    if content_type == "application/merge-patch+json":
        result = patches.merge_patch(current, body)
    elif content_type == "application/json-patch+json":
        result = patches.json_patch(current, body)
    elif content_type == "application/strategic-merge-patch+json":
        if not rt.builtin:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types "
                "include: application/json-patch+json, application/merge-patch+json, "
                "application/apply-patch+yaml",
            )
        result = patches.strategic_merge_patch(current, body)
    elif content_type == "application/apply-patch+yaml":
        # Server-side apply, approximated as a merge (no field ownership tracking).
        result = patches.merge_patch(current, body)
    else:
        raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type {content_type!r}")
    if not isinstance(result, dict):
        raise ApiError(422, "Invalid", "the patch did not produce an object")
    return result


def selected(obj: Obj, labels: LabelSelector | None, fields: FieldSelector | None) -> bool:
    if labels is not None and not matches_labels(labels, obj["metadata"].get("labels")):
        return False
    return fields is None or matches_fields(fields, obj)


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{rt.qualified()} "{name}" not found',
        {"name": name, "group": rt.group, "kind": rt.plural},
    )


def conflict(rt: ResourceType, name: str, detail: str | None = None) -> ApiError:
    message = detail or (
        "the object has been modified; please apply your changes to the latest version and "
        "try again"
    )
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.qualified()} "{name}": {message}',
        {"name": name, "group": rt.group, "kind": rt.plural},
    )


def _spec_of(rt: ResourceType, obj: Obj) -> Obj:
    """Everything a write can change that counts for ``generation``."""
    skip = {"metadata", "apiVersion", "kind"} | ({"status"} if rt.status_subresource else set())
    return {k: v for k, v in obj.items() if k not in skip}


def _unchanged(new: Obj, old: Obj) -> bool:
    return new == old
