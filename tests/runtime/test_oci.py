"""Adapters, datasets and weights pushed to and pulled from a real OCI registry (Debian's
docker-registry with htpasswd auth, over plain http and over TLS). The image layout is checked
through the registry's own HTTP API, not through the code under test."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict
from urllib.parse import urljoin

import oras.provider
import pytest
import requests

from localdev.infra import free_port
from presets import oci
from presets.oci import (
    Credentials,
    OciError,
    credentials_from_docker_config,
    main,
    parse_reference,
    pull_directory,
    push_adapter,
    push_directory,
)
from tests.support import registry as registry_support
from tests.support.registry import RunningRegistry, running_registry

PRESET = "phi-3-mini-4k-instruct"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _oras_temp_dirs() -> set[str]:
    return {name for name in os.listdir(tempfile.gettempdir()) if name.startswith("oras-tmp")}


@pytest.fixture(scope="module", autouse=True)
def no_oras_leftovers() -> Iterator[None]:
    before = _oras_temp_dirs()
    yield
    assert _oras_temp_dirs() - before == set()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    with running_registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    with running_registry(tmp_path_factory.mktemp("tls-registry"), tls=True) as running:
        yield running


@pytest.fixture(params=["http", "tls"])
def any_registry(
    request: pytest.FixtureRequest, registry: RunningRegistry, tls_registry: RunningRegistry
) -> RunningRegistry:
    return registry if request.param == "http" else tls_registry


def _login(reg: RunningRegistry) -> Credentials:
    return Credentials(reg.username, reg.password)


class _Connection(TypedDict):
    credentials: Credentials
    insecure: bool
    ca_file: Path | None


def _connection(reg: RunningRegistry) -> _Connection:
    return {"credentials": _login(reg), "insecure": reg.insecure, "ca_file": reg.ca_file}


def _adapter(folder: Path, size: int = 200_000) -> Path:
    folder.mkdir(parents=True)
    config = {"peft_type": "LORA", "r": 8, "salt": os.urandom(8).hex()}
    (folder / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "adapter_model.safetensors").write_bytes(os.urandom(size))
    return folder


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_adapter_round_trip(any_registry: RunningRegistry, tmp_path: Path) -> None:
    # Big enough that an upload sent unauthenticated first would break on the registry's 401.
    source = _adapter(tmp_path / "adapter", size=12 * 1024 * 1024)
    target = f"{any_registry.host}/adapters/demo:v1"
    digest = push_adapter(source, target, preset=PRESET, **_connection(any_registry))
    assert digest.startswith("sha256:")

    written = pull_directory(target, tmp_path / "pulled", **_connection(any_registry))

    assert sorted(p.name for p in written) == ["adapter_config.json", "adapter_model.safetensors"]
    assert _contents(tmp_path / "pulled") == _contents(source)
    by_digest = f"{any_registry.host}/adapters/demo@{digest}"
    pull_directory(by_digest, tmp_path / "by-digest", **_connection(any_registry))
    assert _contents(tmp_path / "by-digest") == _contents(source)


def test_adapter_image_is_kaitos_layout(registry: RunningRegistry, tmp_path: Path) -> None:
    source = _adapter(tmp_path / "adapter")
    (source / "README.md").write_text("not part of the adapter image", encoding="utf-8")
    digest = push_adapter(
        source, f"{registry.host}/adapters/layout:v1", preset=PRESET, **_connection(registry)
    )

    reply = registry.get("/v2/adapters/layout/manifests/v1", Accept=OCI_MANIFEST)
    manifest = reply.json()
    assert reply.headers["Docker-Content-Digest"] == digest
    assert manifest["mediaType"] == OCI_MANIFEST
    assert manifest["annotations"]["sh.kaito.model.name"] == PRESET
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    blob = registry.get(f"/v2/adapters/layout/blobs/{layer['digest']}").content
    assert f"sha256:{hashlib.sha256(blob).hexdigest()}" == layer["digest"]
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
    assert files == {
        f"data/{name}": data for name, data in _contents(source).items() if name != "README.md"
    }
    config = registry.get(f"/v2/adapters/layout/blobs/{manifest['config']['digest']}").json()
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    diff_id = f"sha256:{hashlib.sha256(gzip.decompress(blob)).hexdigest()}"
    assert config["rootfs"] == {"type": "layers", "diff_ids": [diff_id]}


@pytest.mark.parametrize("chunked", [False, True], ids=["single-put", "chunked"])
def test_model_weights_round_trip(
    registry: RunningRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunked: bool
) -> None:
    if chunked:  # what a layer over 64 MiB gets
        monkeypatch.setattr(oci, "_CHUNKED_ABOVE", 1024)
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "config.json").write_text('{"model_type": "llama"}', encoding="utf-8")
    (weights / "model.safetensors").write_bytes(os.urandom(3 * 1024 * 1024))
    (weights / "tokenizer.json").write_text('{"version": "1.0"}', encoding="utf-8")
    (weights / ".cache").write_text("hidden, stays behind", encoding="utf-8")
    (weights / "checkpoint-1").mkdir()  # folders are not pushed
    (weights / "checkpoint-1" / "optimizer.pt").write_bytes(b"x")
    target = f"{registry.host}/kaito-phi-3:0.0.1"
    push_directory(weights, target, **_connection(registry))

    pull_directory(target, tmp_path / "pulled", **_connection(registry))

    assert sorted(os.listdir(tmp_path / "pulled")) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    for name in os.listdir(tmp_path / "pulled"):
        assert (tmp_path / "pulled" / name).read_bytes() == (weights / name).read_bytes()


def test_pulls_plain_file_layers_by_title(registry: RunningRegistry, tmp_path: Path) -> None:
    """An artifact pushed file by file, as ``oras push host/repo:tag a.jsonl b.jsonl`` does."""
    (tmp_path / "train.jsonl").write_text('{"text": "hello"}\n', encoding="utf-8")
    (tmp_path / "eval.jsonl").write_text('{"text": "bye"}\n', encoding="utf-8")
    client = oras.provider.Registry(hostname=registry.host, insecure=True, auth_backend="basic")
    client.auth.set_basic_auth(registry.username, registry.password)
    client.push(
        target=f"{registry.host}/datasets/plain:v1",
        files=[str(tmp_path / "train.jsonl"), str(tmp_path / "eval.jsonl")],
        disable_path_validation=True,
        quiet=True,
    )

    written = pull_directory(
        f"{registry.host}/datasets/plain:v1", tmp_path / "pulled", **_connection(registry)
    )

    assert sorted(p.name for p in written) == ["eval.jsonl", "train.jsonl"]
    assert (tmp_path / "pulled" / "train.jsonl").read_text() == '{"text": "hello"}\n'


def _tar_gz(entries: dict[str, bytes | None]) -> bytes:
    """A tar.gz of files (bytes) and folders (None), in order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _upload_image(reg: RunningRegistry, repository: str, tag: str, layers: list[bytes]) -> None:
    """A docker-built-like image (untitled layers) uploaded through the registry's HTTP API."""
    auth, verify = (reg.username, reg.password), str(reg.ca_file) if reg.ca_file else True

    def blob(data: bytes, media_type: str) -> dict[str, Any]:
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        started = requests.post(
            f"{reg.url}/v2/{repository}/blobs/uploads/", auth=auth, verify=verify, timeout=10
        )
        assert started.status_code == 202, started.text
        location = urljoin(f"{reg.url}/", started.headers["Location"])
        done = requests.put(
            location,
            params={"digest": digest},
            data=data,
            auth=auth,
            verify=verify,
            timeout=10,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert done.status_code == 201, done.text
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": blob(b"{}", "application/vnd.oci.image.config.v1+json"),
        "layers": [blob(layer, "application/vnd.oci.image.layer.v1.tar+gzip") for layer in layers],
    }
    reply = requests.put(
        f"{reg.url}/v2/{repository}/manifests/{tag}",
        json=manifest,
        auth=auth,
        verify=verify,
        headers={"Content-Type": OCI_MANIFEST},
        timeout=10,
    )
    assert reply.status_code == 201, reply.text


def test_pulls_data_of_a_docker_built_image(registry: RunningRegistry, tmp_path: Path) -> None:
    """``FROM busybox`` + ``COPY . /data``: several untitled layers, only /data is wanted."""
    base = _tar_gz({"bin/": None, "bin/busybox": b"\x7fELF", "etc/passwd": b"root:x:0:0"})
    data = _tar_gz(
        {
            "data/": None,
            "data/adapter_config.json": b'{"r": 8}',
            "./data/adapter_model.safetensors": b"weights",
            "data/.wh.stale": b"",
        }
    )
    _upload_image(registry, "adapters/docker-built", "v1", [base, data])

    written = pull_directory(
        f"{registry.host}/adapters/docker-built:v1", tmp_path / "out", **_connection(registry)
    )

    assert sorted(p.name for p in written) == ["adapter_config.json", "adapter_model.safetensors"]
    assert sorted(os.listdir(tmp_path / "out")) == sorted(p.name for p in written)
    assert (tmp_path / "out" / "adapter_model.safetensors").read_bytes() == b"weights"


def test_refuses_entries_that_escape(registry: RunningRegistry, tmp_path: Path) -> None:
    layer = _tar_gz({"data/ok.json": b"{}", "data/../../escaped": b"x"})
    _upload_image(registry, "adapters/evil", "v1", [layer])
    with pytest.raises(OciError, match=re.escape("unsafe entry 'data/../../escaped'")):
        pull_directory(
            f"{registry.host}/adapters/evil:v1", tmp_path / "out" / "in", **_connection(registry)
        )
    assert not (tmp_path / "escaped").exists()
    assert os.listdir(tmp_path / "out" / "in") == []  # what was written is removed again


def test_credentials_from_docker_config(registry: RunningRegistry, tmp_path: Path) -> None:
    config = registry.docker_config(tmp_path / "config.json")
    credentials = credentials_from_docker_config(config, registry.host)
    assert credentials == Credentials(registry.username, registry.password)
    localhost = registry.host.replace("127.0.0.1", "localhost")
    assert credentials_from_docker_config(config, localhost) == credentials
    assert credentials_from_docker_config(config, "other.example:5000") is None
    plain = tmp_path / "plain.json"
    plain.write_text(
        json.dumps(
            {"auths": {f"https://{registry.host}/v1/": {"username": "alice", "password": "pw"}}}
        ),
        encoding="utf-8",
    )
    assert credentials_from_docker_config(plain, registry.host) == Credentials("alice", "pw")

    source = _adapter(tmp_path / "adapter")
    push_adapter(source, f"{registry.host}/adapters/cfg:v1", credentials=credentials, insecure=True)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"auths": []}',
        '{"auths": {"REG": "x"}}',
        '{"auths": {"REG": {"auth": "%%%"}}}',
        '{"auths": {"REG": {"auth": "bm9jb2xvbg=="}}}',  # "nocolon"
        '{"auths": {"REG": {"username": "bob"}}}',
    ],
)
def test_malformed_docker_config(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(text.replace("REG", "127.0.0.1:5000"), encoding="utf-8")
    with pytest.raises(ValueError, match=r"docker config"):
        credentials_from_docker_config(path, "127.0.0.1:5000")


def test_missing_docker_config(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        credentials_from_docker_config(tmp_path / "absent.json", "127.0.0.1:5000")


def test_wrong_password(registry: RunningRegistry, tmp_path: Path) -> None:
    source = _adapter(tmp_path / "adapter")
    wrong = Credentials(registry.username, "wrong-password")
    expected = rf"registry {registry.host} rejected the credentials for user bob \(401"
    with pytest.raises(OciError, match=expected):
        push_adapter(source, f"{registry.host}/adapters/x:v1", credentials=wrong, insecure=True)
    with pytest.raises(OciError, match=expected):
        pull_directory(
            f"{registry.host}/adapters/x:v1", tmp_path / "out", credentials=wrong, insecure=True
        )


def test_no_credentials(registry: RunningRegistry, tmp_path: Path) -> None:
    with pytest.raises(OciError, match=rf"registry {registry.host} needs credentials"):
        pull_directory(f"{registry.host}/adapters/x:v1", tmp_path / "out", insecure=True)


def test_unreachable_registry(tmp_path: Path) -> None:
    host = f"127.0.0.1:{free_port()}"
    with pytest.raises(OciError, match=rf"registry {host} is not reachable: .*refused"):
        pull_directory(f"{host}/adapters/x:v1", tmp_path / "out", insecure=True)
    with pytest.raises(OciError, match="is not reachable"):
        push_adapter(_adapter(tmp_path / "adapter"), f"{host}/adapters/x:v1")


def test_plain_http_registry_asked_for_tls(registry: RunningRegistry, tmp_path: Path) -> None:
    with pytest.raises(OciError, match=r"WRONG_VERSION_NUMBER.*serve plain http"):
        pull_directory(
            f"{registry.host}/adapters/x:v1", tmp_path / "out", credentials=_login(registry)
        )


def test_tls_registry_without_its_ca(tls_registry: RunningRegistry, tmp_path: Path) -> None:
    expected = (
        rf"TLS with registry {tls_registry.host} failed: .*CERTIFICATE_VERIFY_FAILED.*--ca-file"
    )
    with pytest.raises(OciError, match=expected):
        pull_directory(
            f"{tls_registry.host}/adapters/x:v1", tmp_path / "out", credentials=_login(tls_registry)
        )


def test_missing_tag_and_repository(registry: RunningRegistry, tmp_path: Path) -> None:
    push_adapter(
        _adapter(tmp_path / "adapter"), f"{registry.host}/adapters/here:v1", **_connection(registry)
    )
    for target in (f"{registry.host}/adapters/here:v2", f"{registry.host}/nowhere/at-all:v1"):
        with pytest.raises(OciError, match=rf"artifact {target} not found"):
            pull_directory(target, tmp_path / "out", **_connection(registry))
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


def test_adapter_without_weights(tmp_path: Path) -> None:
    source = _adapter(tmp_path / "adapter")
    (source / "adapter_model.safetensors").unlink()
    with pytest.raises(OciError, match=r"adapter_model\.safetensors is missing"):
        push_adapter(source, "127.0.0.1:5000/adapters/x:v1", insecure=True)


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("127.0.0.1:5000/adapters/demo:v1", ("127.0.0.1:5000", "adapters/demo", "v1")),
        ("localhost/a", ("localhost", "a", "latest")),
        ("myacr.azurecr.io/x/y/z", ("myacr.azurecr.io", "x/y/z", "latest")),
        (f"reg.io:443/a@sha256:{'a' * 64}", ("reg.io:443", "a", f"sha256:{'a' * 64}")),
    ],
)
def test_parse_reference(ref: str, expected: tuple[str, str, str]) -> None:
    assert parse_reference(ref) == expected


@pytest.mark.parametrize(
    "ref",
    [
        "adapters/demo:v1",
        "http://127.0.0.1:5000/a:v1",
        "127.0.0.1:5000/Upper:v1",
        "127.0.0.1:5000/a:bad tag",
        "127.0.0.1:5000/a@sha256:short",
        "127.0.0.1:5000",
    ],
)
def test_invalid_reference(ref: str) -> None:
    with pytest.raises(OciError, match="not a valid reference"):
        parse_reference(ref)


def test_cli_round_trip(
    registry: RunningRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _adapter(tmp_path / "adapter")
    config = str(registry.docker_config(tmp_path / "config.json"))
    target = f"{registry.host}/adapters/cli:v1"
    assert (
        main(
            [
                "push",
                str(source),
                target,
                "--docker-config",
                config,
                "--insecure",
                "--adapter",
                "--annotation",
                f"sh.kaito.model.name={PRESET}",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip().startswith("sha256:")
    annotations = registry.get("/v2/adapters/cli/manifests/v1", Accept=OCI_MANIFEST).json()[
        "annotations"
    ]
    assert annotations == {"sh.kaito.model.name": PRESET}

    dest = tmp_path / "pulled"
    assert main(["pull", target, str(dest), "--docker-config", config, "--insecure"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert _contents(dest) == _contents(source)


def test_cli_failure(
    registry: RunningRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(registry.docker_config(tmp_path / "config.json", password="nope"))
    code = main(
        [
            "pull",
            f"{registry.host}/adapters/cli:v1",
            str(tmp_path / "out"),
            "--docker-config",
            config,
            "--insecure",
        ]
    )
    assert code == 1
    assert "rejected the credentials for user bob" in capsys.readouterr().err


def test_registry_fixture_fails_without_the_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_support, "BINARY", str(tmp_path / "absent"))
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with (
        pytest.raises(pytest.fail.Exception, match=r"apt-get install docker-registry"),
        running_registry(tmp_path),
    ):
        pass
