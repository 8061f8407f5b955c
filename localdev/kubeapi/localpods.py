"""The local pod runner: the kubelet of ``local-cpu`` nodes in the development cluster. A pod
bound to such a node runs for real, as processes on this machine:

- each volume is a folder under ``<root>/<namespace>/<pod>-<uid>/volumes/``: emptyDirs empty,
  ConfigMaps and Secrets written out as files (items and modes honoured), hostPaths as they are;
  other volume types leave the pod in ``ContainerCreating`` with a ``FailedMount`` Event;
- a container's ``command`` + ``args`` run with the pod's environment (``value``, ``valueFrom``
  ConfigMap / Secret keys and the pod's fields, ``envFrom``, ``$(VAR)`` references); ``python`` and
  ``python3`` are this interpreter, so Kaiten's runtimes run from the same installation whatever
  image the pod names;
- there is no filesystem isolation, so the runner maps mount paths instead: every mount path
  named in a command-line word, an environment value or the working directory is rewritten to
  the volume's folder (``/mnt/config/x.yaml`` becomes ``<pod>/volumes/config-volume/x.yaml``).
  Files are written as they are: a path a program reads from a file it is given (rather than
  from its command line) is not mapped, so Kaiten's manifests name every path on the command
  line. Mounts under ``/dev`` (``/dev/shm``) are the host's;
- each pod gets its own loopback address (127.100.x.y) as its IP, given to the processes as
  ``KAITEN_HOST`` (Kaiten's runtimes listen there), so two pods can both use port 5000;
- init containers run in order, then the containers together; readiness comes from each
  container's HTTP GET or TCP readiness probe; restarts follow ``restartPolicy`` with a capped
  back-off (``CrashLoopBackOff``); the termination message is the container's
  ``KAITEN_TERMINATION_LOG`` file, or the tail of its log with ``FallbackToLogsOnError``;
- logs go to ``<pod>/logs/<container>.log``; the pod proxy reaches the pod's ports.

Deleting the pod stops its processes (SIGTERM, then SIGKILL after the grace period, at most
``grace_cap_s``) and removes its folder.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import structlog
from aiohttp import web

from localdev.kubeapi.api import Api, event_about, now_rfc3339
from localdev.kubeapi.errors import ApiError
from localdev.kubeapi.store import Obj
from presets.catalog import LOCAL_CPU

log = structlog.get_logger(__name__)

INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
POD_KEY = ("", "pods")
NODE_KEY = ("", "nodes")
CONFIGMAP_KEY = ("", "configmaps")
SECRET_KEY = ("", "secrets")
DEFAULT_TERMINATION_PATH = "/dev/termination-log"
IP_BASE = int(ipaddress.ip_address("127.100.0.2"))
# What a container inherits from the machine (a pod's environment is otherwise its own).
PASSED_ENV = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "XDG_CACHE_HOME",
    "HF_HOME",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "OMP_NUM_THREADS",
    "KAITEN_MODEL_STORE",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
)
FALLBACK_LINES = 80  # the kubelet's FallbackToLogsOnError: the last 80 lines or 2048 bytes
FALLBACK_BYTES = 2048
MESSAGE_BYTES = 4096
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


class MountError(Exception):
    """A volume the runner cannot provide (yet): the pod waits, as at a kubelet."""


# --- pure parts: mounts, rewriting, environment, status ----------------------------------------


@dataclass(frozen=True, slots=True)
class Mounts:
    """Container mount paths and the host folders that stand in for them, longest path first."""

    pairs: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, str]]) -> Mounts:
        unique = {m.rstrip("/") or "/": h for m, h in pairs if not m.startswith("/dev/")}
        return cls(tuple(sorted(unique.items(), key=lambda p: -len(p[0]))))

    def path(self, value: str) -> str:
        """``value`` with a leading mount path replaced by its folder."""
        for mount, host in self.pairs:
            if value == mount or value.startswith(mount + "/"):
                return host + value[len(mount) :]
        return value

    def text(self, content: str) -> str:
        """Every mount path named in ``content`` (a command-line word, an environment value)
        rewritten, wherever it stands: ``--model=/workspace/w`` and ``open('/mnt/data/x')``
        too."""
        for mount, host in self.pairs:
            pattern = rf"(?<![\w./-]){re.escape(mount)}(?=$|[/\s\"',:;\]}})])"
            content = re.sub(pattern, host.replace("\\", "\\\\"), content, flags=re.MULTILINE)
        return content


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: a defined variable is replaced, an undefined reference
    is left as written, ``$$`` is a literal ``$``."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR.sub(one, value)


Lookup = Callable[[tuple[str, str], str, str], Obj | None]


def key_values(obj: Obj, *, secret: bool) -> dict[str, bytes]:
    """A ConfigMap's or Secret's keys and their bytes."""
    out: dict[str, bytes] = {}
    for key, value in (obj.get("data") or {}).items():
        out[key] = base64.b64decode(value) if secret else str(value).encode()
    for key, value in (obj.get("binaryData") or {}).items():
        out[key] = base64.b64decode(value)
    for key, value in (obj.get("stringData") or {}).items():
        out[key] = str(value).encode()
    return out


def container_env(
    container: Obj, pod: Obj, lookup: Lookup, base: Mapping[str, str]
) -> dict[str, str]:
    """The container's environment over ``base``: ``envFrom`` first, then ``env`` in order (later
    entries may refer to earlier ones with ``$(VAR)``). A missing ConfigMap or Secret key that is
    not ``optional`` raises :class:`MountError`, as the kubelet refuses to start the container."""
    ns = pod["metadata"].get("namespace", "default")
    env = dict(base)
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, key in (("configMapRef", CONFIGMAP_KEY), ("secretRef", SECRET_KEY)):
            ref = source.get(kind)
            if ref is None:
                continue
            obj = lookup(key, ns, ref.get("name", ""))
            if obj is None:
                if ref.get("optional"):
                    continue
                raise MountError(f'{kind[:-3]} "{ref.get("name")}" not found')
            for k, v in key_values(obj, secret=key == SECRET_KEY).items():
                env[prefix + k] = v.decode(errors="replace")
    for item in container.get("env") or []:
        name = item["name"]
        if "valueFrom" not in item:
            env[name] = expand(str(item.get("value", "")), env)
            continue
        value = _value_from(item["valueFrom"], pod, ns, lookup)
        if value is not None:
            env[name] = value
    return env


def _value_from(source: Obj, pod: Obj, ns: str, lookup: Lookup) -> str | None:
    if "fieldRef" in source:
        path = source["fieldRef"].get("fieldPath", "")
        fields = {
            "metadata.name": pod["metadata"]["name"],
            "metadata.namespace": ns,
            "metadata.uid": pod["metadata"].get("uid", ""),
            "spec.nodeName": pod["spec"].get("nodeName", ""),
            "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
            "status.podIP": (pod.get("status") or {}).get("podIP", ""),
            "status.hostIP": "127.0.0.1",
        }
        return str(fields.get(path, ""))
    for kind, key in (("configMapKeyRef", CONFIGMAP_KEY), ("secretKeyRef", SECRET_KEY)):
        ref = source.get(kind)
        if ref is None:
            continue
        obj = lookup(key, ns, ref.get("name", ""))
        values = key_values(obj, secret=key == SECRET_KEY) if obj is not None else {}
        if ref.get("key") in values:
            return values[ref["key"]].decode(errors="replace")
        if ref.get("optional"):
            return None
        what = "secret" if key == SECRET_KEY else "configmap"
        raise MountError(f'couldn\'t find key {ref.get("key")} in {what} "{ref.get("name")}"')
    return None  # resourceFieldRef: nothing to say on a machine without limits


def argv_of(container: Obj, mounts: Mounts, env: Mapping[str, str]) -> list[str]:
    """The process's argv: ``command`` + ``args`` expanded and mapped; ``python``/``python3``
    is this interpreter. Without ``command`` the image's entry point is unknown here."""
    command = list(container.get("command") or [])
    if not command:
        raise MountError(
            f"container {container['name']}: the local pod runner needs the container's "
            "command (it does not read images)"
        )
    words = [mounts.text(expand(str(w), env)) for w in command + list(container.get("args") or [])]
    if words[0] in ("python", "python3") or re.fullmatch(r"python3\.\d+", words[0]):
        words[0] = sys.executable
    return words


def termination_message(message_file: Path, log_file: Path, *, code: int, policy: str) -> str:
    """What the kubelet reports: the termination-log file, else (``FallbackToLogsOnError`` and
    a failure) the tail of the log."""
    with contextlib.suppress(OSError):
        text = message_file.read_bytes()[:MESSAGE_BYTES].decode(errors="replace")
        if text.strip():
            return text
    if policy != "FallbackToLogsOnError" or code == 0:
        return ""
    try:
        data = log_file.read_bytes()
    except OSError:
        return ""
    lines = data.splitlines()[-FALLBACK_LINES:]
    return b"\n".join(lines)[-FALLBACK_BYTES:].decode(errors="replace")


@dataclass
class ContainerRun:
    name: str
    image: str
    init: bool
    state: Obj = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Obj = field(default_factory=dict)
    restarts: int = 0
    ready: bool = False
    process: asyncio.subprocess.Process | None = None

    def status(self) -> Obj:
        out: Obj = {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "ready": self.ready,
            "restartCount": self.restarts,
            "state": self.state,
        }
        if self.last_state:
            out["lastState"] = self.last_state
        if not self.init:
            out["started"] = "running" in self.state
        return out


@dataclass
class PodRun:
    namespace: str
    name: str
    uid: str
    ip: str
    folder: Path
    init: list[ContainerRun]
    main: list[ContainerRun]
    phase: str = "Pending"
    started: str = field(default_factory=now_rfc3339)
    reason: str = ""
    message: str = ""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task[None] | None = None
    stopping: bool = False

    def status(self) -> Obj:
        """The pod status a kubelet would write for this run."""
        initialized = all(
            "terminated" in c.state and c.state["terminated"]["exitCode"] == 0 for c in self.init
        )
        ready = self.phase == "Running" and all(c.ready for c in self.main)
        conditions = [
            _condition("PodScheduled", True),
            _condition(
                "Initialized", initialized, "" if initialized else "ContainersNotInitialized"
            ),
            _condition("ContainersReady", ready, "" if ready else "ContainersNotReady"),
            _condition("Ready", ready, "" if ready else "ContainersNotReady"),
        ]
        status: Obj = {
            "phase": self.phase,
            "hostIP": "127.0.0.1",
            "podIP": self.ip,
            "podIPs": [{"ip": self.ip}],
            "startTime": self.started,
            "conditions": conditions,
            "containerStatuses": [c.status() for c in self.main],
        }
        if self.init:
            status["initContainerStatuses"] = [c.status() for c in self.init]
        if self.reason:
            status["reason"] = self.reason
        if self.message:
            status["message"] = self.message
        return status


def _condition(ctype: str, ok: bool, reason: str = "") -> Obj:
    out: Obj = {
        "type": ctype,
        "status": "True" if ok else "False",
        "lastTransitionTime": now_rfc3339(),
    }
    if reason:
        out["reason"] = reason
    return out


def runs_locally(node: Obj | None) -> bool:
    labels = ((node or {}).get("metadata") or {}).get("labels") or {}
    return labels.get(INSTANCE_TYPE_LABEL) == LOCAL_CPU


# --- the runner --------------------------------------------------------------------------------


class LocalPods:
    """Runs the pods of ``local-cpu`` nodes as processes; owns their status."""

    def __init__(
        self,
        api: Api,
        root: Path,
        *,
        probe_period_cap_s: float = 1.0,
        backoff_cap_s: float = 10.0,
        grace_cap_s: float = 5.0,
    ) -> None:
        self.api = api
        self.root = root
        self.probe_period_cap_s = probe_period_cap_s
        self.backoff_cap_s = backoff_cap_s
        self.grace_cap_s = grace_cap_s
        self._runs: dict[str, PodRun] = {}
        self._ips: set[str] = set()

    # --- what the simulator asks ---------------------------------------------------------------

    def handles(self, pod: Obj) -> bool:
        node = str((pod.get("spec") or {}).get("nodeName") or "")
        return bool(node) and runs_locally(self.api.store.get(NODE_KEY, "", node))

    def running(self, pod: Obj) -> bool:
        return pod["metadata"]["uid"] in self._runs

    def start(self, pod: Obj) -> None:
        """Run ``pod`` (bound to a local node, not yet running here)."""
        meta, spec = pod["metadata"], pod["spec"]
        uid = meta["uid"]
        if uid in self._runs:
            return
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            return
        run = PodRun(
            namespace=meta.get("namespace", "default"),
            name=meta["name"],
            uid=uid,
            ip=self._allocate_ip(),
            folder=self.root / meta.get("namespace", "default") / f"{meta['name']}-{uid[:8]}",
            init=[
                ContainerRun(c["name"], c.get("image", ""), True)
                for c in spec.get("initContainers") or []
            ],
            main=[
                ContainerRun(c["name"], c.get("image", ""), False)
                for c in spec.get("containers") or []
            ],
        )
        self._runs[uid] = run
        run.task = asyncio.get_running_loop().create_task(self._run(run))

    async def forget(self, uid: str) -> None:
        """The pod is gone: stop its processes and remove its folder."""
        run = self._runs.pop(uid, None)
        if run is None:
            return
        await self._stop_run(run)
        shutil.rmtree(run.folder, ignore_errors=True)
        self._ips.discard(run.ip)

    async def stop(self) -> None:
        """Stop every process (the cluster shuts down); folders stay for a restart."""
        runs = list(self._runs.values())
        self._runs.clear()
        await asyncio.gather(*(self._stop_run(r) for r in runs))

    def log_file(self, namespace: str, name: str, container: str | None) -> Path | None:
        run = self._find(namespace, name)
        if run is None:
            return None
        names = [c.name for c in run.main]
        chosen = container or (names[0] if len(names) == 1 else None)
        if chosen is None:
            raise ApiError(
                400,
                "BadRequest",
                f"a container name must be specified for pod {name}, choose one of: {names}",
            )
        if chosen not in names + [c.name for c in run.init]:
            raise ApiError(400, "BadRequest", f"container {chosen} is not valid for pod {name}")
        return run.folder / "logs" / f"{chosen}.log"

    async def proxy(self, namespace: str, name: str, port: int | None, path: str) -> web.Response:
        """GET ``path`` on the pod's ``port``, as the API server's pod proxy does."""
        run = self._find(namespace, name)
        if run is None or run.phase != "Running":
            raise ApiError(503, "ServiceUnavailable", f"pod {name} is not running")
        url = f"http://{run.ip}:{port or 80}{path}"
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
                session.get(url) as reply,
            ):
                body = await reply.read()
                return web.Response(body=body, status=reply.status, content_type=reply.content_type)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise ApiError(
                503,
                "ServiceUnavailable",
                f"error trying to reach service: dial tcp {run.ip}:{port}: {e}",
            ) from e

    def _find(self, namespace: str, name: str) -> PodRun | None:
        return next(
            (r for r in self._runs.values() if r.namespace == namespace and r.name == name), None
        )

    def _allocate_ip(self) -> str:
        n = 0
        while str(ipaddress.ip_address(IP_BASE + n)) in self._ips:
            n += 1
        ip = str(ipaddress.ip_address(IP_BASE + n))
        self._ips.add(ip)
        return ip

    # --- one pod ---------------------------------------------------------------------------

    def _lookup(self, key: tuple[str, str], ns: str, name: str) -> Obj | None:
        return self.api.store.get(key, ns, name)

    async def _run(self, run: PodRun) -> None:
        try:
            await self._run_pod(run)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug here must not take the cluster down
            log.exception("localpods.error", pod=f"{run.namespace}/{run.name}")
            run.phase, run.reason, run.message = "Failed", "LocalRunnerError", str(e)
            await self._write(run)

    async def _run_pod(self, run: PodRun) -> None:
        await self._write(run)
        pod = self._pod(run)
        if pod is None:
            return
        mounts_by_container = await self._volumes(run, pod)
        spec = pod["spec"]
        policy = spec.get("restartPolicy", "Always")
        for container, state in zip(spec.get("initContainers") or [], run.init, strict=True):
            state.state = {"waiting": {"reason": "PodInitializing"}}
            while True:
                code = await self._run_container(run, pod, container, state, mounts_by_container)
                if code == 0 or run.stopping:
                    break
                if policy == "Never":
                    run.phase = "Failed"
                    await self._write(run)
                    return
                await self._back_off(run, state)
            if run.stopping:
                return
        run.phase = "Running"
        containers = spec.get("containers") or []
        codes = await asyncio.gather(
            *(
                self._supervise(run, pod, c, state, mounts=mounts_by_container, policy=policy)
                for c, state in zip(containers, run.main, strict=True)
            )
        )
        if run.stopping:
            return
        run.phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"
        await self._write(run)

    async def _supervise(
        self,
        run: PodRun,
        pod: Obj,
        container: Obj,
        state: ContainerRun,
        *,
        mounts: Mapping[str, Mounts],
        policy: str,
    ) -> int:
        probe = asyncio.get_running_loop().create_task(self._probe(run, container, state))
        try:
            while True:
                code = await self._run_container(run, pod, container, state, mounts)
                if run.stopping or policy == "Never" or (policy == "OnFailure" and code == 0):
                    return code
                await self._back_off(run, state)
        finally:
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe

    async def _back_off(self, run: PodRun, state: ContainerRun) -> None:
        state.restarts += 1
        delay = min(self.backoff_cap_s, 0.5 * 2 ** (state.restarts - 1))
        state.last_state = {"terminated": state.state.get("terminated", {})}
        state.state = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {delay:g}s restarting failed container={state.name} "
                f"pod={run.name}_{run.namespace}({run.uid})",
            }
        }
        await self._write(run)
        await asyncio.sleep(delay)

    async def _run_container(
        self,
        run: PodRun,
        pod: Obj,
        container: Obj,
        state: ContainerRun,
        mounts_by_container: Mapping[str, Mounts],
    ) -> int:
        """Start the container's process, wait for it; returns its exit code."""
        mounts = mounts_by_container[container["name"]]
        logs = run.folder / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_file = logs / f"{container['name']}.log"
        message_file = run.folder / "termination" / container["name"]
        message_file.parent.mkdir(parents=True, exist_ok=True)
        message_file.unlink(missing_ok=True)
        base = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
        base["PATH"] = os.pathsep.join(
            [str(Path(sys.executable).parent), base.get("PATH", "/usr/bin:/bin")]
        )
        base |= {
            "HOSTNAME": run.name,
            "PYTHONUNBUFFERED": "1",
            "KAITEN_HOST": run.ip,
            "KAITEN_TERMINATION_LOG": str(message_file),
        }
        try:
            env = {
                k: mounts.path(v)
                for k, v in container_env(container, pod, self._lookup, base).items()
            }
            argv = argv_of(container, mounts, env)
        except MountError as e:
            return await self._cannot_start(run, state, "CreateContainerConfigError", str(e))
        cwd = Path(mounts.path(container.get("workingDir") or str(run.folder)))
        cwd.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 -- one local mkdir
        started = now_rfc3339()
        try:
            with log_file.open("ab") as out:
                state.process = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    env=env,
                    cwd=cwd,
                    start_new_session=True,
                )
        except OSError as e:
            return await self._cannot_start(run, state, "StartError", f"{argv[0]}: {e.strerror}")
        state.state = {"running": {"startedAt": started}}
        state.ready = False
        await self._write(run)
        await self._event(run, "Normal", "Started", f"Started container {container['name']}")
        code = await state.process.wait()
        state.process = None
        state.ready = False
        terminated: Obj = {
            "exitCode": code if code >= 0 else 128 - code,  # killed by signal N: 128 + N
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": started,
            "finishedAt": now_rfc3339(),
        }
        if code < 0:
            terminated["signal"] = -code
        message = termination_message(
            message_file,
            log_file,
            code=code,
            policy=container.get("terminationMessagePolicy", "File"),
        )
        if message:
            terminated["message"] = message
        state.state = {"terminated": terminated}
        if not run.stopping:
            await self._write(run)
        return code

    async def _cannot_start(
        self, run: PodRun, state: ContainerRun, reason: str, message: str
    ) -> int:
        state.state = {"waiting": {"reason": reason, "message": message}}
        await self._write(run)
        await self._event(run, "Warning", "Failed", f"Error: {message}")
        return 1

    async def _probe(self, run: PodRun, container: Obj, state: ContainerRun) -> None:
        probe = container.get("readinessProbe")
        while True:
            running = "running" in state.state
            ready = running and (probe is None or await self._check(run, probe))
            if ready != state.ready:
                state.ready = ready
                await self._write(run)
            period = float((probe or {}).get("periodSeconds", 10))
            await asyncio.sleep(min(period, self.probe_period_cap_s))

    async def _check(self, run: PodRun, probe: Obj) -> bool:
        timeout = float(probe.get("timeoutSeconds", 1))
        if "httpGet" in probe:
            get = probe["httpGet"]
            url = f"http://{run.ip}:{get.get('port')}{get.get('path', '/')}"
            try:
                async with (
                    aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
                    session.get(url) as reply,
                ):
                    return 200 <= reply.status < 400  # noqa: PLR2004
            except (aiohttp.ClientError, TimeoutError):
                return False
        if "tcpSocket" in probe:
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(run.ip, int(probe["tcpSocket"]["port"])), timeout
                )
            except (OSError, TimeoutError):
                return False
            writer.close()
            return True
        return True  # exec probes: the container running is all the runner checks

    async def _volumes(self, run: PodRun, pod: Obj) -> dict[str, Mounts]:
        """Make every volume's folder (waiting, with a FailedMount Event, for a missing ConfigMap
        or Secret); returns each container's mount map."""
        spec = pod["spec"]
        folders: dict[str, Path] = {}
        reported = ""
        while True:
            try:
                for volume in spec.get("volumes") or []:
                    folders[volume["name"]] = self._volume(run, pod, volume)
                break
            except MountError as e:
                if str(e) != reported:
                    reported = str(e)
                    await self._event(
                        run, "Warning", "FailedMount", f"MountVolume.SetUp failed: {e}"
                    )
                await asyncio.sleep(1.0)
        containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
        by_container: dict[str, Mounts] = {}
        for c in containers:
            pairs = []
            for m in c.get("volumeMounts") or []:
                folder = folders.get(m["name"])
                if folder is None:
                    continue
                host = folder / m["subPath"] if m.get("subPath") else folder
                if m.get("subPath"):
                    host.mkdir(parents=True, exist_ok=True)
                pairs.append((m["mountPath"], str(host)))
            message = c.get("terminationMessagePath", DEFAULT_TERMINATION_PATH)
            pairs.append((message, str(run.folder / "termination" / c["name"])))
            by_container[c["name"]] = Mounts.of(pairs)
        return by_container

    def _volume(self, run: PodRun, pod: Obj, volume: Obj) -> Path:
        name = str(volume["name"])
        if "hostPath" in volume:
            host = Path(str(volume["hostPath"]["path"]))
            if volume["hostPath"].get("type") in ("DirectoryOrCreate", None, ""):
                host.mkdir(parents=True, exist_ok=True)
            return host
        folder = run.folder / "volumes" / name
        if "emptyDir" in volume:
            folder.mkdir(parents=True, exist_ok=True)
            return folder
        ns = pod["metadata"].get("namespace", "default")
        for kind, key, ref_name in (
            ("configMap", CONFIGMAP_KEY, "name"),
            ("secret", SECRET_KEY, "secretName"),
        ):
            if kind not in volume:
                continue
            source = volume[kind]
            obj = self._lookup(key, ns, source.get(ref_name, ""))
            if obj is None and not source.get("optional"):
                raise MountError(f'{kind.lower()} "{source.get(ref_name)}" not found')
            values = key_values(obj, secret=key == SECRET_KEY) if obj is not None else {}
            items = source.get("items") or [{"key": k, "path": k} for k in values]
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            for item in items:
                if item["key"] not in values:
                    raise MountError(f"{kind} {source.get(ref_name)} has no key {item['key']}")
                target = folder / item["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(values[item["key"]])
                target.chmod(int(item.get("mode", source.get("defaultMode", 0o644))))
            return folder
        kinds = sorted(set(volume) - {"name"})
        raise MountError(
            f"volume {name}: type {', '.join(kinds) or '(none)'} is not supported by the local "
            "pod runner (emptyDir, configMap, secret and hostPath are)"
        )

    async def _stop_run(self, run: PodRun) -> None:
        run.stopping = True
        processes = [c.process for c in run.init + run.main if c.process is not None]
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_cap_s
        for process in processes:
            try:
                await asyncio.wait_for(process.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        if run.task is not None:
            run.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run.task

    # --- API writes --------------------------------------------------------------------------

    def _pod(self, run: PodRun) -> Obj | None:
        pod = self.api.store.get(POD_KEY, run.namespace, run.name)
        if pod is None or pod["metadata"].get("uid") != run.uid:
            return None
        return pod

    async def _write(self, run: PodRun) -> None:
        """Write the run's status through the status subresource, as the kubelet does."""
        async with run.lock:
            for _ in range(5):
                pod = self._pod(run)
                if pod is None or run.stopping:
                    return
                pod["status"] = run.status()
                try:
                    await self.api.update(
                        self.api.types[POD_KEY],
                        "v1",
                        run.namespace,
                        run.name,
                        pod,
                        subresource="status",
                    )
                except ApiError as e:
                    if e.code == 404:  # noqa: PLR2004
                        return
                    if e.code != 409:  # noqa: PLR2004
                        raise
                else:
                    return

    async def _event(self, run: PodRun, kind: str, reason: str, message: str) -> None:
        pod = {"metadata": {"name": run.name, "namespace": run.namespace, "uid": run.uid}}
        event = event_about(pod, kind, reason, message, "kubelet")
        with contextlib.suppress(ApiError):
            await self.api.create(self.api.types[("", "events")], "v1", run.namespace, event)
