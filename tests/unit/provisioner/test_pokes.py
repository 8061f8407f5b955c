"""Which workspaces a Node or NodeClaim change sends to the next pass, and the node cache."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from services.provisioner.service import Provisioner, ProvisionerOptions
from shared.labels import WORKSPACE_LABEL, WORKSPACE_NAMESPACE_LABEL


def provisioner() -> Provisioner:
    unused = cast("Any", None)  # the pokes touch neither the store, the bus nor the API
    return Provisioner(unused, unused, unused, lambda: datetime.now(UTC), ProvisionerOptions())


def obj(name: str, owner: tuple[str, str] | None = None) -> dict[str, Any]:
    labels = {WORKSPACE_NAMESPACE_LABEL: owner[0], WORKSPACE_LABEL: owner[1]} if owner else {}
    return {"metadata": {"name": name, "labels": labels}}


async def test_a_list_fills_the_cache_and_asks_for_a_full_pass() -> None:
    p = provisioner()
    p._full = False
    await p.on_node("LISTED", obj("n1"))
    assert p._nodes is None  # not until the list is done
    await p.on_node("SYNCED", {})
    assert p._nodes is not None
    assert set(p._nodes) == {"n1"}
    assert p._full


async def test_a_change_of_a_workspaces_node_or_claim_marks_only_that_workspace() -> None:
    p = provisioner()
    await p.on_node("SYNCED", {})
    p._full = False
    await p.on_node("ADDED", obj("n2", ("ns", "ws-1")))
    await p.on_claim("MODIFIED", obj("c1", ("ns", "ws-2")))
    assert p._keys == {("ns", "ws-1"), ("ns", "ws-2")}
    assert not p._full
    assert p._nodes is not None
    assert "n2" in p._nodes
    await p.on_node("DELETED", obj("n2", ("ns", "ws-1")))
    assert "n2" not in p._nodes


async def test_a_node_of_nobody_may_match_any_selector_so_every_workspace_is_looked_at() -> None:
    p = provisioner()
    await p.on_node("SYNCED", {})
    p._full = False
    await p.on_node("MODIFIED", obj("byo-node"))
    assert p._full
