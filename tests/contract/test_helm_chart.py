"""The Helm chart (deploy/helm/kaiten), rendered with ``helm template`` once per values file in
its ``ci/`` folder and checked against Kubernetes and against the code:

- every rendered object (CRDs included) is valid for Kubernetes 1.31, strictly;
- each service runs ``kaiten run <service>`` hardened (non-root 65532, read-only root, no
  privilege escalation, no capabilities, RuntimeDefault seccomp), with probes on the health port
  the code serves, and with environment variables the code's settings classes actually read;
- RBAC is least privilege: each service's ServiceAccount is bound to its own ClusterRole only, and
  the rules equal ``EXPECTED_RBAC`` below, the contract derived from the code. When a service
  starts using a new resource, update the table here and the rule in templates/rbac.yaml;
- the admission webhook is wired as services/watcher/webhook.py expects in both registration
  modes, with a certificate valid for the Service's name;
- the CRDs are byte-identical to deploy/crds, and ``helm lint`` passes.

Helm is not in Debian or PyPI: ``scripts/ensure-helm`` installs it next to this interpreter.
"""

from __future__ import annotations

import base64
import copy
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from cryptography import x509
from kubernetes_validate.utils import (  # type: ignore[import-untyped]
    SchemaNotFoundError,
    ValidationError,
)
from pydantic_settings import BaseSettings

from shared.settings import DEFAULT_HEALTH_PORTS, SERVICE_NAMES, Settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "kaiten"
HELM = Path(sys.executable).parent / "helm"
KUBE_VERSION = "1.31"
RELEASE = "kaiten"
NAMESPACE = "kaiten-system"
VALUE_SETS = sorted(p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*.yaml"))
WEBHOOK_NAME = "validation.workspace.kaito.sh"  # services/watcher/webhook.py WEBHOOK_NAME
HELM_TIMEOUT_S = 120
TMP = "/tmp"  # noqa: S108 -- the pods' writable emptyDir, not a file of this process

Obj = dict[str, Any]
Rule = tuple[str, str, str, str]  # API group, resource, verb, resource name ("" = any)


def rules(group: str, resources: str, verbs: str, names: str = "") -> frozenset[Rule]:
    """Every (group, resource, verb, name) a rule grants, flattened."""
    return frozenset(
        (group, resource, verb, name)
        for resource in resources.split()
        for verb in verbs.split()
        for name in names.split() or [""]
    )


# The least-privilege contract: what each service's code calls, and nothing else.
EXPECTED_RBAC: dict[str, frozenset[Rule]] = {
    "watcher": (
        # services/watcher/kubeapi.py WorkspaceApi: list_workspaces, watch, get, json_patch.
        rules("kaito.sh", "workspaces", "get list watch patch")
        # WorkspaceApi.patch_status (status subresource).
        | rules("kaito.sh", "workspaces/status", "patch")
        # blockOwnerDeletion on ControllerRevisions (services/watcher/core.py).
        | rules("kaito.sh", "workspaces/finalizers", "update")
        # WorkspaceApi.revisions, create_revision, delete_revision.
        | rules("apps", "controllerrevisions", "list create delete")
        # WorkspaceApi.create_event.
        | rules("", "events", "create")
    ),
    "planner": (
        # services/planner/kubeapi.py ConfigMapReader.read.
        rules("", "configmaps", "get")
    ),
    "provisioner": (
        # services/provisioner/kubeapi.py list_nodes, follow_nodes, label_node.
        rules("", "nodes", "list watch patch")
        # list_claims, follow_claims, create_claim, delete_claim.
        | rules("karpenter.sh", "nodeclaims", "list watch create delete")
    ),
    "deployer": (
        # shared/cluster.py ClusterApi via shared/workloads.py: apply, on_deleting, watches.
        rules("", "configmaps services", "get list watch create update delete")
        | rules("apps", "deployments statefulsets", "get list watch create update delete")
        # WorkloadService.pods_and_nodes and the Pod watch; ClusterApi.nodes.
        | rules("", "pods", "list watch")
        | rules("", "nodes", "get")
        # blockOwnerDeletion on what it creates (shared/manifests.py owner_reference).
        | rules("kaito.sh", "workspaces/finalizers", "update")
    ),
    "tuner": (
        # shared/cluster.py ClusterApi via shared/workloads.py: the training ConfigMap.
        rules("", "configmaps", "get list watch create update delete")
        # services/tuner/service.py Tuner._ensure_job: read, create, delete; never replaced.
        | rules("batch", "jobs", "get list watch create delete")
        | rules("", "pods", "list watch")
        # ClusterApi.pod_get: the trainer's /progress through the API server.
        | rules("", "pods/proxy", "get")
        | rules("", "nodes", "get")
        | rules("kaito.sh", "workspaces/finalizers", "update")
    ),
}
# webhook.registration=self-register: services/watcher/webhook.py register.
SELF_REGISTER_RBAC = rules(
    "admissionregistration.k8s.io", "validatingwebhookconfigurations", "create"
) | rules(
    "admissionregistration.k8s.io", "validatingwebhookconfigurations", "get update", WEBHOOK_NAME
)
# provisioner.backend=azure: services/provisioner/service.py ClaimController (finalizer and
# status of NodeClaims, delete_node of a deleted agent pool).
AZURE_RBAC = (
    rules("karpenter.sh", "nodeclaims", "patch")
    | rules("karpenter.sh", "nodeclaims/status", "patch")
    | rules("", "nodes", "delete")
)
# settings.nodeAutoProvisioning=false (byo): no NodeClaims at all.
NODECLAIM_RBAC = rules("karpenter.sh", "nodeclaims", "list watch create delete")


def expected_rbac(value_set: str) -> dict[str, frozenset[Rule]]:
    expected = dict(EXPECTED_RBAC)
    if value_set == "self-register":
        expected["watcher"] |= SELF_REGISTER_RBAC
    if value_set == "azure":
        expected["provisioner"] |= AZURE_RBAC
    if value_set == "byo":
        expected["provisioner"] -= NODECLAIM_RBAC
    return expected


# --- rendering ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Helm's environment: HOME and XDG folders in a temporary folder, never the user's."""
    home = tmp_path_factory.mktemp("helm-home")
    return {
        **os.environ,
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / "cache"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_DATA_HOME": str(home / "data"),
    }


def helm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    if not HELM.is_file():
        pytest.fail(f"Helm is not installed at {HELM}: run scripts/ensure-helm (make pytest does)")
    return subprocess.run(
        [str(HELM), *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=HELM_TIMEOUT_S,
    )


def template(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return helm(
        env,
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        f"{KUBE_VERSION}.0",
        "--include-crds",
        *args,
    )


@pytest.fixture(scope="module", params=VALUE_SETS)
def value_set(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def rendered(helm_env: dict[str, str], value_set: str) -> list[Obj]:
    """Every object the chart renders with ci/<value_set>-values.yaml, once per module."""
    result = template(helm_env, "--values", str(CHART / "ci" / f"{value_set}-values.yaml"))
    assert result.returncode == 0, f"helm template ({value_set}) failed:\n{result.stderr}"
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: several times faster
    return [doc for doc in yaml.load_all(result.stdout, Loader=loader) if doc]


def find(objects: list[Obj], kind: str, name: str) -> Obj:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def container(objects: list[Obj], service: str) -> Obj:
    pod = find(objects, "Deployment", f"{RELEASE}-{service}")["spec"]["template"]["spec"]
    (only,) = pod["containers"]
    assert isinstance(only, dict)
    return only


def env_of(c: Obj) -> dict[str, Obj]:
    names = [e["name"] for e in c.get("env", [])]
    assert len(names) == len(set(names)), f"{c['name']}: an environment variable is set twice"
    return {e["name"]: e for e in c.get("env", [])}


def literal_env(c: Obj) -> dict[str, str]:
    return {name: str(e["value"]) for name, e in env_of(c).items() if "value" in e}


def values(value_set: str) -> Obj:
    chart_defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    overrides = yaml.safe_load((CHART / "ci" / f"{value_set}-values.yaml").read_text()) or {}
    return deep_merge(chart_defaults, overrides)


def deep_merge(base: Obj, over: Obj) -> Obj:
    out = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = deep_merge(out[key], value) if both else value
    return out


# --- the chart's files -------------------------------------------------------------------------


def test_the_chart_crds_are_the_committed_crds() -> None:
    """The chart installs exactly deploy/crds (the Workspace CRD is `kaiten crd`'s output,
    checked by tests/unit/workspace/test_crd.py): copy them over when they change."""
    committed = {p.name: p.read_bytes() for p in (ROOT / "deploy" / "crds").glob("*.yaml")}
    in_chart = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert sorted(committed) == ["kaito.sh_workspaces.yaml", "karpenter.sh_nodeclaims.yaml"]
    assert sorted(in_chart) == sorted(committed)
    for name, text in committed.items():
        assert in_chart[name] == text, f"cp deploy/crds/{name} deploy/helm/kaiten/crds/{name}"


def test_the_app_version_is_the_projects_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == project["version"]


@pytest.mark.parametrize("values_file", VALUE_SETS)
def test_helm_lint_passes(helm_env: dict[str, str], values_file: str) -> None:
    path = CHART / "ci" / f"{values_file}-values.yaml"
    result = helm(helm_env, "lint", str(CHART), "--strict", "--values", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_chart_refuses_to_guess_a_database(helm_env: dict[str, str]) -> None:
    result = template(helm_env)
    assert result.returncode != 0
    assert "set postgres.url, postgres.existingSecret or postgres.enabled=true" in result.stderr


def test_the_simulated_backend_is_refused(helm_env: dict[str, str]) -> None:
    result = template(
        helm_env, "--set", "postgres.url=postgresql://h/k", "--set", "provisioner.backend=simulated"
    )
    assert result.returncode != 0
    assert "development cluster only" in result.stderr


# --- Kubernetes validity -----------------------------------------------------------------------


def test_every_object_is_valid_kubernetes(rendered: list[Obj]) -> None:
    problems = []
    for obj in rendered:
        what = f"{obj.get('kind')} {obj.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except ValidationError as e:
            problems.append(f"{what}: {'.'.join(map(str, e.path))}: {e.message}")
        except SchemaNotFoundError:
            problems.append(f"{what}: no schema (a custom kind the chart should not render)")
    assert not problems, "\n".join(problems)
    names = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in rendered]
    assert len(names) == len(set(names)), "two objects with the same kind and name"


def test_the_validation_can_fail(rendered: list[Obj]) -> None:
    """A misspelt field is refused (strict), so the check above means something."""
    deployment = copy.deepcopy(find(rendered, "Deployment", f"{RELEASE}-watcher"))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRoot"] = 1
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


def test_the_crds_are_rendered(rendered: list[Obj]) -> None:
    crds = {o["metadata"]["name"] for o in of_kind(rendered, "CustomResourceDefinition")}
    assert crds == {"workspaces.kaito.sh", "nodeclaims.karpenter.sh"}


def test_namespaced_objects_are_in_the_release_namespace(rendered: list[Obj]) -> None:
    cluster_scoped = {
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "ValidatingWebhookConfiguration",
    }
    for obj in rendered:
        namespace = obj["metadata"].get("namespace")
        if obj["kind"] in cluster_scoped:
            assert namespace is None, obj["metadata"]["name"]
        else:
            assert namespace == NAMESPACE, f"{obj['kind']} {obj['metadata']['name']}"


# --- the services' pods ------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_each_service_runs_hardened(rendered: list[Obj], service: str) -> None:
    deployment = find(rendered, "Deployment", f"{RELEASE}-{service}")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 2  # every service is built for several replicas
    assert pod["serviceAccountName"] == f"{RELEASE}-{service}"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = container(rendered, service)
    assert c["image"] == f"ghcr.io/kaiten-dev/kaiten:{chart_app_version()}"
    assert [*c["command"], *c["args"]] == ["kaiten", "run", service]
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    for bound in ("requests", "limits"):
        assert set(c["resources"][bound]) >= {"cpu", "memory"}, f"{service}: resources.{bound}"
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert "emptyDir" in volumes[mounts[TMP]]


def chart_app_version() -> str:
    return str(yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"])


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_probes_hit_the_port_the_service_serves(
    rendered: list[Obj], service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = container(rendered, service)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert ports["health"] == DEFAULT_HEALTH_PORTS[service]
    settings = settings_from_env(monkeypatch, c)
    assert settings.health_host == "0.0.0.0"  # noqa: S104 -- the kubelet probes the pod's IP
    assert settings.health_port_for(service) == ports["health"]


def settings_from_env(monkeypatch: pytest.MonkeyPatch, c: Obj) -> Settings:
    """shared.settings.Settings as the pod's environment makes it (URLs from Secrets are
    stand-ins)."""
    apply_env(monkeypatch, c)
    return Settings()


def apply_env(monkeypatch: pytest.MonkeyPatch, c: Obj) -> None:
    for name in list(os.environ):
        if name.startswith(("KAITEN_", "ARM_", "AZURE_")) or name in ("NATS_URL", "DATABASE_URL"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NATS_URL", "nats://stand-in:4222")
    monkeypatch.setenv("DATABASE_URL", "postgresql://stand-in/kaiten")
    for name, value in literal_env(c).items():
        if "$(" not in value:
            monkeypatch.setenv(name, value)


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_urls_come_from_secrets(rendered: list[Obj], service: str, value_set: str) -> None:
    env = env_of(container(rendered, service))
    secrets = {s["metadata"]["name"]: s for s in of_kind(rendered, "Secret")}
    assert "secretKeyRef" in env["NATS_URL"]["valueFrom"]
    v = values(value_set)
    if v["postgres"]["enabled"]:
        # Composed in the pod from the bundled server's password Secret ($(VAR) expansion).
        url = env["DATABASE_URL"]["value"]
        assert url == f"postgresql://kaiten:$(POSTGRES_PASSWORD)@{RELEASE}-postgres:5432/kaiten"
        ref = env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert list(env).index("POSTGRES_PASSWORD") < list(env).index("DATABASE_URL")
        assert ref == {"name": f"{RELEASE}-postgres", "key": "password"}
        assert "password" in secrets[ref["name"]]["data"]
    else:
        assert "secretKeyRef" in env["DATABASE_URL"]["valueFrom"]
    for name in ("NATS_URL", "DATABASE_URL"):
        ref = (env[name].get("valueFrom") or {}).get("secretKeyRef")
        if ref is None:
            continue
        existing = v["nats" if name == "NATS_URL" else "postgres"]["existingSecret"]
        if existing:
            assert ref["name"] == existing
            assert ref["name"] not in secrets  # the user's Secret, not the chart's
        else:
            secret = secrets[ref["name"]]
            assert ref["key"] in secret.get("stringData", {}) | secret.get("data", {})


def test_the_bundled_servers_are_where_the_urls_point(rendered: list[Obj], value_set: str) -> None:
    v = values(value_set)
    if not v["nats"]["enabled"]:
        assert not of_kind(rendered, "StatefulSet")
        return
    connection = find(rendered, "Secret", f"{RELEASE}-connection")
    assert connection["stringData"]["nats-url"] == f"nats://{RELEASE}-nats:4222"
    for name, port in ((f"{RELEASE}-nats", 4222), (f"{RELEASE}-postgres", 5432)):
        service = find(rendered, "Service", name)
        statefulset = find(rendered, "StatefulSet", name)
        labels = statefulset["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        assert [p["port"] for p in service["spec"]["ports"]] == [port]
        (claim,) = statefulset["spec"]["volumeClaimTemplates"]
        assert claim["spec"]["resources"]["requests"]["storage"]
        pod = statefulset["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        (c,) = pod["containers"]
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
    config = find(rendered, "ConfigMap", f"{RELEASE}-nats")["data"]["nats.conf"]
    assert "jetstream {" in config
    assert "store_dir: /data" in config


# --- settings: every variable the chart sets is one the code reads -----------------------------


def known_variables() -> set[str]:
    """The environment variables of every settings class the services read."""
    from services.planner.app import PlannerSettings  # noqa: PLC0415
    from services.provisioner.app import ProvisionerSettings  # noqa: PLC0415
    from services.provisioner.azure import AzureSettings  # noqa: PLC0415
    from services.watcher.app import WatcherSettings  # noqa: PLC0415
    from services.watcher.webhook import WebhookSettings  # noqa: PLC0415

    classes: list[type[BaseSettings]] = [
        Settings,
        WatcherSettings,
        WebhookSettings,
        PlannerSettings,
        ProvisionerSettings,
        AzureSettings,
    ]
    names: set[str] = set()
    for cls in classes:
        prefix = str(cls.model_config.get("env_prefix") or "")
        for field, info in cls.model_fields.items():
            alias = info.validation_alias
            if alias is None:
                names.add((prefix + field).upper())
            elif isinstance(alias, str):
                names.add(alias.upper())
            else:
                names.update(str(c).upper() for c in getattr(alias, "choices", ()))
    return names


# Read by something other than Kaiten's settings: the process and the $(VAR) expansion.
NOT_SETTINGS = {"HOME", "POSTGRES_PASSWORD"}


def test_every_variable_the_chart_sets_is_read_by_the_code(
    rendered: list[Obj], value_set: str
) -> None:
    known = known_variables()
    for service in SERVICE_NAMES:
        unknown = set(env_of(container(rendered, service))) - known - NOT_SETTINGS
        assert not unknown, f"{service} ({value_set}): no settings field reads {sorted(unknown)}"


def test_the_provisioner_gets_its_backend(
    rendered: list[Obj], value_set: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.provisioner.app import ProvisionerSettings  # noqa: PLC0415
    from services.provisioner.azure import AzureSettings  # noqa: PLC0415

    apply_env(monkeypatch, container(rendered, "provisioner"))
    backend = {"azure": "azure", "byo": "byo"}.get(value_set, "karpenter")
    assert ProvisionerSettings().backend == backend
    if backend == "azure":
        AzureSettings().require("subscription_id", "resource_group", "cluster_name", "location")
        pod = find(rendered, "Deployment", f"{RELEASE}-provisioner")["spec"]["template"]
        assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
        account = find(rendered, "ServiceAccount", f"{RELEASE}-provisioner")
        assert "azure.workload.identity/client-id" in account["metadata"]["annotations"]


# --- the admission webhook ---------------------------------------------------------------------


def webhook_parts(rendered: list[Obj], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Obj, Obj]:
    """The watcher's WebhookSettings as its env makes them, the webhook Service and the TLS
    Secret mounted at the cert dir."""
    from services.watcher.webhook import WebhookSettings  # noqa: PLC0415

    c = container(rendered, "watcher")
    apply_env(monkeypatch, c)
    settings = WebhookSettings()
    pod = find(rendered, "Deployment", f"{RELEASE}-watcher")["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    mount = mounts[str(settings.cert_dir)]
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    secret = find(rendered, "Secret", volume["secret"]["secretName"])
    service = find(rendered, "Service", f"{RELEASE}-webhook")
    return settings, service, secret


def test_the_webhook_service_reaches_the_watchers_webhook_port(
    rendered: list[Obj], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, service, _ = webhook_parts(rendered, monkeypatch)
    assert settings.enabled is True
    assert settings.host == "0.0.0.0"  # noqa: S104 -- the Service sends to the pod's IP
    c = container(rendered, "watcher")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    (port,) = service["spec"]["ports"]
    assert ports[port["targetPort"]] == settings.port
    pod_labels = find(rendered, "Deployment", f"{RELEASE}-watcher")["spec"]["template"]["metadata"]
    assert service["spec"]["selector"].items() <= pod_labels["labels"].items()


def test_the_certificate_names_the_service_and_is_signed_by_the_ca(
    rendered: list[Obj], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, secret = webhook_parts(rendered, monkeypatch)
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    assert set(data) == {"tls.crt", "tls.key", "ca.crt"}  # what ensure_certificate uses as is
    cert = x509.load_pem_x509_certificate(data["tls.crt"])
    ca = x509.load_pem_x509_certificate(data["ca.crt"])
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{RELEASE}-webhook.{NAMESPACE}.svc" in names.get_values_for_type(x509.DNSName)


def test_the_chart_registers_the_webhook_the_watcher_would(
    rendered: list[Obj], value_set: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.watcher.webhook import webhook_configuration  # noqa: PLC0415

    settings, service, secret = webhook_parts(rendered, monkeypatch)
    configs = of_kind(rendered, "ValidatingWebhookConfiguration")
    if value_set == "self-register":
        assert settings.self_register is True
        assert not configs
        host = f"{service['metadata']['name']}.{NAMESPACE}.svc"
        assert settings.url == f"https://{host}:{service['spec']['ports'][0]['port']}/validate"
        return
    assert settings.self_register is False  # one owner of the configuration: Helm
    (config,) = configs
    (webhook,) = config["webhooks"]
    ca = base64.b64decode(secret["data"]["ca.crt"])
    (code,) = webhook_configuration("https://unused/validate", ca)["webhooks"]
    assert config["metadata"]["name"] == webhook["name"] == code["name"] == WEBHOOK_NAME
    for key in ("rules", "admissionReviewVersions", "sideEffects", "failurePolicy"):
        assert webhook[key] == code[key], key
    assert webhook["clientConfig"]["caBundle"] == code["clientConfig"]["caBundle"]
    assert webhook["clientConfig"]["service"] == {
        "name": service["metadata"]["name"],
        "namespace": NAMESPACE,
        "path": "/validate",
        "port": service["spec"]["ports"][0]["port"],
    }


# --- the migration -----------------------------------------------------------------------------


def test_a_hook_job_migrates_before_the_services_run(rendered: list[Obj], value_set: str) -> None:
    job = find(rendered, "Job", f"{RELEASE}-migrate")
    hook = job["metadata"]["annotations"]["helm.sh/hook"]
    bundled = values(value_set)["postgres"]["enabled"]
    assert hook == ("post-install,pre-upgrade" if bundled else "pre-install,pre-upgrade")
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    (c,) = pod["containers"]
    assert [*c["command"], *c["args"]] == ["kaiten", "migrate"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    env = env_of(c)
    ref = (env["DATABASE_URL"].get("valueFrom") or {}).get("secretKeyRef")
    if ref is not None and ref["name"] == f"{RELEASE}-migrate":
        # A pre-install hook runs before the release's Secrets exist: its own hook Secret.
        secret = find(rendered, "Secret", f"{RELEASE}-migrate")
        annotations = secret["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == hook
        assert int(annotations["helm.sh/hook-weight"]) < int(
            job["metadata"]["annotations"]["helm.sh/hook-weight"]
        )


# --- RBAC --------------------------------------------------------------------------------------


def granted(role: Obj) -> frozenset[Rule]:
    out: set[Rule] = set()
    for rule in role.get("rules") or []:
        assert "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in rule.get("resourceNames") or [""]:
                        out.add((group, resource, verb, name))
    return frozenset(out)


def test_no_wildcards_anywhere(rendered: list[Obj]) -> None:
    for role in of_kind(rendered, "ClusterRole") + of_kind(rendered, "Role"):
        for group, resource, verb, _ in granted(role):
            assert "*" not in (group, resource, verb), role["metadata"]["name"]


def test_the_rbac_is_the_least_privilege_contract(rendered: list[Obj], value_set: str) -> None:
    expected = expected_rbac(value_set)
    roles = of_kind(rendered, "ClusterRole")
    assert {r["metadata"]["name"] for r in roles} == {f"{RELEASE}-{s}" for s in SERVICE_NAMES}
    assert not of_kind(rendered, "Role")  # no service uses namespaced-only state (leases)
    for service in SERVICE_NAMES:
        have = granted(find(rendered, "ClusterRole", f"{RELEASE}-{service}"))
        extra, missing = sorted(have - expected[service]), sorted(expected[service] - have)
        assert not extra, f"{service}: granted beyond what its code uses: {extra}"
        assert not missing, f"{service}: not granted what its code uses: {missing}"


def test_each_service_account_is_bound_to_its_own_role_only(rendered: list[Obj]) -> None:
    accounts = {a["metadata"]["name"] for a in of_kind(rendered, "ServiceAccount")}
    assert accounts == {f"{RELEASE}-{s}" for s in SERVICE_NAMES}
    bound: dict[str, list[str]] = {a: [] for a in accounts}
    for binding in of_kind(rendered, "ClusterRoleBinding") + of_kind(rendered, "RoleBinding"):
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount"
            assert subject["namespace"] == NAMESPACE
            bound[subject["name"]].append(binding["roleRef"]["name"])
    for account, roles in bound.items():
        assert roles == [account], f"{account} is bound to {roles}"


def test_no_service_reads_secrets(rendered: list[Obj]) -> None:
    for role in of_kind(rendered, "ClusterRole"):
        assert not {r for r in granted(role) if r[1] == "secrets"}, role["metadata"]["name"]
