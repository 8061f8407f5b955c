"""Poison and bad input (issue 14, item 4): fuzzed bodies on the bus are dead-lettered with the
original kept and never stall a consumer; invalid Workspaces are refused at admission naming
the field; oversized and malformed inference requests get a 4xx and the server keeps serving."""

from __future__ import annotations

import base64
import copy
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import nats
import pytest
from aiohttp.test_utils import TestClient as AiohttpClient
from aiohttp.test_utils import TestServer
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from presets.catalog import default_catalog
from presets.inference.engine import Engine, LoadOptions, load_engine
from presets.inference.server import ServerOptions, build_app
from services.watcher.webhook import build_webhook_app
from shared.bus import DEADLETTER_REASON, Bus, Subscription, consumer_name
from shared.errors import EventDecodeError
from shared.events import (
    ConditionReported,
    DeadLetter,
    Envelope,
    EventType,
    ResourcesReady,
    WorkspaceRef,
    deadletter_subject,
    decode_event,
    event_subject,
)
from shared.settings import Settings
from shared.workspace.validation import ValidationContext
from tests.support.bus import event, stream_reader
from tests.support.polling import eventually
from tests.unit.workspace.cases import SEEDS, Doc, changed, seed

T = TypeVar("T")
SERVICE = "deployer"
EXPECTED = EventType.RESOURCES_READY


def examples(strategy: st.SearchStrategy[T], n: int) -> list[T]:
    """Up to ``n`` values drawn by hypothesis (generation only: each value is one input that
    the async test below sends to a real NATS server)."""
    drawn: list[T] = []

    @hsettings(
        max_examples=n,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def draw(value: T) -> None:
        drawn.append(value)

    draw()
    return drawn


# --- 1. fuzzed event bodies on the bus ----------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def valid_envelope(ws: WorkspaceRef) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(event(ResourcesReady(node_names=("node-a",)), ws).to_json())
    return body


# Values of the wrong type or out of range for each required field of the envelope.
WRONG: dict[str, st.SearchStrategy[Any]] = {
    "id": st.integers() | st.none() | st.text(max_size=12) | st.lists(st.integers(), max_size=2),
    "type": st.text(max_size=20)
    | st.sampled_from([t.value for t in EventType if t is not EXPECTED])
    | st.integers()
    | st.none(),
    "schema_version": st.integers().filter(lambda v: v != 1) | st.text(max_size=4) | st.none(),
    "occurred_at": st.text(max_size=20) | st.integers() | st.just("2025-01-01T00:00:00"),
    "source": st.sampled_from(["", "Tester", "9lives", "has space", "a_b"]) | st.integers(),
    "workspace": JSON.filter(lambda v: not isinstance(v, dict))
    | st.fixed_dictionaries({"uid": st.just(""), "namespace": st.just("d"), "name": st.just("n")})
    | st.fixed_dictionaries(
        {
            "uid": st.just("u"),
            "namespace": st.just("default"),
            "name": st.just("n"),
            "generation": st.integers(max_value=-1) | st.text(max_size=3),
        }
    ),
    "correlation_id": st.just("") | st.integers() | st.none(),
    "data": JSON.filter(lambda v: not isinstance(v, dict))
    | st.just({})
    | st.just({"node_names": []})
    | st.fixed_dictionaries({"node_names": st.text(max_size=5) | st.integers()})
    | st.just({"node_names": ["n"], "extra": 1}),
}


@st.composite
def mutated_envelope(draw: st.DrawFn) -> bytes:
    """A valid envelope with one thing broken: a field of the wrong type, a field removed, an
    unknown top-level key, or the body truncated."""
    ws = WorkspaceRef(uid=str(uuid.uuid4()), namespace="default", name="fuzz", generation=1)
    body = valid_envelope(ws)
    how = draw(st.sampled_from(["wrong", "missing", "unknown-key", "truncated"]))
    if how == "wrong":
        key = draw(st.sampled_from(sorted(WRONG)))
        body[key] = draw(WRONG[key])
    elif how == "missing":
        del body[draw(st.sampled_from(sorted(WRONG)))]
    elif how == "unknown-key":
        body[draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in body))] = 1
    raw = json.dumps(body).encode()
    if how == "truncated":
        raw = raw[: draw(st.integers(min_value=0, max_value=len(raw) - 1))]
    return raw


def is_not_an_event(raw: bytes) -> bool:
    try:
        decode_event(raw, expected=EXPECTED)
    except EventDecodeError:
        return True
    return False


def poison_bodies() -> dict[str, list[bytes]]:
    """Bodies that are not a valid ``resources.ready`` event, by kind."""
    return {
        "bytes": examples(st.binary(max_size=300).filter(is_not_an_event), 25),
        "json": examples(JSON.map(lambda v: json.dumps(v).encode()).filter(is_not_an_event), 25),
        "mutated": examples(mutated_envelope().filter(is_not_an_event), 40),
    }


def original(letter: DeadLetter) -> bytes:
    if letter.payload_encoding == "base64":
        return base64.b64decode(letter.payload)
    return letter.payload.encode()


async def publish_raw(
    settings: Settings, bodies: dict[str, list[bytes]], failing_nodes: list[str]
) -> tuple[dict[int, bytes], dict[str, Envelope[Any]]]:
    """Publish with plain nats-py to the consumer's subjects: every poison body (returns them
    by stream sequence) and one valid event per failing node name (returns them by node)."""
    sent: dict[int, bytes] = {}
    failing: dict[str, Envelope[Any]] = {}
    nc = await nats.connect(settings.nats_url)
    try:
        js = nc.jetstream()
        everything = [body for kind in bodies.values() for body in kind]
        for i, body in enumerate(everything):
            subject = event_subject(settings.subject_prefix, EXPECTED, "default", f"p{i}")
            ack = await js.publish(subject, body, stream=settings.stream)
            sent[ack.seq] = body
        for j, node in enumerate(failing_nodes):
            ws = WorkspaceRef(
                uid=str(uuid.uuid4()), namespace="default", name=f"fail-{j}", generation=2
            )
            ev = event(ResourcesReady(node_names=(node,)), ws)
            failing[node] = ev
            subject = event_subject(settings.subject_prefix, EXPECTED, "default", ws.name)
            await js.publish(subject, ev.to_json(), stream=settings.stream)
    finally:
        await nc.close()
    return sent, failing


def check_poison_letters(letters: list[DeadLetter], sent: dict[int, bytes]) -> None:
    """Each body that is not an event: dead-lettered at its first delivery, original kept."""
    by_seq = {letter.stream_sequence: letter for letter in letters}
    for seq, body in sent.items():
        letter = by_seq[seq]
        assert original(letter) == body, (body, letter)
        assert letter.deliveries == 1
        assert letter.workspace is None
        assert letter.event_id is None
        assert letter.error


def check_failing_letters(
    letters: list[DeadLetter],
    failing: dict[str, Envelope[Any]],
    conditions: list[Envelope[Any]],
    calls: Counter[str],
    max_deliver: int,
) -> None:
    """Each valid event whose handler always fails: exactly ``max_deliver`` tries, then
    dead-lettered, and its workspace told with a WorkspaceSucceeded=False condition."""
    by_event = {letter.event_id: letter for letter in letters if letter.event_id}
    for node, ev in failing.items():
        assert calls[node] == max_deliver
        letter = by_event[ev.id]
        assert letter.deliveries == max_deliver
        assert decode_event(original(letter)) == ev
        reported = [c for c in conditions if c.causation_id == ev.id]
        assert len(reported) == 1, reported
        data = reported[0].data
        assert isinstance(data, ConditionReported)
        assert reported[0].workspace == ev.workspace
        assert (data.condition.type, data.condition.status, data.condition.reason) == (
            "WorkspaceSucceeded",
            "False",
            DEADLETTER_REASON,
        )


async def test_fuzzed_poison_is_dead_lettered_and_never_stalls_the_consumer(
    settings: Settings, record_property: Callable[[str, object], None]
) -> None:
    bodies = poison_bodies()
    # Valid events whose handler always raises; their node names are fuzzed too.
    failing_nodes = examples(st.text(min_size=1, max_size=30).map(lambda t: f"fail:{t}"), 5)
    failing_nodes = list(dict.fromkeys(failing_nodes))
    fuzzed = sum(len(v) for v in bodies.values()) + len(failing_nodes)
    kinds = {k: len(v) for k, v in bodies.items()}
    print(f"fuzzed inputs: {fuzzed} ({kinds}, failing={len(failing_nodes)})")
    record_property("fuzzed_inputs", fuzzed)
    assert sum(kinds.values()) >= 50

    calls: Counter[str] = Counter()

    async def handler(ev: Envelope[Any]) -> None:
        node = ev.data.node_names[0]
        calls[node] += 1
        if node.startswith("fail:"):
            raise RuntimeError(f"cannot place {node!r}")

    bus = Bus(settings, SERVICE, registry=CollectorRegistry())
    bus.subscribe(Subscription(EXPECTED, handler))
    await bus.start()
    try:
        sent, failing = await publish_raw(settings, bodies, failing_nodes)
        total = len(sent) + len(failing)
        async with stream_reader(settings) as reader:
            dlq = deadletter_subject(settings.subject_prefix, SERVICE)

            async def all_letters() -> list[bytes]:
                found = await reader.messages(dlq)
                return found if len(found) >= total else []

            raw_letters = await eventually(all_letters, timeout=30, what="every dead letter")
            # (c) the consumer still serves: a good event is handled within a deadline.
            await bus.publish(event(ResourcesReady(node_names=("canary",))))
            await eventually(lambda: calls["canary"] == 1, timeout=5, what="the canary event")
            subject = f"{settings.subject_prefix}.v1.{EventType.CONDITION_REPORTED}.>"
            conditions = [decode_event(m) for m in await reader.messages(subject)]
            info = await reader.consumer(consumer_name(SERVICE, EXPECTED))
    finally:
        await bus.stop()

    letters = [DeadLetter.model_validate_json(m) for m in raw_letters]
    assert len(letters) == total
    check_poison_letters(letters, sent)  # (a)
    assert not [n for n in calls if not n.startswith("fail:") and n != "canary"]
    check_failing_letters(letters, failing, conditions, calls, settings.max_deliver)  # (b)
    assert info.num_pending == 0
    assert info.num_ack_pending == 0


# --- 2. invalid Workspaces refused at admission --------------------------------------------------


def inference() -> Doc:
    return seed("inference-phi-3-mini.yaml")


def adapter() -> Doc:
    return seed("inference-phi-3-mini-adapter.yaml")


def tuning() -> Doc:
    return seed("tuning-phi-3-mini.yaml")


def tuning_128k() -> Doc:
    return seed("tuning-phi-3-mini-128k-adapter.yaml")


def template() -> Doc:
    return changed(
        inference,
        ("inference.preset", None),
        ("inference.template", {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
    )()


@dataclass(frozen=True)
class Bad:
    id: str
    make: Callable[[], Doc]
    field: str
    local_cpu: bool = False


def _url(url: str) -> Callable[[], Doc]:
    return changed(tuning_128k, ("tuning.input.urls", [url]))


# One thing broken in a seed each; many are wrong types or values the unit table does not try.
BAD: list[Bad] = [
    Bad("count-zero", changed(inference, ("resource.count", 0)), "resource.count"),
    Bad("count-negative", changed(inference, ("resource.count", -2)), "resource.count"),
    Bad("count-zero-template", changed(template, ("resource.count", 0)), "resource.count"),
    Bad("count-negative-tuning", changed(tuning, ("resource.count", -1)), "resource.count"),
    Bad("count-string", changed(inference, ("resource.count", "two")), "resource.count"),
    Bad("count-fraction", changed(inference, ("resource.count", 1.5)), "resource.count"),
    Bad(
        "instance-type-number",
        changed(inference, ("resource.instanceType", 42)),
        "resource.instanceType",
    ),
    Bad(
        "instance-type-empty",
        changed(inference, ("resource.instanceType", "")),
        "resource.instanceType",
    ),
    Bad(
        "instance-type-unknown",
        changed(inference, ("resource.instanceType", "Standard_Bogus_v1")),
        "resource.instanceType",
    ),
    Bad("resource-missing", changed(inference, ("resource", None)), "resource"),
    Bad("resource-a-list", changed(inference, ("resource", [1])), "resource"),
    Bad(
        "label-selector-missing",
        changed(inference, ("resource.labelSelector", None)),
        "resource.labelSelector",
    ),
    Bad(
        "label-selector-empty",
        changed(inference, ("resource.labelSelector", {})),
        "resource.labelSelector.matchLabels",
    ),
    Bad(
        "match-labels-a-list",
        changed(inference, ("resource.labelSelector.matchLabels", ["apps"])),
        "resource.labelSelector.matchLabels",
    ),
    Bad(
        "match-label-value-number",
        changed(inference, ("resource.labelSelector.matchLabels", {"apps": 3})),
        "resource.labelSelector.matchLabels.apps",
    ),
    Bad(
        "match-expression-two-values",
        changed(
            inference,
            (
                "resource.labelSelector",
                {"matchExpressions": [{"key": "a", "operator": "In", "values": ["x", "y"]}]},
            ),
        ),
        "resource.labelSelector.matchExpressions[0]",
    ),
    Bad(
        "match-expression-without-operator",
        changed(
            inference,
            ("resource.labelSelector", {"matchExpressions": [{"key": "a", "values": ["x"]}]}),
        ),
        "resource.labelSelector.matchExpressions[0].operator",
    ),
    Bad(
        "preferred-nodes-a-string",
        changed(inference, ("resource.preferredNodes", "node-1")),
        "resource.preferredNodes",
    ),
    Bad(
        "unknown-preset",
        changed(inference, ("inference.preset.name", "gpt-9-ultra")),
        "inference.preset.name",
    ),
    Bad(
        "preset-name-empty",
        changed(inference, ("inference.preset.name", "")),
        "inference.preset.name",
    ),
    Bad(
        "preset-name-number",
        changed(inference, ("inference.preset.name", 7)),
        "inference.preset.name",
    ),
    Bad(
        "preset-without-name", changed(inference, ("inference.preset", {})), "inference.preset.name"
    ),
    Bad(
        "bad-access-mode",
        changed(inference, ("inference.preset.accessMode", "secret")),
        "inference.preset.accessMode",
    ),
    Bad(
        "unknown-preset-key",
        changed(inference, ("inference.preset.weights", "x")),
        "inference.preset.weights",
    ),
    Bad("inference-a-string", changed(inference, ("inference", "phi")), "inference"),
    Bad("inference-empty", changed(inference, ("inference", {})), "inference"),
    Bad(
        "preset-and-template",
        changed(inference, ("inference.template", {"spec": {}})),
        "inference",
    ),
    Bad(
        "inference-config-invalid-name",
        changed(inference, ("inference.config", "My_Config")),
        "inference.config",
    ),
    Bad("inference-config-number", changed(inference, ("inference.config", 5)), "inference.config"),
    Bad("adapters-a-map", changed(adapter, ("inference.adapters", {"a": 1})), "inference.adapters"),
    Bad(
        "adapter-name-upper-case",
        changed(adapter, ("inference.adapters.0.source.name", "Phi_Adapter")),
        "inference.adapters[0].source.name",
    ),
    Bad(
        "adapter-image-with-space",
        changed(adapter, ("inference.adapters.0.source.image", "my image:1")),
        "inference.adapters[0].source.image",
    ),
    Bad(
        "adapter-image-empty-tag",
        changed(adapter, ("inference.adapters.0.source.image", "reg.io/a:")),
        "inference.adapters[0].source.image",
    ),
    Bad(
        "adapter-strength-a-number",
        changed(adapter, ("inference.adapters.0.strength", 0.5)),
        "inference.adapters[0].strength",
    ),
    Bad(
        "adapter-strength-negative",
        changed(adapter, ("inference.adapters.0.strength", "-0.1")),
        "inference.adapters[0].strength",
    ),
    Bad(
        "adapter-strength-nan",
        changed(adapter, ("inference.adapters.0.strength", "nan")),
        "inference.adapters[0].strength",
    ),
    Bad(
        "tuning-config-invalid-name",
        changed(tuning, ("tuning.config", "Bad Config")),
        "tuning.config",
    ),
    Bad("tuning-method-missing", changed(tuning, ("tuning.method", None)), "tuning.method"),
    Bad("tuning-method-dora", changed(tuning, ("tuning.method", "dora")), "tuning.method"),
    Bad("tuning-method-number", changed(tuning, ("tuning.method", 1)), "tuning.method"),
    Bad("tuning-a-string", changed(tuning, ("tuning", "lora")), "tuning"),
    Bad("tuning-preset-empty", changed(tuning, ("tuning.preset.name", "")), "tuning.preset.name"),
    Bad(
        "tuning-preset-unknown",
        changed(tuning, ("tuning.preset.name", "llama-9000")),
        "tuning.preset.name",
    ),
    Bad("tuning-input-empty", changed(tuning, ("tuning.input", {})), "tuning.input"),
    Bad(
        "tuning-input-urls-a-string",
        changed(tuning, ("tuning.input.urls", "https://x.io/a")),
        "tuning.input.urls",
    ),
    Bad("url-ftp", _url("ftp://example.com/a"), "tuning.input.urls[0]"),
    Bad("url-without-host", _url("https:///a"), "tuning.input.urls[0]"),
    Bad("url-ipv6-loopback", _url("http://[::1]/a"), "tuning.input.urls[0]"),
    Bad("url-cloud-metadata-ip", _url("http://169.254.169.254/latest"), "tuning.input.urls[0]"),
    Bad("url-localhost-subdomain", _url("http://api.localhost/a"), "tuning.input.urls[0]"),
    Bad("url-unspecified", _url("http://0.0.0.0/a"), "tuning.input.urls[0]"),
    Bad("url-multicast", _url("http://224.0.0.1/a"), "tuning.input.urls[0]"),
    Bad("tuning-output-empty", changed(tuning, ("tuning.output", {})), "tuning.output"),
    Bad(
        "tuning-output-secret-only",
        changed(tuning, ("tuning.output", {"imagePushSecret": "s"})),
        "tuning.output",
    ),
    Bad(
        "tuning-output-bad-digest",
        changed(tuning, ("tuning.output.image", "reg.io/a@sha256:xyz")),
        "tuning.output.image",
    ),
    Bad(
        "local-cpu-not-offered",
        changed(inference, ("resource.instanceType", "local-cpu")),
        "resource.instanceType",
    ),
    Bad(
        "local-cpu-two-nodes",
        changed(inference, ("resource.instanceType", "local-cpu"), ("resource.count", 2)),
        "resource.count",
        local_cpu=True,
    ),
    Bad(
        "local-cpu-qlora",
        changed(tuning, ("resource.instanceType", "local-cpu")),
        "tuning.method",
        local_cpu=True,
    ),
    Bad("name-upper-case", changed(inference, ("metadata.name", "Workspace")), "name"),
    Bad("name-leading-dash", changed(inference, ("metadata.name", "-ws")), "name"),
    Bad("name-missing", changed(inference, ("metadata.name", None)), "name"),
    Bad(
        "image-family-windows",
        changed(inference, ("metadata.annotations", {"kaito.sh/node-image-family": "windows"})),
        "metadata.annotations[kaito.sh/node-image-family]",
    ),
    Bad("unknown-top-level-key", changed(inference, ("spec", {"x": 1})), "spec"),
]


def test_the_table_has_forty_distinct_invalid_workspaces(
    record_property: Callable[[str, object], None],
) -> None:
    ids = [b.id for b in BAD]
    assert len(ids) >= 40
    assert len(set(ids)) == len(ids)
    bodies = [json.dumps(b.make(), sort_keys=True) for b in BAD]
    assert len(set(bodies)) == len(bodies)
    assert {p.name for p in SEEDS.glob("*.yaml")} >= {
        "inference-phi-3-mini.yaml",
        "inference-phi-3-mini-adapter.yaml",
        "tuning-phi-3-mini.yaml",
        "tuning-phi-3-mini-128k-adapter.yaml",
    }
    print(f"invalid workspaces: {len(BAD)}")
    record_property("invalid_workspaces", len(BAD))


@pytest.fixture(scope="module")
async def webhooks() -> AsyncIterator[dict[bool, AiohttpClient[Any, Any]]]:
    """The watcher's AdmissionReview endpoint over HTTP, for a cluster without and with
    local-cpu."""
    clients: dict[bool, AiohttpClient[Any, Any]] = {}
    for local_cpu in (False, True):
        ctx = ValidationContext(catalog=default_catalog(), local_cpu=local_cpu)
        client: AiohttpClient[Any, Any] = AiohttpClient(TestServer(build_webhook_app(ctx)))
        await client.start_server()
        clients[local_cpu] = client
    yield clients
    for client in clients.values():
        await client.close()


def review(obj: Doc, operation: str = "CREATE", old: Doc | None = None) -> dict[str, Any]:
    request: dict[str, Any] = {
        "uid": str(uuid.uuid4()),
        "operation": operation,
        "namespace": "default",
        "name": str((obj.get("metadata") or {}).get("name", "")),
        "object": obj,
    }
    if old is not None:
        request["oldObject"] = old
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


async def admit(client: AiohttpClient[Any, Any], body: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/validate", json=body)
    assert resp.status == 200
    answer: dict[str, Any] = (await resp.json())["response"]
    assert answer["uid"] == body["request"]["uid"]
    return answer


@pytest.mark.parametrize("local_cpu", [False, True], ids=["gpu-cluster", "local-cpu-cluster"])
async def test_every_seed_is_admitted(
    webhooks: dict[bool, AiohttpClient[Any, Any]], local_cpu: bool
) -> None:
    for path in sorted(SEEDS.glob("*.yaml")):
        answer = await admit(webhooks[local_cpu], review(seed(path.name)))
        assert answer["allowed"] is True, (path.name, answer)


@pytest.mark.parametrize("bad", BAD, ids=[b.id for b in BAD])
async def test_an_invalid_workspace_is_refused_naming_the_field(
    webhooks: dict[bool, AiohttpClient[Any, Any]], bad: Bad
) -> None:
    doc = bad.make()
    answer = await admit(webhooks[bad.local_cpu], review(doc))
    assert answer["allowed"] is False
    status = answer["status"]
    assert (status["code"], status["reason"]) == (400, "BadRequest")
    # render(): "<message>: <field>" per problem, "; " between them.
    fields = [p.rsplit(": ", 1)[-1] for p in status["message"].split("; ")]
    assert bad.field in fields, status["message"]
    # The same object is refused on update too (the rules of a create still hold).
    again = await admit(webhooks[bad.local_cpu], review(doc, "UPDATE", old=copy.deepcopy(doc)))
    assert again["allowed"] is False


IMMUTABLE: list[tuple[str, Callable[[], Doc], Callable[[], Doc], str]] = [
    ("count", inference, changed(inference, ("resource.count", 2)), "resource.count"),
    (
        "instance-type",
        inference,
        changed(inference, ("resource.instanceType", "Standard_NC12s_v3")),
        "resource.instanceType",
    ),
    (
        "tuning-input-name",
        changed(tuning, ("tuning.input.name", "a")),
        changed(tuning, ("tuning.input.name", "b")),
        "tuning.input.name",
    ),
    ("tuning-to-inference", tuning, inference, "inference"),
]


@pytest.mark.parametrize(
    ("old", "new", "field"), [c[1:] for c in IMMUTABLE], ids=[c[0] for c in IMMUTABLE]
)
async def test_an_update_of_an_immutable_field_is_refused(
    webhooks: dict[bool, AiohttpClient[Any, Any]],
    old: Callable[[], Doc],
    new: Callable[[], Doc],
    field: str,
) -> None:
    answer = await admit(webhooks[False], review(new(), "UPDATE", old=old()))
    assert answer["allowed"] is False
    assert field in answer["status"]["message"]


async def test_a_body_that_is_not_an_admission_review_is_a_400(
    webhooks: dict[bool, AiohttpClient[Any, Any]],
) -> None:
    client = webhooks[False]
    resp = await client.post(
        "/validate", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    assert "not an AdmissionReview" in (await resp.json())["error"]
    # JSON that is not an object, or a request without an object: nothing to deny, no crash.
    for body in ([1, 2], {"request": "x"}, {"request": {"operation": "CREATE", "object": 3}}):
        resp = await client.post("/validate", json=body)
        assert resp.status == 200, body


# --- 3. oversized and malformed inference requests -------------------------------------------

MODEL = "tiny-poison"
MAX_BODY = 16 * 1024
CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def inference_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The transformers server around the tiny model (built offline), with a small body cap."""
    from presets.tiny import build_tiny_model  # noqa: PLC0415

    model: Path = build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
    engine: Engine = load_engine(LoadOptions(model=model, threads=1))
    try:
        app = build_app(engine, ServerOptions(served_model_name=MODEL, max_body_bytes=MAX_BODY))
        with TestClient(app) as client:
            yield client
    finally:
        engine.close()


def chunked(body: bytes, size: int = 4096) -> Iterator[bytes]:
    """A body sent with Transfer-Encoding: chunked (no Content-Length)."""
    for i in range(0, len(body), size):
        yield body[i : i + size]


@dataclass(frozen=True)
class BadRequest:
    id: str
    path: str
    body: bytes | Callable[[], Iterator[bytes]]
    status: int
    says: str  # in the error's message


def _j(value: Any) -> bytes:
    return json.dumps(value).encode()


BAD_REQUESTS: list[BadRequest] = [
    BadRequest("oversized-chat", "/chat", _j({"prompt": "x" * (MAX_BODY + 1)}), 413, "exceeds"),
    BadRequest(
        "oversized-openai",
        CHAT,
        _j({"messages": [{"role": "user", "content": "x" * MAX_BODY}]}),
        413,
        "exceeds",
    ),
    BadRequest(
        "oversized-chunked",
        "/chat",
        lambda: chunked(_j({"prompt": "x" * (4 * MAX_BODY)})),
        413,
        "exceeds",
    ),
    BadRequest("chat-not-json", "/chat", b"{prompt: hi", 422, "JSON"),
    BadRequest("chat-empty-body", "/chat", b"", 422, ""),
    BadRequest("chat-a-list", "/chat", _j(["hi"]), 422, ""),
    BadRequest("chat-prompt-a-number", "/chat", _j({"prompt": 3}), 422, "prompt"),
    BadRequest("chat-no-prompt", "/chat", _j({"generate_kwargs": {}}), 400, "prompt required"),
    BadRequest(
        "chat-unknown-kwarg",
        "/chat",
        _j({"prompt": "hi", "generate_kwargs": {"device_map": "cpu"}}),
        400,
        "unsupported generate_kwargs",
    ),
    BadRequest(
        "chat-messages-wrong-role",
        "/chat",
        _j({"messages": [{"role": "root", "content": "x"}]}),
        422,
        "messages",
    ),
    BadRequest("openai-not-json", CHAT, b'{"messages": [', 422, "JSON"),
    BadRequest("openai-missing-messages", CHAT, _j({"model": MODEL}), 422, "messages"),
    BadRequest("openai-empty-messages", CHAT, _j({"messages": []}), 422, "messages"),
    BadRequest("openai-messages-a-string", CHAT, _j({"messages": "hi"}), 422, "messages"),
    BadRequest(
        "openai-content-a-number",
        CHAT,
        _j({"messages": [{"role": "user", "content": 5}]}),
        422,
        "content",
    ),
    BadRequest(
        "openai-negative-max-tokens",
        CHAT,
        _j({"messages": USER, "max_tokens": -1}),
        422,
        "max_tokens",
    ),
    BadRequest(
        "openai-zero-max-completion-tokens",
        CHAT,
        _j({"messages": USER, "max_completion_tokens": 0}),
        422,
        "max_completion_tokens",
    ),
    BadRequest(
        "openai-max-tokens-a-string",
        CHAT,
        _j({"messages": USER, "max_tokens": "many"}),
        422,
        "max_tokens",
    ),
    BadRequest(
        "openai-temperature-too-high",
        CHAT,
        _j({"messages": USER, "temperature": 9}),
        422,
        "temperature",
    ),
    BadRequest("openai-n-two", CHAT, _j({"messages": USER, "n": 2}), 422, "n"),
    BadRequest(
        "openai-unknown-model", CHAT, _j({"model": "gpt-9", "messages": USER}), 404, "gpt-9"
    ),
    BadRequest(
        "openai-too-long-for-context",
        CHAT,
        _j({"messages": USER, "max_tokens": 100_000}),
        400,
        "maximum context length",
    ),
    BadRequest(
        "completions-unknown-model",
        "/v1/completions",
        _j({"model": "gpt-9", "prompt": "hi"}),
        404,
        "gpt-9",
    ),
    BadRequest("completions-no-prompt", "/v1/completions", _j({"max_tokens": 2}), 422, "prompt"),
    BadRequest(
        "completions-negative-max-tokens",
        "/v1/completions",
        _j({"prompt": "hi", "max_tokens": -5}),
        422,
        "max_tokens",
    ),
]


def error_text(payload: Any) -> str:
    """The message of either error shape: ``{"detail": ...}`` or OpenAI's ``{"error": ...}``."""
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        return str(payload["error"].get("message", ""))
    if isinstance(payload, dict):
        return json.dumps(payload.get("detail", ""))
    return ""


def test_bad_requests_are_counted(record_property: Callable[[str, object], None]) -> None:
    assert len({b.id for b in BAD_REQUESTS}) == len(BAD_REQUESTS)
    print(f"bad inference requests: {len(BAD_REQUESTS)}")
    record_property("bad_requests", len(BAD_REQUESTS))


@pytest.mark.parametrize("bad", BAD_REQUESTS, ids=[b.id for b in BAD_REQUESTS])
def test_a_bad_inference_request_is_refused_with_a_clear_message(
    inference_http: TestClient, bad: BadRequest
) -> None:
    content = bad.body if isinstance(bad.body, bytes) else bad.body()
    response = inference_http.post(
        bad.path, content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == bad.status, response.text
    message = error_text(response.json())
    assert message, response.text
    assert bad.says in message, message


def test_the_server_still_answers_after_the_bad_requests(inference_http: TestClient) -> None:
    for bad in BAD_REQUESTS:
        content = bad.body if isinstance(bad.body, bytes) else bad.body()
        assert inference_http.post(bad.path, content=content).status_code >= 400
    chat = inference_http.post(CHAT, json={"model": MODEL, "messages": USER, "max_tokens": 4})
    assert chat.status_code == 200, chat.text
    assert chat.json()["choices"][0]["message"]["role"] == "assistant"
    # A chunked body under the cap reaches the endpoint intact.
    body = _j({"prompt": "the capital of peru is", "generate_kwargs": {"max_new_tokens": 3}})
    kaito = inference_http.post(
        "/chat", content=chunked(body, 7), headers={"Content-Type": "application/json"}
    )
    assert kaito.status_code == 200, kaito.text
    assert kaito.json()["Result"].startswith("the capital of peru is")
    assert inference_http.get("/health").json() == {"status": "Healthy"}
