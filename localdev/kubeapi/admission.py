"""Validating admission webhooks: for a write that a ValidatingWebhookConfiguration's rules
match, POST an AdmissionReview v1 to the webhook over HTTPS (trusting its ``caBundle``) and
deny the write with the webhook's own message, as kube-apiserver does."""

from __future__ import annotations

import base64
import ssl
import uuid
from typing import Any

import aiohttp

from localdev.kubeapi.api import AdmissionRequest
from localdev.kubeapi.errors import ApiError
from localdev.kubeapi.selectors import label_selector_from_dict, matches_labels
from localdev.kubeapi.store import Obj, Store

VWC_KEY = ("admissionregistration.k8s.io", "validatingwebhookconfigurations")


class Admission:
    """Reads the stored webhook configurations on every write, so a new one applies at once."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def __call__(self, req: AdmissionRequest) -> None:
        target = req.obj or req.old or {}
        for config in self._store.list(VWC_KEY):
            for hook in config.get("webhooks") or []:
                if _matches(hook, req, target):
                    await self._call(hook, req)

    async def _call(self, hook: Obj, req: AdmissionRequest) -> None:
        name = hook.get("name", "")
        rt = req.rt
        meta = (req.obj or req.old or {}).get("metadata") or {}
        gvk = {"group": rt.group, "version": req.version, "kind": rt.kind}
        gvr = {"group": rt.group, "version": req.version, "resource": rt.plural}
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(uuid.uuid4()),
                "kind": gvk,
                "resource": gvr,
                "requestKind": gvk,
                "requestResource": gvr,
                "subResource": req.subresource or "",
                "name": meta.get("name", ""),
                "namespace": meta.get("namespace", ""),
                "operation": req.operation,
                "userInfo": {"username": "kaiten-dev", "groups": ["system:masters"]},
                "object": req.obj,
                "oldObject": req.old,
                "dryRun": req.dry_run,
                "options": None,
            },
        }
        try:
            response = await _post(hook, review)
        except (aiohttp.ClientError, TimeoutError, WebhookError, ssl.SSLError) as e:
            if hook.get("failurePolicy", "Fail") == "Ignore":
                return
            raise ApiError(
                500,
                "InternalError",
                f'Internal error occurred: failed calling webhook "{name}": {e}',
            ) from e
        if response.get("allowed"):
            return
        result = response.get("status") or {}
        message = result.get("message") or "without explanation"
        code = int(result.get("code") or 400)
        raise ApiError(
            code,
            result.get("reason") or ("Forbidden" if code == 403 else "BadRequest"),  # noqa: PLR2004
            f'admission webhook "{name}" denied the request: {message}',
        )


class WebhookError(Exception):
    """The webhook could not be called, or its answer is not an AdmissionReview."""


async def _post(hook: Obj, review: Obj) -> dict[str, Any]:
    client_config = hook.get("clientConfig") or {}
    url = client_config.get("url")
    if not url:
        raise WebhookError(
            "the development cluster calls webhooks by clientConfig.url only (service "
            "references need cluster networking)"
        )
    context: ssl.SSLContext | bool = True
    if client_config.get("caBundle"):
        context = ssl.create_default_context(
            cadata=base64.b64decode(client_config["caBundle"]).decode()
        )
    timeout = aiohttp.ClientTimeout(total=float(hook.get("timeoutSeconds") or 10))
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(url, json=review, ssl=context) as resp,
    ):
        if resp.status != 200:  # noqa: PLR2004
            raise WebhookError(f"the webhook answered HTTP {resp.status}")
        body = await resp.json()
    response = body.get("response") if isinstance(body, dict) else None
    if not isinstance(response, dict):
        raise WebhookError("the webhook's answer has no AdmissionReview response")
    return response


def _matches(hook: Obj, req: AdmissionRequest, obj: Obj) -> bool:
    rt = req.rt
    resource = f"{rt.plural}/{req.subresource}" if req.subresource else rt.plural
    for rule in hook.get("rules") or []:
        if not (
            _has(rule.get("operations"), req.operation)
            and _has(rule.get("apiGroups"), rt.group)
            and _has(rule.get("apiVersions"), req.version)
            and _resource_matches(rule.get("resources") or [], resource)
        ):
            continue
        scope = rule.get("scope", "*")
        if scope != "*" and (scope == "Namespaced") != rt.namespaced:
            continue
        selector = hook.get("objectSelector")
        labels = (obj.get("metadata") or {}).get("labels")
        return not selector or matches_labels(label_selector_from_dict(selector), labels)
    return False


def _has(values: list[str] | None, value: str) -> bool:
    return bool(values) and ("*" in values or value in values)  # type: ignore[operator]


def _resource_matches(patterns: list[str], resource: str) -> bool:
    main, _, sub = resource.partition("/")
    for pattern in patterns:
        p_main, _, p_sub = pattern.partition("/")
        if p_main in ("*", main) and (p_sub == sub or (p_sub == "*" and sub)):
            return True
    return False
