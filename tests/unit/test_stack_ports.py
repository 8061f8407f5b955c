"""The local stack's ports and service environment: one stack on the fixed ports a laptop
expects, or a second one moved as a block by KAITEN_PORT_BASE."""

from __future__ import annotations

from pathlib import Path

import pytest

from localdev.stack import Ports, service_env, stack_env
from shared.settings import DEFAULT_HEALTH_PORTS, SERVICE_NAMES


def test_without_a_base_the_stack_uses_the_documented_ports() -> None:
    ports = Ports.from_env({})
    assert ports.health == DEFAULT_HEALTH_PORTS
    assert (ports.webhook, ports.cluster, ports.nats, ports.postgres) == (9443, 6443, 4222, 5432)


def test_a_base_moves_every_port_into_one_block_of_ten() -> None:
    ports = Ports.from_env({"KAITEN_PORT_BASE": "31000"})
    assert ports.health == {
        "watcher": 31000,
        "planner": 31001,
        "provisioner": 31002,
        "deployer": 31003,
        "tuner": 31004,
    }
    assert (ports.webhook, ports.cluster, ports.nats, ports.postgres) == (
        31005,
        31006,
        31007,
        31008,
    )
    assert Ports.from_json(ports.to_json()) == ports


@pytest.mark.parametrize("base", ["80", "65527", "eight", "-1"])
def test_a_base_outside_the_user_ports_is_refused(base: str) -> None:
    with pytest.raises(ValueError, match="KAITEN_PORT_BASE"):
        Ports.from_env({"KAITEN_PORT_BASE": base})


def test_each_service_gets_its_own_health_port_and_the_callers_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAITEN_HOME", str(tmp_path))
    ports = Ports.from_base(40000)
    caller = {
        "KAITEN_STREAM": "MINE",
        "KAITEN_SUBJECT_PREFIX": "mine",
        "KAITEN_HEALTH_PORT": "1",  # one port for five servers would collide: replaced
        "KAITEN_WEBHOOK_PORT": "1",
        "KAITEN_LOG_FORMAT": "console",
    }
    env = stack_env(
        caller, nats_url="nats://n:1", database_url="postgresql://d/k", kubeconfig="kc", ports=ports
    )
    assert (env["KAITEN_STREAM"], env["KAITEN_SUBJECT_PREFIX"]) == ("MINE", "mine")
    assert env["KAITEN_PROVISIONER_BACKEND"] == "simulated"  # the stack's default
    assert env["KAITEN_WEBHOOK_PORT"] == "40005"
    assert env["KAITEN_LOG_FORMAT"] == "json"  # what `kaiten logs` reads
    assert env["KAITEN_WEBHOOK_CERT_DIR"] == str(tmp_path.resolve() / "webhook")
    assert (env["NATS_URL"], env["DATABASE_URL"], env["KUBECONFIG"]) == (
        "nats://n:1",
        "postgresql://d/k",
        "kc",
    )
    health = {name: service_env(name, env, ports)["KAITEN_HEALTH_PORT"] for name in SERVICE_NAMES}
    assert health == {name: str(port) for name, port in ports.health.items()}
    byo = stack_env(
        {"KAITEN_PROVISIONER_BACKEND": "byo"},
        nats_url="n",
        database_url="d",
        kubeconfig="k",
        ports=ports,
    )
    assert byo["KAITEN_PROVISIONER_BACKEND"] == "byo"  # the caller's choice wins
