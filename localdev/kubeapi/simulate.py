"""Simulated controllers and kubelet for the development cluster: Nodes that register with GPU
capacity when asked; Deployments and StatefulSets whose Pods become Ready after a delay; Jobs whose
Pods run to success or failure (a Job's pod answers ``GET /progress`` through the pod proxy as a
training run would, step by step); Pods that fail in named ways with the container statuses and
Events a kubelet would write. Every write goes through ``Api``, as a real controller's would.

A pod fails on purpose when it (or its template) carries the annotation
``kaiten.dev/simulate-failure`` with one of ``FAILURE_MODES``, or through ``fail_pod``. A container
that dies that way (``CrashLoopBackOff``, ``OOMKilled``, ``Error``, ``InitError``) leaves a log, as
a real one would: a start line and the failure's message, served through ``log_file``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from localdev.kubeapi.api import Api, event_about, now_rfc3339
from localdev.kubeapi.errors import ApiError
from localdev.kubeapi.localpods import LocalPods
from localdev.kubeapi.resources import ResourceType
from localdev.kubeapi.selectors import label_selector_from_dict, matches_labels
from localdev.kubeapi.store import Change, Obj

log = structlog.get_logger(__name__)

FAILURE_ANNOTATION = "kaiten.dev/simulate-failure"
FAILURE_MODES = (
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "OOMKilled",
    "Unschedulable",
    "Evicted",
    "Error",
    "Unready",
    "InitError",
)
PRESSURE = {
    "MemoryPressure": ("KubeletHasInsufficientMemory", "kubelet has insufficient memory available"),
    "DiskPressure": ("KubeletHasDiskPressure", "kubelet has disk pressure"),
}
GPU = "nvidia.com/gpu"
WORKLOADS = {("apps", "deployments"), ("apps", "statefulsets"), ("batch", "jobs")}
POD_KEY = ("", "pods")
NODE_KEY = ("", "nodes")
LOGGED_MODES = frozenset({"CrashLoopBackOff", "OOMKilled", "Error"})  # and InitError's container


@dataclass(frozen=True, slots=True)
class SimOptions:
    pod_ready_delay_s: float = 0.3
    job_run_s: float = 0.5
    train_steps: int = 100  # what a Job's pod reports as total_steps on GET /progress


class Simulator:
    """Reacts to changes in the store; ``start()`` then ``stop()``."""

    def __init__(
        self,
        api: Api,
        options: SimOptions | None = None,
        local: LocalPods | None = None,
        *,
        log_dir: Path | None = None,
    ) -> None:
        self.api = api
        self.options = options or SimOptions()
        self.local = local  # runs the pods of local-cpu nodes as processes
        # The failed containers' logs, by pod uid; a temporary folder made on first use (and
        # removed by ``stop``) unless one is given.
        self._log_dir = log_dir
        self._own_log_dir = log_dir is None
        self._queue: asyncio.Queue[tuple[tuple[str, str], str, str]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._failed: set[str] = set()  # uids of pods failed on purpose: left as they are
        self._started: dict[str, float] = {}  # pod uid -> loop time its containers started
        self._forgetting: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self.api.store.on_change.append(self._on_change)
        self._task = asyncio.get_running_loop().create_task(self._work())
        for key in WORKLOADS | {POD_KEY}:
            for obj in self.api.store.list(key):
                self._enqueue(key, obj)

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self.api.store.on_change.remove(self._on_change)
        for timer in self._timers:
            timer.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.local is not None:
            await self.local.stop()
        if self._own_log_dir and self._log_dir is not None:
            shutil.rmtree(self._log_dir, ignore_errors=True)
            self._log_dir = None

    # --- nodes -----------------------------------------------------------------------------

    async def add_node(
        self,
        name: str,
        *,
        labels: dict[str, str] | None = None,
        gpus: int = 0,
        taints: list[Obj] | None = None,
        cpu: str = "8",
        memory: str = "64Gi",
    ) -> Obj:
        """Register a Ready node, as a kubelet joining the cluster would."""
        capacity = {"cpu": cpu, "memory": memory, "pods": "110", "ephemeral-storage": "200Gi"}
        if gpus:
            capacity[GPU] = str(gpus)
        node = {
            "metadata": {
                "name": name,
                "labels": {"kubernetes.io/hostname": name, **(labels or {})},
            },
            "spec": {"taints": taints or []},
        }
        rt = self._rt(NODE_KEY)
        created = await self.api.create(rt, "v1", None, node)
        created["status"] = {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": now_rfc3339(),
                    "lastTransitionTime": now_rfc3339(),
                }
            ],
            "nodeInfo": {"kubeletVersion": "v1.37.0-kaiten-dev"},
        }
        return await self.api.update(rt, "v1", None, name, created, subresource="status")

    async def fail_pod(
        self, namespace: str, name: str, mode: str, message: str | None = None
    ) -> None:
        """Make a running or pending pod fail the named way; ``message``: the failed
        container's termination message (``InitError``: the last init container's)."""
        if mode not in FAILURE_MODES:
            raise ValueError(f"unknown failure mode {mode!r}; choose one of {FAILURE_MODES}")
        pod = self.api.store.get(POD_KEY, namespace, name)
        if pod is None:
            raise ApiError(404, "NotFound", f'pods "{name}" not found')
        await self._apply_failure(pod, mode, message)

    def log_file(self, namespace: str, name: str, container: str | None) -> Path | None:
        """The log a failed container of the pod left (``container`` None: the pod's only
        container); None when there is none."""
        pod = self.api.store.get(POD_KEY, namespace, name)
        if pod is None or self._log_dir is None:
            return None
        names = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
        chosen = container or (names[0] if len(names) == 1 else None)
        if chosen is None:
            return None
        path = self._log_dir / pod["metadata"]["uid"] / f"{chosen}.log"
        return path if path.is_file() else None

    async def set_node_pressure(self, name: str, kind: str) -> Obj:
        """Report ``MemoryPressure`` or ``DiskPressure`` on a node, as its kubelet would."""
        if kind not in PRESSURE:
            raise ValueError(f"unknown pressure {kind!r}; choose one of {tuple(PRESSURE)}")
        rt = self._rt(NODE_KEY)
        node = self.api.store.get(NODE_KEY, "", name)
        if node is None:
            raise ApiError(404, "NotFound", f'nodes "{name}" not found')
        reason, message = PRESSURE[kind]
        status = node.setdefault("status", {})
        others = [c for c in status.get("conditions") or [] if c.get("type") != kind]
        status["conditions"] = [*others, _condition(kind, "True", reason, message)]
        return await self.api.update(rt, "v1", None, name, node, subresource="status")

    # --- HTTP controls (``/_kaiten/nodes``, ``/_kaiten/pods``) for out-of-process users -------

    async def control_nodes(self, request: web.Request) -> web.Response:
        """POST ``{"name", "labels", "gpus", "taints"}``: register a Ready node."""
        body = await request.json()
        node = await self.add_node(
            body["name"],
            labels=body.get("labels"),
            gpus=int(body.get("gpus", 0)),
            taints=body.get("taints"),
        )
        return web.json_response(node, status=201)

    async def control_pods(self, request: web.Request) -> web.Response:
        """POST ``{"namespace", "name", "mode", "message"?}``: make a pod fail the named way."""
        body = await request.json()
        try:
            await self.fail_pod(
                body.get("namespace", "default"), body["name"], body["mode"], body.get("message")
            )
        except ValueError as e:
            raise ApiError(400, "BadRequest", str(e)) from e
        return web.json_response({"failed": body["name"], "mode": body["mode"]})

    async def pod_proxy(
        self, namespace: str, name: str, port: int | None, path: str
    ) -> web.Response:
        """The pod's HTTP port through the API server: a running Job pod that declares
        ``port`` answers ``/progress`` (a training run ``job_run_s`` long, ``train_steps``
        steps) and ``/health``; anything else is refused as a kubelet would."""
        pod = self.api.store.get(POD_KEY, namespace, name)
        if pod is None:
            raise ApiError(404, "NotFound", f'pods "{name}" not found')
        if self.local is not None and self.local.handles(pod):
            return await self.local.proxy(namespace, name, port, path)
        if (pod.get("status") or {}).get("phase") != "Running":
            raise ApiError(503, "ServiceUnavailable", f"pod {name} is not running")
        declared = {
            p.get("containerPort")
            for c in pod["spec"].get("containers") or []
            for p in c.get("ports") or []
        }
        if port not in declared:
            raise ApiError(
                503,
                "ServiceUnavailable",
                f"error trying to reach service: dial tcp 10.244.0.10:{port}: connection refused",
            )
        if path == "/health":
            return web.json_response({"status": "ok"})
        if path != "/progress" or self._owner_kind(pod) != "Job":
            return web.json_response({"error": f"no such path: {path}"}, status=404)
        loop = asyncio.get_running_loop()
        elapsed = loop.time() - self._started.get(pod["metadata"]["uid"], loop.time())
        run = max(self.options.job_run_s, 1e-6)
        fraction = min(1.0, elapsed / run)
        total = self.options.train_steps
        return web.json_response(
            {
                "state": "training",
                "step": int(fraction * total),
                "total_steps": total,
                "loss": round(2.5 - 1.5 * fraction, 4),
                "epoch": round(3 * fraction, 3),
                "eta_seconds": round(max(0.0, run - elapsed), 3),
                "elapsed_seconds": round(elapsed, 3),
                "updated_at": now_rfc3339(),
            }
        )

    # --- event loop ------------------------------------------------------------------------

    def _on_change(self, change: Change) -> None:
        meta = change.obj["metadata"]
        if change.resource == POD_KEY:  # a pod's owner recounts its pods
            for ref in meta.get("ownerReferences") or []:
                owner = self._owner_key(ref)
                if owner is not None:
                    self._queue.put_nowait((owner, meta.get("namespace", ""), ref.get("name", "")))
        if change.type == "DELETED":
            if change.resource == POD_KEY:
                self._retry_unscheduled()
            if change.resource == POD_KEY and self.local is not None:
                task = asyncio.get_running_loop().create_task(self.local.forget(meta["uid"]))
                self._forgetting.add(task)
                task.add_done_callback(self._forgetting.discard)
            return
        if change.resource in WORKLOADS or change.resource == POD_KEY:
            self._enqueue(change.resource, change.obj)
        finished = change.resource == POD_KEY and (change.obj.get("status") or {}).get("phase") in (
            "Succeeded",
            "Failed",
        )
        if change.resource == NODE_KEY or finished:
            self._retry_unscheduled()

    def _retry_unscheduled(self) -> None:
        """A node joined or a pod freed its GPUs: pending pods try to schedule again."""
        for pod in self.api.store.scan(POD_KEY):
            if not pod.get("spec", {}).get("nodeName"):
                self._enqueue(POD_KEY, pod)

    def _enqueue(self, key: tuple[str, str], obj: Obj) -> None:
        meta = obj["metadata"]
        self._queue.put_nowait((key, meta.get("namespace", ""), meta["name"]))

    def _later(self, delay: float, key: tuple[str, str], ns: str, name: str) -> None:
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(handle)
            self._queue.put_nowait((key, ns, name))

        handle = loop.call_later(delay, fire)
        self._timers.add(handle)

    async def _work(self) -> None:
        while True:
            key, ns, name = await self._queue.get()
            try:
                await self._reconcile(key, ns, name)
            except ApiError as e:
                if e.code == 409:  # noqa: PLR2004 -- raced with another writer: look again
                    self._later(0.05, key, ns, name)
                elif e.code != 404:  # noqa: PLR2004
                    log.warning("simulator.error", object=f"{key[1]}/{ns}/{name}", error=str(e))

    async def _reconcile(self, key: tuple[str, str], ns: str, name: str) -> None:
        obj = self.api.store.get(key, ns, name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return
        if key == POD_KEY:
            await self._progress_pod(obj)
        elif key == ("batch", "jobs"):
            await self._reconcile_job(obj)
        else:
            await self._reconcile_replicas(key, obj)

    # --- Deployments and StatefulSets ------------------------------------------------------

    async def _reconcile_replicas(self, key: tuple[str, str], obj: Obj) -> None:
        spec = obj.get("spec") or {}
        wanted = int(spec.get("replicas", 1))
        template_hash = _hash(spec.get("template") or {})[:10]
        name = obj["metadata"]["name"]
        pods = self._owned_pods(obj)
        if key == ("apps", "statefulsets"):
            names = [f"{name}-{i}" for i in range(wanted)]
            keep = {
                p["metadata"]["name"]
                for p in pods
                if p["metadata"]["name"] in names and _template_hash(p) == template_hash
            }
            missing = [n for n in names if n not in keep]
        else:
            current = [p for p in pods if _template_hash(p) == template_hash][:wanted]
            keep = {p["metadata"]["name"] for p in current}
            missing = [f"{name}-{template_hash}-{_suffix()}" for _ in range(wanted - len(current))]
        for pod in pods:
            if pod["metadata"]["name"] not in keep:
                await self._delete_pod(pod)
        for pod_name in missing:
            if self.api.store.get(POD_KEY, obj["metadata"]["namespace"], pod_name) is None:
                await self._create_pod(obj, pod_name, template_hash)
        await self._write_workload_status(key, obj)

    async def _write_workload_status(self, key: tuple[str, str], obj: Obj) -> None:
        pods = self._owned_pods(obj)
        ready = sum(1 for p in pods if _pod_ready(p))
        wanted = int((obj.get("spec") or {}).get("replicas", 1))
        status: Obj = {
            "observedGeneration": obj["metadata"].get("generation", 1),
            "replicas": len(pods),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "updatedReplicas": len(pods),
        }
        if key == ("apps", "statefulsets"):
            status["currentReplicas"] = len(pods)
        else:
            available = "True" if ready >= wanted else "False"
            status["conditions"] = [
                _condition(
                    "Available",
                    available,
                    "MinimumReplicasAvailable"
                    if available == "True"
                    else "MinimumReplicasUnavailable",
                    f"Deployment has {ready} of {wanted} ready replicas.",
                ),
                _condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    "the simulated rollout progresses",
                ),
            ]
        await self._set_status(key, obj, _without_zero(status))

    # --- Jobs -------------------------------------------------------------------------------

    async def _reconcile_job(self, job: Obj) -> None:
        spec = job.get("spec") or {}
        if _job_finished(job):
            return
        pods = self._owned_pods(job)
        succeeded = sum(1 for p in pods if p.get("status", {}).get("phase") == "Succeeded")
        failed = sum(1 for p in pods if p.get("status", {}).get("phase") == "Failed")
        active = [
            p for p in pods if p.get("status", {}).get("phase") not in ("Succeeded", "Failed")
        ]
        status: Obj = {
            "startTime": (job.get("status") or {}).get("startTime") or now_rfc3339(),
            "active": len(active),
            "succeeded": succeeded,
            "failed": failed,
            "ready": sum(1 for p in active if _pod_ready(p)),
        }
        completions = int(spec.get("completions", 1))
        if succeeded >= completions:
            status["completionTime"] = now_rfc3339()
            status["conditions"] = [
                _condition(
                    "Complete", "True", "Completed", "Reached expected number of succeeded pods"
                )
            ]
        elif failed > int(spec.get("backoffLimit", 6)):
            status["conditions"] = [
                _condition(
                    "Failed",
                    "True",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                )
            ]
        elif not active:
            template_hash = _hash(spec.get("template") or {})[:10]
            await self._create_pod(job, f"{job['metadata']['name']}-{_suffix()}", template_hash)
            status["active"] = 1
        await self._set_status(("batch", "jobs"), job, _without_zero(status))

    # --- Pods: scheduling and kubelet ----------------------------------------------------

    async def _create_pod(self, owner: Obj, name: str, template_hash: str) -> None:
        template = copy.deepcopy((owner.get("spec") or {}).get("template") or {})
        meta = template.setdefault("metadata", {})
        meta["name"] = name
        meta.setdefault("labels", {})["pod-template-hash"] = template_hash
        meta["ownerReferences"] = [
            {
                "apiVersion": owner["apiVersion"],
                "kind": owner["kind"],
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        template["apiVersion"], template["kind"] = "v1", "Pod"
        await self.api.create(self._rt(POD_KEY), "v1", owner["metadata"]["namespace"], template)

    async def _delete_pod(self, pod: Obj) -> None:
        with contextlib.suppress(ApiError):
            await self.api.delete(
                self._rt(POD_KEY), "v1", pod["metadata"]["namespace"], pod["metadata"]["name"]
            )

    async def _progress_pod(self, pod: Obj) -> None:
        status = pod.get("status") or {}
        phase = status.get("phase")
        if phase in ("Succeeded", "Failed") or pod["metadata"]["uid"] in self._failed:
            return
        mode = _failure_mode(pod)
        if not pod.get("spec", {}).get("nodeName"):
            await self._schedule(pod, mode)
            return
        if self.local is not None and self.local.handles(pod):
            self.local.start(pod)  # a real run: the local runner owns its status from here
            return
        if phase != "Running":
            await self._apply_failure(pod, mode) if mode else await self._start(pod)
            return
        if self._owner_kind(pod) != "Job":
            return
        loop = asyncio.get_running_loop()
        remaining = (
            self._started.get(pod["metadata"]["uid"], loop.time())
            + self.options.job_run_s
            - loop.time()
        )
        if remaining <= 0:
            await self._finish(pod, succeeded=True)
        else:
            self._later(remaining, POD_KEY, pod["metadata"]["namespace"], pod["metadata"]["name"])

    async def _schedule(self, pod: Obj, mode: str | None) -> None:
        node, reason = (None, "simulated") if mode == "Unschedulable" else self._pick_node(pod)
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        if node is None:
            message = f"0/{self.api.store.count(NODE_KEY)} nodes are available: {reason}."
            before = [
                (c.get("reason"), c.get("message"))
                for c in (pod.get("status") or {}).get("conditions") or []
            ]
            if before != [("Unschedulable", message)]:
                pod["status"] = {
                    "phase": "Pending",
                    "conditions": [_condition("PodScheduled", "False", "Unschedulable", message)],
                }
                await self.api.update(self._rt(POD_KEY), "v1", ns, name, pod, subresource="status")
                await self._event(pod, "Warning", "FailedScheduling", message)
            return
        pod["spec"]["nodeName"] = node
        pod.pop("status", None)
        await self.api.update(self._rt(POD_KEY), "v1", ns, name, pod)
        await self._event(
            pod, "Normal", "Scheduled", f"Successfully assigned {ns}/{name} to {node}"
        )
        self._later(self.options.pod_ready_delay_s, POD_KEY, ns, name)

    def _pick_node(self, pod: Obj) -> tuple[str | None, str]:
        spec = pod.get("spec") or {}
        wanted_gpus = sum(_gpu_request(c) for c in spec.get("containers") or [])
        reasons: list[str] = []
        used = self._gpus_used() if wanted_gpus else {}
        for node in self.api.store.scan(NODE_KEY):
            name = node["metadata"]["name"]
            why = _node_refuses(node, spec, wanted_gpus, used.get(name, 0))
            if why is None:
                return name, ""
            reasons.append(why)
        return None, ", ".join(sorted(set(reasons))) or "no nodes available to schedule pods"

    def _gpus_used(self) -> dict[str, int]:
        """GPUs requested by the running pods of each node (one pass over the pods)."""
        used: dict[str, int] = {}
        for p in self.api.store.scan(POD_KEY):
            node = p.get("spec", {}).get("nodeName")
            if node and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                gpus = sum(_gpu_request(c) for c in p["spec"].get("containers") or [])
                used[node] = used.get(node, 0) + gpus
        return used

    async def _start(self, pod: Obj) -> None:
        now = now_rfc3339()
        containers = pod["spec"].get("containers") or []
        for c in containers:
            await self._event(
                pod,
                "Normal",
                "Pulled",
                f'Container image "{c.get("image")}" already present on machine',
            )
            await self._event(pod, "Normal", "Started", f"Started container {c['name']}")
        init = pod["spec"].get("initContainers") or []
        pod["status"] = {
            "phase": "Running",
            "startTime": now,
            "podIP": "10.244.0.10",
            "hostIP": "10.0.0.4",
            "conditions": [
                _condition(t, "True", "", "")
                for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
            ],
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "ready": True,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": now}},
                }
                for c in containers
            ],
        }
        if init:
            pod["status"]["initContainerStatuses"] = [
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "ready": True,
                    "restartCount": 0,
                    "state": {
                        "terminated": {
                            "exitCode": 0,
                            "reason": "Completed",
                            "startedAt": now,
                            "finishedAt": now,
                        }
                    },
                }
                for c in init
            ]
        await self._write_pod_status(pod)
        self._started[pod["metadata"]["uid"]] = asyncio.get_running_loop().time()

    async def _write_pod_status(self, pod: Obj) -> None:
        """Write ``pod``'s status through the status subresource, as kubelet does."""
        meta = pod["metadata"]
        await self.api.update(
            self._rt(POD_KEY), "v1", meta["namespace"], meta["name"], pod, subresource="status"
        )

    async def _finish(self, pod: Obj, *, succeeded: bool) -> None:
        now = now_rfc3339()
        code = 0 if succeeded else 1
        reason = "Completed" if succeeded else "Error"
        pod["status"]["phase"] = "Succeeded" if succeeded else "Failed"
        pod["status"]["conditions"] = [_condition("Ready", "False", "PodCompleted", "")]
        for cs in pod["status"].get("containerStatuses") or []:
            cs["ready"] = False
            cs["state"] = {"terminated": {"exitCode": code, "reason": reason, "finishedAt": now}}
        await self._write_pod_status(pod)

    async def _apply_failure(self, pod: Obj, mode: str, message: str | None = None) -> None:
        if mode == "Unschedulable":  # stays Pending, as if no node could take it
            self._failed.add(pod["metadata"]["uid"])
            pod["spec"].pop("nodeName", None)
            await self._schedule(pod, mode)
            return
        restarts = (pod.get("spec") or {}).get("restartPolicy", "Always") == "Always"
        if mode == "InitError":
            status, events = _init_failure_status(pod["spec"], restarts, message)
        else:
            status, events = _failure_status(mode, pod["spec"].get("containers") or [], restarts)
            if message:
                for entry in status.get("containerStatuses") or []:
                    for state in (entry.get("state") or {}, entry.get("lastState") or {}):
                        if "terminated" in state:
                            state["terminated"]["message"] = message
        pod["status"] = status
        self._failed.add(pod["metadata"]["uid"])
        self._write_logs(pod, mode, message)
        await self._write_pod_status(pod)
        for kind, reason, note in events:
            await self._event(pod, kind, reason, note)

    def _write_logs(self, pod: Obj, mode: str, message: str | None) -> None:
        """What each container that died this way wrote: a start line and the message (or, with
        none, a line saying how it ended)."""
        spec = pod.get("spec") or {}
        if mode == "InitError":
            containers = (spec.get("initContainers") or [])[-1:]
        elif mode in LOGGED_MODES:
            containers = spec.get("containers") or []
        else:
            return
        if self._log_dir is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix="kaiten-sim-logs-"))
        folder = self._log_dir / pod["metadata"]["uid"]
        folder.mkdir(parents=True, exist_ok=True)
        ending = (message or _default_log_line(mode)).rstrip("\n")
        for c in containers:
            started = f"{now_rfc3339()} simulated container {c['name']} started"
            (folder / f"{c['name']}.log").write_text(
                f"{started} ({c.get('image', '')})\n{ending}\n"
            )

    # --- helpers ---------------------------------------------------------------------------

    async def _event(self, obj: Obj, kind: str, reason: str, message: str) -> None:
        component = "kubelet" if reason != "FailedScheduling" else "default-scheduler"
        event = event_about(obj, kind, reason, message, component)
        namespace = event["metadata"]["namespace"]
        await self.api.create(self._rt(("", "events")), "v1", namespace, event)

    async def _set_status(self, key: tuple[str, str], obj: Obj, status: Obj) -> None:
        old = obj.get("status") or {}
        if "conditions" in status:
            status["conditions"] = _keep_transition_times(
                old.get("conditions"), status["conditions"]
            )
        if old == status:
            return
        obj["status"] = status
        rt = self._rt(key)
        await self.api.update(
            rt,
            rt.storage_version,
            obj["metadata"]["namespace"],
            obj["metadata"]["name"],
            obj,
            subresource="status",
        )

    def _owned_pods(self, owner: Obj) -> list[Obj]:
        uid = owner["metadata"]["uid"]
        selector = (owner.get("spec") or {}).get("selector")
        wanted = label_selector_from_dict(selector) if selector else None

        def owned(p: Obj) -> bool:
            return (
                any(r.get("uid") == uid for r in p["metadata"].get("ownerReferences") or [])
                and not p["metadata"].get("deletionTimestamp")
                and (wanted is None or matches_labels(wanted, p["metadata"].get("labels")))
            )

        return self.api.store.list(POD_KEY, owner["metadata"]["namespace"], owned)

    def _owner_kind(self, pod: Obj) -> str | None:
        refs = pod["metadata"].get("ownerReferences") or []
        return refs[0].get("kind") if refs else None

    def _owner_key(self, ref: Obj) -> tuple[str, str] | None:
        kinds = {
            "Deployment": ("apps", "deployments"),
            "StatefulSet": ("apps", "statefulsets"),
            "Job": ("batch", "jobs"),
        }
        return kinds.get(ref.get("kind", ""))

    def _rt(self, key: tuple[str, str]) -> ResourceType:
        return self.api.types[key]


def _failure_status(
    mode: str, containers: list[Obj], restarts: bool
) -> tuple[Obj, list[tuple[str, str, str]]]:
    """The pod status and Events a kubelet writes for each failure mode. ``restarts``: the pod's
    restartPolicy is Always, so a dead container is restarted rather than the pod failing."""
    now = now_rfc3339()
    events: list[tuple[str, str, str]] = []
    statuses: list[Obj] = []
    phase = "Running"
    for c in containers:
        name, image = c["name"], c.get("image", "")
        entry: Obj = {"name": name, "image": image, "ready": False, "restartCount": 0}
        if mode == "Unready":  # running, but its readiness probe fails
            entry["started"] = True
            entry["state"] = {"running": {"startedAt": now}}
            events.append(
                (
                    "Warning",
                    "Unhealthy",
                    "Readiness probe failed: HTTP probe failed with statuscode: 503",
                )
            )
        elif mode == "ImagePullBackOff":
            phase = "Pending"
            entry["state"] = {
                "waiting": {
                    "reason": "ImagePullBackOff",
                    "message": f'Back-off pulling image "{image}"',
                }
            }
            events.append(
                (
                    "Warning",
                    "Failed",
                    f'Failed to pull image "{image}": rpc error: '
                    "code = NotFound desc = failed to resolve reference",
                )
            )
        elif mode == "CrashLoopBackOff" or (mode in ("OOMKilled", "Error") and restarts):
            reason, code = ("OOMKilled", 137) if mode == "OOMKilled" else ("Error", 1)
            entry["restartCount"] = 5
            entry["state"] = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off 5m0s restarting failed container={name}",
                }
            }
            entry["lastState"] = {
                "terminated": {"exitCode": code, "reason": reason, "finishedAt": now}
            }
            events.append(("Warning", "BackOff", f"Back-off restarting failed container {name}"))
        else:
            phase = "Failed"
            reason, code = ("OOMKilled", 137) if mode == "OOMKilled" else ("Error", 1)
            entry["state"] = {"terminated": {"exitCode": code, "reason": reason, "finishedAt": now}}
        statuses.append(entry)
    status: Obj = {
        "phase": phase,
        "containerStatuses": statuses,
        "conditions": [
            _condition("Ready", "False", "ContainersNotReady", "containers with unready status")
        ],
    }
    if mode == "Evicted":
        message = "The node was low on resource: ephemeral-storage."
        status = {
            "phase": "Failed",
            "reason": "Evicted",
            "message": message,
            "containerStatuses": statuses,
        }
        events = [("Warning", "Evicted", message)]
    return status, events


def _default_log_line(mode: str) -> str:
    if mode == "OOMKilled":
        return "Killed (out of memory, simulated)"
    return f"simulated failure {mode}: the process exited with status 1"


def _init_failure_status(
    spec: Obj, restarts: bool, message: str | None
) -> tuple[Obj, list[tuple[str, str, str]]]:
    """The last init container exits 1 (with ``message`` as its termination message) after the
    others completed: the pod fails (restartPolicy Never) or it crash-loops (Always)."""
    now = now_rfc3339()
    init = spec.get("initContainers") or []
    if not init:
        raise ValueError("InitError needs a pod with init containers")
    first = init[-1]
    completed = [
        {
            "name": c["name"],
            "image": c.get("image", ""),
            "ready": True,
            "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": now}},
        }
        for c in init[:-1]
    ]
    terminated: Obj = {"exitCode": 1, "reason": "Error", "finishedAt": now}
    if message:
        terminated["message"] = message
    entry: Obj = {"name": first["name"], "image": first.get("image", ""), "ready": False}
    if restarts:
        entry |= {
            "restartCount": 5,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}},
            "lastState": {"terminated": terminated},
        }
    else:
        entry |= {"restartCount": 0, "state": {"terminated": terminated}}
    waiting = [
        {
            "name": c["name"],
            "image": c.get("image", ""),
            "ready": False,
            "restartCount": 0,
            "state": {"waiting": {"reason": "PodInitializing"}},
        }
        for c in spec.get("containers") or []
    ]
    status: Obj = {
        "phase": "Pending" if restarts else "Failed",
        "initContainerStatuses": [*completed, entry],
        "containerStatuses": waiting,
        "conditions": [
            _condition("Initialized", "False", "ContainersNotInitialized", ""),
            _condition("Ready", "False", "ContainersNotReady", "containers with unready status"),
        ],
    }
    return status, [("Warning", "BackOff", f"Back-off restarting failed container {first['name']}")]


def _node_refuses(node: Obj, spec: Obj, gpus: int, used: int) -> str | None:
    labels = node["metadata"].get("labels") or {}
    for key, value in (spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return "node(s) didn't match Pod's node affinity/selector"
    if not _affinity_matches(spec, labels):
        return "node(s) didn't match Pod's node affinity/selector"
    tolerated = spec.get("tolerations") or []
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not any(
            _tolerates(t, taint) for t in tolerated
        ):
            return f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value')}}}"
    capacity = int(((node.get("status") or {}).get("allocatable") or {}).get(GPU, 0))
    if gpus and capacity - used < gpus:
        return f"Insufficient {GPU}"
    return None


def _affinity_matches(spec: Obj, labels: dict[str, str]) -> bool:
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms") or []
    if not terms:
        return True
    return any(
        all(_expression_matches(e, labels) for e in t.get("matchExpressions") or []) for t in terms
    )


def _expression_matches(expr: Obj, labels: dict[str, str]) -> bool:
    key, op, values = expr.get("key", ""), expr.get("operator"), expr.get("values") or []
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    return False


def _tolerates(toleration: Obj, taint: Obj) -> bool:
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    if toleration.get("operator") == "Exists":
        return not toleration.get("key") or toleration["key"] == taint.get("key")
    return bool(
        toleration.get("key") == taint.get("key") and toleration.get("value") == taint.get("value")
    )


def _gpu_request(container: Obj) -> int:
    resources = container.get("resources") or {}
    value = (resources.get("limits") or {}).get(GPU) or (resources.get("requests") or {}).get(GPU)
    return int(value or 0)


def _failure_mode(pod: Obj) -> str | None:
    mode = (pod["metadata"].get("annotations") or {}).get(FAILURE_ANNOTATION)
    return mode if mode in FAILURE_MODES else None


def _pod_ready(pod: Obj) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def _job_finished(job: Obj) -> bool:
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


def _template_hash(pod: Obj) -> str:
    return str((pod["metadata"].get("labels") or {}).get("pod-template-hash", ""))


def _hash(template: Any) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()


def _suffix() -> str:
    return "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))


def _condition(ctype: str, status: str, reason: str, message: str) -> Obj:
    out: Obj = {"type": ctype, "status": status, "lastTransitionTime": now_rfc3339()}
    if reason:
        out["reason"] = reason
    if message:
        out["message"] = message
    return out


def _keep_transition_times(old: list[Obj] | None, new: list[Obj]) -> list[Obj]:
    """A condition whose status did not change keeps its lastTransitionTime."""
    before = {c.get("type"): c for c in old or []}
    out = []
    for condition in new:
        prev = before.get(condition["type"])
        if prev is not None and prev.get("status") == condition["status"]:
            out.append(dict(condition, lastTransitionTime=prev.get("lastTransitionTime")))
        else:
            out.append(condition)
    return out


def _without_zero(status: Obj) -> Obj:
    return {k: v for k, v in status.items() if v not in (0, None) or k == "readyReplicas"}
