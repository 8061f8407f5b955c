"""docs/asyncapi.yaml: current with the code (regenerate with `kaiten asyncapi -o
docs/asyncapi.yaml`), valid AsyncAPI 3.0.0 (the official schema, fetched by
``scripts/ensure-asyncapi-schema``), and true: every message's payload schema accepts real
envelopes and refuses wrong ones, and the publisher and subscriber tables in shared/asyncapi.py
match what the services do."""

from __future__ import annotations

import copy
import difflib
import importlib
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml
from pydantic import create_model
from typer.testing import CliRunner

from kaiten.cli import app as cli_app
from shared.asyncapi import (
    DEADLETTER,
    PUBLISHES,
    SINKS,
    SUBSCRIBES,
    asyncapi_document,
    render_yaml,
)
from shared.bus import Bus, utcnow
from shared.db import Database
from shared.events import (
    EVENT_MODELS,
    DeadLetter,
    EventData,
    EventType,
    TuningStarted,
    deadletter_subject,
    event_subject,
    new_event,
    subject_token,
)
from shared.runner import ServiceContext
from shared.settings import SERVICE_NAMES, Settings
from tests.unit.test_events import NOW, ONE_OF_EACH, WS

ROOT = Path(__file__).resolve().parents[2]
DOC_FILE = ROOT / "docs" / "asyncapi.yaml"
SCHEMA_FILE = ROOT / ".venv" / "share" / "asyncapi-3.0.0.json"
REGENERATE = "run `kaiten asyncapi -o docs/asyncapi.yaml`"
EXAMPLES = {type(data).event_type: data for data in ONE_OF_EACH}


def stale(expected: str, actual: str) -> str:
    """Why ``actual`` (the committed text) is not ``expected``: the fix and the first lines of
    the difference."""
    diff = difflib.unified_diff(
        actual.splitlines(), expected.splitlines(), "committed", "generated", lineterm="", n=1
    )
    return f"docs/asyncapi.yaml is not current: {REGENERATE}\n" + "\n".join(list(diff)[:40])


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return asyncapi_document()


# -- current ----------------------------------------------------------------------------------


def test_the_committed_document_is_what_the_code_generates() -> None:
    expected = render_yaml(asyncapi_document())
    actual = DOC_FILE.read_text()
    if actual != expected:
        pytest.fail(stale(expected, actual))


def test_a_changed_event_model_makes_the_committed_document_stale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    changed: type[EventData] = create_model("TuningStarted", __base__=TuningStarted, note=(str, ""))
    monkeypatch.setitem(EVENT_MODELS, EventType.TUNING_STARTED, changed)
    with pytest.raises(pytest.fail.Exception, match=re.escape(REGENERATE)) as e:
        test_the_committed_document_is_what_the_code_generates()
    added = [line[1:].strip() for line in str(e.value).splitlines() if line.startswith("+")]
    assert "note:" in added


def test_the_document_depends_on_the_code_not_the_environment(
    monkeypatch: pytest.MonkeyPatch, document: dict[str, Any]
) -> None:
    monkeypatch.setenv("KAITEN_SUBJECT_PREFIX", "elsewhere")
    monkeypatch.setenv("KAITEN_DUPLICATE_WINDOW_S", "5")
    assert asyncapi_document() == document


def test_kaiten_asyncapi_prints_and_writes_the_document(tmp_path: Path) -> None:
    printed = CliRunner().invoke(cli_app, ["asyncapi"])
    assert printed.exit_code == 0, printed.output
    written = CliRunner().invoke(cli_app, ["asyncapi", "-o", str(tmp_path / "a.yaml")])
    assert written.exit_code == 0, written.output
    expected = render_yaml(asyncapi_document())
    assert printed.stdout == expected
    assert (tmp_path / "a.yaml").read_text() == expected


# -- valid AsyncAPI 3.0.0 -------------------------------------------------------------------------


def asyncapi_schema() -> dict[str, Any]:
    if not SCHEMA_FILE.is_file():
        pytest.fail(
            f"{SCHEMA_FILE.relative_to(ROOT)} is missing: run scripts/ensure-asyncapi-schema "
            "(it fetches the AsyncAPI 3.0.0 JSON schema from the npm registry)"
        )
    schema = json.loads(SCHEMA_FILE.read_text())
    assert isinstance(schema, dict)
    return schema


def asyncapi_errors(document: dict[str, Any]) -> list[str]:
    """Every complaint of the AsyncAPI 3.0.0 schema about ``document``. The schema is draft-07
    with every definition it refers to embedded under its own $id."""
    schema = asyncapi_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    return [
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: "
        f"{jsonschema.exceptions.best_match([e, *e.context]).message[:300]}"
        for e in errors
    ]


def test_the_committed_document_is_valid_asyncapi_3() -> None:
    document = yaml.safe_load(DOC_FILE.read_text())
    assert asyncapi_schema().get("$id") == "http://asyncapi.com/definitions/3.0.0/asyncapi.json"
    assert document["asyncapi"] == "3.0.0"
    assert asyncapi_errors(document) == []


def test_the_schema_check_catches_a_broken_document(document: dict[str, Any]) -> None:
    broken = copy.deepcopy(document)
    broken["operations"]["planner.send.plan.ready"]["action"] = "publish"  # AsyncAPI 2 wording
    assert asyncapi_errors(broken) != []


# -- true -----------------------------------------------------------------------------------------


def test_every_event_type_has_a_channel_a_message_and_its_subjects(
    document: dict[str, Any],
) -> None:
    channels, messages = document["channels"], document["components"]["messages"]
    assert set(channels) == {t.value for t in EventType} | {DEADLETTER}
    assert set(messages) == {m.__name__ for m in EVENT_MODELS.values()} | {DeadLetter.__name__}
    for event_type, model in EVENT_MODELS.items():
        channel = channels[event_type.value]
        assert channel["messages"] == {
            model.__name__: {"$ref": f"#/components/messages/{model.__name__}"}
        }
        assert messages[model.__name__]["name"] == event_type.value
        # A dotted name becomes one token, as the bus publishes it.
        namespace, name = "team-a", "phi-3.5-mini"
        address = channel["address"].format(
            namespace=subject_token(namespace), name=subject_token(name)
        )
        assert address == event_subject("kaiten", event_type, namespace, name)
    deadletter = channels[DEADLETTER]
    assert deadletter["parameters"]["service"]["enum"] == list(SERVICE_NAMES)
    assert deadletter["address"].format(service="tuner") == deadletter_subject("kaiten", "tuner")
    other = asyncapi_document("acme")["channels"]["plan.ready"]["address"]
    assert other == "acme.v1.plan.ready.{namespace}.{name}"


def test_every_message_requires_the_nats_msg_id_header(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for message in document["components"]["messages"].values():
        headers = schemas[message["headers"]["$ref"].rsplit("/", 1)[1]]
        assert headers["required"] == ["Nats-Msg-Id"]
        assert headers["properties"]["Nats-Msg-Id"]["type"] == "string"


def payload_errors(document: dict[str, Any], message: str, instance: Any) -> list[str]:
    """What ``message``'s payload schema, resolved within the document, says of ``instance``."""
    schema = {
        "$ref": f"#/components/messages/{message}/payload",
        "components": document["components"],
    }
    validator = jsonschema.Draft7Validator(
        schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )
    return [e.message for e in validator.iter_errors(instance)]


@pytest.mark.parametrize("event_type", list(EventType), ids=str)
def test_every_payload_schema_accepts_a_real_envelope(
    document: dict[str, Any], event_type: EventType
) -> None:
    envelope = new_event(EXAMPLES[event_type], source="planner", workspace=WS, now=NOW)
    body = envelope.model_dump(mode="json")
    message = EVENT_MODELS[event_type].__name__
    assert payload_errors(document, message, body) == []
    # The schema is strict as the models are: an unknown field in data is refused.
    assert payload_errors(document, message, {**body, "data": {**body["data"], "extra": 1}})


def test_a_payload_schema_refuses_another_types_data(document: dict[str, Any]) -> None:
    envelope = new_event(TuningStarted(job="w"), source="tuner", workspace=WS, now=NOW)
    assert payload_errors(document, "PlanReady", envelope.model_dump(mode="json"))


def test_the_deadletter_schema_accepts_a_real_dead_letter(document: dict[str, Any]) -> None:
    letter = DeadLetter(
        service="planner",
        consumer="planner-workspace-observed",
        subject="kaiten.v1.workspace.observed.default.w",
        stream_sequence=7,
        deliveries=5,
        error="TimeoutError: ...",
        failed_at=datetime(2026, 11, 21, 12, 0, tzinfo=UTC),
        payload="{}",
        payload_encoding="utf-8",
        workspace=WS,
    )
    assert payload_errors(document, "DeadLetter", letter.model_dump(mode="json")) == []


class _Stub:
    """Stands for the bus, the database and the Kubernetes client: the handlers are built,
    never run."""


def stub_context() -> ServiceContext:
    return ServiceContext(
        settings=Settings(),
        bus=cast("Bus", _Stub()),
        db=cast("Database", _Stub()),
        kube=cast("Any", _Stub()),
        clock=utcnow,
    )


def subscribed(service: str) -> tuple[EventType, ...]:
    """The event types ``service``'s composition root subscribes to."""
    spec = importlib.import_module(f"services.{service}.app").build_service()
    return tuple(sub.event_type for sub in spec.handlers(stub_context()))


def test_the_subscriber_table_is_what_the_services_subscribe_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in os.environ:
        if key.startswith("KAITEN_"):
            monkeypatch.delenv(key)
    assert set(SUBSCRIBES) == set(SERVICE_NAMES)
    assert {service: subscribed(service) for service in SERVICE_NAMES} == SUBSCRIBES


def test_the_sink_table_is_what_the_services_declare() -> None:
    def sinks(service: str) -> tuple[str, ...]:
        spec = importlib.import_module(f"services.{service}.app").build_service()
        return tuple(s.name for s in spec.sinks(stub_context())) if spec.sinks else ()

    declared = {service: sinks(service) for service in SERVICE_NAMES}
    assert {k: v for k, v in declared.items() if v} == SINKS


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_the_publisher_table_names_where_each_event_is_built(service: str) -> None:
    for event_type, path in PUBLISHES[service].items():
        source = (ROOT / path).read_text()
        model = EVENT_MODELS[event_type].__name__
        builders = [f"{model}("]
        if event_type is EventType.CONDITION_REPORTED:
            builders.append("condition_reported(")
        assert any(b in source for b in builders), f"{path} builds no {model}"


def test_every_event_type_has_a_publisher() -> None:
    published = {t for types in PUBLISHES.values() for t in types}
    assert published == set(EventType)
