"""Kaito's vLLM wrapper (``$W/vllm/inference_api.py``) rebuilt as a launcher: it turns the plan's
arguments, ``inference_config.yaml`` and the adapter directories into one vLLM OpenAI-server
command line and execs it, or exits with a clear message when vLLM or a GPU is missing."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DEFAULT_MODEL = "/workspace/vllm/weights"
DEFAULT_PORT = 5000
DEFAULT_ADAPTERS_DIR = Path("/mnt/adapter")
DEFAULT_CONFIG_FILE = Path("/mnt/config/inference_config.yaml")
API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
VLLM_SERVE: tuple[str, ...] = ("vllm", "serve")
# The values vLLM's --max-lora-rank accepts (1 is allowed too, but 8 is the smallest useful one).
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
ADAPTER_CONFIG = "adapter_config.json"
# Kaito's default inference-params-template (reference 4.4); the deployer mounts it when a
# Workspace names no ConfigMap of its own.
DEFAULT_INFERENCE_CONFIG = """\
# Kaiten's default inference_config.yaml. Name a ConfigMap of your own in inference.config
# (key inference_config.yaml) to change it: every vllm entry becomes a vLLM engine argument.
max_probe_steps: 6
vllm:
  cpu-offload-gb: 0
"""
EXIT_UNAVAILABLE = 3
EXIT_BAD_CONFIG = 2

NO_VLLM = (
    "error: vLLM is not installed in this image: install vllm (GPU) or use --runtime transformers"
)
NO_GPU = (
    "error: vLLM needs an NVIDIA GPU (compute capability 8.0+); none is visible. Use the "
    "transformers runtime on CPU, or set VLLM_TARGET_DEVICE=cpu with a CPU build of vLLM."
)

ConfigScalar = str | int | float | bool


@dataclass(frozen=True)
class LaunchOptions:
    """What the operator's plan passes to the launcher, in Kaito's flag vocabulary."""

    model: str
    served_model_name: str
    port: int = DEFAULT_PORT
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    gpu_memory_utilization: float | None = None
    max_model_len: int | str | None = None
    dtype: str | None = None
    chat_template: str | None = None
    code_revision: str | None = None
    download_dir: str | None = None
    trust_remote_code: bool = False
    enable_lora: bool = False
    adapters_dir: Path = DEFAULT_ADAPTERS_DIR
    config_file: Path | None = DEFAULT_CONFIG_FILE
    extra: tuple[str, ...] = ()


def _model_len(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _optional_path(value: str) -> Path | None:
    return Path(value) if value.strip() else None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m presets.inference.vllm_launcher",
        description=__doc__,
        allow_abbrev=False,  # an unknown vLLM flag must never be taken for a prefix of ours
    )
    add = parser.add_argument
    add("--model", default=DEFAULT_MODEL)
    add("--served-model-name", default=None)
    add("--port", type=int, default=DEFAULT_PORT)
    add("--tensor-parallel-size", type=int, default=1)
    add("--pipeline-parallel-size", type=int, default=1)
    add("--gpu-memory-utilization", type=float, default=None)
    add("--max-model-len", type=_model_len, default=None)
    add("--dtype", default=None)
    add("--chat-template", default=None)
    add("--code-revision", default=None)
    add("--download-dir", default=None)
    add("--trust-remote-code", action="store_true")
    add("--enable-lora", action="store_true")
    add("--kaito-adapters-dir", type=Path, default=DEFAULT_ADAPTERS_DIR)
    add("--kaito-config-file", type=_optional_path, default=DEFAULT_CONFIG_FILE)
    # Kaito's other wrapper-only flags: accepted so plans written for Kaito run, and dropped
    # because this launcher does no context-length probing, CPU KV offload or rate limiting.
    add("--kaito-max-probe-steps", type=int, default=None, help=argparse.SUPPRESS)
    add("--kaito-kv-cache-cpu-memory-utilization", type=float, help=argparse.SUPPRESS)
    add("--kaito-disable-rate-limit", action="store_true", help=argparse.SUPPRESS)
    return parser


def parse_args(argv: Sequence[str]) -> LaunchOptions:
    """Kaito's flags, as ``--flag value`` or ``--flag=value``; anything else is kept, in order,
    in ``extra`` and handed to vLLM unchanged."""
    ns, extra = _parser().parse_known_args(list(argv))
    return LaunchOptions(
        model=ns.model,
        served_model_name=ns.served_model_name or ns.model,
        port=ns.port,
        tensor_parallel_size=ns.tensor_parallel_size,
        pipeline_parallel_size=ns.pipeline_parallel_size,
        gpu_memory_utilization=ns.gpu_memory_utilization,
        max_model_len=ns.max_model_len,
        dtype=ns.dtype,
        chat_template=ns.chat_template,
        code_revision=ns.code_revision,
        download_dir=ns.download_dir,
        trust_remote_code=ns.trust_remote_code,
        enable_lora=ns.enable_lora,
        adapters_dir=ns.kaito_adapters_dir,
        config_file=ns.kaito_config_file,
        extra=tuple(extra),
    )


def _check_vllm_value(key: str, value: object) -> None:
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, ConfigScalar):
            raise ValueError(  # noqa: TRY004 -- config errors are ValueErrors, one kind for callers
                f"vllm.{key}: expected a string, number, boolean or a list of them, "
                f"got {type(item).__name__}"
            )


def read_config(text: str) -> dict[str, Any]:
    """Parse ``inference_config.yaml``. Its ``vllm:`` map holds vLLM engine arguments
    (``key: value``); ``max_probe_steps`` and ``kv_cache_cpu_memory_utilization`` are Kaito's.
    An empty file is an empty config; a wrong shape raises ValueError naming the key."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"inference_config.yaml is not valid YAML: {error}") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(  # noqa: TRY004 -- config errors are ValueErrors, one kind for callers
            f"inference_config.yaml: expected a mapping, got {type(data).__name__}"
        )
    vllm = data.get("vllm")
    if vllm is None:
        data["vllm"] = {}
    elif not isinstance(vllm, dict):
        raise ValueError(f"vllm: expected a mapping of vLLM arguments, got {type(vllm).__name__}")
    else:
        for key, value in vllm.items():
            if not isinstance(key, str) or not key.strip("-"):
                raise ValueError(f"vllm.{key}: argument names must be non-empty strings")
            _check_vllm_value(key, value)
    steps = data.get("max_probe_steps")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)):
        raise ValueError(f"max_probe_steps: expected an integer, got {steps!r}")
    kv = data.get("kv_cache_cpu_memory_utilization")
    if kv is not None and (isinstance(kv, bool) or not isinstance(kv, int | float)):
        raise ValueError(f"kv_cache_cpu_memory_utilization: expected a number, got {kv!r}")
    return data


def is_adapter_dir(path: Path) -> bool:
    return (path / ADAPTER_CONFIG).is_file()


def lora_modules(adapters: Iterable[str]) -> list[str]:
    """``name=path`` for each adapter directory (one holding ``adapter_config.json``), named after
    the directory; other paths are left out."""
    return [f"{Path(a).name}={a}" for a in adapters if is_adapter_dir(Path(a))]


def adapter_dirs(root: Path) -> list[tuple[str, Path]]:
    """The adapters under ``root`` (Kaito mounts one directory per adapter), sorted by name."""
    if not root.is_dir():
        return []
    return [(p.name, p) for p in sorted(root.iterdir()) if p.is_dir() and is_adapter_dir(p)]


def read_lora_rank(path: Path) -> int | None:
    """The largest LoRA rank in an adapter's ``adapter_config.json`` (``r`` and ``rank_pattern``),
    or None when the file is missing or says nothing usable."""
    try:
        config = json.loads((path / ADAPTER_CONFIG).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    pattern = config.get("rank_pattern")
    ranks = [config.get("r"), *(pattern.values() if isinstance(pattern, dict) else ())]
    known = [r for r in ranks if isinstance(r, int) and not isinstance(r, bool) and r > 0]
    return max(known, default=None)


def max_lora_rank(rank: int) -> int:
    """The smallest value vLLM's ``--max-lora-rank`` accepts that holds ``rank``."""
    for allowed in LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise ValueError(f"LoRA rank {rank} exceeds vLLM's largest --max-lora-rank {LORA_RANKS[-1]}")


def _operator_flags(opts: LaunchOptions) -> list[str]:
    flags = ["--port", str(opts.port), "--served-model-name", opts.served_model_name]
    flags += ["--tensor-parallel-size", str(opts.tensor_parallel_size)]
    if opts.pipeline_parallel_size > 1:
        flags += ["--pipeline-parallel-size", str(opts.pipeline_parallel_size)]
    valued: list[tuple[str, object]] = [
        ("--gpu-memory-utilization", opts.gpu_memory_utilization),
        ("--max-model-len", opts.max_model_len),
        ("--dtype", opts.dtype),
        ("--chat-template", opts.chat_template),
        ("--code-revision", opts.code_revision),
        ("--download-dir", opts.download_dir),
    ]
    flags += [part for flag, value in valued if value is not None for part in (flag, str(value))]
    if opts.trust_remote_code:
        flags.append("--trust-remote-code")
    return flags


def _lora_flags(
    adapters: Sequence[tuple[str, Path]], lora_rank: Callable[[Path], int | None]
) -> list[str]:
    flags = ["--enable-lora"]
    if not adapters:
        return flags
    ranks = [r for _, path in adapters if (r := lora_rank(path)) is not None]
    if ranks:
        flags += ["--max-lora-rank", str(max_lora_rank(max(ranks)))]
    return [*flags, "--lora-modules", *(f"{name}={path}" for name, path in adapters)]


def config_flags(vllm: Mapping[str, Any]) -> list[str]:
    """The ``vllm:`` map as flags, in the file's order: ``--key value``; ``true`` is a bare
    ``--key``, ``false`` is left out, a list repeats the flag once per item."""
    flags: list[str] = []
    for key, value in vllm.items():
        flag = "--" + str(key).lstrip("-")
        for item in value if isinstance(value, list) else [value]:
            if item is True:
                flags.append(flag)
            elif item is not False:
                flags += [flag, str(item)]
    return flags


def vllm_command(
    opts: LaunchOptions,
    config: Mapping[str, Any],
    adapter_dirs: Sequence[tuple[str, Path]],
    *,
    program: Sequence[str] = VLLM_SERVE,
    lora_rank: Callable[[Path], int | None] = read_lora_rank,
) -> list[str]:
    """The vLLM OpenAI-server argv: ``program`` and the model (``--model`` for the api_server
    module form, positional for ``vllm serve``), the operator's flags, LoRA flags, then the
    config file's ``vllm:`` entries (so the user's values win, as in Kaito), then ``extra``."""
    argv = [*program]
    argv += ["--model", opts.model] if API_SERVER_MODULE in program else [opts.model]
    argv += _operator_flags(opts)
    user_flags = config_flags(config.get("vllm") or {})
    if opts.enable_lora:
        # As in Kaito, the adapter directories are served only when no --lora-modules is given.
        given = any(f.split("=")[0] == "--lora-modules" for f in (*user_flags, *opts.extra))
        argv += _lora_flags(() if given else adapter_dirs, lora_rank)
    return [*argv, *user_flags, *opts.extra]


def load_config(path: Path | None) -> dict[str, Any]:
    """The config file's contents, or an empty config when there is no file."""
    if path is None or not path.is_file():
        return {}
    try:
        return read_config(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error


def launch_program(environ: Mapping[str, str]) -> tuple[str, ...]:
    """``python -m vllm.entrypoints.openai.api_server`` on CPU builds (their ``vllm`` CLI fails to
    find its own package metadata), else ``vllm serve`` from this interpreter's environment."""
    if environ.get("VLLM_TARGET_DEVICE") == "cpu":
        return (sys.executable, "-m", API_SERVER_MODULE)
    cli = shutil.which("vllm") or str(Path(sys.executable).with_name("vllm"))
    return (cli, "serve")


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def gpu_visible() -> bool:
    try:
        import torch  # noqa: PLC0415  -- only the launcher's last check needs it
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def main(argv: list[str] | None = None) -> int:
    """Build the command and exec vLLM; returns only on an error (exit status 2 or 3)."""
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = load_config(opts.config_file)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    adapters = adapter_dirs(opts.adapters_dir)
    if not vllm_installed():
        print(NO_VLLM, file=sys.stderr)
        return EXIT_UNAVAILABLE
    if not gpu_visible() and os.environ.get("VLLM_TARGET_DEVICE") != "cpu":
        print(NO_GPU, file=sys.stderr)
        return EXIT_UNAVAILABLE
    try:
        command = vllm_command(opts, config, adapters, program=launch_program(os.environ))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    print(shlex.join(command), file=sys.stderr, flush=True)
    sys.stdout.flush()
    os.execvp(command[0], command)  # noqa: S606 -- handing the process over to vLLM is the point
    return 0  # pragma: no cover -- execvp does not return


if __name__ == "__main__":
    sys.exit(main())
