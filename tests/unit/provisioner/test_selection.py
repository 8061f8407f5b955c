"""Which existing nodes a workspace uses and in what order (reference 2.1 steps b-c, 2.4)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from services.provisioner.nodes import Ready, Target, assess, matches, select_nodes
from tests.unit.provisioner.objects import A100, REF, V100, node, provisioned, target


def chosen(
    nodes: Sequence[Mapping[str, Any]], tgt: Target, previous: Sequence[str] = ()
) -> list[str]:
    return [str(n["metadata"]["name"]) for n in select_nodes(nodes, tgt, previous)]


def test_order_is_preferred_then_workers_then_provisioned_then_name() -> None:
    nodes = [
        node("zeta-user"),
        node("alpha-user"),
        provisioned("mid-claimed"),
        node("machine-typed", labels={"kaito.sh/machine-type": "gpu"}),
        node("worker-b"),
        node("worker-a"),
        node("pref-y"),
        node("pref-x"),
    ]
    tgt = target(node_count=8, preferred=("pref-y", "pref-x"))
    expected = [
        "pref-x",
        "pref-y",
        "worker-a",
        "worker-b",
        "machine-typed",
        "mid-claimed",
        "alpha-user",
        "zeta-user",
    ]

    orderings = [nodes, nodes[::-1], sorted(nodes, key=lambda n: n["metadata"]["name"])]
    orderings.append(nodes[3:] + nodes[:3])
    for listed in orderings:  # the order does not depend on the order the API lists nodes in
        assert chosen(listed, tgt, previous=("worker-b", "worker-a")) == expected


def test_a_previous_worker_beats_a_provisioned_node_and_a_preferred_beats_both() -> None:
    nodes = [provisioned("a-claimed"), node("b-worker"), node("c-preferred")]

    assert chosen(nodes, target(node_count=1), previous=("b-worker",)) == ["b-worker"]
    assert chosen(nodes, target(node_count=1, preferred=("c-preferred",)), ("b-worker",)) == [
        "c-preferred"
    ]
    assert chosen(nodes, target(node_count=1)) == ["a-claimed"]


def test_at_most_node_count_nodes_are_selected() -> None:
    nodes = [node(f"gpu-{i}") for i in range(5)]

    assert chosen(nodes, target(node_count=2)) == ["gpu-0", "gpu-1"]
    assert chosen(nodes, target(node_count=7)) == [f"gpu-{i}" for i in range(5)]


PHI = {"apps": "phi"}


@pytest.mark.parametrize(
    ("candidate", "why"),
    [
        (node("n", ready="False", labels=PHI), "Ready=False"),
        (node("n", ready="Unknown", labels=PHI), "Ready=Unknown"),
        (node("n", ready=None, labels=PHI), "no Ready condition"),
        (node("n", deleting=True, labels=PHI), "deleting"),
        (node("n", labels={"apps": "other"}), "selector label with another value"),
        (node("n"), "selector label missing"),
        (node("n", instance_type=A100, labels=PHI), "another instance type"),
        (node("n", instance_type=None, labels=PHI), "no instance-type label"),
    ],
)
def test_a_node_that_does_not_qualify_is_never_selected(
    candidate: dict[str, Any], why: str
) -> None:
    tgt = target(node_count=1, labels=PHI)

    assert not matches(candidate, tgt), why
    assert chosen([candidate], tgt) == [], why


def test_a_qualifying_node_is_selected_with_extra_labels() -> None:
    tgt = target(labels={"apps": "phi"})
    good = node("n", labels={"apps": "phi", "team": "a"})

    assert matches(good, tgt)
    assert chosen([good], tgt) == ["n"]


@pytest.mark.parametrize("label", ["standard_nc6s_v3", "STANDARD_NC6S_V3", V100])
def test_the_instance_type_compares_case_insensitively(label: str) -> None:
    assert chosen([node("n", instance_type=label)], target(instance_type=V100)) == ["n"]


def test_a_preferred_node_of_another_instance_type_is_selected() -> None:
    nodes = [node("other", instance_type=A100), node("same")]

    assert chosen(nodes, target(node_count=2, preferred=("other",))) == ["other", "same"]
    assert chosen(nodes, target(node_count=2)) == ["same"]


@pytest.mark.parametrize(
    "candidate",
    [
        node("not-ready", instance_type=A100, ready="False", labels={"apps": "phi"}),
        node("deleting", instance_type=A100, deleting=True, labels={"apps": "phi"}),
        node("unlabelled", instance_type=A100),
    ],
)
def test_a_preferred_node_still_has_to_be_ready_and_match_the_selector(
    candidate: dict[str, Any],
) -> None:
    name = str(candidate["metadata"]["name"])
    tgt = target(labels={"apps": "phi"}, preferred=(name,))

    assert chosen([candidate], tgt) == []


def test_without_an_instance_type_the_selector_alone_decides() -> None:
    """Bring-your-own nodes: any instance type, only the labels and readiness count."""
    nodes = [
        node("cpu-box", instance_type="Standard_D4s_v5", labels={"apps": "phi"}),
        node("no-type", instance_type=None, labels={"apps": "phi"}),
        node("gpu-box", instance_type=A100, labels={"apps": "other"}),
        node("broken", instance_type=A100, labels={"apps": "phi"}, ready="False"),
    ]
    tgt = target(instance_type=None, node_count=3, labels={"apps": "phi"})

    assert chosen(nodes, tgt) == ["cpu-box", "no-type"]


def test_assess_reports_the_selected_nodes_in_order_and_creates_nothing_when_they_suffice() -> None:
    """Scenario 2: matching Ready nodes exist, so no NodeClaim is created."""
    nodes = [node("user-b"), node("user-a"), node("user-c", instance_type=A100)]
    tgt = target(node_count=2, preferred=("user-c",))

    result = assess(tgt, nodes, [], previous=(), provision=True, cloud="azure")

    assert result.selected == ("user-c", "user-a")
    assert result.create == ()
    assert result.outcome == Ready(("user-c", "user-a"))


def made_for(ref_namespace: str, ref_name: str, name: str) -> dict[str, Any]:
    return provisioned(name) | {
        "metadata": {
            "name": name,
            "labels": {
                **provisioned(name)["metadata"]["labels"],
                "kaito.sh/workspace": ref_name,
                "kaito.sh/workspacenamespace": ref_namespace,
            },
        }
    }


def test_a_node_made_for_another_workspace_is_never_taken() -> None:
    """Two Workspaces with the same selector (the seeds' phi-3 pair in two namespaces): each
    keeps the node made for it, even where the other's sorts first by name."""
    other = made_for("team-b", REF.name, "aaa-other")
    mine = made_for(REF.namespace, REF.name, "zzz-mine")
    assert chosen([other, mine], target()) == ["zzz-mine"]
    assert chosen([other], target()) == []
    assert not matches(other, target())
    # Even as a stale worker of this workspace, another's node is dropped.
    assert chosen([other, mine], target(), previous=["aaa-other"]) == ["zzz-mine"]


def test_the_workspaces_own_node_ranks_before_other_free_nodes() -> None:
    mine = made_for(REF.namespace, REF.name, "zzz-mine")
    assert chosen([provisioned("aaa-free"), mine], target()) == ["zzz-mine"]
