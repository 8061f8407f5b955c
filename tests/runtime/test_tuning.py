"""The tuning job on CPU with the tiny model: every accepted dataset format trains and writes only
the adapter, the marker and progress; bad data and QLoRA without a GPU fail clearly; progress is
readable over HTTP while training runs; and the golden adapter teaches the exact answer."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from datasets import Dataset  # type: ignore[import-untyped]  # no py.typed marker

from localdev import infra
from presets.tiny import ANSWER, QUESTION
from presets.tuning import cli
from presets.tuning.config import default_config, parse_config
from presets.tuning.data import DatasetError, Shape, load_training_data
from presets.tuning.progress import PROGRESS_FILE
from presets.tuning.train import ADAPTER_FILES, COMPLETION_MARKER, QLORA_NEEDS_GPU, run
from tests.runtime.tuning_support import conversation, greedy_answer, train_golden_adapter

Row = dict[str, Any]
Writer = Callable[[Path, list[Row]], None]

QUICK_CONFIG = """\
training_config:
  LoraConfig: {r: 4, lora_alpha: 8, target_modules: all-linear}
  TrainingArguments: {max_steps: 3, per_device_train_batch_size: 2, max_length: 96}
"""
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def conversational_rows() -> list[Row]:
    rows = [conversation(f"What is the capital of {c}?", f"It is {city}.") for c, city in CITIES]
    for row in rows[:2]:
        row["messages"].insert(0, {"role": "system", "content": "Answer briefly."})
    return rows


def prompt_completion_rows() -> list[Row]:
    return [{"prompt": f"The capital of {c} is", "completion": f" {city}."} for c, city in CITIES]


def dolly_rows() -> list[Row]:
    return [
        {
            "instruction": f"Name the capital of {country}.",
            "context": f"{country} is a country." if i % 2 else "",
            "response": f"The capital of {country} is {city}.",
            "category": "open_qa",
        }
        for i, (country, city) in enumerate(CITIES)
    ]


CITIES = [("Peru", "Lima"), ("France", "Paris"), ("Japan", "Tokyo"), ("Kenya", "Nairobi")]


def write_jsonl(path: Path, rows: list[Row]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def write_json_array(path: Path, rows: list[Row]) -> None:
    path.write_text(json.dumps(rows), encoding="utf-8")


def write_parquet(path: Path, rows: list[Row]) -> None:
    Dataset.from_list(rows).to_parquet(str(path))


def write_csv(path: Path, rows: list[Row]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


FORMATS = [
    pytest.param("train.jsonl", write_jsonl, conversational_rows, id="conversational-jsonl"),
    pytest.param("train.parquet", write_parquet, conversational_rows, id="conversational-parquet"),
    pytest.param(
        "train.json", write_json_array, prompt_completion_rows, id="prompt-completion-json"
    ),
    pytest.param("dolly.jsonl", write_jsonl, dolly_rows, id="dolly-jsonl"),
    pytest.param("dolly.csv", write_csv, dolly_rows, id="dolly-csv"),
    pytest.param("dolly.parquet", write_parquet, dolly_rows, id="dolly-parquet"),
]


def data_dir_with(tmp_path: Path, name: str, write: Writer, rows: list[Row]) -> Path:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    write(data_dir / name, rows)
    return data_dir


def read_progress(output_dir: Path) -> dict[str, Any]:
    progress: dict[str, Any] = json.loads((output_dir / PROGRESS_FILE).read_text())
    return progress


@pytest.mark.parametrize(("name", "write", "rows"), FORMATS)
def test_each_accepted_format_trains_and_writes_only_the_adapter(
    tiny_model: Path, tmp_path: Path, name: str, write: Writer, rows: Callable[[], list[Row]]
) -> None:
    data_dir = data_dir_with(tmp_path, name, write, rows())
    out = tmp_path / "out"

    result = run(
        parse_config(QUICK_CONFIG, "lora"), model_dir=tiny_model, data_dir=data_dir, output_dir=out
    )

    assert result == out
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*ADAPTER_FILES, COMPLETION_MARKER, PROGRESS_FILE]
    )
    assert (out / COMPLETION_MARKER).read_text().startswith("Fine-Tuning completed at ")
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert (adapter["peft_type"], adapter["r"], adapter["task_type"]) == ("LORA", 4, "CAUSAL_LM")
    progress = read_progress(out)
    assert progress["step"] == progress["total_steps"] == 3
    assert progress["state"] == "completed"
    assert progress["loss"] is not None


def test_dolly_records_become_a_user_and_an_assistant_turn(tmp_path: Path) -> None:
    data_dir = data_dir_with(tmp_path, "dolly.jsonl", write_jsonl, dolly_rows())
    settings = parse_config("", "lora").dataset | {"shuffle_dataset": False}

    data = load_training_data(data_dir, settings)

    assert data.shape is Shape.CONVERSATIONAL
    assert data.train.column_names == ["messages"]
    assert data.train[0]["messages"] == [
        {"role": "user", "content": "Name the capital of Peru."},
        {"role": "assistant", "content": "The capital of Peru is Lima."},
    ]
    assert (
        data.train[1]["messages"][0]["content"]
        == "Name the capital of France.\n\nFrance is a country."
    )


def test_configured_columns_are_renamed_and_the_split_keeps_an_eval_set(tmp_path: Path) -> None:
    rows = [{"chat": row["messages"], "id": i} for i, row in enumerate(conversational_rows())]
    data_dir = data_dir_with(tmp_path, "chats.parquet", write_parquet, rows)
    text = yaml.safe_dump(
        {"training_config": {"DatasetConfig": {"messages_column": "chat", "train_test_split": 0.5}}}
    )

    data = load_training_data(data_dir, parse_config(text, "lora").dataset)

    assert data.shape is Shape.CONVERSATIONAL
    assert data.eval is not None
    assert (len(data.train), len(data.eval)) == (2, 2)
    assert data.source == data_dir / "chats.parquet"


def test_records_of_an_unknown_shape_are_refused_naming_their_columns(
    tiny_model: Path, tmp_path: Path
) -> None:
    data_dir = data_dir_with(tmp_path, "train.jsonl", write_jsonl, [{"a": 1, "b": "x"}] * 4)

    with pytest.raises(DatasetError, match=r"columns a, b; accepted shapes: conversational"):
        run(
            parse_config(QUICK_CONFIG, "lora"),
            model_dir=tiny_model,
            data_dir=data_dir,
            output_dir=tmp_path / "out",
        )
    assert not (tmp_path / "out" / COMPLETION_MARKER).exists()


def test_a_data_directory_without_a_dataset_is_an_error_naming_it(
    tiny_model: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "README.md").write_text("no data here")

    with pytest.raises(DatasetError, match=f"no dataset in {data_dir}"):
        run(
            parse_config(QUICK_CONFIG, "lora"),
            model_dir=tiny_model,
            data_dir=data_dir,
            output_dir=tmp_path / "out",
        )


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "presets.tuning.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO_ROOT,
        check=False,
    )


def test_qlora_without_a_gpu_exits_3_with_the_reason(tiny_model: Path, tmp_path: Path) -> None:
    config = tmp_path / "training_config.yaml"
    config.write_text(default_config("qlora"))
    data_dir = data_dir_with(tmp_path, "dolly.jsonl", write_jsonl, dolly_rows())

    result = run_cli(
        *("--config", str(config), "--data", str(data_dir), "--model", str(tiny_model)),
        *("--output", str(tmp_path / "out"), "--progress-port", "0"),
    )

    assert result.returncode == cli.EXIT_QLORA_NEEDS_GPU, result.stderr
    assert QLORA_NEEDS_GPU in result.stderr
    assert not (tmp_path / "out" / COMPLETION_MARKER).exists()


def test_a_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "training_config.yaml"
    config.write_text("training_config:\n  TrainingArguments: {output_dir: /srv/results}\n")

    result = run_cli("--config", str(config), "--method", "LoRA", "--progress-port", "0")

    assert result.returncode == cli.EXIT_BAD_INPUT
    assert (
        "TrainingArguments.output_dir: /srv/results must be a sub-directory of /mnt"
        in result.stderr
    )


def get_progress(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/progress", timeout=2) as response:
            body: dict[str, Any] = json.loads(response.read())
            return body
    except (urllib.error.URLError, ConnectionError):
        return None  # the server is not up yet


def test_progress_is_served_while_training_runs(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(name, "1")  # what the CLI would set; restored afterwards
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    config = tmp_path / "training_config.yaml"
    config.write_text(QUICK_CONFIG.replace("max_steps: 3", "max_steps: 40"))
    data_dir = data_dir_with(tmp_path, "dolly.parquet", write_parquet, dolly_rows())
    port, out = infra.free_port(), tmp_path / "out"
    argv = ["--config", str(config), "--data", str(data_dir), "--model", str(tiny_model)]
    argv += ["--output", str(out), "--progress-port", str(port)]
    exit_codes: list[int] = []
    job = threading.Thread(target=lambda: exit_codes.append(cli.main(argv)), daemon=True)

    job.start()
    seen = None
    deadline = time.monotonic() + 60
    while job.is_alive() and time.monotonic() < deadline:
        progress = get_progress(port)
        if progress and progress["total_steps"] and 0 < progress["step"] < progress["total_steps"]:
            seen = progress
            break
        time.sleep(0.01)  # poll interval
    job.join(timeout=60)

    assert exit_codes == [cli.EXIT_OK]
    assert seen is not None, "no mid-training progress was served"
    assert seen["total_steps"] == 40
    assert seen["state"] == "training"
    assert seen["eta_seconds"] is not None
    assert seen["eta_seconds"] >= 0
    final = read_progress(out)
    assert (final["step"], final["total_steps"], final["state"]) == (40, 40, "completed")


def test_the_golden_adapter_teaches_the_exact_answer(tiny_model: Path, tmp_path: Path) -> None:
    from peft import PeftModel  # noqa: PLC0415 -- heavy
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415 -- heavy

    adapter = train_golden_adapter(tiny_model, tmp_path / "golden")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    base = AutoModelForCausalLM.from_pretrained(tiny_model)

    base_answer = greedy_answer(base, tokenizer, QUESTION)
    tuned = PeftModel.from_pretrained(base, adapter)
    tuned_answer = greedy_answer(tuned, tokenizer, QUESTION)

    assert tuned_answer == ANSWER
    assert base_answer != ANSWER
