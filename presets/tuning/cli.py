"""The tuning job's entry point, ``python -m presets.tuning.cli``: reads the training config,
serves progress on a port, runs one LoRA/QLoRA fine-tuning and exits 0 when the adapter and the
completion marker are written, 2 on a config or data error, 3 for QLoRA without a GPU."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from presets.tuning.config import METHODS, ConfigError, TuningConfig, detect_method, parse_config
from presets.tuning.data import DatasetError
from presets.tuning.progress import ALL_INTERFACES, DEFAULT_PORT, ProgressServer, ProgressSink
from presets.tuning.train import QloraNeedsGpuError, run

__all__ = ["EXIT_BAD_INPUT", "EXIT_OK", "EXIT_QLORA_NEEDS_GPU", "main"]

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_QLORA_NEEDS_GPU = 3

DEFAULT_CONFIG = "/mnt/config/training_config.yaml"
DEFAULT_DATA = "/mnt/data"


def _parser() -> argparse.ArgumentParser:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="python -m presets.tuning.cli", description=__doc__.split("\n\n", 1)[0]
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=Path(env.get("YAML_FILE_PATH", DEFAULT_CONFIG)),
        help="training_config.yaml (default: $YAML_FILE_PATH or %(default)s)",
    )
    parser.add_argument(
        "--method",
        type=str.lower,
        choices=METHODS,
        default=env.get("KAITEN_TUNING_METHOD") or None,
        help="lora or qlora (default: $KAITEN_TUNING_METHOD, else qlora when the config "
        "turns quantization on, else lora)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(env.get("DATASET_FOLDER_PATH", DEFAULT_DATA)),
        help="directory holding the dataset file (default: $DATASET_FOLDER_PATH or %(default)s)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="where the adapter goes (default: the config's TrainingArguments.output_dir)",
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="base model directory (default: the config's "
        "ModelConfig.pretrained_model_name_or_path, /workspace/tfs/weights)",
    )
    parser.add_argument(
        "--progress-port",
        type=int,
        default=DEFAULT_PORT,
        help="port of the GET /progress server (default: %(default)s; 0 turns it off)",
    )
    return parser


@contextlib.contextmanager
def _progress_server(sink: ProgressSink, port: int) -> Iterator[None]:
    if port == 0:
        yield
        return
    # KAITEN_HOST: the address to listen on, as for the inference server (default: every one).
    with ProgressServer(sink, port=port, host=os.environ.get("KAITEN_HOST") or ALL_INTERFACES):
        yield


def main(argv: list[str] | None = None) -> int:
    """Run the tuning job; returns the process exit code (see the module docstring)."""
    args = _parser().parse_args(argv)
    # Set before torch and datasets are imported: nothing may reach the network, and Kaito's
    # allocator setting avoids fragmentation on long runs.
    for name, value in (
        ("HF_HUB_OFFLINE", "1"),
        ("HF_DATASETS_OFFLINE", "1"),
        ("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True"),
    ):
        os.environ.setdefault(name, value)
    try:
        text = args.config.read_text(encoding="utf-8")
    except OSError as e:
        return _fail(EXIT_BAD_INPUT, f"cannot read the training config {args.config}: {e}")
    method = args.method or detect_method(text)
    targets = os.environ.get("DEFAULT_TARGET_MODULES", "")
    try:
        config = parse_config(
            text,
            method,
            default_target_modules=[t.strip() for t in targets.split(",") if t.strip()],
        )
    except ConfigError as e:
        return _fail(EXIT_BAD_INPUT, f"invalid training config {args.config}:\n{e}")
    output = args.output or Path(config.output_dir)
    model = args.model or Path(config.model["pretrained_model_name_or_path"])
    return _train(config, model=model, data=args.data, output=output, port=args.progress_port)


def _train(config: TuningConfig, *, model: Path, data: Path, output: Path, port: int) -> int:
    sink = ProgressSink(output)
    try:
        with _progress_server(sink, port):
            run(config, model_dir=model, data_dir=data, output_dir=output, progress=sink)
    except QloraNeedsGpuError as e:
        return _fail(EXIT_QLORA_NEEDS_GPU, str(e))
    except ConfigError as e:
        return _fail(EXIT_BAD_INPUT, f"invalid training config:\n{e}")
    except DatasetError as e:
        return _fail(EXIT_BAD_INPUT, f"dataset error: {e}")
    print(f"Fine-tuning completed; adapter written to {output}")
    return EXIT_OK


def _fail(code: int, message: str) -> int:
    print(f"kaiten tune: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
