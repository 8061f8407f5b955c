"""What ``kaiten plan`` prints: a planner result as aligned text for a person, or as JSON. Pure
functions; the files are read in ``kaiten/plan.py``."""

from __future__ import annotations

import json
import shlex
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from services.planner.planning import (
    Rejection,
)
from shared.events import FieldProblem
from shared.plan import AdapterPlan, MemoryBudget, Plan, RuntimeChoice, TuningPlan

WIDTH = 100
LABEL_WIDTH = len("gpu-memory-utilization: ")
VALUE_WIDTH = WIDTH - LABEL_WIDTH
UNKNOWN_PRICE = "unknown (not in presets/catalog/prices.yaml)"


# --- text --------------------------------------------------------------------------------------


class _Lines:
    """Aligned ``label: value`` lines; a long value wraps under itself."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def add(self, label: str, *values: str, wrap: bool = True) -> None:
        """One item per value: the label on the first line only."""
        prefix = f"{label}:".ljust(LABEL_WIDTH)
        for value in values or ("",):
            chunks = _wrap(value) if wrap else value.splitlines() or [""]
            for chunk in chunks:
                self._lines.append((prefix + chunk).rstrip())
                prefix = " " * LABEL_WIDTH

    def text(self) -> str:
        return "\n".join(self._lines)


def _wrap(value: str, width: int = VALUE_WIDTH) -> list[str]:
    """``value`` in lines of ``width``; a ``- `` bullet's lines hang under its text."""
    indent = "  " if value.startswith("- ") else ""
    lines = textwrap.wrap(
        value, width, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
    )
    return lines or [""]


def _num(value: float) -> str:
    return f"{value:g}"


def render_text(name: str, result: Plan | Rejection) -> str:
    """The plan (or why there is none) of the Workspace ``name``, for a person."""
    lines = _Lines()
    lines.add("workspace", name)
    if isinstance(result, Rejection):
        _rejection_lines(lines, result)
    else:
        _plan_lines(lines, result)
    return lines.text()


def _rejection_lines(lines: _Lines, rejection: Rejection) -> None:
    lines.add("result", f"REJECTED ({rejection.reason})")
    said = [_problem(p) for p in rejection.problems]
    if "; ".join(said) != rejection.message:  # else the message is the problems, joined
        lines.add("message", rejection.message)
        said = [
            problem.field or "<workspace>" if problem.message == rejection.message else text
            for problem, text in zip(rejection.problems, said, strict=True)
        ]
    if said:
        lines.add("problems", *(f"- {text}" for text in said))


def _problem(problem: FieldProblem) -> str:
    return f"{problem.field}: {problem.message}" if problem.field else problem.message


def _plan_lines(lines: _Lines, plan: Plan) -> None:
    lines.add("mode", plan.mode)
    lines.add("preset", _preset(plan))
    if plan.model_access_secret:
        lines.add("model access secret", f"{plan.model_access_secret} (key HF_TOKEN)")
    lines.add("instance type", _instance(plan))
    lines.add("nodes", str(plan.node_count))
    lines.add("GPUs per node", str(plan.gpus_per_node) if plan.gpus_per_node else "unknown")
    lines.add(
        "parallelism",
        f"tensor {plan.tensor_parallel_size}, pipeline {plan.pipeline_parallel_size}, "
        f"data {plan.data_parallel_size}",
    )
    lines.add("runtime", _runtime(plan.runtime))
    if plan.dtype is not None:
        lines.add("dtype", plan.dtype)
    if plan.max_model_len is not None:
        lines.add("max-model-len", f"{plan.max_model_len} tokens (capped)")
    if plan.gpu_memory_utilization is not None:
        lines.add("gpu-memory-utilization", _num(plan.gpu_memory_utilization))
    if plan.memory is not None:
        _memory_lines(lines, plan.memory)
    if plan.tuning is not None:
        _tuning_lines(lines, plan.tuning)
    if plan.inference_config:
        lines.add("inference config", f"ConfigMap {plan.inference_config}")
    lines.add("disk", f"{plan.disk_gib} GiB")
    lines.add("image", plan.image or "- (the template's own)")
    if plan.preset is not None:
        lines.add("weights image", plan.weights_image or "- (downloaded at start)")
    if plan.command:
        lines.add("command", *_command_lines(plan.command), wrap=False)
    lines.add("ports", ", ".join(f"{p.name} {p.port}" for p in plan.ports) or "-")
    if plan.adapters:
        lines.add("adapters", *(_adapter(a) for a in plan.adapters))
    elif plan.mode == "inference" and plan.preset is not None:
        lines.add("adapters", "none")
    _price_lines(lines, plan)
    if plan.notes:
        lines.add("notes", *(f"- {note}" for note in plan.notes))


def _preset(plan: Plan) -> str:
    if plan.preset is None:
        return "- (inference.template)"
    if plan.model is None:
        return plan.preset
    revision = f" @ {plan.model_revision}" if plan.model_revision else ""
    return f"{plan.preset} ({plan.model}{revision})"


def _runtime(runtime: RuntimeChoice) -> str:
    """``name: reason``; the reasons often start with the runtime's name already."""
    reason = runtime.reason
    head, sep, rest = reason.partition(": ")
    if sep and head.lower() == runtime.name.lower():
        reason = rest
    return f"{runtime.name}: {reason}"


def _instance(plan: Plan) -> str:
    if plan.instance_type is None:
        return "- (existing nodes)"
    gpu = plan.gpu
    if gpu is None:
        return f"{plan.instance_type} (not in the catalog)"
    return (
        f"{plan.instance_type}: {gpu.count_per_node} x {gpu.model}, "
        f"{_num(gpu.memory_gib_per_gpu)} GiB per GPU, "
        f"compute capability {gpu.compute_capability:.1f}"
    )


def _memory_lines(lines: _Lines, memory: MemoryBudget) -> None:
    lines.add(
        "memory per GPU",
        f"{_num(memory.gpu_memory_gib)} GiB x {_num(memory.utilization)} = "
        f"{_num(memory.usable_gib)} GiB usable = {_num(memory.weights_gib)} weights + "
        f"{_num(memory.kv_cache_gib)} KV cache + {_num(memory.reserve_gib)} reserve",
    )
    if memory.context_tokens is not None:
        lines.add("context", f"{memory.context_tokens} tokens in the KV cache")


def _tuning_lines(lines: _Lines, tuning: TuningPlan) -> None:
    memory = tuning.memory
    lines.add("tuning method", tuning.method)
    lines.add("tuning config", tuning.config_source)
    lines.add(
        "tuning memory",
        f"about {_num(memory.total_gib)} GiB: {_num(memory.weights_gib)} weights + "
        f"{_num(memory.adapter_and_optimizer_gib)} adapter and optimizer + "
        f"{_num(memory.activations_gib)} activations (sequence {memory.sequence_length}, "
        f"batch {memory.batch_size}) + {_num(memory.overhead_gib)} overhead, "
        "plus fragmentation",
    )


def _command_lines(command: Sequence[str]) -> list[str]:
    """``shlex.join(command)`` broken with `` \\`` continuations, a flag kept with its value."""
    groups: list[str] = []
    for word in command:
        quoted = shlex.quote(word)
        if groups and not word.startswith("-") and _lone_flag(groups[-1]):
            groups[-1] = f"{groups[-1]} {quoted}"
        else:
            groups.append(quoted)
    room = VALUE_WIDTH - len(" \\")
    lines: list[str] = []
    for group in groups:
        if lines and len(lines[-1]) + 1 + len(group) <= room:
            lines[-1] = f"{lines[-1]} {group}"
        else:
            lines.append(group)
    return [f"{line} \\" for line in lines[:-1]] + lines[-1:]


def _lone_flag(group: str) -> bool:
    return group.startswith("-") and " " not in group


def _adapter(adapter: AdapterPlan) -> str:
    details = []
    if adapter.image:
        details.append(f"image {adapter.image}")
    if adapter.volume:
        details.append(f"volume {', '.join(sorted(adapter.volume))}")
    if adapter.strength is not None:
        details.append(f"strength {_num(adapter.strength)}")
    return f"{adapter.name} ({', '.join(details)})" if details else adapter.name


def _price_lines(lines: _Lines, plan: Plan) -> None:
    price = plan.price
    if price is None:
        lines.add("price", UNKNOWN_PRICE)
        return
    nodes = f"{plan.node_count} node" + ("" if plan.node_count == 1 else "s")
    lines.add(
        "price",
        f"${_num(price.usd_per_hour)}/h: {nodes} x ${_num(price.usd_per_hour_per_node)}/h",
    )
    lines.add("price source", price.source)


# --- JSON --------------------------------------------------------------------------------------


def json_entry(name: str, result: Plan | Rejection) -> dict[str, Any]:
    """``{"workspace": name, "plan": ...}`` or ``{"workspace": name, "rejected": ...}``."""
    if isinstance(result, Rejection):
        return {
            "workspace": name,
            "rejected": {
                "reason": result.reason,
                "message": result.message,
                "problems": [p.model_dump(mode="json") for p in result.problems],
            },
        }
    return {"workspace": name, "plan": result.model_dump(mode="json")}


def render_json(entries: Sequence[Mapping[str, Any]]) -> str:
    """One entry as an object, several as a list."""
    return json.dumps(entries[0] if len(entries) == 1 else list(entries), indent=2)
