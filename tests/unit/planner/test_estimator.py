"""Kaito's vLLM node estimator (reference 2.9) and Kaiten's tuning memory estimate, checked
directly and through ``plan_workspace``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from presets.catalog import GpuSku, ModelPreset
from presets.tuning.config import merge_with_template, parse_config
from services.planner.planning import (
    A10_UTILIZATION,
    DEFAULT_CONTEXT,
    VLLM_UTILIZATION,
    Estimate,
    estimate_nodes,
    estimate_tuning_memory,
    vllm_utilization,
)
from tests.unit.planner.workspaces import (
    A10,
    A100,
    A100_X2,
    CATALOG,
    V100,
    expect_plan,
    flag_value,
    inference,
)


def _preset(name: str) -> ModelPreset:
    preset = CATALOG.preset(name)
    assert preset is not None, name
    return preset


def _sku(name: str) -> GpuSku:
    sku = CATALOG.sku(name)
    assert sku is not None, name
    return sku


@dataclass(frozen=True)
class NodeCase:
    id: str
    preset: str
    sku: str
    nodes: int
    min_gpus: int
    utilization: float


NODE_CASES = [
    # Kaito's own estimator test cases.
    NodeCase("kaito-falcon-7b-on-a10", "falcon-7b", A10, 1, 1, A10_UTILIZATION),
    NodeCase(
        "kaito-qwen-32b-on-one-a100",
        "qwen2.5-coder-32b-instruct",
        A100,
        2,
        2,
        VLLM_UTILIZATION,
    ),
    NodeCase("phi-3-mini-on-a100", "phi-3-mini-4k-instruct", A100, 1, 1, VLLM_UTILIZATION),
    NodeCase("phi-3-mini-on-a10", "phi-3-mini-4k-instruct", A10, 1, 1, A10_UTILIZATION),
    NodeCase("falcon-40b-needs-two-a100s-of-one-node", "falcon-40b", A100_X2, 1, 2, 0.84),
    NodeCase(
        "qwen-32b-fits-two-a100s-of-one-node",
        "qwen2.5-coder-32b-instruct",
        A100_X2,
        1,
        2,
        VLLM_UTILIZATION,
    ),
]


@pytest.mark.parametrize("case", NODE_CASES, ids=[c.id for c in NODE_CASES])
def test_estimate_nodes_matches_kaito(case: NodeCase) -> None:
    sku = _sku(case.sku)
    estimate = estimate_nodes(_preset(case.preset), sku, DEFAULT_CONTEXT)
    assert isinstance(estimate, Estimate), estimate
    assert estimate.nodes == case.nodes
    assert estimate.min_gpus == case.min_gpus
    assert estimate.utilization == case.utilization
    assert estimate.nodes == math.ceil(estimate.min_gpus / sku.gpu_count)
    # min_gpus is the fewest GPUs whose capacity holds the weights.
    assert estimate.capacity_gib * estimate.min_gpus > estimate.needed_gib
    assert estimate.capacity_gib * (estimate.min_gpus - 1) <= estimate.needed_gib


@dataclass(frozen=True)
class PlannedNodes:
    id: str
    preset: str
    sku: str
    count: int | None
    node_count: int
    tensor_parallel: int
    pipeline_parallel: int


PLANNED_NODES = [
    PlannedNodes("kaito-falcon-7b-on-a10", "falcon-7b", A10, None, 1, 1, 1),
    PlannedNodes("kaito-qwen-32b-on-a100", "qwen2.5-coder-32b-instruct", A100, None, 2, 1, 2),
    PlannedNodes("count-4-collapses-to-1", "phi-3-mini-4k-instruct", A100, 4, 1, 1, 1),
]


@pytest.mark.parametrize("case", PLANNED_NODES, ids=[c.id for c in PLANNED_NODES])
def test_plan_uses_the_estimator_node_count(case: PlannedNodes) -> None:
    plan = expect_plan(inference(case.preset, case.sku, count=case.count))
    assert plan.runtime.name == "vllm"
    assert plan.node_count == case.node_count
    assert plan.tensor_parallel_size == case.tensor_parallel
    assert plan.pipeline_parallel_size == case.pipeline_parallel
    assert flag_value(plan.command, "--tensor-parallel-size") == str(case.tensor_parallel)
    if case.pipeline_parallel > 1:
        assert flag_value(plan.command, "--pipeline-parallel-size") == str(case.pipeline_parallel)
        assert flag_value(plan.command, "--distributed-executor-backend") == "ray"
    else:
        assert "--pipeline-parallel-size" not in plan.command
        assert "--distributed-executor-backend" not in plan.command
    if case.count is not None and case.count != case.node_count:
        assert any("resource.count" in note for note in plan.notes), plan.notes


def test_estimate_nodes_explains_a_gpu_too_small_for_the_context() -> None:
    # The reserve for 262144 tokens of KV cache is more than one A10 can give.
    result = estimate_nodes(_preset("ministral-3-3b-instruct"), _sku(A10), 262144)
    assert isinstance(result, str)
    assert "reserve" in result
    assert "262144 tokens" in result


@pytest.mark.parametrize(
    ("sku", "utilization"),
    [(A10, 0.82), (A100, 0.84), ("Standard_NC40ads_H100_v5", 0.84), (V100, 0.84)],
    ids=["a10", "a100", "h100", "v100"],
)
def test_vllm_utilization_leaves_a10s_more_headroom(sku: str, utilization: float) -> None:
    assert vllm_utilization(_sku(sku)) == utilization


@pytest.mark.parametrize(
    ("preset", "method", "at_most_gib", "at_least_gib"),
    [
        ("phi-3-mini-4k-instruct", "qlora", 16.0, 3.0),
        ("phi-3-mini-128k-instruct", "qlora", 16.0, 3.0),
        ("phi-3-mini-4k-instruct", "lora", 16.0, 8.0),
        ("qwen2.5-coder-32b-instruct", "lora", 80.0, 61.0),
        ("qwen2.5-coder-32b-instruct", "qlora", 32.0, 16.0),
    ],
    ids=["phi-3-mini-qlora", "phi-3-mini-128k-qlora", "phi-3-mini-lora", "qwen-lora", "qwen-qlora"],
)
def test_tuning_memory_estimate(
    preset: str, method: str, at_most_gib: float, at_least_gib: float
) -> None:
    config = parse_config(merge_with_template(method, None), method)
    memory = estimate_tuning_memory(_preset(preset), config)
    assert at_least_gib <= memory.total_gib <= at_most_gib
    parts = (
        memory.weights_gib
        + memory.adapter_and_optimizer_gib
        + memory.activations_gib
        + memory.overhead_gib
    )
    assert memory.total_gib >= parts  # plus fragmentation
    assert memory.batch_size == 1
    assert memory.sequence_length == 1024


def test_qlora_needs_less_memory_than_lora() -> None:
    preset = _preset("phi-3-medium-4k-instruct")
    lora = estimate_tuning_memory(preset, parse_config(merge_with_template("lora", None), "lora"))
    qlora = estimate_tuning_memory(
        preset, parse_config(merge_with_template("qlora", None), "qlora")
    )
    assert qlora.weights_gib < lora.weights_gib
    assert qlora.total_gib < lora.total_gib
