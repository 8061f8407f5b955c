"""The NodeClaim Kaito emits for one node (reference 2.3)."""

from __future__ import annotations

import pytest

from services.provisioner.nodes import assess, nodeclaim_manifest
from tests.unit.provisioner.objects import A100, REF, V100, ImageFamily, target

AZURE_REQUIREMENTS = [
    {"key": "karpenter.sh/nodepool", "operator": "In", "values": ["kaito"]},
    {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": [A100]},
    {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
    {"key": "karpenter.azure.com/sku-name", "operator": "In", "values": [A100]},
]


def test_azure_nodeclaim_has_every_field_kaito_sets() -> None:
    tgt = target(instance_type=A100, labels={"apps": "phi"}, disk_gib=150)

    manifest = nodeclaim_manifest(tgt, "ws0123abcde", "azure")

    assert manifest["apiVersion"] == "karpenter.sh/v1"
    assert manifest["kind"] == "NodeClaim"
    assert manifest["metadata"]["name"] == "ws0123abcde"
    assert manifest["metadata"]["labels"] == {
        "karpenter.sh/nodepool": "kaito",
        "kaito.sh/workspace": REF.name,
        "kaito.sh/workspacenamespace": REF.namespace,
        "apps": "phi",
    }
    assert manifest["metadata"]["annotations"] == {
        "karpenter.sh/do-not-disrupt": "true",
        "kaito.sh/node-image-family": "ubuntu",
    }
    spec = manifest["spec"]
    assert spec["taints"] == [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]
    assert spec["requirements"] == AZURE_REQUIREMENTS
    assert spec["resources"] == {"requests": {"storage": "150Gi"}}
    assert spec["nodeClassRef"] == {
        "group": "kaito.sh",
        "kind": "KaitoNodeClass",
        "name": "default",
    }


def test_aws_nodeclaim_uses_ec2nodeclass_and_asks_for_gpus() -> None:
    manifest = nodeclaim_manifest(target(instance_type="p4d.24xlarge"), "ws0123abcde", "aws")

    spec = manifest["spec"]
    assert spec["nodeClassRef"] == {
        "group": "karpenter.k8s.aws",
        "kind": "EC2NodeClass",
        "name": "default",
    }
    assert spec["requirements"] == [
        {"key": "karpenter.sh/nodepool", "operator": "In", "values": ["kaito"]},
        {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["p4d.24xlarge"]},
        {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
        {"key": "karpenter.k8s.aws/instance-gpu-count", "operator": "Gt", "values": ["0"]},
    ]
    assert spec["taints"] == [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]


@pytest.mark.parametrize("family", ["ubuntu", "azurelinux"])
def test_the_node_image_family_is_annotated(family: ImageFamily) -> None:
    manifest = nodeclaim_manifest(target(image_family=family), "ws0123abcde", "azure")

    assert manifest["metadata"]["annotations"]["kaito.sh/node-image-family"] == family
    assert "kaito.sh/node-image-family" not in manifest["metadata"]["labels"]


def test_manifests_do_not_share_mutable_parts() -> None:
    tgt = target()
    first = nodeclaim_manifest(tgt, "ws0123abcde", "azure")
    first["spec"]["taints"][0]["value"] = "changed"
    first["metadata"]["labels"]["extra"] = "x"

    second = nodeclaim_manifest(tgt, "ws0123abcdf", "azure")

    assert second["spec"]["taints"] == [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]
    assert "extra" not in second["metadata"]["labels"]


def test_a_nodeclaim_needs_an_instance_type() -> None:
    with pytest.raises(ValueError, match="instanceType"):
        nodeclaim_manifest(target(instance_type=None), "ws0123abcde", "azure")


def test_assess_emits_the_manifest_for_its_cloud() -> None:
    tgt = target(instance_type=V100, node_count=1, disk_gib=80)

    azure = assess(tgt, [], [], (), provision=True, cloud="azure").create
    aws = assess(tgt, [], [], (), provision=True, cloud="aws").create

    assert azure[0]["spec"]["nodeClassRef"]["kind"] == "KaitoNodeClass"
    assert azure[0]["spec"]["resources"]["requests"]["storage"] == "80Gi"
    assert aws[0]["spec"]["nodeClassRef"]["kind"] == "EC2NodeClass"
    assert azure[0]["metadata"]["name"] == aws[0]["metadata"]["name"]
