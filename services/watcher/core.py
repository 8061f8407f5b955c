"""The watcher's pure decisions: spec hash, revisions, condition merging, state, patches and Events.

No I/O and no clock: the I/O shell reads objects, passes ``now`` and applies what these return.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.errors import PermanentError
from shared.events import Condition, WorkspaceRef
from shared.labels import HASH_ANNOTATION, REVISION_ANNOTATION, REVISION_NAME_LABEL

Obj = dict[str, Any]

FINALIZER = "workspace.finalizer.kaito.sh"
MAX_REVISIONS = 10

WORKSPACE_API_VERSION = "kaito.sh/v1beta1"
WORKSPACE_KIND = "Workspace"
SPEC_SECTIONS = ("resource", "inference", "tuning")
EVENT_MESSAGE_LIMIT = 1024

SUCCEEDED = "WorkspaceSucceeded"
JOB_STARTED = "JobStarted"


class RevisionConflictError(PermanentError):
    """A ControllerRevision named ``<ws>-<hash[:5]>`` exists but records a different hash."""

    def __init__(self, message: str) -> None:
        super().__init__("RevisionNameConflict", message)


# --- hash and identity -------------------------------------------------------------------------


def spec_hash(workspace: Mapping[str, Any]) -> str:
    """Kaito's hash: sha256 over resource, inference and tuning, each JSON-encoded on its own
    (compact, keys sorted, missing as ``null``) and newline-terminated, in that order."""
    hasher = hashlib.sha256()
    for section in SPEC_SECTIONS:
        encoded = json.dumps(
            workspace.get(section), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        hasher.update(encoded.encode() + b"\n")
    return hasher.hexdigest()


def _metadata(workspace: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = workspace.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def is_deleting(workspace: Mapping[str, Any]) -> bool:
    return bool(_metadata(workspace).get("deletionTimestamp"))


def generation_of(workspace: Mapping[str, Any]) -> int:
    return int(_metadata(workspace).get("generation") or 0)


def is_tuning(workspace: Mapping[str, Any]) -> bool:
    return workspace.get("tuning") is not None


def workspace_ref(workspace: Mapping[str, Any]) -> WorkspaceRef:
    meta = _metadata(workspace)
    return WorkspaceRef(
        uid=str(meta.get("uid", "")),
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        generation=generation_of(workspace),
    )


# --- conditions and state ----------------------------------------------------------------------


def _condition_obj(reported: Condition, last_transition_time: str) -> Obj:
    return {
        "type": reported.type,
        "status": reported.status,
        "observedGeneration": reported.observed_generation,
        "lastTransitionTime": last_transition_time,
        "reason": reported.reason,
        "message": reported.message,
    }


def merge_condition(
    conditions: Sequence[Mapping[str, Any]], reported: Condition, now: str
) -> list[Obj] | None:
    """``meta.SetStatusCondition`` with a generation guard: the new list, or ``None`` when the
    report changes nothing or comes from an older generation than the condition it would replace.
    """
    merged = [dict(c) for c in conditions]
    index = next((i for i, c in enumerate(merged) if c.get("type") == reported.type), None)
    if index is None:
        return [*merged, _condition_obj(reported, now)]
    current = merged[index]
    if int(current.get("observedGeneration") or 0) > reported.observed_generation:
        return None
    if current.get("status") != reported.status:
        merged[index] = _condition_obj(reported, now)
        return merged
    unchanged = (
        current.get("reason") == reported.reason
        and current.get("message") == reported.message
        and current.get("observedGeneration") == reported.observed_generation
    )
    if unchanged:
        return None
    merged[index] = _condition_obj(reported, str(current.get("lastTransitionTime") or now))
    return merged


def merge_conditions(
    conditions: Sequence[Mapping[str, Any]], reported: Sequence[Condition], now: str
) -> list[Obj] | None:
    """Apply a burst of reports in order; ``None`` when the result equals ``conditions``."""
    original = [dict(c) for c in conditions]
    merged = original
    for condition in reported:
        merged = merge_condition(merged, condition, now) or merged
    return None if merged == original else merged


def _find(conditions: Sequence[Mapping[str, Any]], type_: str) -> Mapping[str, Any]:
    return next((c for c in conditions if c.get("type") == type_), {})


def workspace_state(
    conditions: Sequence[Mapping[str, Any]], *, tuning: bool, previous: str | None
) -> str:
    """``status.state`` as current Kaito derives it from the conditions."""
    succeeded = _find(conditions, SUCCEEDED)
    if succeeded.get("status") == "True":
        return "Succeeded" if tuning else "Ready"
    if not tuning:
        return "NotReady" if previous in {"Ready", "NotReady"} else "Pending"
    job = _find(conditions, JOB_STARTED)
    failed = (
        succeeded.get("status") == "False" and succeeded.get("reason") == "workspaceFailed"
    ) or (job.get("status") == "False" and job.get("reason") == "WorkspaceTuningJobStatusFailed")
    if failed:
        return "Failed"
    return "Running" if job.get("status") == "True" else "Pending"


# --- revisions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RevisionPlan:
    create: Obj | None
    delete: tuple[str, ...]
    revision: int


def _owner_reference(workspace: Mapping[str, Any]) -> Obj:
    meta = _metadata(workspace)
    return {
        "apiVersion": WORKSPACE_API_VERSION,
        "kind": WORKSPACE_KIND,
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _revision_manifest(workspace: Mapping[str, Any], name: str, hash_: str, revision: int) -> Obj:
    ws_name = _metadata(workspace).get("name")
    return {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": name,
            "namespace": _metadata(workspace).get("namespace"),
            "labels": {REVISION_NAME_LABEL: ws_name},
            "annotations": {HASH_ANNOTATION: hash_},
            "ownerReferences": [_owner_reference(workspace)],
        },
        "data": {k: workspace[k] for k in SPEC_SECTIONS if k in workspace},
        "revision": revision,
    }


def _revision_number(revision: Mapping[str, Any]) -> int:
    return int(revision.get("revision") or 0)


def plan_revision(
    workspace: Mapping[str, Any], existing: Sequence[Mapping[str, Any]], hash_: str
) -> RevisionPlan:
    """Kaito's ControllerRevision bookkeeping for ``hash_``: reuse the revision already recording
    it, or create the next one and prune the oldest so at most ``MAX_REVISIONS`` remain.

    Raises ``RevisionConflictError`` when the name is taken by a revision of another hash.
    """
    name = f"{_metadata(workspace).get('name')}-{hash_[:5]}"
    for revision in existing:
        if _metadata(revision).get("name") != name:
            continue
        if _metadata(revision).get("annotations", {}).get(HASH_ANNOTATION) != hash_:
            raise RevisionConflictError(f"revision name {name} conflicts")
        return RevisionPlan(create=None, delete=(), revision=_revision_number(revision))
    number = max((_revision_number(r) for r in existing), default=0) + 1
    oldest_first = sorted(existing, key=lambda r: (_revision_number(r), _metadata(r).get("name")))
    excess = max(0, len(existing) + 1 - MAX_REVISIONS)
    return RevisionPlan(
        create=_revision_manifest(workspace, name, hash_, number),
        delete=tuple(str(_metadata(r).get("name")) for r in oldest_first[:excess]),
        revision=number,
    )


# --- patches -----------------------------------------------------------------------------------


def _pointer(*tokens: str) -> str:
    return "".join("/" + t.replace("~", "~0").replace("/", "~1") for t in tokens)


def _resource_version_test(workspace: Mapping[str, Any]) -> list[Obj]:
    """The guard op; left out only for an object without a resourceVersion (never served so)."""
    rv = _metadata(workspace).get("resourceVersion")
    if rv is None:
        return []
    return [{"op": "test", "path": "/metadata/resourceVersion", "value": rv}]


def _finalizer_ops(workspace: Mapping[str, Any]) -> list[Obj]:
    finalizers = _metadata(workspace).get("finalizers")
    if finalizers and FINALIZER in finalizers:
        return []
    if is_deleting(workspace):  # the API server refuses new finalizers on a deleting object
        return []
    if not finalizers:
        return [{"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}]
    return [{"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER}]


def _annotation_ops(workspace: Mapping[str, Any], wanted: Mapping[str, str]) -> list[Obj]:
    annotations = _metadata(workspace).get("annotations")
    if not annotations:
        return [{"op": "add", "path": "/metadata/annotations", "value": dict(wanted)}]
    ops: list[Obj] = []
    for key, value in wanted.items():
        if annotations.get(key) == value:
            continue
        op = "replace" if key in annotations else "add"
        ops.append({"op": op, "path": _pointer("metadata", "annotations", key), "value": value})
    return ops


def bookkeeping_current(workspace: Mapping[str, Any], hash_: str) -> bool:
    """The finalizer is there and the annotations already record ``hash_`` with a revision: a
    status change, which needs no revision lookup."""
    annotations = _metadata(workspace).get("annotations") or {}
    return (
        annotations.get(HASH_ANNOTATION) == hash_
        and bool(annotations.get(REVISION_ANNOTATION))
        and not _finalizer_ops(workspace)
    )


def bookkeeping_patch(workspace: Mapping[str, Any], hash_: str, revision: int) -> list[Obj] | None:
    """A JSON Patch adding the finalizer (unless the object is already being deleted) and setting
    the hash and revision annotations, guarded by a test of resourceVersion; ``None`` if current.
    """
    wanted = {HASH_ANNOTATION: hash_, REVISION_ANNOTATION: str(revision)}
    ops = _finalizer_ops(workspace) + _annotation_ops(workspace, wanted)
    return _resource_version_test(workspace) + ops if ops else None


def without_finalizer_patch(workspace: Mapping[str, Any]) -> list[Obj] | None:
    """A JSON Patch removing every copy of ``FINALIZER``, guarded by resourceVersion."""
    finalizers = _metadata(workspace).get("finalizers") or []
    indices = [i for i, f in enumerate(finalizers) if f == FINALIZER]
    if not indices:
        return None
    removes: list[Obj] = [
        {"op": "remove", "path": _pointer("metadata", "finalizers", str(i))}
        for i in reversed(indices)
    ]
    return _resource_version_test(workspace) + removes


# --- Events ------------------------------------------------------------------------------------


def event_for(  # noqa: PLR0917 - the shell calls it positionally
    workspace: Mapping[str, Any],
    reason: str,
    message: str,
    kind: str,
    now: str,
    component: str = "kaiten-watcher",
) -> Obj:
    """A core/v1 Event about the workspace, as ``kubectl describe workspace`` lists it. The
    message is cut to 1024 characters, the limit the API server allows an Event note."""
    meta = _metadata(workspace)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name')}.", "namespace": meta.get("namespace")},
        "involvedObject": {
            "apiVersion": WORKSPACE_API_VERSION,
            "kind": WORKSPACE_KIND,
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
        },
        "reason": reason,
        "message": message[:EVENT_MESSAGE_LIMIT],
        "type": kind,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "source": {"component": component},
    }


def transition_events(
    before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]]
) -> list[tuple[str, str, str]]:
    """``(kind, reason, message)`` of the Events a status change calls for: one per condition
    that is new or changed status, ``Normal`` for True and ``Warning`` for False (Unknown: none).
    """
    previous = {c.get("type"): c.get("status") for c in before}
    events: list[tuple[str, str, str]] = []
    for condition in after:
        status = condition.get("status")
        if status not in {"True", "False"} or previous.get(condition.get("type")) == status:
            continue
        kind = "Normal" if status == "True" else "Warning"
        message = f"{condition.get('type')}: {condition.get('message', '')}"
        events.append((kind, str(condition.get("reason", "")), message))
    return events
