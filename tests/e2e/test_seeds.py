"""The seed Workspaces, unchanged, on the whole local stack: every service its own process, the
development cluster `kaiten cluster --simulate`, kubectl from the wheel. Each seed is applied into
a namespace of its own (two pairs share a name), reaches WorkspaceSucceeded, shows Kaito's
columns, and deleting it leaves nothing of it behind.

The seeds run one after the other, each deleted before the next: two of them (the tuning seeds
of phi-3-mini) select the same node labels and instance type, and Workspaces alive together with
the same selection can be given one node (the provisioner's node selection, reported)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support.stack import Stack, running_stack, table_row, wait_until

HERE = Path(__file__).resolve()
SEED_DIR = HERE.parents[1] / "fixtures" / "seeds"
# The seeds as the project received them, beside the repository when it is checked out there.
ORIGINALS = HERE.parents[3] / "shared" / "seeds" / "workspaces"
SEED_FILES = sorted(SEED_DIR.glob("*.yaml"))
WORKSPACE_LABEL = "kaito.sh/workspace"
NAMESPACE_LABEL = "kaito.sh/workspacenamespace"
NAMESPACED_KINDS = "deployments,statefulsets,services,configmaps,jobs,pods"


@dataclass(frozen=True)
class Seed:
    path: Path
    name: str
    tuning: bool

    @property
    def namespace(self) -> str:
        return self.path.stem

    @classmethod
    def load(cls, path: Path) -> Seed:
        doc = yaml.safe_load(path.read_text())
        return cls(path, doc["metadata"]["name"], "tuning" in doc)


def test_the_seed_copies_are_the_seeds_byte_for_byte() -> None:
    assert len(SEED_FILES) == 5, SEED_FILES
    if ORIGINALS.is_dir():  # a clean clone alone has only the copies
        originals = sorted(ORIGINALS.glob("*.yaml"))
        assert [p.name for p in originals] == [p.name for p in SEED_FILES]
        for original, copy in zip(originals, SEED_FILES, strict=True):
            assert original.read_bytes() == copy.read_bytes(), copy.name


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, bundled_nats_url: str, postgres_server_url: str
) -> Iterator[Stack]:
    with running_stack(
        tmp_path_factory.mktemp("seeds"), bundled_nats_url, postgres_server_url
    ) as running:
        yield running


def leftovers(stack: Stack, seed: Seed) -> list[str]:
    """Every object labelled as ``seed``'s: its workloads, pods, Services and ConfigMaps in its
    namespace, and its NodeClaims and nodes (cluster-wide, labelled with the namespace too)."""
    selector = f"{WORKSPACE_LABEL}={seed.name}"
    own = stack.kubectl(
        "get", NAMESPACED_KINDS, "-n", seed.namespace, "-l", selector, "-o", "name"
    ).stdout.split()
    nodes = stack.kubectl(
        "get",
        "nodeclaims,nodes",
        "-l",
        f"{selector},{NAMESPACE_LABEL}={seed.namespace}",
        "-o",
        "name",
    ).stdout.split()
    return own + nodes


@pytest.mark.parametrize("path", SEED_FILES, ids=[p.stem for p in SEED_FILES])
def test_a_seed_succeeds_shows_kaitos_columns_and_deletes_without_a_trace(
    stack: Stack, path: Path
) -> None:
    seed = Seed.load(path)
    ns = ("-n", seed.namespace)
    workspace = f"workspace/{seed.name}"
    stack.namespace(seed.namespace)
    applied = stack.kubectl("apply", *ns, "-f", str(seed.path)).stdout
    assert applied.strip() == f"workspace.kaito.sh/{seed.name} created"
    stack.kubectl(
        "wait", "--for=condition=WorkspaceSucceeded", workspace, *ns, "--timeout=60s", timeout=70
    )

    row = table_row(stack.kubectl("get", "workspace", *ns).stdout, seed.name)
    assert row["INSTANCE"] == "Standard_NC6s_v3"
    assert (row["RESOURCEREADY"], row["WORKSPACEREADY"]) == ("True", "True")
    if seed.tuning:
        assert (row["JOBSTARTED"], row["INFERENCEREADY"]) == ("True", "")
    else:
        assert (row["INFERENCEREADY"], row["JOBSTARTED"]) == ("True", "")
        service = table_row(stack.kubectl("get", "svc", *ns).stdout, seed.name)
        assert service["PORT(S)"] == "80/TCP,29500/TCP"
        assert service["TYPE"] == "ClusterIP"
    made = leftovers(stack, seed)
    workload = "job.batch" if seed.tuning else "deployment.apps"
    assert f"{workload}/{seed.name}" in made, made
    assert any(m.startswith("nodeclaim.karpenter.sh/") for m in made), made
    assert any(m.startswith("node/") for m in made), made

    stack.kubectl("delete", workspace, *ns, "--wait", "--timeout=60s", timeout=70)
    gone = stack.kubectl("get", workspace, *ns, check=False)
    assert gone.returncode != 0
    assert "NotFound" in gone.stderr
    wait_until(
        lambda: not leftovers(stack, seed), timeout=20, what=f"every object of {seed.name} gone"
    )
