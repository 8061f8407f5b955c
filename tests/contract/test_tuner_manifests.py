"""The tuner's manifests against the Kubernetes 1.31 OpenAPI schemas (strict: no unknown
fields): every object rendered for every named case of ``tests.unit.tuner.cases`` must be
accepted, and a broken one must be refused (so this contract can fail)."""

from __future__ import annotations

import copy

import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from shared.manifests import Manifest
from tests.unit.tuner.cases import CASES, case, object_id, rendered

KUBERNETES_VERSION = "1.31"


def _objects() -> list[tuple[str, int, str]]:
    """(case, index in apply order, Kind/name) for every rendered object of every case."""
    return [
        (c.name, index, object_id(obj))
        for c in CASES
        for index, obj in enumerate(rendered(c).objects)
    ]


OBJECTS = _objects()


def _schema_error(obj: Manifest) -> str | None:
    """The schema's complaint about ``obj`` (``path: message``), or None when it is valid."""
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(part) for part in error.path) or "<root>"
        return f"{path}: {error.message}"
    return None


@pytest.mark.parametrize(
    ("case_name", "index"),
    [(name, index) for name, index, _ in OBJECTS],
    ids=[f"{name}/{key}" for name, _, key in OBJECTS],
)
def test_every_rendered_manifest_is_valid_kubernetes(case_name: str, index: int) -> None:
    obj = rendered(case(case_name)).objects[index]
    error = _schema_error(obj)
    assert error is None, (
        f"{case_name}: {object_id(obj)} is refused by the Kubernetes "
        f"{KUBERNETES_VERSION} schema: {error}"
    )


def test_every_case_is_checked() -> None:
    assert {name for name, _, _ in OBJECTS} == {c.name for c in CASES}
    assert {key.split("/")[0] for _, _, key in OBJECTS} == {"ConfigMap", "Job"}


def test_an_unknown_pod_field_is_refused() -> None:
    """Strict: a misspelt field is an error, not silently dropped as the API server would."""
    job = copy.deepcopy(rendered(case("seed-tuning-phi-3")).workload)
    assert _schema_error(job) is None
    job["spec"]["template"]["spec"]["shareProcessNamespaces"] = True
    error = _schema_error(job)
    assert error is not None
    assert "shareProcessNamespaces" in error


def test_a_wrongly_typed_field_is_refused() -> None:
    job = copy.deepcopy(rendered(case("volume-to-volume")).workload)
    assert _schema_error(job) is None
    job["spec"]["backoffLimit"] = "none"
    error = _schema_error(job)
    assert error is not None
    assert error.startswith("spec.backoffLimit: ")
