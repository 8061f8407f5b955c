"""`kaiten up`, `down`, `up` again as a developer runs them: the Workspaces survive the restart
(the cluster's objects in cluster.json, the services' state in PostgreSQL, the events in the NATS
stream), the services resume rather than redo, `kaiten status` tells up from down and `kaiten
logs` prints the services' JSON logs readably."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from localdev.logs import SOURCES
from localdev.stack import process_alive
from shared.settings import SERVICE_NAMES
from tests.support.stack import Stack, running_stack, table_row

SEEDS = Path(__file__).resolve().parents[1] / "fixtures" / "seeds"
INFERENCE = SEEDS / "inference-phi-3-mini.yaml"
# Another labelSelector than INFERENCE: see the report on nodes shared between Workspaces.
ADAPTER = SEEDS / "inference-phi-3-mini-adapter.yaml"
TUNING = SEEDS / "tuning-phi-3.yaml"
# time, level, service, event: what a JSON line of the watcher's becomes.
READABLE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3} [A-Z]+ +watcher +[a-z_.]+ ")
PREFIXED = re.compile(rf"^({'|'.join(map(re.escape, SOURCES))}) +\| ")


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, bundled_nats_url: str, postgres_server_url: str
) -> Iterator[Stack]:
    with running_stack(
        tmp_path_factory.mktemp("lifecycle"), bundled_nats_url, postgres_server_url
    ) as running:
        yield running


def succeeded(stack: Stack, namespace: str, name: str) -> None:
    stack.kubectl(
        "wait",
        "--for=condition=WorkspaceSucceeded",
        f"workspace/{name}",
        "-n",
        namespace,
        "--timeout=60s",
        timeout=70,
    )


def test_status_and_logs_of_a_running_stack(stack: Stack) -> None:
    status = stack.kaiten("status")
    for part in (*SERVICE_NAMES, "cluster", "nats", "postgres"):
        assert re.search(rf"^{part} +ready ", status.stdout, re.MULTILINE), status.stdout
    stack.namespace("logs")
    stack.kubectl("apply", "-n", "logs", "-f", str(ADAPTER))
    succeeded(stack, "logs", "workspace-phi-3-mini-adapter")

    watcher = stack.kaiten("logs", "watcher", "-n", "5").stdout.splitlines()
    assert len(watcher) == 5, watcher
    assert not [line for line in watcher if line.startswith("{")], watcher
    # The admission of that Workspace, as the watcher logged it (JSON), printed readably.
    history = stack.kaiten("logs", "watcher", "-n", "1000").stdout.splitlines()
    admitted = [line for line in history if READABLE.match(line)]
    assert any(
        " admission.reviewed allowed=true workspace=logs/workspace-phi-3-mini-adapter" in line
        for line in admitted
    ), history
    raw = stack.kaiten("logs", "watcher", "--raw", "-n", "3").stdout.splitlines()
    assert len(raw) == 3
    assert any(line.startswith('{"') for line in raw), raw

    everything = stack.kaiten("logs", "-n", "30").stdout.splitlines()
    assert len(everything) == 30
    assert all(PREFIXED.match(line) for line in everything), everything

    unknown = stack.kaiten("logs", "nosuch", check=False)
    assert unknown.returncode != 0
    assert "nosuch" in unknown.stderr
    for choice in SOURCES:
        assert choice in unknown.stderr, unknown.stderr


def test_workspaces_survive_down_and_up_and_new_ones_still_work(stack: Stack) -> None:
    stack.namespace("before")
    stack.kubectl("apply", "-n", "before", "-f", str(INFERENCE))
    succeeded(stack, "before", "workspace-phi-3-mini")
    deployment = stack.kubectl(
        "get",
        "deployment",
        "workspace-phi-3-mini",
        "-n",
        "before",
        "-o",
        "jsonpath={.metadata.uid}",
    ).stdout
    first = stack.processes()
    assert set(first) >= {*SERVICE_NAMES, "cluster"}, first

    stack.down()
    assert not [name for name, (pid, marker) in first.items() if process_alive(pid, marker)]
    assert stack.kaiten("status", check=False).returncode != 0

    stack.up()
    assert stack.kaiten("status").returncode == 0
    assert not set(stack.processes().values()) & set(first.values())
    row = table_row(
        stack.kubectl("get", "workspace", "-n", "before").stdout, "workspace-phi-3-mini"
    )
    assert (row["RESOURCEREADY"], row["INFERENCEREADY"], row["WORKSPACEREADY"]) == (
        "True",
        "True",
        "True",
    )
    again = stack.kubectl(
        "get",
        "deployment",
        "workspace-phi-3-mini",
        "-n",
        "before",
        "-o",
        "jsonpath={.metadata.uid}",
    ).stdout
    assert again == deployment  # resumed, not redone

    stack.namespace("after")
    stack.kubectl("apply", "-n", "after", "-f", str(TUNING))
    succeeded(stack, "after", "workspace-tuning-phi-3")
    row = table_row(
        stack.kubectl("get", "workspace", "-n", "after").stdout, "workspace-tuning-phi-3"
    )
    assert (row["JOBSTARTED"], row["WORKSPACEREADY"]) == ("True", "True")
    assert stack.stream_messages() > 0  # the events went to this stack's own stream
