"""The watcher's pure decisions: spec hash, condition merging, state, revisions, bookkeeping
patches and Events."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from localdev.kubeapi.errors import ApiError
from localdev.kubeapi.patches import json_patch
from services.watcher.core import (
    FINALIZER,
    MAX_REVISIONS,
    Obj,
    RevisionConflictError,
    RevisionPlan,
    bookkeeping_patch,
    event_for,
    generation_of,
    is_deleting,
    is_tuning,
    merge_condition,
    merge_conditions,
    plan_revision,
    spec_hash,
    transition_events,
    without_finalizer_patch,
    workspace_ref,
    workspace_state,
)
from shared.events import Condition, WorkspaceRef
from shared.labels import HASH_ANNOTATION, REVISION_ANNOTATION, REVISION_NAME_LABEL

NOW = "2026-11-21T12:00:00Z"
EARLIER = "2026-11-20T08:00:00Z"
HASH = "abcde" + "0" * 59
OTHER_HASH = "fffff" + "1" * 59


def cond(
    type_: str, status: str, reason: str = "R", message: str = "m", gen: int = 1, ltt: str = EARLIER
) -> Obj:
    return {
        "type": type_,
        "status": status,
        "observedGeneration": gen,
        "lastTransitionTime": ltt,
        "reason": reason,
        "message": message,
    }


def report(
    type_: str, status: str, reason: str = "R", message: str = "m", gen: int = 1
) -> Condition:
    return Condition(
        type=type_, status=status, reason=reason, message=message, observed_generation=gen
    )


def workspace(**metadata: Any) -> Obj:
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {
            "name": "ws",
            "namespace": "team",
            "uid": "uid-1",
            "generation": 2,
            "resourceVersion": "41",
            **metadata,
        },
        "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {}},
        "inference": {"preset": {"name": "phi-4"}},
    }


# --- spec_hash ---------------------------------------------------------------------------------


def test_spec_hash_is_sha256_of_each_section_encoded_compact_sorted_and_newline_terminated() -> (
    None
):
    doc = {"inference": {"preset": {"name": "p"}}, "resource": {"count": 1, "b": [1, "x"]}}
    expected = hashlib.sha256(
        b'{"b":[1,"x"],"count":1}\n{"preset":{"name":"p"}}\nnull\n'
    ).hexdigest()
    assert spec_hash(doc) == expected


def test_spec_hash_does_not_depend_on_key_order() -> None:
    doc = workspace()
    reordered = {k: doc[k] for k in reversed(list(doc))}
    reordered["resource"] = {k: doc["resource"][k] for k in reversed(list(doc["resource"]))}
    assert spec_hash(reordered) == spec_hash(doc)


def _set(path: tuple[str, ...], value: Any) -> Callable[[Obj], None]:
    def apply(doc: Obj) -> None:
        target = doc
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = value

    return apply


HASH_CHANGES = [
    ("instance type changed", _set(("resource", "instanceType"), "Standard_NC6s_v3"), True),
    ("node count added", _set(("resource", "count"), 2), True),
    ("preset changed", _set(("inference", "preset", "name"), "phi-3"), True),
    ("tuning section added", _set(("tuning",), {"method": "lora"}), True),
    ("generation bumped", _set(("metadata", "generation"), 3), False),
    ("annotation added", _set(("metadata", "annotations"), {HASH_ANNOTATION: "x"}), False),
    ("status written", _set(("status",), {"state": "Ready"}), False),
]


@pytest.mark.parametrize(
    ("change", "changes_hash"),
    [(c, h) for _, c, h in HASH_CHANGES],
    ids=[i for i, _, _ in HASH_CHANGES],
)
def test_spec_hash_changes_with_the_spec_and_only_with_the_spec(
    change: Callable[[Obj], None], changes_hash: bool
) -> None:
    doc = workspace()
    changed = copy.deepcopy(doc)
    change(changed)
    assert (spec_hash(changed) != spec_hash(doc)) is changes_hash


# --- merge_condition ---------------------------------------------------------------------------

MERGE_CASES: list[tuple[str, list[Obj], Condition, list[Obj] | None]] = [
    (
        "a condition of a new type is appended at now",
        [cond("A", "True")],
        report("B", "False", "Pending", "wait", gen=2),
        [cond("A", "True"), cond("B", "False", "Pending", "wait", gen=2, ltt=NOW)],
    ),
    (
        "the first condition is appended to an empty list",
        [],
        report("A", "Unknown"),
        [cond("A", "Unknown", ltt=NOW)],
    ),
    (
        "a report from an older generation is ignored",
        [cond("A", "True", gen=3)],
        report("A", "False", "Failed", gen=2),
        None,
    ),
    (
        "a status change replaces the condition in place at now",
        [cond("A", "True"), cond("B", "True"), cond("C", "True")],
        report("B", "False", "Broken", "oops", gen=1),
        [cond("A", "True"), cond("B", "False", "Broken", "oops", ltt=NOW), cond("C", "True")],
    ),
    (
        "the same status keeps lastTransitionTime and updates the reason and message",
        [cond("A", "False", "Pending", "1 of 2")],
        report("A", "False", "Pending", "2 of 3"),
        [cond("A", "False", "Pending", "2 of 3")],
    ),
    (
        "the same status at a newer generation keeps lastTransitionTime",
        [cond("A", "True", gen=1)],
        report("A", "True", gen=2),
        [cond("A", "True", gen=2)],
    ),
    (
        "an identical report changes nothing",
        [cond("A", "True", gen=2), cond("B", "False")],
        report("A", "True", gen=2),
        None,
    ),
    (
        "a condition without lastTransitionTime gets now when only its message changes",
        [{"type": "A", "status": "True", "reason": "R", "message": "m", "observedGeneration": 1}],
        report("A", "True", message="new"),
        [cond("A", "True", message="new", ltt=NOW)],
    ),
]


@pytest.mark.parametrize(
    ("existing", "reported", "expected"),
    [c[1:] for c in MERGE_CASES],
    ids=[c[0] for c in MERGE_CASES],
)
def test_merge_condition_follows_metav1_rules(
    existing: list[Obj], reported: Condition, expected: list[Obj] | None
) -> None:
    before = copy.deepcopy(existing)
    assert merge_condition(existing, reported, NOW) == expected
    assert existing == before


condition_types = st.sampled_from(["A", "B", "ResourceReady"])
reports = st.builds(
    report,
    condition_types,
    st.sampled_from(["True", "False", "Unknown"]),
    st.sampled_from(["R", "Other"]),
    st.text(max_size=10),
    st.integers(min_value=0, max_value=4),
)
existing_lists = st.lists(
    st.builds(
        cond,
        condition_types,
        st.sampled_from(["True", "False", "Unknown"]),
        gen=st.integers(min_value=0, max_value=4),
    ),
    max_size=4,
    unique_by=lambda c: c["type"],
)


@given(existing=existing_lists, reported=reports)
def test_applying_the_same_report_twice_changes_nothing_the_second_time(
    existing: list[Obj], reported: Condition
) -> None:
    once = merge_condition(existing, reported, NOW)
    assert merge_condition(once if once is not None else existing, reported, NOW) is None


@given(existing=existing_lists, reported=reports)
def test_merging_keeps_the_order_and_the_other_conditions(
    existing: list[Obj], reported: Condition
) -> None:
    merged = merge_condition(existing, reported, NOW)
    if merged is None:
        return
    assert [c["type"] for c in merged[: len(existing)]] == [c["type"] for c in existing]
    assert [c for c in merged if c["type"] != reported.type] == [
        c for c in existing if c["type"] != reported.type
    ]


BURST_CASES: list[tuple[str, list[Obj], list[Condition], list[Obj] | None]] = [
    (
        "reports of several types are all applied in order",
        [cond("A", "False")],
        [report("B", "True"), report("A", "True"), report("C", "False")],
        [cond("A", "True", ltt=NOW), cond("B", "True", ltt=NOW), cond("C", "False", ltt=NOW)],
    ),
    (
        "a later report of the same type wins",
        [],
        [report("A", "False", message="first"), report("A", "False", message="second")],
        [cond("A", "False", message="second", ltt=NOW)],
    ),
    (
        "a burst of identical reports changes nothing",
        [cond("A", "True")],
        [report("A", "True"), report("A", "True")],
        None,
    ),
    (
        "an empty burst changes nothing",
        [cond("A", "True")],
        [],
        None,
    ),
    (
        "an older-generation report inside a burst is skipped",
        [cond("A", "True", gen=2)],
        [report("A", "False", gen=1), report("B", "True", gen=2)],
        [cond("A", "True", gen=2), cond("B", "True", gen=2, ltt=NOW)],
    ),
    (
        "a status that flips and flips back still records the transition",
        [cond("A", "True")],
        [report("A", "False"), report("A", "True")],
        [cond("A", "True", ltt=NOW)],
    ),
]


@pytest.mark.parametrize(
    ("existing", "burst", "expected"),
    [c[1:] for c in BURST_CASES],
    ids=[c[0] for c in BURST_CASES],
)
def test_merge_conditions_applies_a_burst(
    existing: list[Obj], burst: list[Condition], expected: list[Obj] | None
) -> None:
    assert merge_conditions(existing, burst, NOW) == expected


# --- workspace_state ---------------------------------------------------------------------------

SUCCEEDED_TRUE = cond("WorkspaceSucceeded", "True", "workspaceSucceeded")
PENDING = cond("WorkspaceSucceeded", "False", "workspacePending")
FAILED = cond("WorkspaceSucceeded", "False", "workspaceFailed")
JOB_TRUE = cond("JobStarted", "True", "WorkspaceTuningJobStatusStarted")
JOB_PENDING = cond("JobStarted", "False", "WorkspaceTuningJobStatusPending")
JOB_FAILED = cond("JobStarted", "False", "WorkspaceTuningJobStatusFailed")

STATE_CASES: list[tuple[str, list[Obj], bool, str | None, str]] = [
    ("inference that succeeded is Ready", [SUCCEEDED_TRUE], False, None, "Ready"),
    ("inference that was Ready and stopped is NotReady", [PENDING], False, "Ready", "NotReady"),
    ("inference that stays not ready is NotReady", [PENDING], False, "NotReady", "NotReady"),
    ("inference never ready before is Pending", [PENDING], False, None, "Pending"),
    ("inference that was Pending stays Pending", [PENDING], False, "Pending", "Pending"),
    ("inference without conditions is Pending", [], False, None, "Pending"),
    ("tuning that succeeded is Succeeded", [JOB_TRUE, SUCCEEDED_TRUE], True, None, "Succeeded"),
    ("tuning whose workspace failed is Failed", [JOB_TRUE, FAILED], True, "Running", "Failed"),
    ("tuning whose job failed is Failed", [JOB_FAILED, PENDING], True, "Running", "Failed"),
    ("tuning whose job started is Running", [JOB_TRUE, PENDING], True, "Pending", "Running"),
    ("tuning whose job is pending is Pending", [JOB_PENDING, PENDING], True, None, "Pending"),
    ("tuning without conditions is Pending", [], True, "Ready", "Pending"),
]


@pytest.mark.parametrize(
    ("conditions", "tuning", "previous", "expected"),
    [c[1:] for c in STATE_CASES],
    ids=[c[0] for c in STATE_CASES],
)
def test_workspace_state_follows_current_kaito(
    conditions: list[Obj], tuning: bool, previous: str | None, expected: str
) -> None:
    assert workspace_state(conditions, tuning=tuning, previous=previous) == expected


# --- plan_revision -----------------------------------------------------------------------------


def revision(number: int, hash_: str | None = None, name: str | None = None) -> Obj:
    hash_ = hash_ or f"{number:05x}" + "9" * 59
    return {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": name or f"ws-{hash_[:5]}",
            "namespace": "team",
            "labels": {REVISION_NAME_LABEL: "ws"},
            "annotations": {HASH_ANNOTATION: hash_},
        },
        "revision": number,
    }


def test_the_first_revision_is_created_with_kaitos_name_labels_owner_and_data() -> None:
    doc = workspace()
    assert plan_revision(doc, [], HASH) == RevisionPlan(
        create={
            "apiVersion": "apps/v1",
            "kind": "ControllerRevision",
            "metadata": {
                "name": "ws-abcde",
                "namespace": "team",
                "labels": {REVISION_NAME_LABEL: "ws"},
                "annotations": {HASH_ANNOTATION: HASH},
                "ownerReferences": [
                    {
                        "apiVersion": "kaito.sh/v1beta1",
                        "kind": "Workspace",
                        "name": "ws",
                        "uid": "uid-1",
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "data": {"resource": doc["resource"], "inference": doc["inference"]},
            "revision": 1,
        },
        delete=(),
        revision=1,
    )


REVISION_CASES: list[tuple[str, list[Obj], int, int | None, tuple[str, ...]]] = [
    (
        "the next revision is the highest plus one",
        [revision(5), revision(1), revision(2)],
        6,
        6,
        (),
    ),
    ("a revision recording the hash is reused", [revision(1), revision(2, HASH)], 2, None, ()),
    (
        "an older revision recording the hash is reused",
        [revision(3, HASH), revision(4)],
        3,
        None,
        (),
    ),
    ("nine revisions leave room for a tenth", [revision(n) for n in range(1, 10)], 10, 10, ()),
    (
        "creating the eleventh deletes the oldest",
        [revision(n) for n in (7, 3, 10, 1, 5, 2, 9, 4, 8, 6)],
        11,
        11,
        ("ws-00001",),
    ),
    (
        "an overfull history is pruned down to ten after the create",
        [revision(n) for n in range(12, 0, -1)],
        13,
        13,
        ("ws-00001", "ws-00002", "ws-00003"),
    ),
    (
        "a revision without a number counts as the oldest",
        [{**revision(1), "revision": None}, *(revision(n) for n in range(2, 11))],
        11,
        11,
        ("ws-00001",),
    ),
]


@pytest.mark.parametrize(
    ("existing", "number", "created", "deleted"),
    [c[1:] for c in REVISION_CASES],
    ids=[c[0] for c in REVISION_CASES],
)
def test_plan_revision_numbers_reuses_and_prunes(
    existing: list[Obj], number: int, created: int | None, deleted: tuple[str, ...]
) -> None:
    plan = plan_revision(workspace(), existing, HASH)
    assert plan.revision == number
    assert plan.delete == deleted
    if created is None:
        assert plan.create is None
    else:
        assert plan.create is not None
        assert plan.create["revision"] == created
        assert plan.create["metadata"]["name"] == "ws-abcde"
    assert len(existing) + (plan.create is not None) - len(plan.delete) <= max(
        MAX_REVISIONS, len(existing)
    )


def test_a_revision_name_taken_by_another_hash_is_a_conflict() -> None:
    existing = [revision(1), revision(2, "abcde" + "2" * 59)]
    with pytest.raises(RevisionConflictError, match="revision name ws-abcde conflicts"):
        plan_revision(workspace(), existing, HASH)


def test_revision_data_holds_only_the_sections_present() -> None:
    doc = workspace()
    del doc["inference"]
    doc["tuning"] = {"method": "qlora"}
    plan = plan_revision(doc, [], HASH)
    assert plan.create is not None
    assert plan.create["data"] == {"resource": doc["resource"], "tuning": {"method": "qlora"}}


# --- bookkeeping_patch -------------------------------------------------------------------------

RV_TEST = {"op": "test", "path": "/metadata/resourceVersion", "value": "41"}
HASH_PATH = "/metadata/annotations/workspace.kaito.io~1hash"
REVISION_PATH = "/metadata/annotations/workspace.kaito.io~1revision"
CURRENT = {HASH_ANNOTATION: HASH, REVISION_ANNOTATION: "3"}

BOOKKEEPING_CASES: list[tuple[str, Obj, list[Obj] | None]] = [
    (
        "a fresh object gets the finalizer and both annotations",
        workspace(),
        [
            RV_TEST,
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
            {"op": "add", "path": "/metadata/annotations", "value": CURRENT},
        ],
    ),
    (
        "a finalized object with current annotations needs nothing",
        workspace(finalizers=["other", FINALIZER], annotations={**CURRENT, "x": "y"}),
        None,
    ),
    (
        "stale annotations are replaced",
        workspace(
            finalizers=[FINALIZER],
            annotations={HASH_ANNOTATION: OTHER_HASH, REVISION_ANNOTATION: "2"},
        ),
        [
            RV_TEST,
            {"op": "replace", "path": HASH_PATH, "value": HASH},
            {"op": "replace", "path": REVISION_PATH, "value": "3"},
        ],
    ),
    (
        "only the stale revision is replaced",
        workspace(finalizers=[FINALIZER], annotations={**CURRENT, REVISION_ANNOTATION: "2"}),
        [RV_TEST, {"op": "replace", "path": REVISION_PATH, "value": "3"}],
    ),
    (
        "missing annotation keys are added next to foreign ones",
        workspace(finalizers=["other"], annotations={"kaito.sh/runtime": "vllm"}),
        [
            RV_TEST,
            {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER},
            {"op": "add", "path": HASH_PATH, "value": HASH},
            {"op": "add", "path": REVISION_PATH, "value": "3"},
        ],
    ),
    (
        "a deleting object gets no new finalizer",
        workspace(deletionTimestamp=NOW, finalizers=["other"]),
        [RV_TEST, {"op": "add", "path": "/metadata/annotations", "value": CURRENT}],
    ),
]


@pytest.mark.parametrize(
    ("doc", "expected"),
    [c[1:] for c in BOOKKEEPING_CASES],
    ids=[c[0] for c in BOOKKEEPING_CASES],
)
def test_bookkeeping_patch_has_exactly_the_needed_ops(doc: Obj, expected: list[Obj] | None) -> None:
    assert bookkeeping_patch(doc, HASH, 3) == expected


@pytest.mark.parametrize(
    "doc", [c[1] for c in BOOKKEEPING_CASES], ids=[c[0] for c in BOOKKEEPING_CASES]
)
def test_bookkeeping_patch_applies_and_leaves_nothing_to_do(doc: Obj) -> None:
    patched = json_patch(doc, bookkeeping_patch(doc, HASH, 3))
    meta = patched["metadata"]
    assert meta["annotations"][HASH_ANNOTATION] == HASH
    assert meta["annotations"][REVISION_ANNOTATION] == "3"
    assert (FINALIZER in meta.get("finalizers", [])) is not is_deleting(doc)
    assert bookkeeping_patch(patched, HASH, 3) is None
    assert {k: v for k, v in patched.items() if k != "metadata"} == {
        k: v for k, v in doc.items() if k != "metadata"
    }


def test_bookkeeping_patch_fails_when_the_object_changed_meanwhile() -> None:
    ops = bookkeeping_patch(workspace(), HASH, 3)
    with pytest.raises(ApiError) as raised:
        json_patch(workspace(resourceVersion="42"), ops)
    assert raised.value.code == 422


REMOVE_CASES: list[tuple[str, Obj, list[Obj] | None]] = [
    (
        "the finalizer is removed by its index",
        workspace(finalizers=["other", FINALIZER]),
        [RV_TEST, {"op": "remove", "path": "/metadata/finalizers/1"}],
    ),
    (
        "duplicates are removed from the last one back",
        workspace(finalizers=[FINALIZER, "other", FINALIZER]),
        [
            RV_TEST,
            {"op": "remove", "path": "/metadata/finalizers/2"},
            {"op": "remove", "path": "/metadata/finalizers/0"},
        ],
    ),
    ("an object without the finalizer needs nothing", workspace(finalizers=["other"]), None),
    ("an object without finalizers needs nothing", workspace(), None),
]


@pytest.mark.parametrize(
    ("doc", "expected"), [c[1:] for c in REMOVE_CASES], ids=[c[0] for c in REMOVE_CASES]
)
def test_without_finalizer_patch_removes_only_kaitos_finalizer(
    doc: Obj, expected: list[Obj] | None
) -> None:
    ops = without_finalizer_patch(doc)
    assert ops == expected
    if ops is not None:
        assert json_patch(doc, ops)["metadata"]["finalizers"] == ["other"]


# --- identity helpers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "deleting", "tuning", "generation"),
    [
        (workspace(), False, False, 2),
        (workspace(deletionTimestamp=NOW), True, False, 2),
        ({**workspace(), "tuning": {"method": "lora"}}, False, True, 2),
        ({"metadata": {"name": "ws"}}, False, False, 0),
    ],
    ids=["a plain inference workspace", "a deleting one", "a tuning one", "one without generation"],
)
def test_identity_helpers_read_the_object(
    doc: Obj, deleting: bool, tuning: bool, generation: int
) -> None:
    assert is_deleting(doc) is deleting
    assert is_tuning(doc) is tuning
    assert generation_of(doc) == generation


def test_workspace_ref_names_the_object_at_its_generation() -> None:
    ref = workspace_ref(workspace())
    assert ref == WorkspaceRef(uid="uid-1", namespace="team", name="ws", generation=2)


# --- Events ------------------------------------------------------------------------------------


def test_event_for_builds_a_core_v1_event_about_the_workspace() -> None:
    assert event_for(workspace(), "NodesReady", "2 nodes ready", "Normal", NOW) == {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": "ws.", "namespace": "team"},
        "involvedObject": {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "Workspace",
            "name": "ws",
            "namespace": "team",
            "uid": "uid-1",
        },
        "reason": "NodesReady",
        "message": "2 nodes ready",
        "type": "Normal",
        "firstTimestamp": NOW,
        "lastTimestamp": NOW,
        "count": 1,
        "source": {"component": "kaiten-watcher"},
    }


def test_event_for_cuts_a_long_message_and_names_the_component() -> None:
    event = event_for(workspace(), "Failed", "x" * 5000, "Warning", NOW, component="other")
    assert len(event["message"]) == 1024
    assert event["source"] == {"component": "other"}


TRANSITION_CASES: list[tuple[str, list[Obj], list[Obj], list[tuple[str, str, str]]]] = [
    (
        "a new True condition is a Normal event",
        [],
        [cond("NodesReady", "True", "NodesReady", "2 of 2")],
        [("Normal", "NodesReady", "NodesReady: 2 of 2")],
    ),
    (
        "a status change to False is a Warning event",
        [cond("InferenceReady", "True")],
        [cond("InferenceReady", "False", "ContainerOOMKilled", "oom")],
        [("Warning", "ContainerOOMKilled", "InferenceReady: oom")],
    ),
    (
        "an Unknown status is not an event",
        [cond("A", "True")],
        [cond("A", "Unknown"), cond("B", "Unknown")],
        [],
    ),
    (
        "a message change under the same status is not an event",
        [cond("A", "False", message="1 of 2")],
        [cond("A", "False", message="2 of 2")],
        [],
    ),
    (
        "several changes give events in condition order",
        [cond("A", "False"), cond("B", "True")],
        [cond("A", "True", "Up", "up"), cond("B", "True"), cond("C", "False", "Down", "down")],
        [("Normal", "Up", "A: up"), ("Warning", "Down", "C: down")],
    ),
]


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [c[1:] for c in TRANSITION_CASES],
    ids=[c[0] for c in TRANSITION_CASES],
)
def test_transition_events_report_new_and_changed_statuses(
    before: list[Obj], after: list[Obj], expected: list[tuple[str, str, str]]
) -> None:
    assert transition_events(before, after) == expected
