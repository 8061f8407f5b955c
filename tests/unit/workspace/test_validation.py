"""Admission rules as a pure function: the seeds pass, each invalid Workspace is denied with its
field path and message, and random documents never make the validator raise."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from presets.catalog import default_catalog
from shared.workspace.validation import ValidationContext, render, validate_workspace
from tests.unit.workspace.cases import CASES, SEEDS, Case, inference, seed, tuning

CTX = ValidationContext(catalog=default_catalog())


@pytest.mark.parametrize("name", sorted(p.name for p in SEEDS.glob("*.yaml")))
def test_every_seed_workspace_is_accepted_unchanged(name: str) -> None:
    assert validate_workspace(seed(name), None, CTX) == []


def test_there_is_a_case_for_at_least_forty_rules() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_an_invalid_workspace_is_denied_with_its_field_path_and_message(case: Case) -> None:
    problems = validate_workspace(case.make(), case.old() if case.old else None, CTX)
    matching = [p for p in problems if p.field == case.field and case.message in p.message]
    assert matching, f"expected {case.field!r}: {case.message!r}, got {render(problems)!r}"


def test_bypass_annotation_skips_the_gpu_fit_checks() -> None:
    doc = inference()
    doc["inference"]["preset"]["name"] = "phi-3-medium-4k-instruct"
    assert validate_workspace(doc, None, CTX)
    doc["metadata"]["annotations"] = {"kaito.sh/bypass-resource-checks": "true"}
    assert validate_workspace(doc, None, CTX) == []


def test_unknown_azure_n_series_sizes_are_accepted_without_gpu_checks() -> None:
    doc = inference()
    doc["resource"]["instanceType"] = "Standard_NC8as_T4_v9000"
    assert validate_workspace(doc, None, CTX) == []


def test_byo_mode_refuses_an_instance_type() -> None:
    ctx = ValidationContext(catalog=default_catalog(), node_auto_provisioning=False)
    problems = validate_workspace(inference(), None, ctx)
    assert [p.field for p in problems] == ["resource.instanceType"]
    assert "must be empty when node auto-provisioning is disabled" in problems[0].message


def test_an_unchanged_update_is_accepted() -> None:
    assert validate_workspace(tuning(), tuning(), CTX) == []


def test_several_problems_are_all_reported() -> None:
    doc = tuning()
    doc["tuning"]["method"] = "dora"
    doc["tuning"]["output"].pop("imagePushSecret")
    doc["resource"]["count"] = 3
    fields = {p.field for p in validate_workspace(doc, None, CTX)}
    assert {"tuning.method", "tuning.output.imagePushSecret", "resource.count"} <= fields


def test_type_errors_become_field_problems() -> None:
    doc = inference()
    doc["resource"]["count"] = "two"
    doc["spec"] = {}
    problems = validate_workspace(doc, None, CTX)
    assert {p.field for p in problems} == {"resource.count", "spec"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
paths = st.sampled_from(
    [
        (),
        ("resource",),
        ("resource", "count"),
        ("resource", "instanceType"),
        ("resource", "labelSelector"),
        ("inference",),
        ("inference", "preset"),
        ("inference", "preset", "name"),
        ("inference", "adapters"),
        ("tuning",),
        ("tuning", "input"),
        ("tuning", "input", "urls"),
        ("tuning", "output"),
        ("metadata",),
        ("metadata", "annotations"),
        ("tuning", "method"),
    ]
)


def _mutate(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> Any:
    if not path:
        return value
    node: Any = doc
    for part in path[:-1]:
        if not isinstance(node, dict):
            return doc
        node = node.setdefault(part, {})
    if isinstance(node, dict):
        node[path[-1]] = value
    return doc


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from([inference, tuning]), path=paths, value=json_values)
def test_mutated_workspaces_get_accept_or_field_level_denials_never_an_exception(
    base: Any, path: tuple[str, ...], value: Any
) -> None:
    doc = _mutate(copy.deepcopy(base()), path, value)
    problems = validate_workspace(doc if isinstance(doc, dict) else {"x": doc}, None, CTX)
    assert all(isinstance(p.field, str) and p.message for p in problems)


@settings(max_examples=200)
@given(
    doc=st.dictionaries(st.text(max_size=10), json_values, max_size=6),
    old=st.none() | st.dictionaries(st.text(max_size=10), json_values, max_size=3),
)
def test_random_documents_never_make_the_validator_raise(
    doc: dict[str, Any], old: dict[str, Any] | None
) -> None:
    problems = validate_workspace(doc, old, CTX)
    assert all(isinstance(p.field, str) and p.message for p in problems)
