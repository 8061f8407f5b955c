"""Label and field selectors: parsing, matching and kube-apiserver's error wording."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from localdev.kubeapi.errors import ApiError
from localdev.kubeapi.selectors import (
    FieldRequirement,
    FieldSelector,
    LabelSelector,
    Operator,
    Requirement,
    label_selector_from_dict,
    matches_fields,
    matches_labels,
    parse_field_selector,
    parse_label_selector,
)

NAME_REGEX = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
NAME_EXAMPLES = "(e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
NAME_PART = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
    f"with an alphanumeric character {NAME_EXAMPLES}'{NAME_REGEX}')"
)
VALUE_RULE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
SUBDOMAIN_RULE = (
    "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
    "characters, '-' or '.', and must start and end with an alphanumeric character "
    "(e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)


# --- label selectors: syntax --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("app=web", "app=web"),
        ("app==web", "app==web"),
        ("app!=web", "app!=web"),
        ("tier in (frontend,backend)", "tier in (backend,frontend)"),
        ("tier notin ( a , b )", "tier notin (a,b)"),
        ("app", "app"),
        ("!app", "!app"),
        ("  b = 1 ,\ta\t", "a,b=1"),
        ("x in (foo,,baz),y,z notin ()", "x in (,baz,foo),y,z notin ()"),
        ("x in (a,)", "x in (,a)"),
        ("x in (,a)", "x in (,a)"),
        ("app=", "app="),
        ("in in (in,notin)", "in in (in,notin)"),
        ("kaito.sh/workspace=ws-1", "kaito.sh/workspace=ws-1"),
        ("gpu>2,gpu<8", "gpu>2,gpu<8"),
        ("", ""),
        ("   ", ""),
    ],
    ids=[
        "equals",
        "double equals",
        "not equals",
        "in sorts its values",
        "notin tolerates spaces",
        "a bare key means exists",
        "a bang means does not exist",
        "whitespace and tabs are skipped and keys sorted",
        "empty values in a set",
        "a trailing comma in a set is an empty value",
        "a leading comma in a set is an empty value",
        "an empty exact value",
        "in and notin are plain words as keys and values",
        "a prefixed key",
        "greater and less than",
        "the empty selector",
        "a blank selector",
    ],
)
def test_a_label_selector_parses_to_kubernetes_canonical_form(text: str, canonical: str) -> None:
    assert str(parse_label_selector(text)) == canonical


def test_a_parsed_label_selector_holds_typed_requirements_sorted_by_key() -> None:
    assert parse_label_selector("tier in (b,a),!beta,app=web") == LabelSelector(
        (
            Requirement("app", Operator.EQUALS, ("web",)),
            Requirement("beta", Operator.DOES_NOT_EXIST),
            Requirement("tier", Operator.IN, ("a", "b")),
        )
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a=b c", "found 'c', expected: ',' or 'end of string'"),
        ("=a", "found '=', expected: !, identifier, or 'end of string'"),
        ("a,", "found '', expected: identifier after ','"),
        ("a,,b", "found ',', expected: identifier after ','"),
        ("!a=b", "found '=', expected: ',' or 'end of string'"),
        ("a in x", "unable to parse requirement: found 'x' expected: '('"),
        ("a in (x", "unable to parse requirement: found '', expected: ',' or ')'"),
        ("a in (x y)", "unable to parse requirement: found 'y', expected: ',' or ')'"),
        ("a in (,,)", "unable to parse requirement: found ')', expected: ',', or identifier"),
        ("a in =", "unable to parse requirement: found '=' expected: '('"),
        ("a b", "unable to parse requirement: found 'b', expected: '=', '!=', '==', 'in', notin'"),
        ("a=(", "unable to parse requirement: found '(', expected: identifier"),
        (
            "app:monolith",
            f'unable to parse requirement: <nil>: Invalid value: "app:monolith": {NAME_PART}',
        ),
        (
            "app.kubernetes_io/name=x",
            'unable to parse requirement: <nil>: Invalid value: "app.kubernetes_io/name": '
            + SUBDOMAIN_RULE,
        ),
        (
            "a/b/c=d",
            'unable to parse requirement: <nil>: Invalid value: "a/b/c": a qualified name must '
            "consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
            f"alphanumeric character {NAME_EXAMPLES}'{NAME_REGEX}') with an optional DNS "
            "subdomain prefix and '/' (e.g. 'example.com/MyName')",
        ),
        (
            "app=-web",
            f'unable to parse requirement: values[0][app]: Invalid value: "-web": {VALUE_RULE}',
        ),
        (
            "a>x",
            'unable to parse requirement: values[0]: Invalid value: "x": '
            "for 'Gt', 'Lt' operators, the value must be an integer",
        ),
    ],
    ids=[
        "two values",
        "no key",
        "a trailing comma",
        "two commas",
        "does-not-exist with a value",
        "in without parentheses",
        "an unclosed set",
        "a set without commas",
        "a set of two commas",
        "in followed by an operator",
        "no operator",
        "a parenthesis as a value",
        "a colon in a key",
        "an underscore in a key prefix",
        "two slashes in a key",
        "a value starting with a dash",
        "gt with a word",
    ],
)
def test_an_invalid_label_selector_is_a_bad_request_worded_like_kubernetes(
    text: str, message: str
) -> None:
    with pytest.raises(ApiError) as caught:
        parse_label_selector(text)
    assert (caught.value.code, caught.value.reason, caught.value.message) == (
        400,
        "BadRequest",
        message,
    )


# --- label selectors: matching ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("app=web", {"app": "web"}, True),
        ("app=web", {"app": "db"}, False),
        ("app=web", {}, False),
        ("app!=web", {"app": "db"}, True),
        ("app!=web", {}, True),
        ("app!=web", {"app": "web"}, False),
        ("tier in (a,b)", {"tier": "b"}, True),
        ("tier in (a,b)", {}, False),
        ("tier notin (a,b)", {}, True),
        ("tier notin (a,b)", {"tier": "a"}, False),
        ("app", {"app": ""}, True),
        ("app", {"other": "x"}, False),
        ("!app", {"other": "x"}, True),
        ("!app", {"app": "x"}, False),
        ("gpu>2", {"gpu": "4"}, True),
        ("gpu>2", {"gpu": "2"}, False),
        ("gpu>2", {"gpu": "many"}, False),
        ("gpu<2", {"gpu": "-1"}, True),
        ("gpu<2", {}, False),
        ("app=web,tier=db", {"app": "web", "tier": "db"}, True),
        ("app=web,tier=db", {"app": "web"}, False),
        ("", {"anything": "x"}, True),
        ("app=", {"app": ""}, True),
    ],
    ids=[
        "equal value",
        "other value",
        "equals needs the label",
        "not equals another value",
        "not equals matches an absent label",
        "not equals the same value",
        "in the set",
        "in needs the label",
        "notin matches an absent label",
        "notin the set",
        "exists with an empty value",
        "exists without the label",
        "does not exist without the label",
        "does not exist with the label",
        "greater integer",
        "equal integer is not greater",
        "a non-integer label never compares",
        "less than a negative label",
        "less than needs the label",
        "every requirement holds",
        "one requirement fails",
        "the empty selector matches all",
        "an empty exact value matches an empty label",
    ],
)
def test_a_label_selector_matches_labels_as_kubernetes_does(
    text: str, labels: dict[str, str], expected: bool
) -> None:
    assert matches_labels(parse_label_selector(text), labels) is expected


def test_objects_without_labels_match_only_selectors_that_tolerate_absence() -> None:
    assert [
        matches_labels(parse_label_selector(t), None) for t in ("", "!a", "a!=b", "a", "a=b")
    ] == [True, True, True, False, False]


# --- label selectors: metav1.LabelSelector ------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "canonical"),
    [
        ({"matchLabels": {"b": "2", "a": "1"}}, "a=1,b=2"),
        (
            {
                "matchLabels": {"app": "web"},
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["b", "a"]},
                    {"key": "env", "operator": "NotIn", "values": ["prod"]},
                    {"key": "gpu", "operator": "Exists"},
                    {"key": "old", "operator": "DoesNotExist", "values": []},
                ],
            },
            "app=web,env notin (prod),gpu,!old,tier in (a,b)",
        ),
        ({}, ""),
        ({"matchLabels": None, "matchExpressions": None}, ""),
    ],
    ids=["match labels", "every expression operator", "empty", "explicit nulls"],
)
def test_a_metav1_label_selector_converts_to_requirements(
    selector: dict[str, Any], canonical: str
) -> None:
    assert str(label_selector_from_dict(selector)) == canonical


def test_a_nil_label_selector_matches_nothing_and_an_empty_one_everything() -> None:
    nothing, everything = label_selector_from_dict(None), label_selector_from_dict({})
    assert (matches_labels(nothing, {}), nothing.empty) == (False, False)
    assert (matches_labels(everything, {"a": "b"}), everything.empty) == (True, True)


def test_a_metav1_label_selector_matches_like_its_string_form() -> None:
    selector = label_selector_from_dict(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}],
        }
    )
    candidates = [{"app": "web"}, {"app": "web", "tier": "db"}, {"tier": "ui"}]
    assert [matches_labels(selector, c) for c in candidates] == [True, False, False]


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        (
            {"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["b"]}]},
            '"Equals" is not a valid label selector operator',
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]},
            "values: Invalid value: []string{}: for 'in', 'notin' operators, values set can't "
            "be empty",
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["b"]}]},
            'values: Invalid value: []string{"b"}: values set must be empty for exists and does '
            "not exist",
        ),
        (
            {"matchLabels": {"bad key": "x"}},
            f'key: Invalid value: "bad key": {NAME_PART}',
        ),
        (
            {"matchLabels": {"_a": "-x"}},
            f'[key: Invalid value: "_a": {NAME_PART}, '
            f'values[0][_a]: Invalid value: "-x": {VALUE_RULE}]',
        ),
        ({"matchLabels": {"a": 1}}, "label values must be strings, not 1"),
        ({"matchLabels": ["a"]}, "matchLabels must be a map and matchExpressions a list"),
    ],
    ids=[
        "unknown operator",
        "in without values",
        "exists with values",
        "invalid key",
        "several problems aggregate",
        "a number as a value",
        "labels as a list",
    ],
)
def test_an_invalid_metav1_label_selector_is_a_bad_request(
    selector: dict[str, Any], message: str
) -> None:
    with pytest.raises(ApiError) as caught:
        label_selector_from_dict(selector)
    assert (caught.value.code, caught.value.message) == (400, message)


# --- label selectors: generated -----------------------------------------------------------------

NAMES = st.from_regex(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?", fullmatch=True)
PREFIXES = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?(\.[a-z0-9]{1,5}){0,2}", fullmatch=True)
KEYS = st.one_of(NAMES, st.builds(lambda p, n: f"{p}/{n}", PREFIXES, NAMES))
VALUES = st.one_of(st.just(""), NAMES)
SPACE = st.sampled_from(["", " ", "  ", "\t"])
GAP = st.sampled_from([" ", "  ", "\t"])


@st.composite
def requirements(draw: st.DrawFn) -> tuple[str, Requirement]:
    """A requirement written out with arbitrary spacing, and what it must parse to."""
    key, op = draw(KEYS), draw(st.sampled_from(list(Operator)))
    s1, s2 = draw(SPACE), draw(SPACE)
    if op is Operator.EXISTS:
        return key, Requirement(key, op)
    if op is Operator.DOES_NOT_EXIST:
        return f"!{s1}{key}", Requirement(key, op)
    if op in (Operator.IN, Operator.NOT_IN):
        values = draw(st.lists(NAMES, min_size=1, max_size=4))
        text = f"{key}{draw(GAP)}{op}{s1}({s2}{f'{s1},{s2}'.join(values)})"
        return text, Requirement(key, op, tuple(sorted(set(values))))
    if op in (Operator.GREATER_THAN, Operator.LESS_THAN):
        number = str(draw(st.integers(min_value=0, max_value=10**6)))
        symbol = ">" if op is Operator.GREATER_THAN else "<"
        return f"{key}{s1}{symbol}{s2}{number}", Requirement(key, op, (number,))
    value = draw(VALUES)
    return f"{key}{s1}{op}{s2}{value}", Requirement(key, op, (value,))


@given(st.lists(requirements(), max_size=5), SPACE)
def test_generated_valid_label_selectors_parse_and_round_trip(
    written: list[tuple[str, Requirement]], space: str
) -> None:
    text = f"{space},{space}".join(t for t, _ in written)
    expected = LabelSelector(tuple(sorted((r for _, r in written), key=lambda r: r.key)))
    parsed = parse_label_selector(text)
    assert parsed == expected
    assert parse_label_selector(str(parsed)) == expected


# --- field selectors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("metadata.name=x", [("metadata.name", "=", "x")]),
        ("metadata.namespace==y", [("metadata.namespace", "==", "y")]),
        ("status.phase!=Running", [("status.phase", "!=", "Running")]),
        (
            "spec.nodeName=,involvedObject.uid=3f1c",
            [("involvedObject.uid", "=", "3f1c"), ("spec.nodeName", "=", "")],
        ),
        ("metadata.name=a\\,b\\=c\\\\d", [("metadata.name", "=", "a,b=c\\d")]),
        ("metadata.name=a!b", [("metadata.name", "=", "a!b")]),
        (" metadata.name = x ", [("metadata.name", "=", "x")]),
        ("", []),
        ("metadata.name=x,", [("metadata.name", "=", "x")]),
    ],
    ids=[
        "equals",
        "double equals",
        "not equals",
        "several terms, sorted",
        "escaped comma, equals and backslash",
        "a bang inside a value",
        "spaces around a term",
        "empty",
        "a trailing comma",
    ],
)
def test_a_field_selector_parses_into_terms(
    text: str, expected: list[tuple[str, str, str]]
) -> None:
    parsed = parse_field_selector(text)
    assert [(r.field, r.operator, r.value) for r in parsed.requirements] == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "status.phase>Running",
            "invalid selector: 'status.phase>Running'; can't understand 'status.phase>Running'",
        ),
        ("metadata.name", "invalid selector: 'metadata.name'; can't understand 'metadata.name'"),
        ("a=x,b in (y)", "invalid selector: 'a=x,b in (y)'; can't understand 'b in (y)'"),
        ("metadata.name=a=b", "invalid field selector: unescaped character in value: 61"),
        ("metadata.name=a\\b", "invalid field selector: invalid escape sequence: \\b"),
        ("metadata.name=a\\", "invalid field selector: invalid escape sequence: \\"),
    ],
    ids=[
        "greater than",
        "no operator",
        "set syntax",
        "an unescaped equals sign in a value",
        "an unknown escape",
        "a trailing backslash",
    ],
)
def test_an_invalid_field_selector_is_a_bad_request(text: str, message: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_field_selector(text)
    assert (caught.value.code, caught.value.reason, caught.value.message) == (
        400,
        "BadRequest",
        message,
    )


POD = {
    "metadata": {"name": "ws-0", "namespace": "default", "labels": {"app": "ws"}},
    "spec": {"hostNetwork": False, "priority": 0, "containers": [{"name": "main"}]},
    "status": {"phase": "Pending", "podIP": None},
}
EVENT = {"involvedObject": {"kind": "Pod", "name": "ws-0", "uid": "3f1c"}, "type": "Warning"}


@pytest.mark.parametrize(
    ("text", "obj", "expected"),
    [
        ("metadata.name=ws-0", POD, True),
        ("metadata.name=ws-1", POD, False),
        ("metadata.namespace==default,status.phase!=Running", POD, True),
        ("status.phase!=Pending", POD, False),
        ("spec.nodeName=", POD, True),
        ("spec.nodeName!=", POD, False),
        ("spec.nodeName=node-a", POD, False),
        ("status.podIP=", POD, True),
        ("spec.hostNetwork=false", POD, True),
        ("spec.priority=0", POD, True),
        ("metadata.labels.app=ws", POD, True),
        ("spec.containers.name=main", POD, False),
        ("involvedObject.uid=3f1c,involvedObject.kind=Pod", EVENT, True),
        ("involvedObject.name=other", EVENT, False),
        ("", EVENT, True),
    ],
    ids=[
        "name equals",
        "name differs",
        "namespace and phase",
        "phase not equal fails",
        "an unscheduled pod has an empty node name",
        "an unscheduled pod is not on some node",
        "an unscheduled pod is not on a named node",
        "a null field compares as empty",
        "booleans compare as Go prints them",
        "numbers compare as Go prints them",
        "any dotted path is looked up",
        "paths do not go through lists",
        "event involved object",
        "event involved object differs",
        "the empty selector matches all",
    ],
)
def test_a_field_selector_matches_fields_looked_up_by_dotted_path(
    text: str, obj: dict[str, Any], expected: bool
) -> None:
    assert matches_fields(parse_field_selector(text), obj) is expected


VALUE_TEXT = st.text(alphabet=st.sampled_from("ab-.,=\\!/ "), max_size=12).filter(
    lambda v: v == v.strip()
)


@given(VALUE_TEXT)
def test_any_field_value_survives_escaping_and_parsing(value: str) -> None:
    selector = FieldSelector((FieldRequirement("metadata.name", "=", value),))
    parsed = parse_field_selector(str(selector))
    assert parsed == selector
    assert matches_fields(parsed, {"metadata": {"name": value}})
