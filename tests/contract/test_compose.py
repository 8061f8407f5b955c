"""docker-compose.yml, checked statically (no Docker engine here): against the Compose
Specification's JSON schema (fetched by ``scripts/ensure-compose-schema``), and against this
repository: the files it builds from and mounts exist, images are pinned, start-up order waits for
health or completion, each service's command is a real ``kaiten`` subcommand, and each service's
environment is complete and parses with that service's own settings classes."""

from __future__ import annotations

import copy
import importlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import jsonschema  # type: ignore[import-untyped]
import pytest
import typer.core
import typer.main
import yaml
from pydantic import AliasChoices, ValidationError
from pydantic_settings import BaseSettings

from kaiten.cli import app as cli_app
from presets.catalog import default_catalog
from services.provisioner.app import ProvisionerSettings
from services.watcher.webhook import WebhookSettings
from shared.settings import DEFAULT_HEALTH_PORTS, SERVICE_NAMES, Settings
from shared.workspace.validation import ValidationContext, render, validate_workspace
from tests.contract.test_images import copied_sources

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCHEMA_FILE = ROOT / ".venv" / "share" / "compose-spec.json"
KAITEN_IMAGE = "kaiten:dev"
KAITEN_DOCKERFILE = "deploy/images/kaiten.Dockerfile"
ONE_SHOT_CONDITION = "service_completed_successfully"
HEALTHY_CONDITION = "service_healthy"
SERVICE_RESTART = "unless-stopped"

Service = dict[str, Any]


def load_compose() -> dict[str, Any]:
    """The compose file as Compose reads it: YAML with merge keys (<<) resolved."""
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Service]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


def environment(service: Service) -> dict[str, Any]:
    """A service's environment, from either of Compose's forms (mapping, or KEY=VALUE list)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(str(item).partition("=")[::2] for item in env)
    assert isinstance(env, dict)
    return env


def string_environment(service: Service) -> dict[str, str]:
    env = environment(service)
    assert all(isinstance(v, str) for v in env.values()), (
        "quote every environment value: YAML turns false, on, 0644 into other things"
    )
    return {k: str(v) for k, v in env.items()}


def is_one_shot(service: Service) -> bool:
    """A one-shot (migrations, set-up) runs once and exits; everything else is restarted."""
    return bool(service.get("restart", "no") == "no")


def dependencies(service: Service) -> dict[str, str]:
    """Target service -> condition (the list form means service_started)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def mounts(service: Service) -> Iterator[tuple[str, str, str]]:
    """(type, source, target) of each volume entry, short or long syntax."""
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            yield entry["type"], str(entry.get("source", "")), entry["target"]
            continue
        parts = str(entry).split(":")
        if len(parts) == 1:
            yield "volume", "", parts[0]
            continue
        source, target = parts[0], parts[1]
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        yield kind, source, target


def kaiten_services(services: dict[str, Service]) -> dict[str, Service]:
    return {n: s for n, s in services.items() if s.get("image") == KAITEN_IMAGE}


def healthcheck_command(service: Service) -> str:
    test = (service.get("healthcheck") or {}).get("test", [])
    return " ".join(test) if isinstance(test, list) else str(test)


# -- the Compose Specification ----------------------------------------------------------------


def compose_schema() -> dict[str, Any]:
    if not SCHEMA_FILE.is_file():
        pytest.fail(
            f"{SCHEMA_FILE.relative_to(ROOT)} is missing: run scripts/ensure-compose-schema "
            "(it fetches the Compose Specification's JSON schema from the npm registry)"
        )
    schema = json.loads(SCHEMA_FILE.read_text())
    assert isinstance(schema, dict)
    return schema


def schema_errors(document: Mapping[str, Any]) -> list[str]:
    """Every complaint of the Compose Specification's schema about ``document``."""
    schema = compose_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


def test_the_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    assert compose_schema().get("title") == "Compose Specification"
    assert schema_errors(compose) == []


@pytest.mark.parametrize(
    ("where", "key", "value"),
    [
        ("services.watcher", "restart_policy", "always"),  # not a service key
        ("services.planner.depends_on.nats", "condition", "service_ready"),
        ("services.nats.healthcheck", "test_cmd", ["CMD", "true"]),
        ("", "servicez", {}),
    ],
)
def test_the_schema_refuses_a_broken_compose_file(where: str, key: str, value: Any) -> None:
    """The schema check can fail: one wrong key or value is enough."""
    document = copy.deepcopy(load_compose())
    node: Any = document
    for part in filter(None, where.split(".")):
        node = node[part]
    node[key] = value
    assert schema_errors(document)


# -- files, images, start-up order ------------------------------------------------------------


def test_every_build_context_and_dockerfile_exists(services: dict[str, Service]) -> None:
    builds = {n: s["build"] for n, s in services.items() if "build" in s}
    assert builds
    for name, build in builds.items():
        context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
        assert context.is_dir(), f"{name}: build context {context} is missing"
        dockerfile = context / (
            "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        )
        assert dockerfile.is_file(), f"{name}: {dockerfile} is missing"
        for source in copied_sources(dockerfile):
            assert (context / source).exists(), f"{dockerfile.name} copies missing {source}"


def test_every_bind_mounted_host_path_exists(services: dict[str, Service]) -> None:
    for name, service in services.items():
        for kind, source, _ in mounts(service):
            if kind == "bind":
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_every_named_volume_is_declared(
    compose: dict[str, Any], services: dict[str, Service]
) -> None:
    declared = set(compose.get("volumes") or {})
    used = {src for s in services.values() for kind, src, _ in mounts(s) if kind == "volume"}
    assert used - {""} <= declared


def test_every_image_is_pinned_to_a_tag(services: dict[str, Service]) -> None:
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name} has no image: name it, so every service says what it runs"
        repository, _, tag = str(image).rpartition(":")
        assert repository, f"{name}: {image} has no tag"
        assert "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image} is not pinned"


def test_the_services_image_is_built_from_the_kaiten_dockerfile(
    services: dict[str, Service],
) -> None:
    built = {n for n, s in services.items() if "build" in s}
    assert set(SERVICE_NAMES) | {"migrate"} <= set(kaiten_services(services))
    assert built == set(kaiten_services(services))
    for name in built:
        build = services[name]["build"]
        assert build == {"context": ".", "dockerfile": KAITEN_DOCKERFILE}, name
        assert "entrypoint" not in services[name], f"{name}: the image's entry point is kaiten"


def test_dependencies_wait_for_health_or_completion(services: dict[str, Service]) -> None:
    for name, service in services.items():
        for target, condition in dependencies(service).items():
            assert target in services, f"{name} depends on undefined {target}"
            if is_one_shot(services[target]):
                assert condition == ONE_SHOT_CONDITION, f"{name} -> {target}: {condition}"
            else:
                assert condition == HEALTHY_CONDITION, f"{name} -> {target}: {condition}"
                assert healthcheck_command(services[target]), f"{target} has no health check"


def test_long_running_services_restart_and_report_health(services: dict[str, Service]) -> None:
    for name, service in services.items():
        if is_one_shot(service):
            assert "healthcheck" not in service, f"one-shot {name} needs no health check"
        else:
            assert service["restart"] == SERVICE_RESTART, name
            assert healthcheck_command(service), f"{name} has no health check"
            assert not service["healthcheck"].get("disable"), name


def test_the_five_services_start_after_the_stack_is_ready(services: dict[str, Service]) -> None:
    one_shots = {n for n, s in services.items() if is_one_shot(s)}
    assert one_shots == {"kubeconfig", "crds", "migrate"}
    for name in SERVICE_NAMES:
        assert set(dependencies(services[name])) >= {"nats", "postgres", *one_shots}, name


def test_nothing_is_interpolated(compose: dict[str, Any]) -> None:
    """Compose substitutes ${VAR} in every value: the file must not depend on the caller's
    environment (a literal $ would need $$)."""

    def strings(node: Any) -> Iterator[str]:
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for key, value in node.items():
                yield str(key)
                yield from strings(value)
        elif isinstance(node, list):
            for item in node:
                yield from strings(item)

    assert [s for s in strings(compose) if "$" in s] == []


# -- commands ---------------------------------------------------------------------------------


def kaiten_commands() -> set[str]:
    """The names of the `kaiten` command's subcommands, as its parser knows them."""
    group = typer.main.get_command(cli_app)
    assert isinstance(group, typer.core.TyperGroup)
    return set(group.commands)


def test_each_kaiten_service_runs_a_real_subcommand(services: dict[str, Service]) -> None:
    commands = kaiten_commands()
    for name, service in kaiten_services(services).items():
        argv = service["command"]
        assert isinstance(argv, list), f"{name}: use the exec form"
        assert argv[0] in commands, f"{name}: kaiten has no subcommand {argv[0]!r}"
        if argv[0] == "run":
            assert argv[1:] == [name], f"{name} runs {argv[1:]}"
            assert name in SERVICE_NAMES
    assert services["migrate"]["command"] == ["migrate"]
    for name in SERVICE_NAMES:
        assert services[name]["command"] == ["run", name]


# -- environments -----------------------------------------------------------------------------


def settings_classes(service: str) -> list[type[BaseSettings]]:
    """Settings plus every settings class the service's composition root uses (defined there or
    imported into it, like the watcher's WebhookSettings and the provisioner's AzureSettings)."""
    module = importlib.import_module(f"services.{service}.app")
    own = {
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, BaseSettings)
        and value not in {BaseSettings, Settings}
    }
    return [Settings, *sorted(own, key=lambda c: c.__name__)]


def variables(cls: type[BaseSettings]) -> dict[str, str]:
    """Environment variable (upper case) -> field, as pydantic-settings reads them: the field's
    validation aliases, else the class's prefix plus the field's name."""
    prefix = cls.model_config.get("env_prefix") or ""
    names: dict[str, str] = {}
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            choices = [c for c in alias.choices if isinstance(c, str)]
        elif isinstance(alias, str):
            choices = [alias]
        else:
            choices = [f"{prefix}{field_name}"]
        names.update({c.upper(): field_name for c in choices})
    return names


def use_environment(monkeypatch: pytest.MonkeyPatch, env: Mapping[str, str]) -> None:
    """Exactly ``env`` for every setting: the caller's KAITEN_*, DATABASE_URL etc. removed."""
    read = {v for name in SERVICE_NAMES for c in settings_classes(name) for v in variables(c)}
    for key in list(os.environ):
        if key.upper() in read or key.upper().startswith("KAITEN_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def test_the_watcher_and_provisioner_settings_are_found() -> None:
    assert WebhookSettings in settings_classes("watcher")
    assert ProvisionerSettings in settings_classes("provisioner")
    assert settings_classes("deployer") == [Settings]


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_every_required_setting_has_a_value(name: str, services: dict[str, Service]) -> None:
    env = {k.upper() for k in string_environment(services[name])}
    for cls in settings_classes(name):
        names = variables(cls)
        for field_name, field in cls.model_fields.items():
            if field.is_required():
                options = sorted(v for v, f in names.items() if f == field_name)
                assert env & set(options), f"{name}: {cls.__name__}.{field_name}: set {options}"


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_every_kaiten_variable_is_a_setting_of_the_service(
    name: str, services: dict[str, Service]
) -> None:
    known = {v for cls in settings_classes(name) for v in variables(cls)}
    unknown = sorted(
        key
        for key in string_environment(services[name])
        if key.upper().startswith("KAITEN_") and key.upper() not in known
    )
    assert unknown == [], f"{name} does not read {unknown}"


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_the_environment_parses_and_points_into_the_stack(
    name: str, services: dict[str, Service], monkeypatch: pytest.MonkeyPatch
) -> None:
    service = services[name]
    use_environment(monkeypatch, string_environment(service))
    for cls in settings_classes(name):
        try:
            cls()
        except ValidationError as e:
            pytest.fail(f"{name}: {cls.__name__}: {e}")
    settings = Settings()
    assert urlparse(settings.nats_url).hostname == "nats"
    assert urlparse(settings.database_url).hostname == "postgres"
    assert settings.kubeconfig is not None
    kube_dir = PurePosixPath(settings.kubeconfig).parent
    assert any(PurePosixPath(target) == kube_dir for _, _, target in mounts(service)), (
        f"{name}: KUBECONFIG {settings.kubeconfig} is not in a mounted volume"
    )
    # Health: reachable from outside the container, on the port the health check calls.
    assert settings.health_host == "0.0.0.0"  # noqa: S104 -- a container's health port
    assert settings.health_port_for(name) == DEFAULT_HEALTH_PORTS[name]
    check = healthcheck_command(service)
    assert "/readyz" in check
    assert "KAITEN_HEALTH_PORT" in check or str(DEFAULT_HEALTH_PORTS[name]) in check


def seconds(duration: str) -> float:
    """A Compose duration such as ``1m30s`` or ``500ms``, in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", duration)
    assert parts, duration
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_a_stopping_service_may_finish_its_events(
    name: str, services: dict[str, Service], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compose sends SIGKILL after stop_grace_period (10 s unless set); the service drains for
    up to KAITEN_GRACEFUL_TIMEOUT_S first."""
    use_environment(monkeypatch, string_environment(services[name]))
    grace = seconds(str(services[name].get("stop_grace_period", "10s")))
    assert grace > Settings().graceful_timeout_s


def test_migrate_uses_the_services_database(
    services: dict[str, Service], monkeypatch: pytest.MonkeyPatch
) -> None:
    urls = {string_environment(services[n])["DATABASE_URL"] for n in SERVICE_NAMES}
    assert urls == {string_environment(services["migrate"])["DATABASE_URL"]}
    url = urlparse(urls.pop())
    postgres = string_environment(services["postgres"])
    assert url.username == postgres["POSTGRES_USER"]
    assert url.password == postgres["POSTGRES_PASSWORD"]
    assert url.path == "/" + postgres["POSTGRES_DB"]
    use_environment(monkeypatch, string_environment(services["migrate"]))
    Settings()


def test_the_webhook_is_reachable_from_the_api_server(
    services: dict[str, Service], monkeypatch: pytest.MonkeyPatch
) -> None:
    """k3s's API server calls the ValidatingWebhookConfiguration's URL: the watcher's service
    name on the compose network; the certificate the watcher generates names its bind host, so
    that must be the same name for the API server's TLS check."""
    use_environment(monkeypatch, string_environment(services["watcher"]))
    webhook = WebhookSettings()
    assert webhook.enabled
    assert webhook.self_register
    assert webhook.url is not None
    url = urlparse(webhook.url)
    assert (url.scheme, url.hostname, url.port, url.path) == (
        "https",
        "watcher",
        webhook.port,
        "/validate",
    )
    assert webhook.host == url.hostname


def test_the_provisioner_does_not_simulate_nodes(
    services: dict[str, Service], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`simulated` registers fake GPU nodes, for the development cluster only; k3s has none and
    no node provisioner, so compose runs in bring-your-own-nodes mode."""
    use_environment(monkeypatch, string_environment(services["provisioner"]))
    assert ProvisionerSettings().backend == "byo"
    for name in SERVICE_NAMES:  # validation, planning and provisioning agree on the mode
        use_environment(monkeypatch, string_environment(services[name]))
        assert Settings().node_auto_provisioning is False, name


# -- k3s, its kubeconfig, the header -----------------------------------------------------------


def test_the_kubeconfig_reaches_k3s_from_the_other_containers(
    services: dict[str, Service], monkeypatch: pytest.MonkeyPatch
) -> None:
    k3s, rewrite = services["k3s"], services["kubeconfig"]
    assert "--tls-san=k3s" in k3s["command"]
    assert k3s["privileged"] is True
    written = PurePosixPath(string_environment(k3s)["K3S_KUBECONFIG_OUTPUT"])
    k3s_volumes = {t: s for kind, s, t in mounts(k3s) if kind == "volume"}
    volume = k3s_volumes[str(written.parent)]
    rewrite_volumes = {s: t for kind, s, t in mounts(rewrite) if kind == "volume"}
    assert rewrite_volumes[volume] == str(written.parent)
    script = " ".join(rewrite["command"])
    assert str(written) in script
    assert "https://k3s:6443" in script
    use_environment(monkeypatch, string_environment(services["planner"]))
    kubeconfig = Settings().kubeconfig
    assert kubeconfig is not None
    assert script.rstrip().endswith(f"{written.parent}/{PurePosixPath(kubeconfig).name}")
    assert any(s == volume for _, s, _ in mounts(services["planner"]))
    crds = services["crds"]
    assert any(s == "./deploy/crds" for _, s, _ in mounts(crds))
    assert sorted((ROOT / "deploy" / "crds").glob("*.yaml"))


def header() -> str:
    lines = []
    for line in COMPOSE_FILE.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[2:] if line.startswith("# ") else line[1:])
    return "\n".join(lines)


def test_the_header_says_how_to_start_and_use_the_stack(services: dict[str, Service]) -> None:
    text = header()
    assert "docker compose up --build" in text
    written = string_environment(services["k3s"])["K3S_KUBECONFIG_OUTPUT"]
    assert f"docker compose cp k3s:{written} " in text
    assert "export KUBECONFIG=" in text
    assert "kubectl apply -f" in text


def test_the_headers_workspace_is_accepted_by_the_composed_webhook(
    services: dict[str, Service], monkeypatch: pytest.MonkeyPatch
) -> None:
    match = re.search(r"<<'EOF'\n(.*?)\n\s*EOF\n", header(), re.DOTALL)
    assert match, "no Workspace in the header"
    workspace = yaml.safe_load(re.sub(r"(?m)^  ", "", match.group(1)))
    assert workspace["kind"] == "Workspace"
    use_environment(monkeypatch, string_environment(services["watcher"]))
    settings = Settings()
    context = ValidationContext(
        catalog=default_catalog(),
        cloud=settings.cloud_provider,
        node_auto_provisioning=settings.node_auto_provisioning,
        local_cpu=settings.local_cpu,
    )
    assert render(validate_workspace(workspace, None, context)) == ""
