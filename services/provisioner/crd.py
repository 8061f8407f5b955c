"""Karpenter's NodeClaim CustomResourceDefinition, as Kaiten describes it for clusters without
Karpenter (``deploy/crds/karpenter.sh_nodeclaims.yaml``): the development cluster, and the azure
and simulated backends, where Kaiten plays gpu-provisioner. Where Karpenter runs, its own chart
installs the real one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

NODECLAIM_CRD_FILE = (
    Path(__file__).resolve().parents[2] / "deploy" / "crds" / "karpenter.sh_nodeclaims.yaml"
)


def nodeclaim_crd() -> dict[str, Any]:
    """The NodeClaim CRD (``nodeclaims.karpenter.sh``, v1, cluster-scoped), read afresh."""
    crd = yaml.safe_load(NODECLAIM_CRD_FILE.read_text(encoding="utf-8"))
    if not isinstance(crd, dict):
        raise TypeError(f"{NODECLAIM_CRD_FILE} does not hold a YAML mapping")
    return crd
