"""Kaiten's NodeClaim CRD (deploy/crds/karpenter.sh_nodeclaims.yaml) on the development cluster:
accepted as a CRD, and NodeClaims written and read with kubectl as Kaiten and a user do, with the
API server's defaults, validation, cluster scope, status subresource and printer columns."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client as aclient

from services.provisioner.crd import nodeclaim_crd
from tests.kubeapi.conftest import Kubectl

CRD_NAME = "nodeclaims.karpenter.sh"
NAME = "ws1a2b3c4d5"

# What the provisioner creates for a Workspace on Azure (services/provisioner/nodes.py).
NODECLAIM = """\
apiVersion: karpenter.sh/v1
kind: NodeClaim
metadata:
  name: ws1a2b3c4d5
  labels:
    karpenter.sh/nodepool: kaito
    kaito.sh/workspace: workspace-phi-3-mini
    kaito.sh/workspacenamespace: default
    apps: phi-3
    node.kubernetes.io/instance-type: Standard_NC24ads_A100_v4
  annotations:
    karpenter.sh/do-not-disrupt: "true"
    kaito.sh/node-image-family: ubuntu
spec:
  nodeClassRef: {group: kaito.sh, kind: KaitoNodeClass, name: default}
  taints: [{key: sku, value: gpu, effect: NoSchedule}]
  requirements:
  - {key: karpenter.sh/nodepool, operator: In, values: [kaito]}
  - {key: node.kubernetes.io/instance-type, operator: In, values: [Standard_NC24ads_A100_v4]}
  - {key: kubernetes.io/os, operator: In, values: [linux]}
  - {key: karpenter.azure.com/sku-name, operator: In, values: [Standard_NC24ads_A100_v4]}
  resources: {requests: {storage: 80Gi}}
"""


def nodeclaim(name: str = NAME) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load(NODECLAIM)
    body["metadata"]["name"] = name
    return body


async def rejected(kubectl: Kubectl, body: dict[str, Any]) -> str:
    """kubectl's error output for an apply the API server refuses."""
    code, _, err = await kubectl("apply", "-f", "-", stdin=json.dumps(body), check=False)
    assert code != 0, f"accepted: {body}"
    return err


async def read(kubectl: Kubectl, name: str = NAME) -> dict[str, Any]:
    _, out, _ = await kubectl("get", "nodeclaim", name, "-o", "json")
    obj: dict[str, Any] = json.loads(out)
    return obj


def table(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines()]


def rows(out: str) -> list[dict[str, str]]:
    """kubectl's table as one dict per row, cut where the header's columns start: a column
    without a value (the API server's null cell) is printed blank, and read back as ""."""
    header, *lines = out.splitlines()
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    ends = [*starts[1:], None]
    return [
        {header[s:e].strip(): line[s:e].strip() for s, e in zip(starts, ends, strict=True)}
        for line in lines
    ]


@pytest.fixture
async def crd(api_client: aclient.ApiClient, kubectl: Kubectl) -> dict[str, Any]:
    """The CRD created through the API, as a client library would; returned as stored."""
    created = await aclient.ApiextensionsV1Api(api_client).create_custom_resource_definition(
        nodeclaim_crd()
    )
    await kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=10s")
    stored: dict[str, Any] = api_client.sanitize_for_serialization(created)
    return stored


def test_the_loader_reads_the_committed_file() -> None:
    crd = nodeclaim_crd()
    spec = crd["spec"]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == CRD_NAME
    assert (spec["group"], spec["scope"]) == ("karpenter.sh", "Cluster")
    assert spec["names"]["categories"] == ["karpenter"]
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1", True, True)
    columns = {
        c["name"]: (c["jsonPath"], c.get("priority", 0))
        for c in version["additionalPrinterColumns"]
    }
    assert columns["Ready"] == ('.status.conditions[?(@.type=="Ready")].status', 0)
    assert columns["Type"] == (r".metadata.labels.node\.kubernetes\.io/instance-type", 0)
    assert columns["NodeClass"] == (".spec.nodeClassRef.name", 1)
    assert nodeclaim_crd() is not crd  # read afresh: callers may change their copy


async def test_the_development_cluster_accepts_the_crd(
    crd: dict[str, Any], kubectl: Kubectl
) -> None:
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions == {"NamesAccepted": "True", "Established": "True"}
    assert crd["status"]["acceptedNames"]["kind"] == "NodeClaim"
    assert crd["status"]["storedVersions"] == ["v1"]
    _, out, _ = await kubectl("api-resources", "--api-group=karpenter.sh", "--no-headers")
    assert table(out) == [["nodeclaims", "karpenter.sh/v1", "false", "NodeClaim"]]


async def test_apply_creates_a_nodeclaim_that_reads_back_as_sent(
    crd: dict[str, Any], kubectl: Kubectl
) -> None:
    assert f"nodeclaim.karpenter.sh/{NAME} created" in await kubectl.apply(NODECLAIM)
    got = await read(kubectl)
    sent = nodeclaim()
    assert (got["apiVersion"], got["kind"]) == ("karpenter.sh/v1", "NodeClaim")
    assert "namespace" not in got["metadata"]
    assert got["metadata"]["labels"] == sent["metadata"]["labels"]
    assert got["metadata"]["annotations"]["karpenter.sh/do-not-disrupt"] == "true"
    assert got["metadata"]["annotations"]["kaito.sh/node-image-family"] == "ubuntu"
    # the API server's only change: the schema default for expireAfter
    assert got["spec"] == {**sent["spec"], "expireAfter": "720h"}
    assert got["spec"]["resources"]["requests"]["storage"] == "80Gi"  # int-or-string kept as sent
    assert "status" not in got
    assert "unchanged" in await kubectl.apply(NODECLAIM)


async def test_a_nodeclaim_is_cluster_scoped(crd: dict[str, Any], kubectl: Kubectl) -> None:
    await kubectl.apply(NODECLAIM)
    _, out, _ = await kubectl("get", "nodeclaims")
    header, *rows = table(out)
    assert header == ["NAME", "TYPE", "CAPACITY", "ZONE", "NODE", "READY", "AGE"]
    assert [row[:2] for row in rows] == [[NAME, "Standard_NC24ads_A100_v4"]]
    # a namespace means nothing to a cluster-scoped resource
    _, names, _ = await kubectl("get", "nodeclaims", "-n", "kube-system", "-o", "name")
    assert names.split() == [f"nodeclaim.karpenter.sh/{NAME}"]
    _, category, _ = await kubectl("get", "karpenter", "-o", "name")
    assert category.split() == [f"nodeclaim.karpenter.sh/{NAME}"]


async def test_kaitens_aws_nodeclaim_with_a_gt_requirement_is_accepted(
    crd: dict[str, Any], kubectl: Kubectl
) -> None:
    body = nodeclaim("ws0aws00001")
    body["spec"]["nodeClassRef"] = {
        "group": "karpenter.k8s.aws",
        "kind": "EC2NodeClass",
        "name": "default",
    }
    body["spec"]["requirements"][3] = {
        "key": "karpenter.k8s.aws/instance-gpu-count",
        "operator": "Gt",
        "values": ["0"],
    }
    body["spec"]["resources"]["requests"]["storage"] = 85899345920  # int-or-string: an integer
    body["spec"]["startupTaints"] = [{"key": "node.example/init", "effect": "NoExecute"}]
    await kubectl.apply(body)
    got = await read(kubectl, "ws0aws00001")
    assert got["spec"]["resources"]["requests"]["storage"] == 85899345920
    assert got["spec"]["requirements"][3]["operator"] == "Gt"


async def test_a_nodeclaim_without_nodeclassref_is_rejected(
    crd: dict[str, Any], kubectl: Kubectl
) -> None:
    body = nodeclaim()
    del body["spec"]["nodeClassRef"]
    err = await rejected(kubectl, body)
    assert f'The NodeClaim "{NAME}" is invalid' in err
    assert "spec.nodeClassRef: Required value" in err
    empty = nodeclaim()
    empty["spec"]["nodeClassRef"]["name"] = ""
    assert "spec.nodeClassRef.name: Invalid value" in await rejected(kubectl, empty)
    assert "name may not be empty" in await rejected(kubectl, empty)


async def test_an_unknown_requirement_operator_is_rejected(
    crd: dict[str, Any], kubectl: Kubectl
) -> None:
    body = nodeclaim()
    body["spec"]["requirements"][0]["operator"] = "Equals"
    err = await rejected(kubectl, body)
    assert 'spec.requirements[0].operator: Unsupported value: "Equals"' in err
    assert '"In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"' in err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"requirements": [{"key": "kubernetes.io/os", "operator": "In", "values": []}]},
            "requirements with operator 'In' must have a value defined",
        ),
        (
            {"requirements": [{"key": "example.com/gpus", "operator": "Gt", "values": ["1", "2"]}]},
            "requirements operator 'Gt' or 'Lt' must have a single positive integer value",
        ),
        (
            {
                "requirements": [
                    {
                        "key": "kubernetes.io/os",
                        "operator": "In",
                        "values": ["linux"],
                        "minValues": 2,
                    }
                ]
            },
            "requirements with 'minValues' must have at least that many values",
        ),
        (
            {"taints": [{"key": "sku", "value": "gpu", "effect": "NoWhere"}]},
            'spec.taints[0].effect: Unsupported value: "NoWhere"',
        ),
        ({"taints": [{"key": "sku", "value": "gpu"}]}, "spec.taints[0].effect: Required value"),
        (
            {"resources": {"requests": {"storage": "lots"}}},
            "spec.resources.requests.storage: Invalid value",
        ),
        ({"expireAfter": "30d"}, "spec.expireAfter: Invalid value"),
    ],
)
async def test_invalid_specs_are_rejected(
    crd: dict[str, Any], kubectl: Kubectl, change: dict[str, Any], message: str
) -> None:
    body = nodeclaim()
    body["spec"].update(change)
    assert message in await rejected(kubectl, body)


async def test_the_spec_is_immutable(crd: dict[str, Any], kubectl: Kubectl) -> None:
    await kubectl.apply(NODECLAIM)
    changed = nodeclaim()
    changed["spec"]["taints"] = []
    err = await rejected(kubectl, changed)
    assert "spec: Invalid value" in err
    assert "spec is immutable" in err


async def test_a_status_patch_shows_in_the_printer_columns(
    crd: dict[str, Any], kubectl: Kubectl
) -> None:
    await kubectl.apply(NODECLAIM)
    _, out, _ = await kubectl("get", "nodeclaims")
    [before] = rows(out)
    assert before["NAME"] == NAME
    assert before["TYPE"] == "Standard_NC24ads_A100_v4"
    assert before["CAPACITY"] == before["ZONE"] == before["NODE"] == before["READY"] == ""
    status = {
        "nodeName": "aks-ws1a2b3c4d5-12345678-vmss000000",
        "providerID": "azure:///subscriptions/s/resourceGroups/rg/providers/"
        "Microsoft.Compute/virtualMachineScaleSets/aks-ws1a2b3c4d5-12345678-vmss/"
        "virtualMachines/0",
        "capacity": {"cpu": "24", "nvidia.com/gpu": 1, "memory": "220Gi"},
        "conditions": [
            {
                "type": "Launched",
                "status": "True",
                "reason": "Launched",
                "message": "",
                "lastTransitionTime": "2026-11-21T00:00:00Z",
                "observedGeneration": 1,
            },
            {
                "type": "Ready",
                "status": "True",
                "reason": "Ready",
                "message": "",
                "lastTransitionTime": "2026-11-21T00:01:00Z",
                "observedGeneration": 1,
            },
        ],
    }
    await kubectl(
        "patch",
        "nodeclaim",
        NAME,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )
    _, out, _ = await kubectl("get", "nodeclaims")
    assert table(out)[0] == ["NAME", "TYPE", "CAPACITY", "ZONE", "NODE", "READY", "AGE"]
    [after] = rows(out)
    assert after["NODE"] == "aks-ws1a2b3c4d5-12345678-vmss000000"
    assert after["READY"] == "True"
    assert after["TYPE"] == "Standard_NC24ads_A100_v4"
    assert after["CAPACITY"] == after["ZONE"] == ""  # labels the simulated cloud does not set
    _, wide, _ = await kubectl("get", "nodeclaims", "-o", "wide")
    [row] = rows(wide)
    assert list(row)[-3:] == ["ID", "NODEPOOL", "NODECLASS"]
    assert (row["ID"], row["NODEPOOL"], row["NODECLASS"]) == (
        status["providerID"],
        "kaito",
        "default",
    )
    got = await read(kubectl)
    assert got["status"] == status
    assert got["metadata"]["generation"] == 1  # a status write is not a spec change


async def test_a_status_write_is_validated_and_pruned_like_any_write(
    crd: dict[str, Any], kubectl: Kubectl
) -> None:
    await kubectl.apply(NODECLAIM)

    async def patch_status(status: dict[str, Any]) -> tuple[int, str, str]:
        return await kubectl(
            "patch",
            "nodeclaim",
            NAME,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": status}),
            check=False,
        )

    code, _, err = await patch_status({"conditions": [{"type": "Ready", "status": "Maybe"}]})
    assert code != 0
    assert 'status.conditions[0].status: Unsupported value: "Maybe"' in err
    code, _, err = await patch_status({"conditions": [{"status": "True"}]})
    assert code != 0
    assert "status.conditions[0].type: Required value" in err
    # kubectl patch asks for no field validation: the server's default, Warn, prunes and warns
    code, _, err = await patch_status({"nodeName": "n1", "colour": "red"})
    assert code == 0
    assert 'Warning: unknown field "status.colour"' in err
    assert (await read(kubectl))["status"] == {"nodeName": "n1"}
