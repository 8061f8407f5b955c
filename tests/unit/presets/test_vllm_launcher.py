"""The vLLM launcher: golden command lines for the seeds' plans and a multi-GPU plan, Kaito's flag
spellings, ``inference_config.yaml`` validation, the adapter scan and the exits without vLLM/GPU."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from presets.inference import vllm_launcher
from presets.inference.vllm_launcher import (
    NO_GPU,
    NO_VLLM,
    LaunchOptions,
    adapter_dirs,
    config_flags,
    lora_modules,
    max_lora_rank,
    parse_args,
    read_config,
    read_lora_rank,
    vllm_command,
)

REPO = Path(__file__).resolve().parents[3]
CONFIG = "/mnt/config/inference_config.yaml"
MULTI_GPU_CONFIG = """\
vllm:
  max-model-len: 4096
  enforce-eager: true
  cpu-offload-gb: 0
"""
# What the planner passes for a classic preset on a V100 (16 GiB: utilization 0.9) and on two
# A100s (80 GiB each: 0.95), had the kaito.sh/runtime annotation asked for vLLM.
PHI3_4K_PLAN = [
    "--served-model-name=phi-3-mini-4k-instruct",
    "--tensor-parallel-size=1",
    "--gpu-memory-utilization=0.9",
    "--dtype=float16",
    f"--kaito-config-file={CONFIG}",
]
PHI3_128K_PLAN = [
    "--served-model-name=phi-3-mini-128k-instruct",
    "--tensor-parallel-size=1",
    "--gpu-memory-utilization=0.9",
    "--dtype=float16",
    f"--kaito-config-file={CONFIG}",
]
FALCON_40B_PLAN = [
    "--served-model-name=falcon-40b-instruct",
    "--tensor-parallel-size=2",
    "--gpu-memory-utilization=0.95",
    "--dtype=float16",
    "--chat-template=/workspace/chat_templates/falcon-instruct.jinja",
    "--enable-lora",
    f"--kaito-config-file={CONFIG}",
]
PHI3_ADAPTER = ("phi-3-adapter", Path("/mnt/adapter/phi-3-adapter"))
FALCON_ADAPTERS = [
    ("falcon-adapter-a", Path("/mnt/adapter/falcon-adapter-a")),
    ("falcon-adapter-b", Path("/mnt/adapter/falcon-adapter-b")),
]
RANKS = {
    Path("/mnt/adapter/phi-3-adapter"): 8,
    Path("/mnt/adapter/falcon-adapter-a"): 8,
    Path("/mnt/adapter/falcon-adapter-b"): 16,
}

GOLDEN = [
    pytest.param(
        PHI3_4K_PLAN,
        "",
        [],
        [
            "vllm", "serve", "/workspace/vllm/weights",
            "--port", "5000",
            "--served-model-name", "phi-3-mini-4k-instruct",
            "--tensor-parallel-size", "1",
            "--gpu-memory-utilization", "0.9",
            "--dtype", "float16",
        ],
        id="seed inference-phi-3-mini: phi-3-mini-4k-instruct on Standard_NC6s_v3",
    ),
    pytest.param(
        PHI3_128K_PLAN,
        "",
        [],
        [
            "vllm", "serve", "/workspace/vllm/weights",
            "--port", "5000",
            "--served-model-name", "phi-3-mini-128k-instruct",
            "--tensor-parallel-size", "1",
            "--gpu-memory-utilization", "0.9",
            "--dtype", "float16",
        ],
        id="the same seed with phi-3-mini-128k-instruct",
    ),
    pytest.param(
        [*PHI3_128K_PLAN, "--enable-lora"],
        "",
        [PHI3_ADAPTER],
        [
            "vllm", "serve", "/workspace/vllm/weights",
            "--port", "5000",
            "--served-model-name", "phi-3-mini-128k-instruct",
            "--tensor-parallel-size", "1",
            "--gpu-memory-utilization", "0.9",
            "--dtype", "float16",
            "--enable-lora",
            "--max-lora-rank", "8",
            "--lora-modules", "phi-3-adapter=/mnt/adapter/phi-3-adapter",
        ],
        id="seed inference-phi-3-mini-adapter: one adapter of rank 8",
    ),
    pytest.param(
        FALCON_40B_PLAN,
        MULTI_GPU_CONFIG,
        FALCON_ADAPTERS,
        [
            "vllm", "serve", "/workspace/vllm/weights",
            "--port", "5000",
            "--served-model-name", "falcon-40b-instruct",
            "--tensor-parallel-size", "2",
            "--gpu-memory-utilization", "0.95",
            "--dtype", "float16",
            "--chat-template", "/workspace/chat_templates/falcon-instruct.jinja",
            "--enable-lora",
            "--max-lora-rank", "16",
            "--lora-modules",
            "falcon-adapter-a=/mnt/adapter/falcon-adapter-a",
            "falcon-adapter-b=/mnt/adapter/falcon-adapter-b",
            "--max-model-len", "4096",
            "--enforce-eager",
            "--cpu-offload-gb", "0",
        ],
        id="falcon-40b-instruct on Standard_NC48ads_A100_v4 with two adapters and a config file",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("plan", "config", "adapters", "expected"), GOLDEN)
def test_the_plan_becomes_this_exact_vllm_command(
    plan: list[str], config: str, adapters: list[tuple[str, Path]], expected: list[str]
) -> None:
    command = vllm_command(parse_args(plan), read_config(config), adapters, lora_rank=RANKS.get)
    assert command == expected


def test_the_api_server_module_form_takes_the_model_as_a_flag() -> None:
    opts = parse_args(["--served-model-name", "tiny", "--model", "/models/tiny"])
    program = ("python3", "-m", "vllm.entrypoints.openai.api_server")
    assert vllm_command(opts, {}, [], program=program) == [
        "python3", "-m", "vllm.entrypoints.openai.api_server",
        "--model", "/models/tiny",
        "--port", "5000",
        "--served-model-name", "tiny",
        "--tensor-parallel-size", "1",
    ]  # fmt: skip


def test_every_operator_flag_appears_in_a_fixed_order() -> None:
    opts = LaunchOptions(
        model="org/model",
        served_model_name="model",
        port=5001,
        tensor_parallel_size=8,
        pipeline_parallel_size=2,
        gpu_memory_utilization=0.84,
        max_model_len="auto",
        dtype="bfloat16",
        chat_template="/t.jinja",
        code_revision="abc123",
        download_dir="/workspace/weights",
        trust_remote_code=True,
        extra=("--performance-mode", "balanced"),
    )
    assert vllm_command(opts, {"vllm": {"max-model-len": 8192}}, []) == [
        "vllm", "serve", "org/model",
        "--port", "5001",
        "--served-model-name", "model",
        "--tensor-parallel-size", "8",
        "--pipeline-parallel-size", "2",
        "--gpu-memory-utilization", "0.84",
        "--max-model-len", "auto",
        "--dtype", "bfloat16",
        "--chat-template", "/t.jinja",
        "--code-revision", "abc123",
        "--download-dir", "/workspace/weights",
        "--trust-remote-code",
        "--max-model-len", "8192",
        "--performance-mode", "balanced",
    ]  # fmt: skip


def test_lora_is_left_out_unless_enabled_and_enabled_alone_without_adapters() -> None:
    disabled = vllm_command(parse_args([]), {}, [PHI3_ADAPTER])
    enabled = vllm_command(parse_args(["--enable-lora"]), {}, [])
    assert "--enable-lora" not in disabled
    assert "--lora-modules" not in disabled
    assert enabled[-1] == "--enable-lora"
    assert "--lora-modules" not in enabled


@pytest.mark.parametrize(
    "given",
    [
        pytest.param(("--lora-modules", "mine=/data/mine"), id="as an extra argument"),
        pytest.param(("--lora-modules=mine=/data/mine",), id="as an extra argument with ="),
    ],
)
def test_a_given_lora_modules_flag_replaces_the_adapter_scan(given: tuple[str, ...]) -> None:
    opts = LaunchOptions(model="m", served_model_name="m", enable_lora=True, extra=given)
    command = vllm_command(opts, {}, [PHI3_ADAPTER], lora_rank=RANKS.get)
    assert "phi-3-adapter=/mnt/adapter/phi-3-adapter" not in command
    assert command[-len(given) - 1 :] == ["--enable-lora", *given]


def test_adapters_of_unknown_rank_leave_max_lora_rank_to_vllm() -> None:
    opts = LaunchOptions(model="m", served_model_name="m", enable_lora=True)
    command = vllm_command(opts, {}, [PHI3_ADAPTER], lora_rank=lambda _: None)
    assert "--max-lora-rank" not in command
    assert command[-3:] == [
        "--enable-lora",
        "--lora-modules",
        "phi-3-adapter=" + str(PHI3_ADAPTER[1]),
    ]


@pytest.mark.parametrize(
    ("rank", "expected"),
    [
        pytest.param(1, 8, id="1 rounds up to 8"),
        pytest.param(8, 8, id="8 stays"),
        pytest.param(9, 16, id="9 rounds up to 16"),
        pytest.param(64, 64, id="64 stays"),
        pytest.param(300, 320, id="300 rounds up to 320"),
        pytest.param(512, 512, id="512 is the largest"),
    ],
)
def test_max_lora_rank_rounds_up_to_a_value_vllm_accepts(rank: int, expected: int) -> None:
    assert max_lora_rank(rank) == expected


def test_a_rank_above_512_is_refused() -> None:
    with pytest.raises(ValueError, match="513"):
        max_lora_rank(513)


def test_parse_args_round_trips_kaitos_flags() -> None:
    argv = [
        "--model", "tiiuae/falcon-40b-instruct",
        "--served-model-name", "falcon-40b-instruct",
        "--port", "5001",
        "--tensor-parallel-size", "2",
        "--pipeline-parallel-size", "3",
        "--gpu-memory-utilization", "0.95",
        "--max-model-len", "2048",
        "--dtype", "float16",
        "--chat-template", "/workspace/chat_templates/falcon-instruct.jinja",
        "--code-revision", "ecb78d97",
        "--download-dir", "/workspace/weights",
        "--trust-remote-code",
        "--enable-lora",
        "--kaito-adapters-dir", "/data/adapters",
        "--kaito-config-file", "/data/config.yaml",
    ]  # fmt: skip
    expected = LaunchOptions(
        model="tiiuae/falcon-40b-instruct",
        served_model_name="falcon-40b-instruct",
        port=5001,
        tensor_parallel_size=2,
        pipeline_parallel_size=3,
        gpu_memory_utilization=0.95,
        max_model_len=2048,
        dtype="float16",
        chat_template="/workspace/chat_templates/falcon-instruct.jinja",
        code_revision="ecb78d97",
        download_dir="/workspace/weights",
        trust_remote_code=True,
        enable_lora=True,
        adapters_dir=Path("/data/adapters"),
        config_file=Path("/data/config.yaml"),
    )
    assert parse_args(argv) == expected
    assert parse_args(_equals_form(argv)) == expected


def _equals_form(argv: list[str]) -> list[str]:
    """``--flag value`` pairs joined as ``--flag=value``; bare flags stay bare."""
    out: list[str] = []
    for arg in argv:
        if out and not arg.startswith("--") and "=" not in out[-1]:
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def test_defaults_are_kaitos() -> None:
    opts = parse_args([])
    assert opts == LaunchOptions(
        model="/workspace/vllm/weights", served_model_name="/workspace/vllm/weights"
    )
    assert opts.port == 5000
    assert opts.adapters_dir == Path("/mnt/adapter")
    assert opts.config_file == Path("/mnt/config/inference_config.yaml")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("4096", 4096, id="a number becomes an int"),
        pytest.param("auto", "auto", id="auto stays a string"),
    ],
)
def test_max_model_len_is_a_number_or_auto(value: str, expected: int | str) -> None:
    assert parse_args([f"--max-model-len={value}"]).max_model_len == expected


def test_an_empty_config_file_flag_means_no_config_file() -> None:
    assert parse_args(["--kaito-config-file="]).config_file is None


def test_unknown_flags_pass_through_in_order() -> None:
    argv = [
        "--max-num-seqs", "64",
        "--served-model-name", "phi-4",
        "--enforce-eager",
        "--swap-space=4",
        "--served", "x",
        "--kv-events-config", '{"enable_kv_cache_events": true}',
    ]  # fmt: skip
    opts = parse_args(argv)
    assert opts.served_model_name == "phi-4"
    assert opts.extra == (
        "--max-num-seqs", "64",
        "--enforce-eager",
        "--swap-space=4",
        "--served", "x",
        "--kv-events-config", '{"enable_kv_cache_events": true}',
    )  # fmt: skip
    assert vllm_command(opts, {}, [])[-len(opts.extra) :] == list(opts.extra)


def test_kaitos_other_wrapper_flags_are_accepted_and_not_passed_to_vllm() -> None:
    opts = parse_args(
        [
            "--kaito-max-probe-steps=6",
            "--kaito-kv-cache-cpu-memory-utilization",
            "0.5",
            "--kaito-disable-rate-limit",
        ]
    )
    assert opts.extra == ()


def test_read_config_keeps_kaitos_keys_and_the_vllm_map_in_file_order() -> None:
    text = "max_probe_steps: 6\nvllm:\n  swap-space: 4\n  cpu-offload-gb: 0\n"
    config = read_config(text)
    assert config == {"max_probe_steps": 6, "vllm": {"swap-space": 4, "cpu-offload-gb": 0}}
    assert list(config["vllm"]) == ["swap-space", "cpu-offload-gb"]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="an empty file"),
        pytest.param("max_probe_steps: 6\n", id="no vllm key"),
        pytest.param("vllm:\n", id="an empty vllm key"),
    ],
)
def test_a_config_without_vllm_entries_adds_no_flags(text: str) -> None:
    assert config_flags(read_config(text).get("vllm", {})) == []


@pytest.mark.parametrize(
    ("text", "named"),
    [
        pytest.param("- vllm\n", "inference_config.yaml", id="a list at the top"),
        pytest.param("vllm: [max-model-len]\n", "vllm:", id="vllm is a list"),
        pytest.param("vllm: 4096\n", "vllm:", id="vllm is a number"),
        pytest.param("vllm:\n  max-model-len: {a: 1}\n", "vllm.max-model-len", id="a map value"),
        pytest.param(
            "vllm:\n  lora-modules: [{a: 1}]\n", "vllm.lora-modules", id="a map in a list"
        ),
        pytest.param("vllm:\n  swap-space:\n", "vllm.swap-space", id="a null value"),
        pytest.param("vllm:\n  1: 2\n", "vllm.1", id="a number as the key"),
        pytest.param("max_probe_steps: six\n", "max_probe_steps", id="probe steps not a number"),
        pytest.param("max_probe_steps: true\n", "max_probe_steps", id="probe steps a boolean"),
        pytest.param(
            "kv_cache_cpu_memory_utilization: high\n",
            "kv_cache_cpu_memory_utilization",
            id="kv cache utilization not a number",
        ),
        pytest.param("vllm: {a: 1\n", "inference_config.yaml is not valid YAML", id="broken YAML"),
    ],
)
def test_a_bad_config_is_refused_naming_the_key(text: str, named: str) -> None:
    with pytest.raises(ValueError, match="^" + named.replace(".", r"\.")):
        read_config(text)


def test_config_entries_become_flags_booleans_bare_and_lists_repeated() -> None:
    vllm = {
        "enforce-eager": True,
        "enable-chunked-prefill": False,
        "max_model_len": 2048,
        "gpu-memory-utilization": 0.9,
        "middleware": ["a.B", "c.D"],
        "--already-dashed": "x",
    }
    assert config_flags(vllm) == [
        "--enforce-eager",
        "--max_model_len", "2048",
        "--gpu-memory-utilization", "0.9",
        "--middleware", "a.B",
        "--middleware", "c.D",
        "--already-dashed", "x",
    ]  # fmt: skip


def _adapter(root: Path, name: str, config: dict[str, object] | None) -> Path:
    path = root / name
    path.mkdir(parents=True)
    if config is not None:
        (path / "adapter_config.json").write_text(json.dumps(config))
    return path


def test_adapter_directories_are_found_sorted_and_need_an_adapter_config(tmp_path: Path) -> None:
    b = _adapter(tmp_path, "b-adapter", {"r": 16})
    a = _adapter(tmp_path, "a-adapter", {"r": 8})
    _adapter(tmp_path, "empty", None)
    (tmp_path / "notes.txt").write_text("not an adapter")
    assert adapter_dirs(tmp_path) == [("a-adapter", a), ("b-adapter", b)]
    assert adapter_dirs(tmp_path / "missing") == []
    paths = [str(a), str(tmp_path / "empty"), str(b)]
    assert lora_modules(paths) == [f"a-adapter={a}", f"b-adapter={b}"]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        pytest.param({"r": 8}, 8, id="r"),
        pytest.param({"r": 8, "rank_pattern": {"q_proj": 32}}, 32, id="a larger rank pattern"),
        pytest.param({"lora_alpha": 16}, None, id="no rank"),
        pytest.param({"r": "8"}, None, id="a rank that is not a number"),
        pytest.param(None, None, id="no adapter_config.json"),
    ],
)
def test_the_lora_rank_is_read_from_adapter_config(
    tmp_path: Path, config: dict[str, object] | None, expected: int | None
) -> None:
    assert read_lora_rank(_adapter(tmp_path, "adapter", config)) == expected


def test_a_broken_adapter_config_has_no_rank(tmp_path: Path) -> None:
    path = _adapter(tmp_path, "adapter", None)
    (path / "adapter_config.json").write_text("{not json")
    assert read_lora_rank(path) is None


class Exec:
    """Records the command ``os.execvp`` would have replaced the process with."""

    def __init__(self) -> None:
        self.argv: list[str] | None = None

    def __call__(self, file: str, argv: list[str]) -> None:
        assert file == argv[0]
        self.argv = argv


@pytest.fixture
def execvp(monkeypatch: pytest.MonkeyPatch) -> Exec:
    recorder = Exec()
    monkeypatch.setattr(os, "execvp", recorder)
    monkeypatch.setattr(vllm_launcher, "vllm_installed", lambda: True)
    monkeypatch.setattr(vllm_launcher, "gpu_visible", lambda: True)
    monkeypatch.delenv("VLLM_TARGET_DEVICE", raising=False)
    return recorder


def test_main_scans_real_adapters_reads_the_config_and_execs_vllm(
    tmp_path: Path, execvp: Exec, capsys: pytest.CaptureFixture[str]
) -> None:
    adapters = tmp_path / "adapters"
    a = _adapter(adapters, "falcon-adapter-a", {"r": 8})
    b = _adapter(adapters, "falcon-adapter-b", {"r": 16})
    config = tmp_path / "inference_config.yaml"
    config.write_text(MULTI_GPU_CONFIG)
    argv = [*FALCON_40B_PLAN, f"--kaito-adapters-dir={adapters}", f"--kaito-config-file={config}"]

    assert vllm_launcher.main(argv) == 0

    assert execvp.argv is not None
    assert execvp.argv[1:] == [
        "serve", "/workspace/vllm/weights",
        "--port", "5000",
        "--served-model-name", "falcon-40b-instruct",
        "--tensor-parallel-size", "2",
        "--gpu-memory-utilization", "0.95",
        "--dtype", "float16",
        "--chat-template", "/workspace/chat_templates/falcon-instruct.jinja",
        "--enable-lora",
        "--max-lora-rank", "16",
        "--lora-modules", f"falcon-adapter-a={a}", f"falcon-adapter-b={b}",
        "--max-model-len", "4096",
        "--enforce-eager",
        "--cpu-offload-gb", "0",
    ]  # fmt: skip
    assert Path(execvp.argv[0]).name == "vllm"
    assert capsys.readouterr().err.strip() == shlex.join(execvp.argv)


def test_main_runs_the_api_server_module_on_a_cpu_build(
    execvp: Exec, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(vllm_launcher, "gpu_visible", lambda: False)
    monkeypatch.setenv("VLLM_TARGET_DEVICE", "cpu")
    argv = ["--model", "/models/tiny", "--served-model-name", "tiny", "--kaito-config-file="]
    assert vllm_launcher.main([*argv, f"--kaito-adapters-dir={tmp_path}"]) == 0
    assert execvp.argv is not None
    assert execvp.argv[:5] == [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", "/models/tiny"
    ]  # fmt: skip


def test_main_without_a_gpu_exits_3_with_advice(
    execvp: Exec, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(vllm_launcher, "gpu_visible", lambda: False)
    assert vllm_launcher.main(["--model", "x"]) == 3
    assert capsys.readouterr().err.strip() == NO_GPU
    assert execvp.argv is None


def test_main_with_a_bad_config_file_exits_2_naming_file_and_key(
    tmp_path: Path, execvp: Exec, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "inference_config.yaml"
    config.write_text("vllm:\n  max-model-len: [1, {a: 2}]\n")
    assert vllm_launcher.main([f"--kaito-config-file={config}"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {config}: vllm.max-model-len:")
    assert execvp.argv is None


def test_without_vllm_installed_the_launcher_exits_3_with_a_clear_message(
    execvp: Exec, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(vllm_launcher, "vllm_installed", lambda: False)
    assert vllm_launcher.main(["--model", "x"]) == 3
    assert capsys.readouterr().err.strip() == NO_VLLM
    assert execvp.argv is None


def test_the_launcher_module_exits_3_where_vllm_is_missing() -> None:
    """The same as a process, in the test environment, which has no vLLM (make test-vllm's
    environment has it and runs only tests/vllm)."""
    assert not vllm_launcher.vllm_installed(), "this test runs where vLLM is not installed"
    result = subprocess.run(
        [sys.executable, "-m", "presets.inference.vllm_launcher", "--model", "x"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3
    assert result.stderr.strip() == NO_VLLM
    assert result.stdout == ""
