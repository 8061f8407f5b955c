"""Errors the emulator answers with, as Kubernetes ``Status`` objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class FieldError:
    """One invalid field, as ``metav1.StatusCause``: ``field`` is a dotted path such as
    ``spec.template.spec.containers[0].image``; ``kind`` is Kubernetes' cause type
    (``FieldValueRequired``, ``FieldValueInvalid``, ``FieldValueNotSupported``,
    ``FieldValueTypeInvalid``, ``FieldValueForbidden``, ``FieldValueTooLong``, ...)."""

    field: str
    kind: str
    message: str

    def cause(self) -> dict[str, str]:
        return {"reason": self.kind, "message": self.message, "field": self.field}


@dataclass
class ApiError(Exception):
    """An HTTP error with a ``Status`` body, exactly as kube-apiserver would send it."""

    code: int
    reason: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def invalid(kind: str, group: str, name: str, errors: list[FieldError]) -> ApiError:
    """422 Invalid, worded like kube-apiserver:
    ``Workspace.kaito.sh "ws" is invalid: [resource.count: Invalid value: ...]``."""
    qualified = f"{kind}.{group}" if group else kind
    joined = "; ".join(f"{e.field}: {e.message}" if e.field else e.message for e in errors)
    text = joined if len(errors) == 1 else f"[{', '.join(_one(e) for e in errors)}]"
    return ApiError(
        422,
        "Invalid",
        f'{qualified} "{name}" is invalid: {text}',
        {"name": name, "group": group, "kind": kind, "causes": [e.cause() for e in errors]},
    )


def _one(e: FieldError) -> str:
    return f"{e.field}: {e.message}" if e.field else e.message
