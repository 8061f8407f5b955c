"""The Workspace admission webhook, served by the watcher: AdmissionReview v1 over TLS. The
decision is ``shared.workspace.validation``; this module only adapts it to AdmissionReview,
serves it, keeps a certificate (mounted, or generated on first start) and registers the
ValidatingWebhookConfiguration ``validation.workspace.kaito.sh`` with that certificate's CA."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.kube import api_error
from shared.workspace.models import GROUP, PLURAL, VERSIONS
from shared.workspace.validation import ValidationContext, render, validate_workspace

log = structlog.get_logger(__name__)

WEBHOOK_NAME = "validation.workspace.kaito.sh"


class WebhookSettings(BaseSettings):
    """``KAITEN_WEBHOOK_*``: where the watcher serves admission and how it registers."""

    model_config = SettingsConfigDict(env_prefix="KAITEN_WEBHOOK_", extra="ignore", frozen=True)

    enabled: bool = Field(default=True, description="Serve and register the webhook.")
    host: str = Field(default="127.0.0.1", description="Bind address (0.0.0.0 in a pod).")
    port: int = Field(default=9443, ge=0, le=65535, description="HTTPS port. Default 9443.")
    cert_dir: Path = Field(
        default=Path(".kaiten/webhook"),
        description="tls.crt and tls.key; generated (self-signed, with ca.crt) when absent.",
    )
    url: str | None = Field(
        default=None, description="URL the API server calls; default https://<host>:<port>/validate"
    )
    self_register: bool = Field(
        default=True, description="Create or update the ValidatingWebhookConfiguration."
    )


def review_response(review: dict[str, Any], ctx: ValidationContext) -> dict[str, Any]:
    """The AdmissionReview answer to ``review``: allowed, or denied with every problem."""
    request = review.get("request")
    if not isinstance(request, dict):
        request = {}
    uid = request.get("uid", "")
    obj = request.get("object")
    if request.get("operation") not in ("CREATE", "UPDATE") or not isinstance(obj, dict):
        response: dict[str, Any] = {"uid": uid, "allowed": True}
    else:
        old = request.get("oldObject") if request.get("operation") == "UPDATE" else None
        problems = validate_workspace(obj, old if isinstance(old, dict) else None, ctx)
        response = {"uid": uid, "allowed": not problems}
        if problems:
            response["status"] = {"code": 400, "reason": "BadRequest", "message": render(problems)}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


def ensure_certificate(cert_dir: Path, host: str) -> tuple[Path, Path, bytes]:
    """The serving certificate and key, and the CA bundle to register. A mounted
    ``tls.crt``/``tls.key`` (with ``ca.crt``, else the certificate itself) is used as is;
    otherwise a self-signed certificate for ``host`` is generated once and kept."""
    crt, key, ca = cert_dir / "tls.crt", cert_dir / "tls.key", cert_dir / "ca.crt"
    if not (crt.is_file() and key.is_file()):
        _write_self_signed(cert_dir, host)
    bundle = ca.read_bytes() if ca.is_file() else crt.read_bytes()
    return crt, key, bundle


def _write_self_signed(cert_dir: Path, host: str) -> None:
    from cryptography import x509  # noqa: PLC0415 -- only when no certificate is mounted
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kaiten-watcher-webhook")])
    sans: list[x509.GeneralName] = [x509.DNSName("localhost")]
    try:
        sans.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        sans.append(x509.DNSName(host))
    if host != "127.0.0.1":
        sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_dir.mkdir(parents=True, exist_ok=True)
    key_path = cert_dir / "tls.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    (cert_dir / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def webhook_configuration(url: str, ca_bundle: bytes) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": WEBHOOK_NAME},
        "webhooks": [
            {
                "name": WEBHOOK_NAME,
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "timeoutSeconds": 10,
                "clientConfig": {"url": url, "caBundle": base64.b64encode(ca_bundle).decode()},
                "rules": [
                    {
                        "operations": ["CREATE", "UPDATE"],
                        "apiGroups": [GROUP],
                        "apiVersions": list(VERSIONS),
                        "resources": [PLURAL],
                        "scope": "Namespaced",
                    }
                ],
            }
        ],
    }


async def register(api: client.ApiClient, config: dict[str, Any]) -> None:
    """Create the configuration, or replace it so the URL and CA bundle are current."""
    admission = client.AdmissionregistrationV1Api(api)
    try:
        # The client sends a dict body as is; its stubs only declare the model class.
        await admission.create_validating_webhook_configuration(config)  # type: ignore[arg-type]
    except ApiException as e:
        if e.status != 409:  # noqa: PLR2004
            raise api_error(e, f"create {WEBHOOK_NAME}") from e
        current = await admission.read_validating_webhook_configuration(WEBHOOK_NAME)
        config = dict(
            config,
            metadata=dict(config["metadata"], resourceVersion=current.metadata.resource_version),
        )
        await admission.replace_validating_webhook_configuration(WEBHOOK_NAME, config)  # type: ignore[arg-type]


def build_webhook_app(ctx: ValidationContext) -> web.Application:
    async def validate(request: web.Request) -> web.Response:
        try:
            review = await request.json()
        except ValueError:
            return web.json_response({"error": "the body is not an AdmissionReview"}, status=400)
        answer = review_response(review if isinstance(review, dict) else {}, ctx)
        allowed = answer["response"]["allowed"]
        log.info(
            "admission.reviewed",
            allowed=allowed,
            workspace=_name_of(review),
            denial=None if allowed else answer["response"]["status"]["message"],
        )
        return web.json_response(answer)

    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_post("/validate", validate)
    return app


@asynccontextmanager
async def serve_webhook(
    settings: WebhookSettings, ctx: ValidationContext, api: client.ApiClient | None
) -> AsyncIterator[str]:
    """Serve the webhook over TLS (and register it when asked) until the context exits."""
    crt, key, bundle = ensure_certificate(settings.cert_dir, settings.host)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(crt, key)
    runner = web.AppRunner(build_webhook_app(ctx), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, ssl_context=tls)
    await site.start()
    url = settings.url or f"https://{settings.host}:{settings.port}/validate"
    try:
        if settings.self_register and api is not None:
            await register(api, webhook_configuration(url, bundle))
        log.info("webhook.serving", url=url, registered=settings.self_register and api is not None)
        yield url
    finally:
        await runner.cleanup()


def _name_of(review: Any) -> str:
    request = review.get("request") if isinstance(review, dict) else None
    if not isinstance(request, dict):
        return ""
    return f"{request.get('namespace', '')}/{request.get('name', '')}"
