"""Workspaces and ConfigMaps for the planner tests, built as kubectl would send them, and small
helpers to read a plan's command line and a rejection's list of instance types that fit."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from presets.catalog import default_catalog
from presets.catalog.prices import default_prices
from services.planner.planning import PlanOptions, Rejection, plan_workspace
from shared.plan import Plan

SEEDS = Path(__file__).resolve().parents[2] / "fixtures" / "seeds"
OPTIONS = PlanOptions(default_catalog(), default_prices())
CATALOG = default_catalog()
PRICES = default_prices()

A10 = "Standard_NV36ads_A10_v5"
A100 = "Standard_NC24ads_A100_v4"
A100_X2 = "Standard_NC48ads_A100_v4"
V100 = "Standard_NC6s_v3"
V100_X2 = "Standard_NC12s_v3"
H100_UNPRICED = "Standard_NCC40ads_H100_v5"

Doc = dict[str, Any]
ConfigMapData = dict[str, dict[str, str] | None]


def seed(name: str) -> Doc:
    """A seed Workspace exactly as the seeds give it."""
    doc: Doc = yaml.safe_load((SEEDS / name).read_text())
    return doc


def inference(
    preset: str,
    instance_type: str,
    *,
    count: int | None = None,
    annotations: dict[str, str] | None = None,
    config: str | None = None,
    api_version: str = "kaito.sh/v1beta1",
) -> Doc:
    """An inference Workspace for ``preset`` on ``instance_type`` (gated presets get a secret)."""
    resource: Doc = {
        "instanceType": instance_type,
        "labelSelector": {"matchLabels": {"app": "planner-test"}},
    }
    if count is not None:
        resource["count"] = count
    metadata: Doc = {"name": "ws", "namespace": "default"}
    if annotations:
        metadata["annotations"] = dict(annotations)
    spec: Doc = {"preset": {"name": preset}}
    known = CATALOG.preset(preset)
    if known is not None and known.gated:
        spec["preset"]["presetOptions"] = {"modelAccessSecret": "hf-token"}
    if config is not None:
        spec["config"] = config
    return {
        "apiVersion": api_version,
        "kind": "Workspace",
        "metadata": metadata,
        "resource": resource,
        "inference": spec,
    }


def tuning(
    preset: str = "phi-3-mini-128k-instruct",
    instance_type: str = V100,
    method: str = "qlora",
    *,
    config: str | None = None,
) -> Doc:
    """The tuning seed with another preset, instance type, method or config ConfigMap."""
    doc = copy.deepcopy(seed("tuning-phi-3.yaml"))
    doc["resource"]["instanceType"] = instance_type
    doc["tuning"]["preset"]["name"] = preset
    doc["tuning"]["method"] = method
    if config is not None:
        doc["tuning"]["config"] = config
    return doc


def on_instance_type(doc: Doc, instance_type: str) -> Doc:
    """``doc`` moved to another instance type."""
    moved = copy.deepcopy(doc)
    moved["resource"]["instanceType"] = instance_type
    return moved


def inference_config(text: str, name: str = "inference-cm") -> ConfigMapData:
    return {name: {"inference_config.yaml": text}}


def training_config(text: str, name: str = "tuning-cm") -> ConfigMapData:
    return {name: {"training_config.yaml": text}}


def plan(doc: Doc, configmaps: ConfigMapData | None = None) -> Plan | Rejection:
    return plan_workspace(doc, configmaps or {}, OPTIONS)


def expect_plan(doc: Doc, configmaps: ConfigMapData | None = None) -> Plan:
    result = plan(doc, configmaps)
    assert isinstance(result, Plan), f"expected a Plan, got {result!r}"
    return result


def expect_rejection(doc: Doc, configmaps: ConfigMapData | None = None) -> Rejection:
    result = plan(doc, configmaps)
    assert isinstance(result, Rejection), f"expected a Rejection, got a plan: {result!r}"
    return result


def flag_value(command: tuple[str, ...], flag: str) -> str | None:
    """The value after ``flag`` in ``command``, or None when the flag is absent."""
    if flag not in command:
        return None
    index = command.index(flag)
    assert index + 1 < len(command), f"{flag} has no value in {command}"
    return command[index + 1]


_FITTING = re.compile(r"Instance types that fit it on one node: (?P<names>.+)\.$")


def fitting_instance_types(message: str) -> list[str]:
    """The instance types a rejection lists as fitting, without their prices."""
    match = _FITTING.search(message)
    assert match is not None, f"no 'Instance types that fit' in {message!r}"
    return [part.split(" (")[0] for part in match.group("names").split(", ")]


_SHORT = re.compile(r"(?P<gib>\d+(?:\.\d+)?) GiB short")


def shortfall_gib(message: str) -> float:
    match = _SHORT.search(message)
    assert match is not None, f"no 'GiB short' in {message!r}"
    return float(match.group("gib"))
