"""OCI artifacts: push a folder as a Kaito-style single-layer image and pull one back.

Kaito's adapter image (reference 5.4/5.5) is one ``tar+gzip`` layer holding
``/data/adapter_config.json`` and ``/data/adapter_model.safetensors``, with the manifest
annotation ``sh.kaito.model.name=<preset>``. Datasets and model weights use the same ``/data``
layout, so one pair of functions serves all three: :func:`push_directory` and
:func:`pull_directory` (plus :func:`push_adapter`, which checks the adapter files first).

Transfers go through the oras SDK (``auth_backend="basic"`` for htpasswd registries, ``token``
when the registry asks for a bearer token). oras retries every failed request five times with
sleeps adding up to about 131 s, so each call first probes the registry's ``/v2/`` with a short
timeout: an unreachable registry, a missing or wrong password, or a TLS mismatch fails at once
with an :class:`OciError` that says which. Each oras client is fresh, carries only the
credentials given here (never ``~/.docker/config.json``), bounds every request with
``timeout_s`` and does not retry. Temporary files live in this module's own temporary folders,
so nothing like ``oras-tmp.*`` is left behind.

``python -m presets.oci push|pull ...`` (``kaiten oci``) is the command-line front end used by
the tuning job's pusher container and by the init containers that pull adapters, datasets and
weights.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import functools
import gzip
import hashlib
import json
import re
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path, PurePosixPath
from typing import IO, Any, cast

import oras.provider
import requests
import urllib3

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MODEL_NAME_ANNOTATION = "sh.kaito.model.name"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
DATA_DIR = "data"

_TITLE = "org.opencontainers.image.title"
_UNPACK = "io.deis.oras.content.unpack"
_MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
_INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
_CONNECT_TIMEOUT_S = 5.0
_CHUNKED_ABOVE = 64 * 1024 * 1024  # oras reads a blob whole for a single PUT; stream big ones
_COPY_CHUNK = 1024 * 1024

_HOST = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-fA-F0-9]{32,}")
_SHA256 = re.compile(r"sha256:[a-f0-9]{64}")
_REASON = re.compile(r"\[(?:Errno -?\d+|SSL: [A-Z_]+)\][^'\"(]*")


class OciError(Exception):
    """A push or pull that failed, with a message that says why."""


class DockerConfigError(ValueError):
    """A Docker config file that is missing or malformed."""


@dataclass(frozen=True)
class Credentials:
    """A registry user and password (HTTP basic auth)."""

    username: str
    password: str = field(repr=False)


# ---------------------------------------------------------------- references and credentials


def parse_reference(ref: str) -> tuple[str, str, str]:
    """``HOST[:PORT]/REPOSITORY[:TAG|@DIGEST]`` as ``(registry, repository, tag_or_digest)``;
    the tag defaults to ``latest``. The registry host must be explicit (no Docker Hub default)."""

    def invalid(why: str) -> OciError:
        return OciError(
            f"not a valid reference: {ref!r} ({why}); expected HOST[:PORT]/REPOSITORY[:TAG|@DIGEST]"
        )

    if "://" in ref:
        raise invalid("leave out the scheme; plain http is the insecure option")
    name, at, digest = ref.partition("@")
    host, slash, path = name.partition("/")
    if not slash or not ("." in host or ":" in host or host == "localhost"):
        raise invalid("it names no registry host")
    if not _HOST.fullmatch(host):
        raise invalid(f"bad registry host {host!r}")
    repository, tag = path, ""
    colon = path.rfind(":")
    if colon > path.rfind("/"):
        repository, tag = path[:colon], path[colon + 1 :]
    if not all(_PATH_COMPONENT.fullmatch(part) for part in repository.split("/")):
        raise invalid(f"bad repository {repository!r} (lowercase letters, digits, . _ - and /)")
    if tag and not _TAG.fullmatch(tag):
        raise invalid(f"bad tag {tag!r}")
    if at:
        if not _DIGEST.fullmatch(digest):
            raise invalid(f"bad digest {digest!r}")
        return host, repository, digest
    return host, repository, tag or "latest"


def credentials_from_docker_config(path: Path, registry: str) -> Credentials | None:
    """The credentials a Docker config file (``{"auths": {"host:port": {...}}}``) holds for
    ``registry``; ``None`` when it has no entry, or no inline user and password, for it.
    A missing or malformed file raises :class:`DockerConfigError` (a ``ValueError``)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise DockerConfigError(f"docker config {path} does not exist") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DockerConfigError(f"docker config {path} is not readable JSON: {error}") from error
    if not isinstance(document, dict):
        raise DockerConfigError(f"docker config {path} is not a JSON object")
    auths = document.get("auths", {})
    if not isinstance(auths, dict):
        raise DockerConfigError(f"docker config {path}: 'auths' is not an object")
    wanted = _host_aliases(registry)
    for key, entry in auths.items():
        if _registry_of_key(key) in wanted:
            return _entry_credentials(path, key, entry)
    return None


def _host_aliases(registry: str) -> set[str]:
    aliases = {registry}
    if registry.startswith("localhost"):
        aliases.add(registry.replace("localhost", "127.0.0.1", 1))
    elif registry.startswith("127.0.0.1"):
        aliases.add(registry.replace("127.0.0.1", "localhost", 1))
    return aliases


def _registry_of_key(key: str) -> str:
    """``https://host:port/v1/`` and ``host:port`` both name ``host:port``."""
    for scheme in ("https://", "http://"):
        key = key.removeprefix(scheme)
    return key.split("/", 1)[0]


def _entry_credentials(path: Path, key: str, entry: object) -> Credentials | None:
    where = f"docker config {path}, entry {key!r}"
    if not isinstance(entry, dict):
        raise DockerConfigError(f"{where} is not an object")
    auth = entry.get("auth")
    if auth:
        if not isinstance(auth, str):
            raise DockerConfigError(f"{where}: 'auth' is not a string")
        try:
            decoded = base64.b64decode(auth, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as error:
            raise DockerConfigError(f"{where}: 'auth' is not base64 of user:password") from error
        username, colon, password = decoded.partition(":")
        if not colon or not username:
            raise DockerConfigError(f"{where}: 'auth' is not base64 of user:password")
        return Credentials(username, password)
    user, secret = entry.get("username"), entry.get("password")
    if user is None and secret is None:
        return None
    if not (isinstance(user, str) and user and isinstance(secret, str)):
        raise DockerConfigError(f"{where}: 'username' and 'password' must both be strings")
    return Credentials(user, secret)


# ---------------------------------------------------------------- the registry connection


@dataclass(frozen=True)
class _Remote:
    registry: str
    repository: str
    reference: str
    scheme: str
    verify: bool | str
    timeout_s: float

    @property
    def api(self) -> str:
        return f"{self.scheme}://{self.registry}/v2/{self.repository}"

    @property
    def target(self) -> str:
        separator = "@" if ":" in self.reference else ":"
        return f"{self.registry}/{self.repository}{separator}{self.reference}"

    @property
    def timeouts(self) -> tuple[float, float]:
        return min(_CONNECT_TIMEOUT_S, self.timeout_s), self.timeout_s


def _remote(target: str, *, insecure: bool, ca_file: Path | None, timeout_s: float) -> _Remote:
    registry, repository, reference = parse_reference(target)
    if ca_file is not None and not ca_file.is_file():
        raise OciError(f"CA file {ca_file} does not exist")
    return _Remote(
        registry=registry,
        repository=repository,
        reference=reference,
        scheme="http" if insecure else "https",
        verify=str(ca_file) if ca_file is not None else True,
        timeout_s=timeout_s,
    )


def _reason(error: requests.RequestException) -> str:
    """The root cause in a few words, not urllib3's whole retry story."""
    inner = error.args[0] if error.args else error
    text = str(getattr(inner, "reason", None) or inner)
    found = _REASON.search(text)
    return found.group(0).strip() if found else text[:300]


def _transport_error(
    registry: str, error: requests.RequestException, *, probing: bool = False
) -> OciError:
    reason = _reason(error)
    if isinstance(error, requests.exceptions.SSLError):
        hint = ""
        if "CERTIFICATE_VERIFY_FAILED" in reason:
            hint = "; give its CA certificate (ca_file / --ca-file)"
        elif "WRONG_VERSION_NUMBER" in reason:
            hint = "; it seems to serve plain http (insecure / --insecure)"
        return OciError(f"TLS with registry {registry} failed: {reason}{hint}")
    if isinstance(error, requests.exceptions.Timeout):
        return OciError(f"registry {registry} did not answer in time: {reason}")
    if isinstance(error, requests.exceptions.ConnectionError):
        if probing:
            return OciError(f"registry {registry} is not reachable: {reason}")
        return OciError(f"lost the connection to registry {registry}: {reason}")
    return OciError(f"request to registry {registry} failed: {reason}")


def _get_v2(remote: _Remote, credentials: Credentials | None) -> requests.Response:
    auth = (credentials.username, credentials.password) if credentials else None
    url = f"{remote.scheme}://{remote.registry}/v2/"
    try:
        with requests.get(url, auth=auth, timeout=remote.timeouts, verify=remote.verify) as reply:
            return reply
    except requests.RequestException as error:
        raise _transport_error(remote.registry, error, probing=True) from error


def _probe(remote: _Remote, credentials: Credentials | None) -> str:
    """The oras auth backend the registry needs (``basic`` or ``token``), once ``/v2/`` has
    answered and, for a basic-auth registry, accepted the credentials."""
    reply = _get_v2(remote, None)
    if reply.status_code == HTTPStatus.OK:
        return "basic"
    if reply.status_code != HTTPStatus.UNAUTHORIZED:
        hint = "is it an OCI registry?"
        if remote.scheme == "http" and reply.status_code == HTTPStatus.BAD_REQUEST:
            hint = "does it serve https? then leave out insecure"
        raise OciError(
            f"registry {remote.registry} answered {reply.status_code} {reply.reason} at /v2/; "
            + hint
        )
    if reply.headers.get("Www-Authenticate", "").lower().startswith("bearer"):
        return "token"
    if credentials is None:
        raise OciError(
            f"registry {remote.registry} needs credentials (401 Unauthorized); "
            "give a docker config with an entry for it"
        )
    checked = _get_v2(remote, credentials)
    if checked.status_code == HTTPStatus.UNAUTHORIZED:
        raise OciError(
            f"registry {remote.registry} rejected the credentials for user "
            f"{credentials.username} (401 Unauthorized)"
        )
    if checked.status_code != HTTPStatus.OK:
        raise OciError(
            f"registry {remote.registry} answered {checked.status_code} {checked.reason} "
            f"at /v2/ for user {credentials.username}"
        )
    return "basic"


def _client(remote: _Remote, credentials: Credentials | None) -> Any:
    """A fresh oras client for ``remote``, after :func:`_probe`."""
    backend = _probe(remote, credentials)
    client = oras.provider.Registry(
        hostname=remote.registry,
        insecure=remote.scheme == "http",
        tls_verify=remote.verify,
        auth_backend=backend,
    )
    # A non-empty auth config stops oras from merging ~/.docker/config.json behind our back.
    client.auth._auth_config = {"auths": {}, "credsStore": None, "credHelpers": {}}
    session: requests.Session = client.session
    if credentials is not None:
        client.auth.set_basic_auth(credentials.username, credentials.password)
        if backend == "basic":
            # Authenticate up front: oras would send each request (a blob upload too) without
            # credentials first, and a registry answering 401 mid-upload breaks the TLS stream.
            session.auth = (credentials.username, credentials.password)
    send = session.request

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", remote.timeouts)
        return send(method, url, *args, **kwargs)

    session.request = request  # type: ignore[method-assign,assignment]
    # oras' do_request retries any error five times (~131 s of sleeps): on this client only,
    # call the undecorated method, so a failure surfaces at once.
    undecorated = getattr(type(client).do_request, "__wrapped__", None)
    if undecorated is not None:
        client.do_request = functools.partial(undecorated, client)
    return client


def _request(client: Any, remote: _Remote, url: str, **kwargs: Any) -> requests.Response:
    try:
        return cast(requests.Response, client.do_request(url, "GET", **kwargs))
    except requests.RequestException as error:
        raise _transport_error(remote.registry, error) from error
    except Exception as error:  # oras raises bare Exception and ValueError
        raise OciError(f"registry {remote.registry}: {error}") from error


def _registry_errors(reply: requests.Response) -> str:
    try:
        errors = reply.json().get("errors") or []
        text = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
    except (ValueError, AttributeError):
        text = ""
    return text or f"{reply.status_code} {reply.reason}"


def _expect_ok(remote: _Remote, reply: requests.Response, what: str) -> None:
    if reply.status_code == HTTPStatus.OK:
        return
    if reply.status_code == HTTPStatus.NOT_FOUND:
        raise OciError(f"{what} not found ({_registry_errors(reply)})")
    if reply.status_code == HTTPStatus.UNAUTHORIZED:
        raise OciError(f"registry {remote.registry} refused {what}: 401 Unauthorized")
    if reply.status_code == HTTPStatus.FORBIDDEN:
        raise OciError(f"registry {remote.registry} denied access to {what} (403 Forbidden)")
    raise OciError(f"registry {remote.registry} failed on {what}: {_registry_errors(reply)}")


# ---------------------------------------------------------------- push


def push_directory(
    source: Path,
    target: str,
    *,
    credentials: Credentials | None = None,
    insecure: bool = False,
    ca_file: Path | None = None,
    annotations: Mapping[str, str] | None = None,
    timeout_s: float = 60,
    names: Sequence[str] | None = None,
) -> str:
    """Push the files of ``source`` (not recursive, hidden files skipped; only ``names`` when
    given) as one ``tar+gzip`` layer whose entries are ``data/<file>``, with the manifest
    ``annotations``. Returns the manifest digest. ``timeout_s`` bounds each request (connect
    and every read), not the whole transfer; ``insecure`` means plain http."""
    remote = _remote(target, insecure=insecure, ca_file=ca_file, timeout_s=timeout_s)
    if ":" in remote.reference:
        raise OciError(f"cannot push to a digest ({target}); give a tag")
    files = _files_to_push(source, names)
    client = _client(remote, credentials)
    with tempfile.TemporaryDirectory(prefix="kaiten-oci-") as staging:
        try:
            layer, config, annotation_file = _stage_image(files, Path(staging))
            reply = client.push(
                target=remote.target,
                files=[f"{layer}:{LAYER_MEDIA_TYPE}"],
                manifest_config=f"{config}:{CONFIG_MEDIA_TYPE}",
                annotation_file=str(annotation_file),
                manifest_annotations=dict(annotations or {}),
                disable_path_validation=True,
                do_chunked=layer.stat().st_size > _CHUNKED_ABOVE,
                quiet=True,
            )
        except requests.RequestException as error:
            raise _transport_error(remote.registry, error) from error
        except Exception as error:  # oras raises bare Exception and ValueError; disks fill up
            raise OciError(f"push to {remote.target} failed: {error}") from error
    digest = reply.headers.get("Docker-Content-Digest")
    if isinstance(digest, str) and digest:
        return digest
    return _manifest_digest(client, remote)


def push_adapter(
    adapter_dir: Path,
    target: str,
    *,
    preset: str | None = None,
    credentials: Credentials | None = None,
    insecure: bool = False,
    ca_file: Path | None = None,
    annotations: Mapping[str, str] | None = None,
    timeout_s: float = 60,
) -> str:
    """Push a LoRA adapter as Kaito's adapter image: exactly ``/data/adapter_config.json`` and
    ``/data/adapter_model.safetensors`` (other files of the folder stay behind), annotated
    ``sh.kaito.model.name=<preset>`` when ``preset`` is given. Returns the manifest digest."""
    missing = [name for name in ADAPTER_FILES if not (adapter_dir / name).is_file()]
    if missing:
        raise OciError(f"{adapter_dir} is not a LoRA adapter: {', '.join(missing)} is missing")
    merged = dict(annotations or {})
    if preset:
        merged[MODEL_NAME_ANNOTATION] = preset
    return push_directory(
        adapter_dir,
        target,
        credentials=credentials,
        insecure=insecure,
        ca_file=ca_file,
        annotations=merged,
        timeout_s=timeout_s,
        names=ADAPTER_FILES,
    )


def _files_to_push(source: Path, names: Sequence[str] | None) -> list[Path]:
    if not source.is_dir():
        raise OciError(f"{source} is not a directory")
    if names is not None:
        missing = [name for name in names if not (source / name).is_file()]
        if missing:
            raise OciError(f"{source} lacks {', '.join(missing)}")
        return [source / name for name in sorted(names)]
    files = sorted(p for p in source.iterdir() if not p.name.startswith(".") and p.is_file())
    if not files:
        raise OciError(f"{source} holds no files to push")
    return files


class _HashingWriter:
    """Forwards writes to ``target`` and hashes what goes through (the layer's diff id)."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target = target
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        return self.target.write(data)


def _stage_image(files: list[Path], stage: Path) -> tuple[Path, Path, Path]:
    """The layer (a reproducible tar.gz named ``data``, which becomes its title), the image
    config and the oras annotation file, written under ``stage``."""
    layer = stage / DATA_DIR
    with layer.open("wb") as raw, gzip.GzipFile("", "wb", 1, raw, mtime=0) as packed:
        tee = _HashingWriter(cast(IO[bytes], packed))
        with tarfile.open(
            fileobj=cast(IO[bytes], tee), mode="w|", format=tarfile.PAX_FORMAT
        ) as tar:
            for path in files:
                info = tarfile.TarInfo(f"{DATA_DIR}/{path.name}")
                info.size, info.mode, info.mtime = path.stat().st_size, 0o644, 0
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{tee.sha256.hexdigest()}"]},
    }
    config = stage / "config.json"
    config.write_text(json.dumps(image_config, sort_keys=True), encoding="utf-8")
    # Marks the layer as a folder, so that the oras CLI unpacks it into ./data on pull.
    annotation_file = stage / "annotations.json"
    annotation_file.write_text(json.dumps({str(layer): {_UNPACK: "true"}}), encoding="utf-8")
    return layer, config, annotation_file


def _manifest_digest(client: Any, remote: _Remote) -> str:
    accept = ", ".join(_MANIFEST_TYPES)
    reply = _request(
        client, remote, f"{remote.api}/manifests/{remote.reference}", headers={"Accept": accept}
    )
    _expect_ok(remote, reply, f"artifact {remote.target}")
    return f"sha256:{hashlib.sha256(reply.content).hexdigest()}"


# ---------------------------------------------------------------- pull


def pull_directory(
    target: str,
    dest: Path,
    *,
    credentials: Credentials | None = None,
    insecure: bool = False,
    ca_file: Path | None = None,
    timeout_s: float = 60,
) -> list[Path]:
    """Pull an artifact into ``dest`` and return the written paths. Tar layers give the files
    under their ``data/`` folder (Kaito's layout; for a titled folder layer, under that title);
    plain file layers (the oras CLI's way) are written by their title's base name. Layers are
    streamed (no temporary copies) and checked against their digests; on failure the files
    written so far are removed."""
    remote = _remote(target, insecure=insecure, ca_file=ca_file, timeout_s=timeout_s)
    client = _client(remote, credentials)
    manifest = _fetch_manifest(client, remote)
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not layers:
        raise OciError(f"artifact {remote.target} has no layers")
    dest.mkdir(parents=True, exist_ok=True)
    written: dict[Path, None] = {}
    try:
        for layer in layers:
            _pull_layer(client, remote, layer, dest, written)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    if not written:
        raise OciError(f"artifact {remote.target} holds no files under /{DATA_DIR}")
    return list(written)


def _fetch_manifest(client: Any, remote: _Remote) -> dict[str, Any]:
    document = _get_manifest(client, remote, remote.reference)
    if document.get("mediaType") in _INDEX_TYPES or "manifests" in document:
        entries = [e for e in document.get("manifests") or [] if isinstance(e, dict)]
        linux = [e for e in entries if (e.get("platform") or {}).get("os") == "linux"]
        amd64 = [e for e in linux if e["platform"].get("architecture") == "amd64"]
        chosen = (amd64 or linux or entries or [{}])[0].get("digest")
        if not isinstance(chosen, str):
            raise OciError(f"image index {remote.target} lists no manifest")
        document = _get_manifest(client, remote, chosen)
    return document


def _get_manifest(client: Any, remote: _Remote, reference: str) -> dict[str, Any]:
    accept = ", ".join((*_MANIFEST_TYPES, *_INDEX_TYPES))
    url = f"{remote.api}/manifests/{reference}"
    reply = _request(client, remote, url, headers={"Accept": accept})
    _expect_ok(remote, reply, f"artifact {remote.target}")
    try:
        document = reply.json()
    except ValueError as error:
        raise OciError(f"the manifest of {remote.target} is not JSON") from error
    if not isinstance(document, dict):
        raise OciError(f"the manifest of {remote.target} is not a JSON object")
    return document


class _HashingReader:
    """Reads ``source`` and hashes what was read (to check the layer's digest)."""

    def __init__(self, source: IO[bytes]) -> None:
        self.source = source
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.sha256.update(data)
        return data

    def drain(self) -> None:
        while self.read(_COPY_CHUNK):
            pass


def _pull_layer(
    client: Any, remote: _Remote, layer: object, dest: Path, written: dict[Path, None]
) -> None:
    if not isinstance(layer, dict) or not _SHA256.fullmatch(str(layer.get("digest"))):
        raise OciError(f"artifact {remote.target} has a layer without a sha256 digest")
    digest, media_type = str(layer["digest"]), str(layer.get("mediaType", ""))
    notes = layer.get("annotations")
    notes = notes if isinstance(notes, dict) else {}
    title = notes.get(_TITLE)
    folder = bool(title) and (notes.get(_UNPACK) == "true" or media_type == LAYER_MEDIA_TYPE)
    if not title and "tar" not in media_type:
        raise OciError(f"layer {digest} of {remote.target} is neither a file nor a tar layer")
    if "zstd" in media_type:
        raise OciError(f"layer {digest} of {remote.target} is zstd-compressed (unsupported)")
    reply = _request(client, remote, f"{remote.api}/blobs/{digest}", stream=True)
    try:
        with reply:
            _expect_ok(remote, reply, f"layer {digest} of {remote.target}")
            reader = _HashingReader(reply.raw)
            if title and not folder:
                _write_file(reader, dest / _file_name(str(title), remote), written)
            else:
                _extract(reader, str(title) if folder else DATA_DIR, dest, written, remote)
            reader.drain()
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise OciError(f"pulling layer {digest} of {remote.target} failed: {error}") from error
    actual = f"sha256:{reader.sha256.hexdigest()}"
    if actual != digest:
        raise OciError(f"layer {digest} of {remote.target} arrived corrupted (got {actual})")


def _file_name(title: str, remote: _Remote) -> str:
    name = PurePosixPath(title).name
    if name in {"", ".", ".."}:
        raise OciError(f"artifact {remote.target} has a layer titled {title!r}")
    return name


def _write_file(source: Any, path: Path, written: dict[Path, None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()  # never write through a link out of dest
    written[path] = None
    with path.open("wb") as out:
        shutil.copyfileobj(source, out, _COPY_CHUNK)


def _extract(
    reader: _HashingReader, prefix: str, dest: Path, written: dict[Path, None], remote: _Remote
) -> None:
    """Writes the regular files under ``prefix/`` of a (compressed) tar stream into ``dest``."""
    try:
        with tarfile.open(fileobj=cast(IO[bytes], reader), mode="r|*") as tar:
            for member in tar:
                relative = _member_path(member.name, prefix, remote)
                source = tar.extractfile(member) if member.isfile() else None
                if relative is not None and source is not None:
                    _write_file(source, dest.joinpath(*relative), written)
    except tarfile.TarError as error:
        raise OciError(f"a layer of {remote.target} is not a readable tar: {error}") from error


def _member_path(name: str, prefix: str, remote: _Remote) -> tuple[str, ...] | None:
    parts = [p for p in PurePosixPath(name.lstrip("/")).parts if p != "."]
    if ".." in parts:
        raise OciError(f"a layer of {remote.target} has an unsafe entry {name!r}")
    if len(parts) < 2 or parts[0] != prefix or parts[-1].startswith(".wh."):  # noqa: PLR2004
        return None
    return tuple(parts[1:])


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """``push SOURCE_DIR TARGET`` / ``pull TARGET DEST_DIR``: exit 0, or 1 with the reason on
    stderr."""
    args = _parser().parse_args(argv)
    try:
        credentials = None
        registry = parse_reference(args.target)[0]
        for config in args.docker_config:  # the first file with an entry for the registry
            credentials = credentials_from_docker_config(config, registry)
            if credentials is not None:
                break
        connection: dict[str, Any] = {
            "credentials": credentials,
            "insecure": args.insecure,
            "ca_file": args.ca_file,
            "timeout_s": args.timeout,
        }
        if args.command == "push":
            print(_cli_push(args, connection))
        else:
            for path in pull_directory(args.target, args.dest_dir, **connection):
                print(path)
    except (OciError, ValueError, OSError) as error:
        print(f"kaiten oci {args.command}: {error}", file=sys.stderr)
        return 1
    return 0


def _cli_push(args: argparse.Namespace, connection: dict[str, Any]) -> str:
    annotations: dict[str, str] = {}
    for item in args.annotation:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise ValueError(f"--annotation {item!r} is not KEY=VALUE")
        annotations[key] = value
    if args.adapter:
        return push_adapter(args.source_dir, args.target, annotations=annotations, **connection)
    return push_directory(args.source_dir, args.target, annotations=annotations, **connection)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kaiten oci", description="Push a folder to, or pull one from, an OCI registry."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    push = commands.add_parser("push", help="push SOURCE_DIR's files as /data/<file>")
    push.add_argument("source_dir", type=Path, metavar="SOURCE_DIR")
    push.add_argument("target", metavar="TARGET", help="HOST[:PORT]/REPOSITORY[:TAG]")
    push.add_argument(
        "--annotation",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="manifest annotation, e.g. sh.kaito.model.name=phi-3-mini-4k-instruct",
    )
    push.add_argument(
        "--adapter",
        action="store_true",
        help="push only adapter_config.json and adapter_model.safetensors",
    )
    pull = commands.add_parser("pull", help="pull TARGET's /data files into DEST_DIR")
    pull.add_argument("target", metavar="TARGET", help="HOST[:PORT]/REPOSITORY[:TAG|@DIGEST]")
    pull.add_argument("dest_dir", type=Path, metavar="DEST_DIR")
    for command in (push, pull):
        command.add_argument(
            "--docker-config",
            type=Path,
            action="append",
            default=[],
            metavar="FILE",
            help="Docker config JSON holding the registry's credentials (repeatable: the first "
            "with an entry for the registry is used)",
        )
        command.add_argument("--insecure", action="store_true", help="plain http")
        command.add_argument(
            "--ca-file",
            type=Path,
            metavar="FILE",
            help="CA bundle that signed the registry's certificate",
        )
        command.add_argument(
            "--timeout",
            type=float,
            default=60.0,
            metavar="SECONDS",
            help="limit for each request (default 60)",
        )
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
