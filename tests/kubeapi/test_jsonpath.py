"""Kubernetes JSONPath for printer columns, and the Table cells kube-apiserver makes of them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from localdev.kubeapi.jsonpath import evaluate, printer_value

WORKSPACE: dict[str, Any] = {
    "apiVersion": "kaito.sh/v1beta1",
    "kind": "Workspace",
    "metadata": {
        "name": "workspace-phi-3",
        "creationTimestamp": "2026-11-21T12:00:00Z",
        "labels": {"app": "phi"},
        "annotations": {"kaito.sh/runtime": "vllm", "a.b": "dotted"},
    },
    "resource": {
        "instanceType": "Standard_NC24ads_A100_v4",
        "count": 2,
        "labelSelector": {"matchLabels": {"apps": "phi-3"}},
    },
    "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
    "spec": {
        "ratio": 0.5,
        "paused": False,
        "containers": [
            {"name": "main", "image": "img:1", "ports": [{"containerPort": 80}]},
            {"name": "sidecar", "image": "side:1"},
        ],
    },
    "status": {
        "conditions": [
            {"type": "ResourceReady", "status": "True", "observedGeneration": 2},
            {"type": "InferenceReady", "status": "False", "observedGeneration": 1},
            {"type": "WorkspaceSucceeded", "status": "Unknown"},
        ],
        "workerNodes": ["n1", "n2"],
        "note": None,
    },
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (".metadata.name", ["workspace-phi-3"]),
        (".resource.count", [2]),
        ('.status.conditions[?(@.type=="ResourceReady")].status', ["True"]),
        (".status.conditions[?(@.type=='InferenceReady')].status", ["False"]),
        (
            '.status.conditions[?(@.type != "ResourceReady")].type',
            ["InferenceReady", "WorkspaceSucceeded"],
        ),
        (".status.conditions[?(@.observedGeneration==2)].type", ["ResourceReady"]),
        (
            ".status.conditions[?(@.observedGeneration>=1)].type",
            ["ResourceReady", "InferenceReady"],
        ),
        (".status.conditions[?(@.observedGeneration!=2)].type", ["InferenceReady"]),
        ('.status.conditions[?(@.observedGeneration=="2")].type', []),
        (".status.conditions[?(@.observedGeneration)].type", ["ResourceReady", "InferenceReady"]),
        (".spec.containers[?(@.ports[0].containerPort==80)].name", ["main"]),
        (".spec.containers[0].image", ["img:1"]),
        (".spec.containers[*].name", ["main", "sidecar"]),
        (".spec.containers[-1].name", ["sidecar"]),
        (".spec.containers[0:1].name", ["main"]),
        (".spec.containers[5].name", []),
        (".spec.containers[0,1].image", ["img:1", "side:1"]),
        (".status.workerNodes[::2]", ["n1"]),
        (".status.workerNodes[*]", ["n1", "n2"]),
        (".metadata.labels.app", ["phi"]),
        (".metadata.annotations['kaito\\.sh/runtime']", ["vllm"]),
        (".metadata.annotations.kaito\\.sh/runtime", ["vllm"]),
        (".metadata.annotations['a\\.b']", ["dotted"]),
        (".metadata.annotations['a.b']", []),
        (".inference.preset.*", ["phi-3-mini-4k-instruct"]),
        (".status.note", [None]),
        (".status.note.text", []),
        (".spec.containers.name", []),
        (".missing", []),
        ("{.metadata.name}", ["workspace-phi-3"]),
        ("$.metadata.name", ["workspace-phi-3"]),
    ],
    ids=[
        "a field",
        "a number",
        "a filter on a double-quoted string",
        "a filter on a single-quoted string",
        "a not-equal filter with spaces",
        "a filter on a number",
        "an ordering filter skips elements without the field",
        "a not-equal filter skips elements without the field",
        "a string never equals a number",
        "an existence filter",
        "a filter on a nested path",
        "an index",
        "a wildcard index",
        "a negative index",
        "a slice",
        "an index past the end",
        "a union of indices",
        "a slice with a step",
        "every element of a list",
        "a label",
        "a quoted key with an escaped dot",
        "a field with an escaped dot",
        "a quoted key whose dot is escaped",
        "an unescaped dot in a quoted key splits it, as in Kubernetes",
        "a wildcard field",
        "a null value is a match",
        "nothing under a null",
        "fields do not reach into lists",
        "a missing field",
        "braces as in a template",
        "a leading dollar",
    ],
)
def test_a_path_reaches_every_matching_value_in_order(path: str, expected: list[Any]) -> None:
    assert evaluate(path, WORKSPACE) == expected


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "empty JSONPath expression"),
        ("metadata.name", "unrecognized character in action: 'm'"),
        (".status..type", r"recursive descent \(\.\.\) is not supported"),
        (".spec.containers[abc]", "invalid array index abc"),
        ('.spec.containers["main"]', 'invalid array index "main"'),
        (".spec.containers[0", "unterminated array"),
        (".status.conditions[?(@.type=='x']", "unterminated filter"),
        (".status.conditions[?(@.type=='x')", "unclosed array expect ]"),
        (".status.conditions[?(@.type=~'x')]", "unrecognized filter operator ="),
        (".status.conditions[?(@.type==Ready)]", "unrecognized identifier Ready"),
        (".status.workerNodes[::0]", "step must be > 0"),
    ],
    ids=[
        "empty",
        "no leading dot",
        "recursive descent",
        "a word as an index",
        "a double-quoted key",
        "an unclosed bracket",
        "an unclosed filter",
        "a filter without its bracket",
        "an unknown filter operator",
        "an unquoted string in a filter",
        "a zero step",
    ],
)
def test_an_invalid_path_raises_value_error_with_the_reason(path: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        evaluate(path, WORKSPACE)


@pytest.mark.parametrize(
    ("path", "column_type", "expected"),
    [
        (".metadata.name", "string", "workspace-phi-3"),
        ('.status.conditions[?(@.type=="ResourceReady")].status', "string", "True"),
        (".spec.containers[*].name", "string", "main"),
        (".resource.count", "integer", 2),
        (".resource.count", "string", "2"),
        (".resource.count", "number", 2.0),
        (".spec.ratio", "number", 0.5),
        (".spec.ratio", "integer", 0),
        (".spec.ratio", "string", "0.5"),
        (".spec.paused", "boolean", False),
        (".spec.paused", "string", "false"),
        (".resource.count", "boolean", None),
        (".spec.paused", "integer", None),
        (".metadata.name", "integer", None),
        (".status.workerNodes", "string", '["n1","n2"]'),
        (".resource.labelSelector", "string", '{"matchLabels":{"apps":"phi-3"}}'),
        (".status.note", "string", "<no value>"),
        (".status.note", "integer", None),
        (".missing", "string", None),
        (".metadata.creationTimestamp", "date", "2026-11-21T12:00:00Z"),
        (".resource.count", "date", None),
        (".metadata.name", "object", None),
    ],
    ids=[
        "a string",
        "a condition's status",
        "only the first match",
        "an integer",
        "an integer as a string",
        "an integer widens to a number",
        "a number",
        "a number truncates to an integer",
        "a number as a string",
        "a boolean",
        "a boolean as a string",
        "an integer is no boolean",
        "a boolean is no integer",
        "a string is no integer",
        "a list as compact JSON",
        "a map as compact JSON with sorted keys",
        "null in a string column",
        "null in an integer column",
        "no match",
        "a date stays a timestamp string",
        "a number is no date",
        "an unknown column type",
    ],
)
def test_a_printer_column_cell_is_what_kube_apiserver_serves(
    path: str, column_type: str, expected: Any
) -> None:
    cell = printer_value(path, WORKSPACE, column_type)
    assert (cell, type(cell)) == (expected, type(expected))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1000000.0, "1e+06"),
        (123456.0, "123456"),
        (1234567.5, "1.2345675e+06"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (-2.5, "-2.5"),
        (3.0, "3"),
        (-0.0, "-0"),
        ([1.0, 1e-7, 1e21, "<a&b>"], '[1,1e-7,1e+21,"\\u003ca\\u0026b\\u003e"]'),
        ({"b": [True, None], "a": "é"}, '{"a":"é","b":[true,null]}'),
    ],
    ids=[
        "a million uses an exponent",
        "six digits stay plain",
        "seven digits use an exponent",
        "a ten-thousandth stays plain",
        "a hundred-thousandth uses an exponent",
        "a negative number",
        "an integral float has no fraction",
        "negative zero keeps its sign",
        "floats and HTML characters in JSON as Go writes them",
        "unicode stays as it is in JSON",
    ],
)
def test_a_string_column_prints_values_as_go_does(value: Any, expected: str) -> None:
    assert printer_value(".x", {"x": value}, "string") == expected


NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=119), "119s"),
        (timedelta(minutes=2), "2m"),
        (timedelta(minutes=5, seconds=30), "5m30s"),
        (timedelta(minutes=10, seconds=30), "10m"),
        (timedelta(minutes=179), "179m"),
        (timedelta(hours=3), "3h"),
        (timedelta(hours=7, minutes=59), "7h59m"),
        (timedelta(hours=8, minutes=30), "8h"),
        (timedelta(hours=47), "47h"),
        (timedelta(days=2), "2d"),
        (timedelta(days=3, hours=4), "3d4h"),
        (timedelta(days=8, hours=4), "8d"),
        (timedelta(days=729), "729d"),
        (timedelta(days=730), "2y"),
        (timedelta(days=830), "2y100d"),
        (timedelta(days=9 * 365 + 5), "9y"),
        (timedelta(seconds=-1), "0s"),
        (timedelta(seconds=-5), "<invalid>"),
    ],
    ids=[
        "now",
        "under two minutes in seconds",
        "two minutes",
        "minutes and seconds under ten minutes",
        "minutes only from ten minutes",
        "minutes up to three hours",
        "three hours",
        "hours and minutes under eight hours",
        "hours only from eight hours",
        "hours up to two days",
        "two days",
        "days and hours under eight days",
        "days only from eight days",
        "days up to two years",
        "two years",
        "years and days under eight years",
        "years only from eight years",
        "a second in the future is now",
        "further in the future is invalid",
    ],
)
def test_a_date_column_shows_the_age_kubernetes_shows_when_given_the_time(
    age: timedelta, expected: str
) -> None:
    stamp = (NOW - age).isoformat().replace("+00:00", "Z")
    obj = {"metadata": {"creationTimestamp": stamp}}
    assert printer_value(".metadata.creationTimestamp", obj, "date", now=NOW) == expected


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2026-11-21T13:55:00+02:00", "5m"),
        ("2026-11-21T11:59:00.5Z", "59s"),
        ("", "<unknown>"),
        ("yesterday", "<invalid>"),
        ("2026-11-21", "<invalid>"),
    ],
    ids=["an offset", "fractional seconds", "empty", "not a timestamp", "a date without a time"],
)
def test_a_date_column_reads_rfc_3339_timestamps_only(stamp: str, expected: str) -> None:
    assert printer_value(".t", {"t": stamp}, "date", now=NOW) == expected


def test_printing_a_column_with_an_invalid_path_raises_value_error() -> None:
    with pytest.raises(ValueError, match="invalid array index x"):
        printer_value(".spec[x]", WORKSPACE, "string")


FINITE = st.floats(allow_nan=False, allow_infinity=False)


@given(FINITE)
def test_a_float_printed_in_a_string_column_reads_back_exactly(value: float) -> None:
    assert float(printer_value(".x", {"x": value}, "string")) == value
    in_json = float(json.loads(printer_value(".x", {"x": [value]}, "string"))[0])
    assert in_json == value


@given(st.lists(st.integers(), max_size=5), st.integers(min_value=-7, max_value=7))
def test_an_index_reaches_the_element_python_would_or_nothing(items: list[int], i: int) -> None:
    expected = [items[i]] if -len(items) <= i < len(items) else []
    assert evaluate(f".a[{i}]", {"a": items}) == expected


@given(st.dictionaries(st.from_regex(r"[A-Za-z0-9_/-]{1,8}", fullmatch=True), st.integers()))
def test_a_field_reaches_its_member_or_nothing(obj: dict[str, int]) -> None:
    for key, value in obj.items():
        assert evaluate(f".{key}", obj) == [value]
        assert evaluate(f".{key}x.{key}", obj) == []
