"""The watcher against the development cluster, real NATS JetStream and real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client as aclient
from prometheus_client import CollectorRegistry

from localdev.kubeapi.cluster import DevCluster
from services.watcher.audit import AuditLog
from services.watcher.kubeapi import WorkspaceApi
from services.watcher.service import Watcher, WatcherOptions
from services.watcher.store import WatcherStore
from shared.bus import Bus, StreamSink, Subscription
from shared.db import Database
from shared.events import (
    CleanupDone,
    Condition,
    ConditionReported,
    EventData,
    EventType,
    ResourcesReady,
    WorkspaceRef,
    new_event,
)
from shared.settings import Settings
from tests.kubeapi.conftest import Kubectl
from tests.support.bus import stream_reader
from tests.support.polling import eventually

CRD_FILE = Path(__file__).resolve().parents[2] / "deploy" / "crds" / "kaito.sh_workspaces.yaml"
SEED = Path(__file__).resolve().parents[1] / "fixtures" / "seeds" / "inference-phi-3-mini.yaml"


def workspace(name: str) -> dict[str, Any]:
    import yaml  # noqa: PLC0415

    body: dict[str, Any] = yaml.safe_load(SEED.read_text())
    body["apiVersion"] = "kaito.sh/v1beta1"
    body["metadata"] = {"name": name, "namespace": "default"}
    return body


@dataclass
class Env:
    cluster: DevCluster
    settings: Settings
    api: aclient.ApiClient
    objects: aclient.CustomObjectsApi
    kubectl: Kubectl
    store: WatcherStore
    publisher: Bus
    watcher: Watcher | None = None
    bus: Bus | None = None
    task: asyncio.Task[None] | None = None

    async def start(self, *, audit: bool = False, **options: Any) -> Watcher:
        bus = Bus(self.settings, "watcher", registry=CollectorRegistry())
        opts = WatcherOptions(
            **{"resync_s": 3600.0, "cleanup_timeout_s": 30.0, "watch_timeout_s": 5, **options}
        )
        watcher = Watcher(
            WorkspaceApi(self.api),
            self.store,
            bus,
            lambda: datetime.now(UTC),
            opts,
            audit=AuditLog(self.store.db) if audit else None,
        )
        if audit:
            bus.sink(StreamSink("audit", watcher.on_messages))
        for kind, handler in (
            (EventType.CONDITION_REPORTED, watcher.on_condition),
            (EventType.RESOURCES_READY, watcher.on_resources_ready),
            (EventType.PLAN_READY, watcher.on_plan_ready),
            (EventType.CLEANUP_DONE, watcher.on_cleanup_done),
        ):
            bus.subscribe(Subscription(kind, handler, failure_condition=None))
        await bus.start()
        self.watcher, self.bus = watcher, bus
        self.task = asyncio.create_task(watcher.run())
        return watcher

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.bus is not None:
            await self.bus.stop()
        self.task = self.bus = self.watcher = None

    async def create(self, name: str) -> dict[str, Any]:
        created: dict[str, Any] = await self.objects.create_namespaced_custom_object(
            "kaito.sh", "v1beta1", "default", "workspaces", workspace(name)
        )
        return created

    async def get(self, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = await self.objects.get_namespaced_custom_object(
                "kaito.sh", "v1beta1", "default", "workspaces", name
            )
        except aclient.ApiException as e:
            if e.status == 404:
                return None
            raise
        return obj

    async def patch(self, name: str, body: dict[str, Any], *, status: bool = False) -> None:
        call = (
            self.objects.patch_namespaced_custom_object_status
            if status
            else self.objects.patch_namespaced_custom_object
        )
        await call(
            "kaito.sh",
            "v1beta1",
            "default",
            "workspaces",
            name,
            body,
            _content_type="application/merge-patch+json",
        )

    async def observed(self) -> list[dict[str, Any]]:
        async with stream_reader(self.settings) as reader:
            raw = await reader.messages(f"{self.settings.subject_prefix}.v1.workspace.observed.*.*")
        return [json.loads(r) for r in raw]

    async def report(self, obj: dict[str, Any], condition: Condition, source: str) -> None:
        meta = obj["metadata"]
        ref = WorkspaceRef(
            uid=meta["uid"],
            namespace=meta["namespace"],
            name=meta["name"],
            generation=condition.observed_generation,
        )
        await self.publisher.publish(
            new_event(
                ConditionReported(condition=condition),
                source=source,
                workspace=ref,
                now=datetime.now(UTC),
            )
        )


@pytest.fixture
async def env(
    cluster: DevCluster, kubectl: Kubectl, api_client: aclient.ApiClient, settings: Settings
) -> AsyncIterator[Env]:
    await kubectl("apply", "-f", str(CRD_FILE))
    await kubectl("wait", "--for=condition=Established", "crd/workspaces.kaito.sh", "--timeout=10s")
    db = Database(settings.database_url)
    publisher = Bus(settings, "deployer", registry=CollectorRegistry())
    await publisher.start()
    environment = Env(
        cluster,
        settings,
        api_client,
        aclient.CustomObjectsApi(api_client),
        kubectl,
        WatcherStore(db),
        publisher,
    )
    yield environment
    await environment.stop()
    await publisher.stop()
    await db.close()


def names_and_generations(events: list[dict[str, Any]]) -> list[tuple[str, int, str]]:
    return [
        (e["workspace"]["name"], e["workspace"]["generation"], e["data"]["trigger"]) for e in events
    ]


async def test_create_edit_annotation_status_and_resync_publish_exactly_what_they_should(
    env: Env,
) -> None:
    watcher = await env.start()
    await env.create("ws-a")
    await eventually(env.observed, what="the first WorkspaceObserved")
    obj = await eventually(lambda: env.get("ws-a"))
    await eventually(lambda: _finalized(env, "ws-a"), what="bookkeeping")

    await env.patch("ws-a", {"metadata": {"annotations": {"team": "ml"}}})
    await env.patch("ws-a", {"status": {"state": "Pending"}}, status=True)
    await env.patch(
        "ws-a",
        {"inference": {"adapters": [{"source": {"name": "a1", "image": "registry.io/a1:1"}}]}},
    )
    await eventually(lambda: _count(env, 2), what="the edit's WorkspaceObserved")
    await watcher.resync()
    events = await eventually(lambda: _count(env, 3), what="the resync's WorkspaceObserved")
    assert names_and_generations(events) == [
        ("ws-a", 1, "added"),
        ("ws-a", 2, "changed"),
        ("ws-a", 2, "resync"),
    ]
    assert events[0]["workspace"]["uid"] == obj["metadata"]["uid"]
    assert events[1]["data"]["spec_hash"] != events[0]["data"]["spec_hash"]

    current = await env.get("ws-a")
    assert current is not None
    annotations = current["metadata"]["annotations"]
    assert annotations["workspace.kaito.io/revision"] == "2"
    assert annotations["workspace.kaito.io/hash"] == events[1]["data"]["spec_hash"]
    _, revisions, _ = await env.kubectl("get", "controllerrevisions", "-o", "name")
    hashes = sorted(e["data"]["spec_hash"][:5] for e in events[:2])
    assert sorted(revisions.split()) == sorted(f"controllerrevision.apps/ws-a-{h}" for h in hashes)


async def created_and_kept(env: Env, name: str) -> dict[str, Any]:
    """Create a Workspace and wait until the watcher's bookkeeping (the finalizer) is on it."""
    await env.create(name)
    await eventually(lambda: _finalized(env, name), what=f"bookkeeping of {name}")
    obj = await env.get(name)
    assert obj is not None
    return obj


async def _finalized(env: Env, name: str) -> bool:
    obj = await env.get(name)
    return bool(obj and "workspace.finalizer.kaito.sh" in (obj["metadata"].get("finalizers") or []))


async def _count(env: Env, n: int) -> list[dict[str, Any]] | None:
    events = await env.observed()
    return events if len(events) >= n else None


async def test_a_hundred_workspaces_at_once_are_announced_once_each_and_finalized(
    env: Env,
) -> None:
    await env.start()
    await asyncio.gather(*(env.create(f"bulk-{i:03d}") for i in range(100)))
    events = await eventually(lambda: _count(env, 100), timeout=60, what="100 events")
    counts = Counter(e["workspace"]["name"] for e in events)
    assert len(counts) == 100
    assert set(counts.values()) == {1}

    async def all_finalized() -> bool:
        listing = await env.objects.list_namespaced_custom_object(
            "kaito.sh", "v1beta1", "default", "workspaces"
        )
        return all(
            "workspace.finalizer.kaito.sh" in (i["metadata"].get("finalizers") or [])
            for i in listing["items"]
        )

    await eventually(all_finalized, timeout=30, what="a finalizer on each")


async def test_reported_conditions_reach_kubectl_and_older_generations_are_ignored(
    env: Env,
) -> None:
    await env.start()
    obj = await created_and_kept(env, "ws-c")
    await env.patch("ws-c", {"resource": {"preferredNodes": ["n1"]}})  # generation 2
    await env.report(
        obj,
        Condition(
            type="ResourceReady",
            status="True",
            reason="workspaceResourceStatusSuccess",
            message="workspace resource is ready",
            observed_generation=2,
        ),
        "provisioner",
    )

    async def ready() -> bool:
        _, out, _ = await env.kubectl("get", "workspace", "ws-c")
        return out.splitlines()[1].split()[2] == "True"

    await eventually(ready, timeout=15, what="RESOURCEREADY True")
    await env.report(
        obj,
        Condition(
            type="ResourceReady",
            status="False",
            reason="workspaceResourceStatusFailed",
            message="old news",
            observed_generation=1,
        ),
        "provisioner",
    )
    await env.report(
        obj,
        Condition(
            type="WorkspaceSucceeded",
            status="True",
            reason="workspaceSucceeded",
            message="workspace succeeds",
            observed_generation=2,
        ),
        "deployer",
    )

    async def succeeded() -> dict[str, Any] | None:
        current = await env.get("ws-c")
        status = (current or {}).get("status") or {}
        return status if status.get("state") == "Ready" else None

    status = await eventually(succeeded, timeout=15, what="state Ready")
    by_type = {c["type"]: c for c in status["conditions"]}
    assert by_type["ResourceReady"]["status"] == "True"  # the older report was ignored
    assert by_type["ResourceReady"]["observedGeneration"] == 2
    _, described, _ = await env.kubectl("describe", "workspace", "ws-c")
    assert "workspaceSucceeded" in described
    assert "WorkspaceSucceeded: workspace succeeds" in described


async def test_a_409_on_the_status_write_is_retried_and_the_condition_lands(env: Env) -> None:
    await env.start()
    obj = await created_and_kept(env, "ws-409")
    from tests.kubeapi.test_contract import raw  # noqa: PLC0415

    await raw(env.cluster, "POST", "/_kaiten/faults", json={"fail": {"count": 2, "code": 409}})
    await env.report(
        obj,
        Condition(
            type="InferenceReady",
            status="True",
            reason="WorkspaceInferenceStatusSuccess",
            message="Inference has been deployed successfully",
            observed_generation=1,
        ),
        "deployer",
    )

    async def landed() -> bool:
        try:
            current = await env.get("ws-409")
        except aclient.ApiException:  # the injected 409s hit whoever asks next
            return False
        return any(
            c["type"] == "InferenceReady"
            for c in ((current or {}).get("status") or {}).get("conditions") or []
        )

    await eventually(landed, timeout=20, what="the condition after 409s")


def _inference_ready() -> Condition:
    return Condition(
        type="InferenceReady",
        status="True",
        reason="WorkspaceInferenceStatusSuccess",
        message="Inference has been deployed successfully",
        observed_generation=1,
    )


async def _conditions(env: Env, name: str) -> set[str]:
    current = await env.get(name)
    return {c["type"] for c in ((current or {}).get("status") or {}).get("conditions") or []}


async def test_a_status_write_starts_from_the_watched_object_and_a_stale_one_reads_again(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    watcher = await env.start()
    before = await created_and_kept(env, "ws-seen")
    reads: list[str] = []
    real_get = watcher.api.get

    async def counted_get(namespace: str, name: str) -> dict[str, Any] | None:
        reads.append(name)
        return await real_get(namespace, name)

    monkeypatch.setattr(watcher.api, "get", counted_get)
    # The watch has delivered the object: the status write needs no GET.
    await eventually(
        lambda: _latest_version(watcher, "ws-seen") is not None, what="the watched object"
    )
    await env.report(before, _inference_ready(), "deployer")
    await eventually(lambda: _has_type(env, "ws-seen", "InferenceReady"), what="the condition")
    assert reads == []
    # Someone else writes the status; the watcher still holds the older object (as when its
    # watch lags): its write is refused (409), it reads again and keeps the other write.
    stale = await env.get("ws-seen")
    assert stale is not None
    await env.patch(
        "ws-seen",
        {"status": {"conditions": [*stale["status"]["conditions"], _other_condition()]}},
        status=True,
    )
    written = await env.get("ws-seen")
    assert written is not None
    version = written["metadata"]["resourceVersion"]
    await eventually(
        lambda: _latest_version(watcher, "ws-seen") == version, what="the other write watched"
    )
    monkeypatch.setitem(watcher._latest, ("default", "ws-seen"), stale)
    ready = Condition(
        type="ResourceReady", status="True", reason="Ready", message="", observed_generation=1
    )
    await env.report(stale, ready, "provisioner")
    await eventually(lambda: _has_type(env, "ws-seen", "ResourceReady"), what="the second write")
    assert {"InferenceReady", "OtherReady", "ResourceReady"} <= await _conditions(env, "ws-seen")
    assert reads == ["ws-seen"]


def _other_condition() -> dict[str, Any]:
    return {
        "type": "OtherReady",
        "status": "True",
        "reason": "Other",
        "message": "written by someone else",
        "lastTransitionTime": "2026-12-07T00:00:00Z",
    }


def _latest_version(watcher: Watcher, name: str) -> str | None:
    kept = watcher._latest.get(("default", name))
    return None if kept is None else str(kept["metadata"]["resourceVersion"])


async def _has_type(env: Env, name: str, ctype: str) -> bool:
    return ctype in await _conditions(env, name)


async def test_no_change_is_missed_across_a_cut_watch_and_a_410(env: Env) -> None:
    await env.start(watch_timeout_s=30)
    for i in range(10):
        await env.create(f"burst-{i}")
    await eventually(lambda: _count(env, 10), timeout=30, what="10 creations")
    cluster = env.cluster
    for i in range(10):
        await env.patch(f"burst-{i}", {"resource": {"preferredNodes": [f"n{i}"]}})
        if i == 3:
            cluster.store.cut_watches()
        if i == 6:
            cluster.faults.gone_next_watch = True
            cluster.store.cut_watches()

    names = {f"burst-{i}" for i in range(10)}

    async def edits_and_relist_announced() -> list[tuple[str, int, str]] | None:
        seen = names_and_generations(await env.observed())
        changes = [(n, g) for n, g, t in seen if t in ("added", "changed")]
        relisted = {n for n, _, t in seen if t == "relist"}
        # a relist re-announces what it finds unchanged (an edit it finds first is "changed")
        return seen if len(changes) >= 20 and relisted and relisted <= names else None

    seen = await eventually(edits_and_relist_announced, timeout=30, what="edits and relist")
    assert seen is not None
    changes = Counter((n, g) for n, g, t in seen if t in ("added", "changed"))
    assert changes == Counter({**{(n, 1): 1 for n in names}, **{(n, 2): 1 for n in names}})


async def test_deletion_waits_for_cleanup_done_from_every_involved_service(env: Env) -> None:
    await env.start()
    obj = await created_and_kept(env, "ws-d")
    await env.report(
        obj,
        Condition(
            type="ResourceReady", status="True", reason="ok", message="ok", observed_generation=1
        ),
        "provisioner",
    )
    await env.report(
        obj,
        Condition(
            type="InferenceReady", status="True", reason="ok", message="ok", observed_generation=1
        ),
        "deployer",
    )
    await eventually(lambda: _has_condition(env, "ws-d", "InferenceReady"))
    await env.objects.delete_namespaced_custom_object(
        "kaito.sh", "v1beta1", "default", "workspaces", "ws-d"
    )
    await eventually(lambda: _has_condition(env, "ws-d", "WorkspaceDeleting"))
    ref = WorkspaceRef(uid=obj["metadata"]["uid"], namespace="default", name="ws-d", generation=1)
    await env.publisher.publish(
        new_event(CleanupDone(), source="provisioner", workspace=ref, now=datetime.now(UTC))
    )

    async def provisioner_done() -> bool:
        seen = await env.store.get(ref.uid)
        return seen is not None and "provisioner" in seen.cleaned

    await eventually(provisioner_done, what="the provisioner's CleanupDone to be handled")
    assert await env.get("ws-d") is not None  # still waiting for the deployer
    await env.publisher.publish(
        new_event(CleanupDone(), source="deployer", workspace=ref, now=datetime.now(UTC))
    )
    await eventually(lambda: _gone(env, "ws-d"), timeout=15, what="the object to disappear")


async def test_deletion_times_out_naming_the_silent_service(env: Env) -> None:
    await env.start(cleanup_timeout_s=1.0)
    obj = await created_and_kept(env, "ws-t")
    await env.report(
        obj,
        Condition(
            type="JobStarted", status="True", reason="ok", message="ok", observed_generation=1
        ),
        "tuner",
    )
    await eventually(lambda: _has_condition(env, "ws-t", "JobStarted"))
    events_seen: list[str] = []
    await env.objects.delete_namespaced_custom_object(
        "kaito.sh", "v1beta1", "default", "workspaces", "ws-t"
    )

    async def timed_out() -> bool:
        current = await env.get("ws-t")
        if current is None:
            return True
        conditions = (current.get("status") or {}).get("conditions") or []
        events_seen.extend(c["message"] for c in conditions if c["type"] == "WorkspaceDeleting")
        return False

    await eventually(timed_out, timeout=15, what="the timeout to release the workspace")
    _, described, _ = await env.kubectl("get", "events", "-o", "json")
    messages = [e["message"] for e in json.loads(described)["items"]]
    assert any("no CleanupDone from tuner" in m for m in messages + events_seen)


async def _has_condition(env: Env, name: str, ctype: str) -> bool:
    obj = await env.get(name)
    return any(
        c["type"] == ctype for c in ((obj or {}).get("status") or {}).get("conditions") or []
    )


async def _gone(env: Env, name: str) -> bool:
    return await env.get(name) is None


async def test_a_restarted_watcher_does_not_reannounce_unchanged_workspaces(env: Env) -> None:
    await env.start()
    for i in range(5):
        await env.create(f"keep-{i}")
    await eventually(lambda: _count(env, 5), timeout=30)
    await env.stop()  # killed: no goodbye
    await env.patch("keep-4", {"resource": {"preferredNodes": ["n4"]}})
    await env.start()
    # The restarted watcher lists by name: once keep-4 (last) is announced, it has looked at
    # the four unchanged ones, and must not have announced them again.
    events = await eventually(lambda: _count(env, 6), timeout=30, what="the missed edit")
    assert Counter((n, g) for n, g, _ in names_and_generations(events)) == Counter(
        {**{(f"keep-{i}", 1): 1 for i in range(5)}, ("keep-4", 2): 1}
    )


async def test_sigkill_mid_burst_then_restart_loses_nothing_and_repeats_nothing(
    env: Env, kubeconfig: Path, tmp_path: Path
) -> None:
    """The real process, killed with SIGKILL while it announces a burst of creations."""
    import os  # noqa: PLC0415
    import signal  # noqa: PLC0415
    import sys  # noqa: PLC0415

    process_env = dict(
        os.environ,
        NATS_URL=env.settings.nats_url,
        DATABASE_URL=env.settings.database_url,
        KUBECONFIG=str(kubeconfig),
        KAITEN_STREAM=env.settings.stream,
        KAITEN_SUBJECT_PREFIX=env.settings.subject_prefix,
        KAITEN_HEALTH_PORT="0",
        KAITEN_WEBHOOK_ENABLED="false",
        KAITEN_WATCHER_WATCH_TIMEOUT_S="5",
        KAITEN_LOG_LEVEL="WARNING",
    )

    async def start() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.watcher",
            env=process_env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=(tmp_path / "watcher.log").open("ab"),
        )

    first = await start()
    names = [f"kill-{i:02d}" for i in range(30)]
    for name in names[:10]:
        await env.create(name)
    await eventually(lambda: _count(env, 3), timeout=60, what="the first announcements")
    for name in names[10:]:
        await env.create(name)
    first.send_signal(signal.SIGKILL)
    await first.wait()
    announced_before = len(await env.observed())
    second = await start()
    try:
        events = await eventually(lambda: _count(env, 30), timeout=60, what="all 30")
    finally:
        second.send_signal(signal.SIGTERM)
        await asyncio.wait_for(second.wait(), 30)
    counts = Counter(n for n, _, _ in names_and_generations(events))
    assert counts == Counter(dict.fromkeys(names, 1))
    assert announced_before < 30  # the kill happened mid-burst (13-14 of 30 in practice)


async def test_resources_and_plan_events_fill_worker_nodes_and_target_node_count(
    env: Env,
) -> None:
    from shared.events import PlanReady, ResourcesReady  # noqa: PLC0415
    from tests.support.plans import minimal_plan  # noqa: PLC0415

    await env.start()
    obj = await created_and_kept(env, "ws-n")
    ref = WorkspaceRef(uid=obj["metadata"]["uid"], namespace="default", name="ws-n", generation=1)
    plan = PlanReady(
        mode="inference",
        preset="phi-3-mini-4k-instruct",
        instance_type="Standard_NC6s_v3",
        node_count=2,
        plan=minimal_plan(node_count=2),
    )
    for data, source in (
        (plan, "planner"),
        (ResourcesReady(node_names=("node-b", "node-a")), "provisioner"),
    ):
        await env.publisher.publish(
            new_event(data, source=source, workspace=ref, now=datetime.now(UTC))
        )

    async def filled() -> dict[str, Any] | None:
        status = ((await env.get("ws-n")) or {}).get("status") or {}
        return status if status.get("workerNodes") and status.get("targetNodeCount") else None

    status = await eventually(filled, timeout=15, what="workerNodes and targetNodeCount")
    assert status["workerNodes"] == ["node-a", "node-b"]
    assert status["targetNodeCount"] == 2
    seen = await env.store.get(ref.uid)
    assert seen is not None
    assert seen.involved == {"provisioner"}  # the planner creates nothing to clean up


async def test_phases_of_the_current_generation_reach_the_status(env: Env) -> None:
    """The audit sink dates each phase and writes them into status.phases; a new generation
    replaces the older one's phases instead of merging with them."""
    await env.start(audit=True)
    obj = await env.create("ws-phases")
    meta = obj["metadata"]

    async def publish(data: EventData, source: str, generation: int) -> None:
        ref = WorkspaceRef(
            uid=meta["uid"], namespace="default", name="ws-phases", generation=generation
        )
        await env.publisher.publish(
            new_event(data, source=source, workspace=ref, now=datetime.now(UTC))
        )

    async def phases() -> dict[str, Any]:
        current = await env.get("ws-phases") or {}
        found: dict[str, Any] = (current.get("status") or {}).get("phases") or {}
        return found

    await eventually(lambda: _has(phases, "observed"), what="status.phases with observed")
    await publish(ResourcesReady(node_names=("n1",)), "provisioner", 1)
    await publish(
        condition_reported_for(meta["uid"], 1, "WorkspaceSucceeded", "True"), "deployer", 1
    )
    found = await eventually(lambda: _has(phases, "succeeded"), what="status.phases with succeeded")
    assert found["generation"] == 1
    assert {"observed", "nodesRequested", "nodesReady", "workloadCreated", "succeeded"} <= set(
        found
    )
    stamps = [found[k] for k in ("observed", "nodesReady", "succeeded")]
    assert stamps == sorted(stamps)
    assert all(s.endswith("Z") and len(s) == len("2026-11-22T06:40:01.123Z") for s in stamps)

    await env.patch(
        "ws-phases",
        {"inference": {"adapters": [{"source": {"name": "a1", "image": "registry.io/a1:1"}}]}},
    )
    found = await eventually(lambda: _generation(phases, 2), what="status.phases of generation 2")
    assert "succeeded" not in found
    assert "nodesReady" not in found
    assert "observed" in found


async def _has(probe: Any, key: str) -> dict[str, Any] | None:
    found: dict[str, Any] = await probe()
    return found if key in found else None


async def _generation(probe: Any, generation: int) -> dict[str, Any] | None:
    found: dict[str, Any] = await probe()
    return found if found.get("generation") == generation else None


def condition_reported_for(uid: str, generation: int, ctype: str, status: str) -> ConditionReported:
    return ConditionReported(
        condition=Condition(
            type=ctype,
            status=status,
            reason="workspaceSucceeded",
            message="workspace succeeds",
            observed_generation=generation,
        )
    )
