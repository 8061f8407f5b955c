"""``kaiten port-forward``'s parsing and resolution: objects in, an endpoint or an error out."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from kaiten.portforward import (
    Endpoint,
    NotLocalError,
    Options,
    PortForwardError,
    PortSpec,
    Resolver,
    Target,
    check_local,
    choose_pod,
    container_port,
    context_namespace,
    kubectl_argv,
    label_selector,
    listen_addresses,
    parse_port_spec,
    parse_ports,
    parse_target,
    pod_endpoint,
    service_endpoint,
    service_port,
)


def pod(
    name: str,
    *,
    phase: str = "Running",
    ready: bool = True,
    ip: str = "127.100.0.2",
    ports: list[dict[str, Any]] | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default", "labels": {"app": "web"}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    if ip:
        status["podIP"] = ip
    return {
        "metadata": meta,
        "spec": {
            "containers": [
                {"name": "server", "ports": ports or [{"name": "http", "containerPort": 5000}]}
            ]
        },
        "status": status,
    }


def service(
    ports: list[dict[str, Any]] | None = None,
    selector: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "selector": {"app": "web"} if selector is None else selector,
            "ports": [{"name": "http", "port": 80, "targetPort": 5000}] if ports is None else ports,
            **spec,
        },
    }


# --- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("svc/web", Target("service", "web")),
        ("service/web", Target("service", "web")),
        ("services/web", Target("service", "web")),
        ("pod/web-0", Target("pod", "web-0")),
        ("po/web-0", Target("pod", "web-0")),
        ("web-0", Target("pod", "web-0")),
        ("SVC/web", Target("service", "web")),
    ],
)
def test_targets_are_read_like_kubectl(text: str, expected: Target) -> None:
    assert parse_target(text) == expected


@pytest.mark.parametrize("text", ["deployment/web", "svc/", "svc/a/b", ""])
def test_bad_targets_say_what_is_accepted(text: str) -> None:
    with pytest.raises(PortForwardError, match="svc/NAME"):
        parse_target(text)


@pytest.mark.parametrize(
    ("text", "local", "remote"),
    [
        ("8080:80", 8080, 80),
        ("80", 80, 80),
        (":80", 0, 80),
        ("0:80", 0, 80),
        ("8080:http", 8080, "http"),
        (":http", 0, "http"),
        ("65535:1", 65535, 1),
    ],
)
def test_port_specs_are_read_like_kubectl(text: str, local: int, remote: int | str) -> None:
    assert parse_port_spec(text) == PortSpec(local, remote, text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("abc", "invalid port 'abc'"),
        ("0", "out of range"),
        ("70000", "70000 is out of range"),
        ("8080:70000", "out of range"),
        ("8080:0", "out of range"),
        ("70000:80", "invalid port"),
        ("x:80", "invalid local port"),
        ("8080:", "invalid port"),
        ("-1", "invalid port"),
        ("8080:HTTP", "invalid port"),
        ("8080:a_b", "invalid port"),
        ("1:2:3", "invalid local port"),
        ("", "invalid port"),
    ],
)
def test_bad_port_specs_are_refused(text: str, message: str) -> None:
    with pytest.raises(PortForwardError, match=message):
        parse_port_spec(text)


def test_no_ports_is_an_error() -> None:
    with pytest.raises(PortForwardError, match="at least one port"):
        parse_ports([])


def test_listen_addresses() -> None:
    assert listen_addresses("127.0.0.1") == ["127.0.0.1"]
    assert listen_addresses("localhost") == ["127.0.0.1", "::1"]
    assert listen_addresses("127.0.0.1, 0.0.0.0,127.0.0.1") == ["127.0.0.1", "0.0.0.0"]  # noqa: S104
    with pytest.raises(PortForwardError, match="--address"):
        listen_addresses("127.0.0.1,")


# --- services ------------------------------------------------------------------------------


def test_int_target_port() -> None:
    assert service_endpoint(service(), [pod("web-0")], 80) == Endpoint("web-0", "127.100.0.2", 5000)


def test_service_port_chosen_by_name() -> None:
    ports = [{"name": "metrics", "port": 9090}, {"name": "http", "port": 80, "targetPort": 5000}]
    assert service_endpoint(service(ports), [pod("web-0")], "http").port == 5000
    assert service_endpoint(service(ports), [pod("web-0")], "metrics").port == 9090


def test_named_target_port_is_looked_up_in_the_pods_containers() -> None:
    svc = service([{"port": 80, "targetPort": "api"}])
    ports = [{"name": "metrics", "containerPort": 9000}, {"name": "api", "containerPort": 5001}]
    assert service_endpoint(svc, [pod("web-0", ports=ports)], 80).port == 5001


def test_unknown_named_target_port_lists_the_container_ports() -> None:
    svc = service([{"port": 80, "targetPort": "grpc"}])
    with pytest.raises(PortForwardError) as info:
        service_endpoint(svc, [pod("web-0")], 80)
    assert str(info.value) == (
        "pod web-0 has no container port named 'grpc' (service web port 80 targets it); "
        "its container ports: 5000 (http)"
    )


@pytest.mark.parametrize("target", [None, "", 0])
def test_missing_target_port_means_the_same_number(target: object) -> None:
    port: dict[str, Any] = {"port": 8000}
    if target is not None:
        port["targetPort"] = target
    assert service_port(service([port]), 8000).target == 8000


def test_numeric_string_target_port() -> None:
    assert service_port(service([{"port": 80, "targetPort": "5000"}]), 80).target == 5000


def test_unknown_service_port_lists_the_ports() -> None:
    ports = [{"name": "http", "port": 80, "targetPort": 5000}, {"port": 9090, "protocol": "TCP"}]
    with pytest.raises(PortForwardError) as info:
        service_port(service(ports), 81)
    assert (
        str(info.value) == "service web has no port 81; its ports: 80/TCP (http -> 5000), 9090/TCP"
    )
    with pytest.raises(PortForwardError, match="its ports: none"):
        service_port(service([]), 80)


def test_udp_ports_are_refused() -> None:
    with pytest.raises(PortForwardError, match="only TCP"):
        service_port(service([{"port": 53, "protocol": "UDP"}]), 53)


def test_no_pods_names_the_selector() -> None:
    svc = service(selector={"app": "web", "tier": "api"})
    with pytest.raises(PortForwardError) as info:
        service_endpoint(svc, [], 80)
    assert str(info.value) == "no pods match service web's selector app=web,tier=api"


def test_service_without_selector() -> None:
    with pytest.raises(PortForwardError, match="no selector"):
        label_selector(service(selector={}))


def test_not_ready_pods_are_named_with_their_phases() -> None:
    pods = [
        pod("web-2", phase="Pending", ip=""),
        pod("web-0", ready=False),
        pod("web-1", deleting=True),
        pod("web-3", phase="Failed", ready=False),
    ]
    with pytest.raises(PortForwardError) as info:
        service_endpoint(service(), pods, 80)
    assert str(info.value) == (
        "no Running and Ready pod behind service web (selector app=web): "
        "web-0 Running (not ready), web-1 Running (terminating), web-2 Pending, web-3 Failed"
    )


def test_ready_pods_are_preferred() -> None:
    pods = [
        pod("web-0", ready=False),
        pod("web-2", ip="127.100.0.9"),
        pod("web-1", phase="Pending"),
    ]
    assert service_endpoint(service(), pods, 80) == Endpoint("web-2", "127.100.0.9", 5000)
    assert choose_pod([pod("b"), pod("a")]) == pod("a")


def test_publish_not_ready_addresses_accepts_a_running_pod() -> None:
    svc = service(publishNotReadyAddresses=True)
    assert service_endpoint(svc, [pod("web-0", ready=False)], 80).pod == "web-0"
    assert choose_pod([pod("web-0", phase="Pending")], require_ready=False) is None


def test_pod_without_ip() -> None:
    svc = service()
    with pytest.raises(PortForwardError, match="pod web-0 has no IP yet"):
        service_endpoint(svc, [pod("web-0", ip="")], 80)


# --- pods ------------------------------------------------------------------------------------


def test_pod_ports() -> None:
    assert pod_endpoint(pod("web-0"), 8000) == Endpoint("web-0", "127.100.0.2", 8000)
    assert pod_endpoint(pod("web-0"), "http").port == 5000
    assert pod_endpoint(pod("web-0", ready=False), 5000).port == 5000  # like kubectl
    assert container_port(pod("web-0"), "http") == 5000


def test_pod_that_is_not_running() -> None:
    with pytest.raises(PortForwardError, match=r"pod web-0 is not running \(Pending\)"):
        pod_endpoint(pod("web-0", phase="Pending"), 5000)
    with pytest.raises(PortForwardError, match="terminating"):
        pod_endpoint(pod("web-0", deleting=True), 5000)


def test_unknown_container_port_name() -> None:
    with pytest.raises(PortForwardError, match="no container port named 'grpc'"):
        pod_endpoint(pod("web-0"), "grpc")


# --- local or not ----------------------------------------------------------------------------


def test_only_loopback_ips_are_forwarded_here() -> None:
    assert Endpoint("a", "127.100.0.2", 1).local
    assert Endpoint("a", "::1", 1).local
    assert not Endpoint("a", "10.244.0.10", 1).local
    assert not Endpoint("a", "garbage", 1).local
    check_local([Endpoint("a", "127.0.0.1", 1)])
    with pytest.raises(NotLocalError, match=r"pod b has IP 10\.0\.0\.1"):
        check_local([Endpoint("a", "127.0.0.1", 1), Endpoint("b", "10.0.0.1", 1)])


def test_kubectl_gets_the_same_arguments() -> None:
    options = Options("svc/web", ("8080:80", ":81"), namespace="ns", kubeconfig=Path("/k"))
    assert kubectl_argv(options, "kubectl") == [
        "kubectl",
        "port-forward",
        "svc/web",
        "8080:80",
        ":81",
        "--address",
        "127.0.0.1",
        "--namespace",
        "ns",
        "--kubeconfig",
        "/k",
    ]
    assert kubectl_argv(Options("web", ("80",)), "k") == [
        "k",
        "port-forward",
        "web",
        "80",
        "--address",
        "127.0.0.1",
    ]


def test_namespace_of_the_kubeconfig_context(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(
        "current-context: b\ncontexts:\n"
        "- name: a\n  context: {namespace: nope}\n"
        "- name: b\n  context: {cluster: c, namespace: team}\n"
    )
    assert context_namespace(path) == "team"
    path.write_text("current-context: a\ncontexts:\n- name: a\n  context: {cluster: c}\n")
    assert context_namespace(path) == "default"
    assert context_namespace(None) == "default"
    assert context_namespace(tmp_path / "missing") == "default"


# --- the resolver's cache ---------------------------------------------------------------------


class FakeCore:
    """The two reads a pod target makes, counted."""

    def __init__(self) -> None:
        self.reads = 0
        self.ip = "127.100.0.2"

    async def read_namespaced_pod(self, name: str, namespace: str, **_: Any) -> FakeResponse:
        self.reads += 1
        return FakeResponse(pod(name, ip=self.ip))


class FakeResponse:
    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.status = 200

    async def read(self) -> bytes:
        return json.dumps(self.body).encode()


async def test_the_resolver_looks_again_after_a_second() -> None:
    now = [0.0]
    core = FakeCore()
    resolver = Resolver(core, Target("pod", "web-0"), "default", clock=lambda: now[0])
    assert (await resolver.endpoint(5000)).ip == "127.100.0.2"
    core.ip = "127.100.0.3"
    now[0] = 0.5
    results = await asyncio.gather(*(resolver.endpoint(5000) for _ in range(5)))
    assert {r.ip for r in results} == {"127.100.0.2"}
    assert core.reads == 1
    now[0] = 1.5
    assert (await resolver.endpoint(5000)).ip == "127.100.0.3"
    assert core.reads == 2
