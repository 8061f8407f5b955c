"""API faults (issue 14, item 3): every Workspace ends in the right state, with the right
condition, while the Kubernetes API and ARM misbehave.

1. The whole local stack (every service its own process) while the development cluster answers
   bursts of 500, 429 (Retry-After) and 409, cuts every watch and answers the resumption 410 Gone.
   The emulator's fault control is not scoped: a burst fails the next N resource requests of any
   client, method and path (reads, lists, watches and writes alike), so the bursts are fired while
   the services are writing (NodeClaims, Deployments, Workspace status) and what fired is counted
   from the control's own count of what is left. Once the faults stop, every Workspace succeeds
   with one NodeClaim each and one Deployment per inference Workspace.
2. The provisioner's Azure backend against the fake ARM, several Workspaces at once, each with a
   fault of its own: 429 with Retry-After and 5xx bursts (retried, ready, the wait honoured),
   a long-running operation that ends Failed, and a QuotaExceeded refusal of the PUT. One fault
   at a time is covered in ``tests/kubeapi/test_provisioner_azure.py`` (throttling, a failed LRO,
   QuotaExceeded as a failed LRO); here they happen together and QuotaExceeded is the PUT's own
   answer, as AKS gives it when the quota check runs before the operation starts.

Both record the faults injected per kind (``record_property`` and the captured output)."""

from __future__ import annotations

import asyncio
import functools
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client as aclient
from kubernetes_asyncio import config as aconfig
from prometheus_client import CollectorRegistry

from localdev.kubeapi.cluster import DevCluster
from services.provisioner.crd import nodeclaim_crd
from services.provisioner.nodes import nodeclaim_name
from shared.bus import Bus
from shared.events import EventType, WorkspaceRef
from shared.plan import NodeSelection
from shared.settings import Settings
from tests.kubeapi.test_provisioner_azure import Env, aks_node_joins, start_replica
from tests.reliability.fault_support import FaultControl, RecordingArm, cluster_url, fault_table
from tests.support.polling import eventually
from tests.support.provisioner import forget_other_tests
from tests.support.seeds import seed_copies
from tests.support.stack import Stack, running_stack

SEEDS = Path(__file__).resolve().parents[1] / "fixtures" / "seeds"
INFERENCE_SEED = SEEDS / "inference-phi-3-mini.yaml"
TUNING_SEED = SEEDS / "tuning-phi-3.yaml"
WORKSPACE_LABEL = "kaito.sh/workspace"
NAMESPACE = "api-faults"
INFERENCE_COUNT = 10
RETRY_AFTER_S = 1


# --- 1. Kubernetes API faults on the whole stack ------------------------------------------------


def tuning_workspace() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(TUNING_SEED.read_text())
    doc["metadata"]["namespace"] = NAMESPACE
    return doc


def listing(stack: Stack, kind: str, *where: str) -> list[dict[str, Any]]:
    out = stack.kubectl("get", kind, *where, "-o", "json").stdout
    return list(json.loads(out)["items"])


def conditions_of(item: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (item.get("status") or {}).get("conditions") or []}


def owners(stack: Stack, kind: str, *where: str) -> Counter[str]:
    """How many objects of ``kind`` each Workspace owns (by its label)."""
    items = listing(stack, kind, *where, "-l", WORKSPACE_LABEL)
    return Counter(i["metadata"]["labels"][WORKSPACE_LABEL] for i in items)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, bundled_nats_url: str, postgres_server_url: str
) -> Iterator[Stack]:
    with running_stack(
        tmp_path_factory.mktemp("api-faults"), bundled_nats_url, postgres_server_url
    ) as running:
        yield running


def fault_round(faults: FaultControl) -> None:
    """One round of every Kubernetes fault, each left to fire before the next."""
    faults.burst(500, 8)
    faults.wait_consumed(1.5)
    faults.burst(429, 4, retry_after=RETRY_AFTER_S)
    faults.wait_consumed(2.0)
    faults.burst(409, 8)
    faults.wait_consumed(1.5)
    faults.cut_watches(gone=True)
    faults.wait_consumed(1.5)


def test_workspaces_converge_through_kubernetes_500_429_409_cut_watches_and_410(
    stack: Stack, record_property: Any
) -> None:
    stack.namespace(NAMESPACE)
    inference = seed_copies(NAMESPACE, INFERENCE_COUNT, prefix="faults-phi-3", seed=INFERENCE_SEED)
    tuning = tuning_workspace()
    faults = FaultControl(cluster_url(stack.kubeconfig))
    started = time.monotonic()

    # Faults fire only while no kubectl of this test talks to the cluster: they are meant for
    # the services, and a burst takes whichever requests come next.
    stack.apply(*inference[:6], tuning)
    fault_round(faults)
    faults.clear()
    stack.apply(*inference[6:])
    fault_round(faults)
    fault_round(faults)
    faults.wait_consumed(2.0)
    faults.clear()

    names = {d["metadata"]["name"] for d in inference}
    everyone = names | {tuning["metadata"]["name"]}

    def all_succeeded() -> bool:
        items = listing(stack, "workspaces", "-n", NAMESPACE)
        done = {
            i["metadata"]["name"]
            for i in items
            if conditions_of(i).get("WorkspaceSucceeded", {}).get("status") == "True"
        }
        return done == everyone

    deadline = time.monotonic() + 60
    while not all_succeeded():
        if time.monotonic() > deadline:
            items = listing(stack, "workspaces", "-n", NAMESPACE)
            summary = {
                i["metadata"]["name"]: {t: c["status"] for t, c in conditions_of(i).items()}
                for i in items
            }
            stuck = sorted(n for n, c in summary.items() if c.get("WorkspaceSucceeded") != "True")
            why = "\n".join(
                stack.kaiten("why", f"{NAMESPACE}/{n}", check=False).stdout for n in stuck[:3]
            )
            pytest.fail(f"not every Workspace succeeded within 60 s: {summary}\n{why}")
        time.sleep(0.5)
    converge_s = time.monotonic() - started

    final = {i["metadata"]["name"]: i for i in listing(stack, "workspaces", "-n", NAMESPACE)}
    assert set(final) == everyone, "a Workspace was lost"
    for name in names:
        conditions = conditions_of(final[name])
        for kind in ("WorkspaceSucceeded", "InferenceReady", "ResourceReady"):
            assert conditions[kind]["status"] == "True", (name, kind, conditions[kind])
    tuning_conditions = conditions_of(final[tuning["metadata"]["name"]])
    for kind in ("WorkspaceSucceeded", "JobStarted", "ResourceReady"):
        assert tuning_conditions[kind]["status"] == "True", (kind, tuning_conditions[kind])

    # Nothing created twice: one NodeClaim per Workspace, one Deployment per inference one.
    claims = owners(stack, "nodeclaims")
    deployments = owners(stack, "deployments", "-n", NAMESPACE)
    assert {n: claims[n] for n in everyone} == dict.fromkeys(everyone, 1), claims
    assert {n: deployments[n] for n in names} == dict.fromkeys(names, 1), deployments
    assert deployments[tuning["metadata"]["name"]] == 0
    assert len(listing(stack, "jobs", "-n", NAMESPACE, "-l", WORKSPACE_LABEL)) == 1

    rows = {k: (faults.configured[k], faults.fired[k]) for k in faults.configured}
    # The first burst of each round always fires (the services are busy after an apply), and
    # every round cuts the open watches of five services.
    assert faults.fired["500"] > 0, rows
    assert faults.fired["watch-cut"] >= 5, rows
    table = fault_table({f"kubernetes {k}": v for k, v in rows.items()})
    print(f"\n{table}\nconverged {converge_s:.1f} s after the first apply")
    for kind, (configured, fired) in rows.items():
        record_property(f"k8s_{kind}_configured", configured)
        record_property(f"k8s_{kind}_fired", fired)
    record_property("k8s_converge_s", round(converge_s, 1))
    record_property("workspaces", len(everyone))


# --- 2. ARM faults, several Workspaces at once ---------------------------------------------------


@dataclass
class Armed:
    """The fake ARM with the provisioner's replicas in front of it."""

    env: Env
    arm: RecordingArm


@pytest.fixture
async def armed(settings: Settings, tmp_path: Path) -> AsyncIterator[Armed]:
    """As ``tests/kubeapi/test_provisioner_azure.py``'s ``env``: a development cluster, the fake
    ARM playing AKS (a created pool's node joins), two provisioner replicas (Azure backend)."""
    async with AsyncExitStack() as stack:
        cluster = DevCluster(bookmark_interval=0.2)
        await cluster.start()
        stack.push_async_callback(cluster.stop)
        kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig")
        kube: Any = await aconfig.new_client_from_config(config_file=str(kubeconfig))
        stack.push_async_callback(kube.close)
        crd: Any = nodeclaim_crd()  # a manifest, which the client takes as its model
        await aclient.ApiextensionsV1Api(kube).create_custom_resource_definition(crd)
        arm = RecordingArm(tmp_path / "arm", poll_steps=2)
        await arm.start()
        stack.push_async_callback(arm.close)

        async def joins(pool: dict[str, Any]) -> None:
            await aks_node_joins(cluster, pool)

        arm.on_pool_ready.append(joins)
        await forget_other_tests(settings)
        publisher = Bus(settings, "planner", registry=CollectorRegistry())
        await publisher.start()
        stack.push_async_callback(publisher.stop)
        replicas = [await start_replica(stack, settings, kube, arm) for _ in range(2)]
        env = Env(
            settings,
            cluster,
            arm,
            kube,
            [p for p, _ in replicas],
            [c for _, c in replicas],
            publisher,
        )
        yield Armed(env, arm)


def ref_named(name: str) -> WorkspaceRef:
    return WorkspaceRef(uid=str(uuid.uuid4()), namespace="default", name=name, generation=1)


QUOTA_MESSAGE = (
    "Operation could not be completed as it results in exceeding approved "
    "standardNCADSA100v4Family Cores quota. Current Limit: 0, Additional Required: 24"
)
ALLOCATION_MESSAGE = "Allocation failed. We do not have sufficient capacity for the requested VM"


async def test_four_workspaces_each_with_its_own_arm_fault_end_in_their_own_state(
    armed: Armed, record_property: Any
) -> None:
    env, arm = armed.env, armed.arm
    refs = {kind: ref_named(f"ws-arm-{kind}") for kind in ("throttled", "errors", "lro", "quota")}
    pools = {kind: nodeclaim_name(ref, 0) for kind, ref in refs.items()}
    arm.fail_next_create("AllocationFailed", ALLOCATION_MESSAGE, pool=pools["lro"])
    arm.reject_next_create(400, "QuotaExceeded", QUOTA_MESSAGE, pool=pools["quota"])
    # Global: the first requests to arrive, whoever's, are throttled, then refused with 503.
    arm.throttle(3, retry_after=RETRY_AFTER_S)
    arm.server_errors(4, status=503)

    events = [
        await env.plan_ready(ref, nodes=NodeSelection(label_selector={"apps": ref.name}))
        for ref in refs.values()
    ]
    await asyncio.gather(
        *(env.provisioners[i % 2].on_plan_ready(event) for i, event in enumerate(events))
    )

    for kind in ("throttled", "errors"):
        await eventually(
            functools.partial(env.events, EventType.RESOURCES_READY, refs[kind]),
            timeout=30,
            what=f"ResourcesReady of {kind}",
        )
    for kind in ("lro", "quota"):
        await eventually(
            functools.partial(env.events, EventType.RESOURCES_FAILED, refs[kind]),
            timeout=30,
            what=f"ResourcesFailed of {kind}",
        )

    # The healthy two: ready, one pool each, every 429 waited out.
    for kind in ("throttled", "errors"):
        conditions = await env.conditions(refs[kind])
        assert conditions["ResourceReady"]["status"] == "True", (kind, conditions)
        assert arm.creates.count(pools[kind]) == 1, (kind, arm.creates)
        assert pools[kind] in arm.pools
        assert len(await env.claims(refs[kind])) == 1
    for i, answer in enumerate(arm.answers):
        if answer.status != 429:
            continue
        retry = next(
            (a for a in arm.answers[i + 1 :] if (a.method, a.path) == (answer.method, answer.path)),
            None,
        )
        assert retry is not None, f"a throttled {answer.method} {answer.path} never retried"
        # The request is retried no sooner than Retry-After (a little slack for the clock).
        waited = retry.at - answer.at
        assert waited >= RETRY_AFTER_S - 0.05, (answer, retry, waited)

    # The failed operation: a clear condition with the cloud's code and message, no second pool.
    lro = await env.conditions(refs["lro"])
    assert lro["ResourceReady"]["status"] == "False", lro
    assert lro["NodeClaimReady"]["status"] == "False", lro
    assert lro["NodeClaimReady"]["reason"] == "AllocationFailed", lro
    assert "sufficient capacity" in lro["NodeClaimReady"]["message"], lro
    assert arm.creates.count(pools["lro"]) == 1, arm.creates

    # QuotaExceeded: reported verbatim, the Workspace failed, and no retry loop.
    quota = await env.conditions(refs["quota"])
    assert quota["ResourceReady"]["status"] == "False", quota
    assert quota["ResourceReady"]["reason"] == "QuotaExceeded", quota
    assert quota["ResourceReady"]["message"] == QUOTA_MESSAGE, quota
    assert quota["WorkspaceSucceeded"]["status"] == "False", quota
    for provisioner in env.provisioners:
        await provisioner.reconcile_all()
    await asyncio.sleep(1.0)
    quota_puts = [a for a in arm.puts(pools["quota"]) if a.status == 400]
    assert len(quota_puts) == 1, arm.puts(pools["quota"])
    assert pools["quota"] not in arm.creates
    assert len(await env.events(EventType.RESOURCES_FAILED, refs["quota"])) == 1
    assert len(await env.events(EventType.RESOURCES_FAILED, refs["lro"])) == 1
    assert arm.creates.count(pools["lro"]) == 1, arm.creates

    injected = arm.faults()
    assert injected["429"] == 3, injected
    assert injected["503"] == 4, injected
    rows = {
        "arm 429 Retry-After": (3, injected["429"]),
        "arm 503": (4, injected["503"]),
        "arm LRO Failed": (1, 1),
        "arm QuotaExceeded (PUT 400)": (1, len(quota_puts)),
    }
    print(f"\n{fault_table(rows)}")
    for kind, (configured, fired) in rows.items():
        key = kind.replace(" ", "_").replace("(", "").replace(")", "")
        record_property(f"{key}_configured", configured)
        record_property(f"{key}_fired", fired)
