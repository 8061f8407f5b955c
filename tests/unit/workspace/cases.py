"""Invalid Workspaces, one per admission rule (reference section 1.8), with the field path and
message each must be denied with. Shared by the unit test and the kubectl test through the
development cluster."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SEEDS = Path(__file__).resolve().parents[2] / "fixtures" / "seeds"
Doc = dict[str, Any]


def seed(name: str) -> Doc:
    """A seed Workspace exactly as the seeds give it."""
    doc: Doc = yaml.safe_load((SEEDS / name).read_text())
    return doc


def inference() -> Doc:
    return seed("inference-phi-3-mini.yaml")


def adapter_inference() -> Doc:
    return seed("inference-phi-3-mini-adapter.yaml")


def tuning() -> Doc:
    return seed("tuning-phi-3.yaml")


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[], Doc]
    field: str
    message: str
    old: Callable[[], Doc] | None = None
    # False: the CRD's schema or CEL rules refuse it before the webhook sees it (the message
    # then comes from the API server, not from the webhook).
    webhook_only: bool = True


def changed(base: Callable[[], Doc], *edits: tuple[str, Any]) -> Callable[[], Doc]:
    """``base`` with each dotted path set (``None`` deletes it)."""

    def make() -> Doc:
        doc = copy.deepcopy(base())
        for path, value in edits:
            *parents, last = path.split(".")
            node: Any = doc
            for part in parents:
                node = node.setdefault(part, {}) if not part.isdigit() else node[int(part)]
            if value is None:
                node.pop(last, None)
            elif last.isdigit():
                node[int(last)] = value
            else:
                node[last] = value
        return doc

    return make


def _adapters(n: int, **extra: Any) -> list[Doc]:
    return [
        {"source": {"name": f"a{i}", "image": f"registry.io/adapters/a{i}:1"}, **extra}
        for i in range(n)
    ]


def _url(url: str) -> Callable[[], Doc]:
    return changed(tuning, ("tuning.input.urls", [url]))


CASES: list[Case] = [
    # top level
    Case(
        "name-not-dns-label",
        changed(inference, ("metadata.name", "workspace.phi")),
        "name",
        "invalid value: workspace.phi: must be a DNS-1123 label",
    ),
    Case(
        "name-too-long",
        changed(inference, ("metadata.name", "w" * 64)),
        "name",
        "must be a DNS-1123 label",
    ),
    Case(
        "neither-inference-nor-tuning",
        changed(inference, ("inference", None)),
        "",
        "Either Inference or Tuning must be specified, not neither",
        webhook_only=False,
    ),
    Case(
        "both-inference-and-tuning",
        changed(inference, ("tuning", tuning()["tuning"])),
        "",
        "Either Inference or Tuning must be specified, but not both",
        webhook_only=False,
    ),
    # v1beta1: v1alpha1's CRD defaults instanceType to Standard_NC24ads_A100_v4, as Kaito's does
    Case(
        "missing-instance-type",
        changed(inference, ("resource.instanceType", None), ("apiVersion", "kaito.sh/v1beta1")),
        "resource.instanceType",
        "instanceType is required when node auto-provisioning is enabled",
    ),
    Case(
        "unsupported-image-family",
        changed(inference, ("metadata.annotations", {"kaito.sh/node-image-family": "debian"})),
        "metadata.annotations[kaito.sh/node-image-family]",
        'unsupported node image family "debian", supported values are azurelinux, ubuntu',
    ),
    Case(
        "unknown-runtime-annotation",
        changed(inference, ("metadata.annotations", {"kaito.sh/runtime": "onnx"})),
        "metadata.annotations[kaito.sh/runtime]",
        "invalid value: onnx: supported values are vllm, transformers",
    ),
    Case(
        "bad-performance-mode",
        changed(inference, ("metadata.annotations", {"kaito.sh/performance-mode": "fast"})),
        "metadata.annotations[kaito.sh/performance-mode]",
        "invalid value: fast",
    ),
    Case(
        "bad-use-local-weights",
        changed(inference, ("metadata.annotations", {"kaito.sh/use-local-weights": "yes"})),
        "metadata.annotations[kaito.sh/use-local-weights]",
        "invalid value: yes",
    ),
    Case(
        "selector-not-in-expression",
        changed(
            inference,
            (
                "resource.labelSelector",
                {"matchExpressions": [{"key": "apps", "operator": "NotIn", "values": ["x"]}]},
            ),
        ),
        "resource.labelSelector.matchExpressions[0]",
        "Only allow matchLabels or 'IN' matchExpression",
    ),
    Case(
        "selector-only-reserved-labels",
        changed(
            inference, ("resource.labelSelector", {"matchLabels": {"kaito.sh/workspace": "x"}})
        ),
        "resource.labelSelector.matchLabels",
        "matchLabels must contain at least one non-reserved label",
    ),
    # resource for inference
    Case(
        "deprecated-preset",
        changed(inference, ("inference.preset.name", "phi-2")),
        "inference.preset.name",
        "Model phi-2 is deprecated and no longer supported",
    ),
    Case(
        "unsupported-instance-type",
        changed(inference, ("resource.instanceType", "m5.large")),
        "resource.instanceType",
        "Unsupported instance type m5.large. Supported SKUs: [",
    ),
    Case(
        "insufficient-gpu-count",
        changed(inference, ("inference.preset.name", "falcon-40b")),
        "resource.instanceType",
        "Insufficient number of GPUs: Instance type Standard_NC6s_v3 provides 1, but preset "
        "falcon-40b requires at least 2",
    ),
    Case(
        "insufficient-total-gpu-memory",
        changed(inference, ("inference.preset.name", "phi-3-medium-4k-instruct")),
        "resource.instanceType",
        "Insufficient total GPU memory: Instance type Standard_NC6s_v3 has a total of 16Gi, but "
        "preset phi-3-medium-4k-instruct requires at least 28Gi",
    ),
    Case(
        "multi-node-transformers",
        changed(
            inference,
            ("inference.preset.name", "falcon-40b"),
            ("metadata.annotations", {"kaito.sh/bypass-resource-checks": "true"}),
        ),
        "resource.instanceType",
        "Multi-node distributed inference is not supported with Huggingface Transformers runtime",
    ),
    Case(
        "vllm-only-model-on-old-gpu",
        changed(
            inference,
            ("inference.preset.name", "ministral-3-3b-instruct"),
            ("metadata.annotations", {"kaito.sh/bypass-resource-checks": "true"}),
        ),
        "resource.instanceType",
        "needs vLLM, which needs an NVIDIA GPU of compute capability "
        "8.0 or newer; Standard_NC6s_v3 has",
    ),
    # inference spec
    Case(
        "neither-preset-nor-template",
        changed(inference, ("inference.preset", None)),
        "inference",
        "Preset or Template must be specified",
        webhook_only=False,
    ),
    Case(
        "both-preset-and-template",
        changed(inference, ("inference.template", {"spec": {"containers": []}})),
        "inference",
        "Preset and Template cannot be set at the same time",
        webhook_only=False,
    ),
    Case(
        "unknown-inference-preset",
        changed(inference, ("inference.preset.name", "gpt-9")),
        "inference.preset.name",
        "invalid value: Unsupported inference preset name gpt-9",
    ),
    Case(
        "private-access-without-image",
        changed(inference, ("inference.preset.accessMode", "private")),
        "inference.preset.presetOptions.image",
        "When AccessMode is private, an image must be provided in PresetOptions",
    ),
    Case(
        "gated-model-without-secret",
        changed(
            inference,
            ("inference.preset.name", "llama-3.1-8b-instruct"),
            ("resource.instanceType", "Standard_NC24ads_A100_v4"),
        ),
        "inference.preset.presetOptions.modelAccessSecret",
        "This preset requires authentication and needs a modelAccessSecret with HF_TOKEN key "
        "under presetOptions to download the model",
    ),
    Case(
        "secret-for-baked-model",
        changed(inference, ("inference.preset.presetOptions", {"modelAccessSecret": "hf"})),
        "inference.preset.presetOptions.modelAccessSecret",
        "This preset does not require a modelAccessSecret with HF_TOKEN key under presetOptions",
    ),
    Case(
        "transformers-for-vllm-only-model",
        changed(
            inference,
            ("inference.preset.name", "ministral-3-3b-instruct"),
            ("resource.instanceType", "Standard_NC24ads_A100_v4"),
            ("metadata.annotations", {"kaito.sh/runtime": "transformers"}),
        ),
        "metadata.annotations[kaito.sh/runtime]",
        "Runtime validation: model ministral-3-3b-instruct does not support inference with "
        "Huggingface Transformers runtime",
    ),
    Case(
        "vllm-lora-disallowed",
        changed(
            adapter_inference,
            ("inference.preset.name", "falcon-7b"),
            ("resource.instanceType", "Standard_NC24ads_A100_v4"),
            ("inference.adapters.0.strength", None),
        ),
        "inference.adapters",
        "Runtime validation: vLLM does not support LoRA adapters for this model: falcon-7b",
    ),
    Case(
        "vllm-adapter-strength",
        changed(adapter_inference, ("resource.instanceType", "Standard_NC24ads_A100_v4")),
        "inference.adapters[0].strength",
        "Runtime validation: vLLM does not support adapter strength",
    ),
    Case(
        "too-many-adapters",
        changed(inference, ("inference.adapters", _adapters(11))),
        "inference.adapters",
        "Number of Adapters exceeds the maximum limit, maximum of 10 allowed",
    ),
    Case(
        "duplicate-adapter-names",
        changed(inference, ("inference.adapters", _adapters(1) + _adapters(1))),
        "inference.adapters",
        "Duplicate adapter source name found: a0",
    ),
    Case(
        "adapter-without-source",
        changed(inference, ("inference.adapters", [{}])),
        "inference.adapters[0].source",
        "missing field(s): Source",
    ),
    Case(
        "adapter-without-name",
        changed(inference, ("inference.adapters", [{"source": {"image": "r.io/a:1"}}])),
        "inference.adapters[0].source.name",
        "Name of Adapter field must be specified",
    ),
    Case(
        "adapter-name-not-subdomain",
        changed(
            inference,
            ("inference.adapters", [{"source": {"name": "Bad_Name", "image": "r.io/a:1"}}]),
        ),
        "inference.adapters[0].source.name",
        "invalid value: Bad_Name: must be a DNS-1123",
    ),
    Case(
        "adapter-without-image-or-volume",
        changed(inference, ("inference.adapters", [{"source": {"name": "a"}}])),
        "inference.adapters[0].source",
        "Image or VolumeSource of Adapter field must be specified",
    ),
    Case(
        "adapter-with-urls",
        changed(
            inference,
            (
                "inference.adapters",
                [{"source": {"name": "a", "image": "r.io/a:1", "urls": ["https://example.com/a"]}}],
            ),
        ),
        "inference.adapters[0].source.urls",
        "URLs are not supported for adapters",
    ),
    Case(
        "adapter-bad-image",
        changed(
            inference, ("inference.adapters", [{"source": {"name": "a", "image": "r.io/a b:1"}}])
        ),
        "inference.adapters[0].source.image",
        "not a valid image reference",
    ),
    Case(
        "adapter-strength-not-a-number",
        changed(adapter_inference, ("inference.adapters.0.strength", "strong")),
        "inference.adapters[0].strength",
        "Invalid strength value for Adapter 'phi-3-adapter'",
    ),
    Case(
        "adapter-strength-out-of-range",
        changed(adapter_inference, ("inference.adapters.0.strength", "1.5")),
        "inference.adapters[0].strength",
        "Strength value for Adapter 'phi-3-adapter' must be between 0 and 1",
    ),
    Case(
        "inference-config-not-a-name",
        changed(inference, ("inference.config", "My Config")),
        "inference.config",
        "invalid value: My Config: must be the name of a ConfigMap",
    ),
    # tuning
    Case(
        "tuning-multinode",
        changed(tuning, ("resource.count", 2)),
        "resource.count",
        "Tuning does not currently support multinode configurations",
    ),
    Case(
        "tuning-bad-method",
        changed(tuning, ("tuning.method", "dora")),
        "tuning.method",
        "invalid value: dora: supported methods are lora, qlora",
    ),
    Case(
        "tuning-without-preset",
        changed(tuning, ("tuning.preset", None)),
        "tuning.preset",
        "missing field(s): Preset",
    ),
    Case(
        "tuning-unknown-preset",
        changed(tuning, ("tuning.preset.name", "gpt-9")),
        "tuning.preset.name",
        "invalid value: Unsupported tuning preset name gpt-9",
    ),
    Case(
        "tuning-preset-without-tuning",
        changed(tuning, ("tuning.preset.name", "deepseek-r1-distill-llama-8b")),
        "tuning.preset.name",
        "does not support tuning",
    ),
    Case(
        "tuning-without-input",
        changed(tuning, ("tuning.input", None)),
        "tuning.input",
        "missing field(s): Input",
    ),
    Case(
        "tuning-without-output",
        changed(tuning, ("tuning.output", None)),
        "tuning.output",
        "missing field(s): Output",
    ),
    Case(
        "tuning-two-inputs",
        changed(tuning, ("tuning.input.image", "registry.io/data:1")),
        "tuning.input",
        "Exactly one of URLs, Volume, or Image must be specified",
    ),
    Case(
        "tuning-input-bad-image",
        changed(tuning, ("tuning.input.urls", None), ("tuning.input.image", "bad image")),
        "tuning.input.image",
        "not a valid image reference",
    ),
    Case(
        "tuning-url-not-http",
        _url("ftp://example.com/data.parquet"),
        "tuning.input.urls[0]",
        "URL scheme must be http or https",
    ),
    Case(
        "tuning-url-localhost",
        _url("http://localhost:8080/data.parquet"),
        "tuning.input.urls[0]",
        "URL must not point to localhost",
    ),
    Case(
        "tuning-url-metadata",
        _url("http://metadata.google.internal/computeMetadata/v1"),
        "tuning.input.urls[0]",
        "URL must not point to a cloud metadata service",
    ),
    Case(
        "tuning-url-loopback-ip",
        _url("http://127.0.0.1/data.parquet"),
        "tuning.input.urls[0]",
        "must not point to a loopback, private or link-local address",
    ),
    Case(
        "tuning-url-private-ip",
        _url("https://10.1.2.3/data.parquet"),
        "tuning.input.urls[0]",
        "must not point to a loopback, private or link-local address",
    ),
    Case(
        "tuning-url-link-local-ip",
        _url("http://169.254.169.254/latest/meta-data"),
        "tuning.input.urls[0]",
        "must not point to a loopback, private or link-local address",
    ),
    Case(
        "tuning-output-without-push-secret",
        changed(tuning, ("tuning.output.imagePushSecret", None)),
        "tuning.output.imagePushSecret",
        "Must specify imagePushSecret with destination image",
    ),
    Case(
        "tuning-output-bad-image",
        changed(tuning, ("tuning.output.image", "::bad")),
        "tuning.output.image",
        "not a valid image reference",
    ),
    Case(
        "tuning-two-outputs",
        changed(tuning, ("tuning.output.volumeSource", {"emptyDir": {}})),
        "tuning.output",
        "Exactly one of Volume or Image must be specified",
    ),
    # update
    Case(
        "toggle-inference-off",
        changed(inference, ("inference", None), ("tuning", tuning()["tuning"])),
        "inference",
        "Inference field cannot be toggled once set",
        old=inference,
        webhook_only=False,
    ),
    Case(
        "count-changed",
        changed(inference, ("resource.count", 2)),
        "resource.count",
        "field is immutable",
        old=changed(inference, ("resource.count", 1)),
        webhook_only=False,
    ),
    Case(
        "instance-type-changed",
        changed(inference, ("resource.instanceType", "Standard_NC24ads_A100_v4")),
        "resource.instanceType",
        "field is immutable",
        old=inference,
        webhook_only=False,
    ),
    Case(
        "label-selector-changed",
        changed(inference, ("resource.labelSelector", {"matchLabels": {"apps": "other"}})),
        "resource.labelSelector",
        "field is immutable",
        old=inference,
        webhook_only=False,
    ),
    Case(
        "inference-preset-changed",
        changed(inference, ("inference.preset.name", "phi-3-mini-128k-instruct")),
        "inference.preset",
        "field is immutable",
        old=inference,
        webhook_only=False,
    ),
    Case(
        "tuning-preset-changed",
        changed(tuning, ("tuning.preset.name", "phi-3-mini-4k-instruct")),
        "tuning.preset",
        "Preset cannot be changed",
        old=tuning,
        webhook_only=False,
    ),
    Case(
        "tuning-method-changed",
        changed(tuning, ("tuning.method", "lora")),
        "tuning.method",
        "Method cannot be changed",
        old=tuning,
        webhook_only=False,
    ),
    Case(
        "tuning-input-name-changed",
        changed(tuning, ("tuning.input.name", "renamed")),
        "tuning.input.name",
        "field is immutable",
        old=tuning,
    ),
]
