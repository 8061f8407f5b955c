"""Structural-schema pruning, defaulting and validation of custom resources, with the messages
kube-apiserver gives for the same objects."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from localdev.kubeapi.errors import FieldError
from localdev.kubeapi.schema import apply_defaults, prune, validate

INVALID = "FieldValueInvalid"
TYPE_INVALID = "FieldValueTypeInvalid"
REQUIRED = "FieldValueRequired"
NOT_SUPPORTED = "FieldValueNotSupported"
TOO_LONG = "FieldValueTooLong"
TOO_MANY = "FieldValueTooMany"
FORBIDDEN = "FieldValueForbidden"
DUPLICATE = "FieldValueDuplicate"

RULES_NOT_CHECKED = FieldError(
    "",
    INVALID,
    'Invalid value: "null": some validation rules were not checked because the object was '
    "invalid; correct the existing errors to complete validation",
)


def field_schema(prop: dict[str, Any], *, required: bool = False) -> dict[str, Any]:
    """A resource whose `spec.f` has the given schema."""
    spec: dict[str, Any] = {"type": "object", "properties": {"f": prop}}
    if required:
        spec["required"] = ["f"]
    return {"type": "object", "properties": {"spec": spec}}


def invalid(field: str, message: str) -> FieldError:
    return FieldError(field, INVALID, message)


def type_invalid(field: str, message: str) -> FieldError:
    return FieldError(field, TYPE_INVALID, message)


# --- OpenAPI keywords ---------------------------------------------------------------------------

KEYWORD_CASES: list[tuple[str, dict[str, Any], Any, list[FieldError]]] = [
    (
        "integer-given-string",
        {"type": "integer"},
        "string",
        [
            type_invalid(
                "spec.f",
                'Invalid value: "string": spec.f in body must be of type integer: "string"',
            )
        ],
    ),
    (
        "integer-given-boolean",
        {"type": "integer"},
        True,
        [
            type_invalid(
                "spec.f",
                'Invalid value: "boolean": spec.f in body must be of type integer: "boolean"',
            )
        ],
    ),
    (
        "integer-given-fraction",
        {"type": "integer"},
        1.5,
        [
            type_invalid(
                "spec.f",
                'Invalid value: "number": spec.f in body must be of type integer: "number"',
            )
        ],
    ),
    ("integer-given-whole-float", {"type": "integer"}, 2.0, []),
    ("number-given-integer", {"type": "number"}, 3, []),
    ("number-given-float", {"type": "number"}, 0.25, []),
    (
        "boolean-given-string",
        {"type": "boolean"},
        "true",
        [
            type_invalid(
                "spec.f",
                'Invalid value: "string": spec.f in body must be of type boolean: "string"',
            )
        ],
    ),
    (
        "string-given-integer",
        {"type": "string", "maxLength": 1},
        12,
        [
            type_invalid(
                "spec.f",
                'Invalid value: "integer": spec.f in body must be of type string: "integer"',
            )
        ],
    ),
    (
        "object-given-array",
        {"type": "object"},
        [],
        [
            type_invalid(
                "spec.f", 'Invalid value: "array": spec.f in body must be of type object: "array"'
            )
        ],
    ),
    (
        "array-given-object",
        {"type": "array", "items": {"type": "string"}},
        {},
        [
            type_invalid(
                "spec.f", 'Invalid value: "object": spec.f in body must be of type array: "object"'
            )
        ],
    ),
    (
        "null-not-nullable",
        {"type": "string"},
        None,
        [
            type_invalid(
                "spec.f", 'Invalid value: "null": spec.f in body must be of type string: "null"'
            )
        ],
    ),
    ("null-nullable", {"type": "string", "nullable": True}, None, []),
    (
        "enum-string",
        {"type": "string", "enum": ["lora", "qlora"]},
        "dora",
        [
            FieldError(
                "spec.f",
                NOT_SUPPORTED,
                'Unsupported value: "dora": supported values: "lora", "qlora"',
            )
        ],
    ),
    (
        "enum-integer",
        {"type": "integer", "enum": [1, 2]},
        3,
        [FieldError("spec.f", NOT_SUPPORTED, 'Unsupported value: 3: supported values: "1", "2"')],
    ),
    ("enum-member", {"type": "string", "enum": ["lora", "qlora"]}, "qlora", []),
    (
        "minimum",
        {"type": "integer", "minimum": 1},
        0,
        [
            invalid(
                "spec.f", "Invalid value: 0: spec.f in body should be greater than or equal to 1"
            )
        ],
    ),
    ("minimum-met", {"type": "integer", "minimum": 1}, 1, []),
    (
        "exclusive-minimum",
        {"type": "integer", "minimum": 1, "exclusiveMinimum": True},
        1,
        [invalid("spec.f", "Invalid value: 1: spec.f in body should be greater than 1")],
    ),
    (
        "maximum",
        {"type": "integer", "maximum": 10},
        11,
        [invalid("spec.f", "Invalid value: 11: spec.f in body should be less than or equal to 10")],
    ),
    (
        "exclusive-maximum",
        {"type": "integer", "maximum": 10, "exclusiveMaximum": True},
        10,
        [invalid("spec.f", "Invalid value: 10: spec.f in body should be less than 10")],
    ),
    (
        "minimum-of-a-float",
        {"type": "number", "minimum": 0.5},
        0.25,
        [
            invalid(
                "spec.f",
                "Invalid value: 0.25: spec.f in body should be greater than or equal to 0.5",
            )
        ],
    ),
    (
        "multiple-of",
        {"type": "integer", "multipleOf": 5},
        7,
        [invalid("spec.f", "Invalid value: 7: spec.f in body should be a multiple of 5")],
    ),
    (
        "min-length",
        {"type": "string", "minLength": 3},
        "ab",
        [invalid("spec.f", 'Invalid value: "ab": spec.f in body should be at least 3 chars long')],
    ),
    (
        "max-length",
        {"type": "string", "maxLength": 3},
        "abcd",
        [FieldError("spec.f", TOO_LONG, "Too long: may not be more than 3 bytes")],
    ),
    ("max-length-counts-characters", {"type": "string", "maxLength": 3}, "äöü", []),
    (
        "pattern",
        {"type": "string", "pattern": "^[a-z0-9-]+$"},
        "Bad_Name",
        [
            invalid(
                "spec.f", "Invalid value: \"Bad_Name\": spec.f in body should match '^[a-z0-9-]+$'"
            )
        ],
    ),
    ("pattern-searches", {"type": "string", "pattern": "[0-9]"}, "abc1def", []),
    (
        "min-items",
        {"type": "array", "minItems": 1, "items": {"type": "string"}},
        [],
        [invalid("spec.f", "Invalid value: 0: spec.f in body should have at least 1 items")],
    ),
    (
        "max-items",
        {"type": "array", "maxItems": 2, "items": {"type": "string"}},
        ["a", "b", "c"],
        [FieldError("spec.f", TOO_MANY, "Too many: 3: must have at most 2 items")],
    ),
    (
        "unique-items",
        {"type": "array", "uniqueItems": True, "items": {"type": "object"}},
        [{"a": 1}, {"a": 1}],
        [invalid("spec.f", 'Invalid value: "": spec.f in body shouldn\'t contain duplicates')],
    ),
    ("unique-items-tell-true-from-one", {"type": "array", "uniqueItems": True}, [1, True], []),
    (
        "min-properties",
        {"type": "object", "minProperties": 1},
        {},
        [invalid("spec.f", "Invalid value: 0: spec.f in body should have at least 1 properties")],
    ),
    (
        "max-properties",
        {"type": "object", "maxProperties": 1, "additionalProperties": {"type": "string"}},
        {"a": "x", "b": "y"},
        [FieldError("spec.f", TOO_MANY, "Too many: 2: must have at most 1 item")],
    ),
    (
        "format-date-time",
        {"type": "string", "format": "date-time"},
        "yesterday",
        [
            type_invalid(
                "spec.f",
                'Invalid value: "yesterday": spec.f in body must be of type date-time: "yesterday"',
            )
        ],
    ),
    ("format-date-time-met", {"type": "string", "format": "date-time"}, "2024-05-01T10:00:00Z", []),
    (
        "format-byte",
        {"type": "string", "format": "byte"},
        "not base64!",
        [
            type_invalid(
                "spec.f",
                'Invalid value: "not base64!": spec.f in body must be of type byte: "not base64!"',
            )
        ],
    ),
    ("format-byte-met", {"type": "string", "format": "byte"}, "aGVsbG8=", []),
    ("format-int32", {"type": "integer", "format": "int32"}, 7, []),
    (
        "format-int32-given-string",
        {"type": "integer", "format": "int32"},
        "7",
        [
            type_invalid(
                "spec.f",
                'Invalid value: "string": spec.f in body must be of type integer: "string"',
            )
        ],
    ),
    ("format-int64", {"type": "integer", "format": "int64"}, 2**40, []),
    ("format-unknown-is-lenient", {"type": "string", "format": "k8s-short-name"}, "anything", []),
    (
        "items",
        {"type": "array", "items": {"type": "string"}},
        ["a", 2],
        [
            type_invalid(
                "spec.f[1]",
                'Invalid value: "integer": spec.f[1] in body must be of type string: "integer"',
            )
        ],
    ),
    (
        "properties",
        {"type": "object", "properties": {"g": {"type": "integer", "minimum": 0}}},
        {"g": -1},
        [
            invalid(
                "spec.f.g",
                "Invalid value: -1: spec.f.g in body should be greater than or equal to 0",
            )
        ],
    ),
    (
        "required",
        {"type": "object", "required": ["g"], "properties": {"g": {"type": "string"}}},
        {},
        [FieldError("spec.f.g", REQUIRED, "Required value")],
    ),
    (
        "additional-properties-schema",
        {"type": "object", "additionalProperties": {"type": "string"}},
        {"tier": 3},
        [
            type_invalid(
                "spec.f.tier",
                'Invalid value: "integer": spec.f.tier in body must be of type string: "integer"',
            )
        ],
    ),
    (
        "additional-properties-dotted-key",
        {"type": "object", "additionalProperties": {"type": "string"}},
        {"app.kubernetes.io/name": 3},
        [
            type_invalid(
                "spec.f[app.kubernetes.io/name]",
                'Invalid value: "integer": spec.f[app.kubernetes.io/name] in body must be of type '
                'string: "integer"',
            )
        ],
    ),
    (
        "additional-properties-false",
        {"type": "object", "properties": {"g": {"type": "string"}}, "additionalProperties": False},
        {"g": "ok", "x": 1},
        [invalid("spec.f", 'Invalid value: "x": spec.f.x in body is a forbidden property')],
    ),
    ("int-or-string-given-integer", {"x-kubernetes-int-or-string": True}, 5, []),
    ("int-or-string-given-string", {"x-kubernetes-int-or-string": True}, "50%", []),
    (
        "int-or-string-given-boolean",
        {"x-kubernetes-int-or-string": True},
        True,
        [
            type_invalid(
                "spec.f",
                'Invalid value: "boolean": spec.f in body must be of type integer,string: '
                '"boolean"',
            )
        ],
    ),
    (
        "preserve-unknown-fields",
        {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        {"anything": {"goes": [1, "two"]}},
        [],
    ),
    (
        "embedded-resource",
        {
            "type": "object",
            "x-kubernetes-embedded-resource": True,
            "x-kubernetes-preserve-unknown-fields": True,
        },
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}},
        [],
    ),
    (
        "all-of",
        {"type": "integer", "allOf": [{"minimum": 1}, {"maximum": 5}]},
        7,
        [
            invalid("spec.f", "Invalid value: 7: spec.f in body should be less than or equal to 5"),
            invalid("", 'Invalid value: "": "spec.f" must validate all the schemas (allOf)'),
        ],
    ),
    ("any-of-met", {"type": "integer", "anyOf": [{"maximum": 1}, {"minimum": 5}]}, 7, []),
    (
        "any-of",
        {"type": "integer", "anyOf": [{"maximum": 1}, {"minimum": 5}]},
        3,
        [
            invalid("", 'Invalid value: "": "spec.f" must validate at least one schema (anyOf)'),
            invalid("spec.f", "Invalid value: 3: spec.f in body should be less than or equal to 1"),
        ],
    ),
    (
        "one-of",
        {"type": "integer", "oneOf": [{"minimum": 1}, {"maximum": 5}]},
        3,
        [
            invalid(
                "",
                'Invalid value: "": "spec.f" must validate one and only one schema (oneOf). '
                "Found 2 valid alternatives",
            )
        ],
    ),
    ("one-of-met", {"type": "integer", "oneOf": [{"minimum": 1}, {"maximum": 0}]}, 3, []),
    (
        "not",
        {"type": "string", "not": {"enum": ["latest"]}},
        "latest",
        [invalid("", 'Invalid value: "": "spec.f" must not validate the schema (not)')],
    ),
]


@pytest.mark.parametrize(
    ("prop", "value", "expected"),
    [case[1:] for case in KEYWORD_CASES],
    ids=[case[0] for case in KEYWORD_CASES],
)
def test_each_keyword_gives_the_api_servers_error(
    prop: dict[str, Any], value: Any, expected: list[FieldError]
) -> None:
    assert validate(field_schema(prop), {"spec": {"f": value}}) == expected


def test_a_missing_required_field_is_reported_at_its_own_path() -> None:
    schema = field_schema({"type": "string"}, required=True)
    assert validate(schema, {"spec": {}}) == [FieldError("spec.f", REQUIRED, "Required value")]


def test_every_problem_is_collected_not_just_the_first() -> None:
    schema = {
        "type": "object",
        "properties": {
            "resource": {
                "type": "object",
                "required": ["instanceType"],
                "properties": {
                    "count": {"type": "integer", "minimum": 1},
                    "name": {"type": "string", "maxLength": 5, "pattern": "^[a-z]+$"},
                    "instanceType": {"type": "string"},
                },
            },
        },
    }
    obj = {"resource": {"count": 0, "name": "Bad_Name"}}
    assert validate(schema, obj) == [
        invalid(
            "resource.count",
            "Invalid value: 0: resource.count in body should be greater than or equal to 1",
        ),
        FieldError("resource.name", TOO_LONG, "Too long: may not be more than 5 bytes"),
        invalid(
            "resource.name",
            "Invalid value: \"Bad_Name\": resource.name in body should match '^[a-z]+$'",
        ),
        FieldError("resource.instanceType", REQUIRED, "Required value"),
    ]


# --- defaulting ---------------------------------------------------------------------------------

COUNT_DEFAULT = {"type": "integer", "default": 1}

DEFAULT_CASES: list[tuple[str, dict[str, Any], Any, Any]] = [
    (
        "absent-field",
        {"type": "object", "properties": {"count": COUNT_DEFAULT}},
        {},
        {"count": 1},
    ),
    (
        "present-field-kept",
        {"type": "object", "properties": {"count": COUNT_DEFAULT}},
        {"count": 4},
        {"count": 4},
    ),
    (
        "null-non-nullable-field",
        {"type": "object", "properties": {"count": COUNT_DEFAULT}},
        {"count": None},
        {"count": 1},
    ),
    (
        "null-nullable-field-kept",
        {"type": "object", "properties": {"count": {**COUNT_DEFAULT, "nullable": True}}},
        {"count": None},
        {"count": None},
    ),
    (
        "nested-in-existing-object",
        {
            "type": "object",
            "properties": {"resource": {"type": "object", "properties": {"count": COUNT_DEFAULT}}},
        },
        {"resource": {}},
        {"resource": {"count": 1}},
    ),
    (
        "absent-object-without-default-stays-absent",
        {
            "type": "object",
            "properties": {"resource": {"type": "object", "properties": {"count": COUNT_DEFAULT}}},
        },
        {},
        {},
    ),
    (
        "defaulted-object-defaulted-again",
        {
            "type": "object",
            "properties": {
                "resource": {
                    "type": "object",
                    "default": {"instanceType": "Standard_NC6"},
                    "properties": {"count": COUNT_DEFAULT, "instanceType": {"type": "string"}},
                }
            },
        },
        {},
        {"resource": {"instanceType": "Standard_NC6", "count": 1}},
    ),
    (
        "array-items",
        {
            "type": "object",
            "properties": {
                "ports": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "port": {"type": "integer"},
                            "protocol": {"type": "string", "default": "TCP"},
                        },
                    },
                }
            },
        },
        {"ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]},
        {"ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]},
    ),
    (
        "additional-properties-values",
        {
            "type": "object",
            "properties": {
                "adapters": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "properties": {"strength": {"type": "string", "default": "1.0"}},
                    },
                }
            },
        },
        {"adapters": {"a": {}, "b": {"strength": "0.5"}}},
        {"adapters": {"a": {"strength": "1.0"}, "b": {"strength": "0.5"}}},
    ),
]


@pytest.mark.parametrize(
    ("schema", "obj", "expected"),
    [case[1:] for case in DEFAULT_CASES],
    ids=[case[0] for case in DEFAULT_CASES],
)
def test_defaults_fill_in_what_is_absent(schema: dict[str, Any], obj: Any, expected: Any) -> None:
    assert apply_defaults(schema, obj) == expected


def test_defaulting_leaves_the_input_and_the_schema_untouched() -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"tags": {"type": "array", "default": ["a"]}},
    }
    obj: dict[str, Any] = {}
    first = apply_defaults(schema, obj)
    first["tags"].append("b")
    assert obj == {}
    assert schema["properties"]["tags"]["default"] == ["a"]
    assert apply_defaults(schema, obj) == {"tags": ["a"]}


# --- pruning ------------------------------------------------------------------------------------

PRUNE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "count": {"type": "integer"},
                "list": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"a": {"type": "string"}}},
                },
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "config": {
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": True,
                    "properties": {
                        "known": {"type": "object", "properties": {"x": {"type": "string"}}}
                    },
                },
                "anything": {"type": "object", "additionalProperties": True},
                "template": {
                    "type": "object",
                    "x-kubernetes-embedded-resource": True,
                    "properties": {
                        "data": {"type": "object", "additionalProperties": {"type": "string"}}
                    },
                },
            },
        },
    },
}

PRUNE_CASES: list[tuple[str, Any, Any, list[str]]] = [
    (
        "unknown-top-level-field",
        {"apiVersion": "v1", "kind": "W", "metadata": {"name": "w", "odd": 1}, "extra": 1},
        {"apiVersion": "v1", "kind": "W", "metadata": {"name": "w", "odd": 1}},
        ["extra"],
    ),
    (
        "unknown-nested-field",
        {"spec": {"name": "a", "colour": "red"}},
        {"spec": {"name": "a"}},
        ["spec.colour"],
    ),
    (
        "unknown-field-in-array-item",
        {"spec": {"list": [{"a": "x"}, {"a": "y", "b": 1}]}},
        {"spec": {"list": [{"a": "x"}, {"a": "y"}]}},
        ["spec.list[1].b"],
    ),
    (
        "additional-properties-keys-kept",
        {"spec": {"labels": {"app.kubernetes.io/name": "x", "tier": "web"}}},
        {"spec": {"labels": {"app.kubernetes.io/name": "x", "tier": "web"}}},
        [],
    ),
    (
        "additional-properties-true",
        {"spec": {"anything": {"deep": {"er": 1}}}},
        {"spec": {"anything": {"deep": {"er": 1}}}},
        [],
    ),
    (
        "preserve-unknown-fields",
        {"spec": {"config": {"free": {"form": [1]}, "known": {"x": "1", "y": "2"}}}},
        {"spec": {"config": {"free": {"form": [1]}, "known": {"x": "1"}}}},
        ["spec.config.known.y"],
    ),
    (
        "embedded-resource-keeps-its-type-and-metadata",
        {
            "spec": {
                "template": {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "c"},
                    "data": {},
                    "x": 1,
                }
            }
        },
        {
            "spec": {
                "template": {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "c"},
                    "data": {},
                }
            }
        },
        ["spec.template.x"],
    ),
    (
        "null-in-non-nullable-field-dropped-silently",
        {"spec": {"name": None, "count": 2}},
        {"spec": {"count": 2}},
        [],
    ),
]


@pytest.mark.parametrize(
    ("obj", "expected", "removed"),
    [case[1:] for case in PRUNE_CASES],
    ids=[case[0] for case in PRUNE_CASES],
)
def test_pruning_drops_undeclared_fields_and_lists_them(
    obj: Any, expected: Any, removed: list[str]
) -> None:
    assert prune(PRUNE_SCHEMA, obj) == (expected, removed)


def test_pruning_leaves_the_input_untouched() -> None:
    obj = {"spec": {"name": "a", "colour": "red"}}
    before = copy.deepcopy(obj)
    prune(PRUNE_SCHEMA, obj)
    assert obj == before


# --- CEL rules ----------------------------------------------------------------------------------


def ruled(rule: dict[str, Any]) -> dict[str, Any]:
    """A resource whose `spec` holds one x-kubernetes-validations rule."""
    return {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "x-kubernetes-validations": [rule],
                "properties": {
                    "replicas": {"type": "integer"},
                    "maxReplicas": {"type": "integer"},
                    "name": {"type": "string"},
                    "ratio": {"type": "number"},
                },
            }
        },
    }


REPLICAS_RULE = "self.replicas <= self.maxReplicas"
TOO_MANY_REPLICAS = {"spec": {"replicas": 5, "maxReplicas": 3}}

CEL_CASES: list[tuple[str, dict[str, Any], Any, Any, list[FieldError]]] = [
    (
        "passing-rule",
        {"rule": REPLICAS_RULE},
        {"spec": {"replicas": 1, "maxReplicas": 3}},
        None,
        [],
    ),
    (
        "failing-rule-without-message",
        {"rule": REPLICAS_RULE},
        TOO_MANY_REPLICAS,
        None,
        [
            invalid(
                "spec", 'Invalid value: "object": failed rule: self.replicas <= self.maxReplicas'
            )
        ],
    ),
    (
        "message",
        {"rule": REPLICAS_RULE, "message": "replicas must not exceed maxReplicas"},
        TOO_MANY_REPLICAS,
        None,
        [invalid("spec", 'Invalid value: "object": replicas must not exceed maxReplicas')],
    ),
    (
        "message-expression",
        {
            "rule": REPLICAS_RULE,
            "message": "static",
            "messageExpression": (
                "'replicas ' + string(self.replicas) + ' exceeds ' + string(self.maxReplicas)"
            ),
        },
        TOO_MANY_REPLICAS,
        None,
        [invalid("spec", 'Invalid value: "object": replicas 5 exceeds 3')],
    ),
    (
        "message-expression-error-falls-back-to-message",
        {"rule": REPLICAS_RULE, "message": "static", "messageExpression": "self.missing"},
        TOO_MANY_REPLICAS,
        None,
        [invalid("spec", 'Invalid value: "object": static')],
    ),
    (
        "field-path",
        {"rule": REPLICAS_RULE, "message": "too many", "fieldPath": ".replicas"},
        TOO_MANY_REPLICAS,
        None,
        [invalid("spec.replicas", 'Invalid value: "object": too many')],
    ),
    (
        "reason-forbidden",
        {"rule": REPLICAS_RULE, "message": "too many", "reason": FORBIDDEN},
        TOO_MANY_REPLICAS,
        None,
        [FieldError("spec", FORBIDDEN, "Forbidden: too many")],
    ),
    (
        "reason-required",
        {"rule": "has(self.name)", "message": "name is needed", "reason": REQUIRED},
        {"spec": {}},
        None,
        [FieldError("spec", REQUIRED, "Required value: name is needed")],
    ),
    (
        "reason-duplicate",
        {"rule": "false", "reason": DUPLICATE},
        {"spec": {}},
        None,
        [FieldError("spec", DUPLICATE, 'Duplicate value: "object"')],
    ),
    (
        "transition-rule-skipped-on-create",
        {"rule": "self.name == oldSelf.name", "message": "name is immutable"},
        {"spec": {"name": "b"}},
        None,
        [],
    ),
    (
        "transition-rule-applied-on-update",
        {"rule": "self.name == oldSelf.name", "message": "name is immutable"},
        {"spec": {"name": "b"}},
        {"spec": {"name": "a"}},
        [invalid("spec", 'Invalid value: "object": name is immutable')],
    ),
    (
        "transition-rule-met-on-update",
        {"rule": "self.name == oldSelf.name", "message": "name is immutable"},
        {"spec": {"name": "a", "replicas": 2}},
        {"spec": {"name": "a", "replicas": 1}},
        [],
    ),
    (
        "transition-rule-skipped-when-old-value-is-absent",
        {"rule": "self.name == oldSelf.name", "message": "name is immutable"},
        {"spec": {"name": "b"}},
        {"other": {}},
        [],
    ),
    (
        "ratcheting-an-unchanged-value-is-not-checked-again",
        {"rule": "self.replicas <= 3", "message": "too many"},
        {"spec": {"replicas": 5}},
        {"spec": {"replicas": 5}},
        [],
    ),
    (
        "ratcheting-a-changed-value-is-checked",
        {"rule": "self.replicas <= 3", "message": "too many"},
        {"spec": {"replicas": 5}},
        {"spec": {"replicas": 4}},
        [invalid("spec", 'Invalid value: "object": too many')],
    ),
    (
        "ratcheting-leaves-transition-rules-alone",
        {"rule": "self.replicas > oldSelf.replicas", "message": "must grow"},
        {"spec": {"replicas": 5}},
        {"spec": {"replicas": 5}},
        [invalid("spec", 'Invalid value: "object": must grow')],
    ),
    (
        "optional-old-self-evaluated-on-create",
        {
            "rule": "!oldSelf.hasValue() || self.replicas >= oldSelf.value().replicas",
            "optionalOldSelf": True,
            "message": "no scaling down",
        },
        {"spec": {"replicas": 0}},
        None,
        [],
    ),
    (
        "optional-old-self-on-update",
        {
            "rule": "!oldSelf.hasValue() || self.replicas >= oldSelf.value().replicas",
            "optionalOldSelf": True,
            "message": "no scaling down",
        },
        {"spec": {"replicas": 1}},
        {"spec": {"replicas": 2}},
        [invalid("spec", 'Invalid value: "object": no scaling down')],
    ),
    (
        "evaluation-error-no-such-key",
        {"rule": REPLICAS_RULE, "message": "too many"},
        {"spec": {"replicas": 5}},
        None,
        [
            invalid(
                "spec",
                'Invalid value: "object": no such key: maxReplicas evaluating rule: too many',
            )
        ],
    ),
    (
        "evaluation-error-no-such-overload",
        {"rule": "self.name + 1 == 'a'"},
        {"spec": {"name": "a"}},
        None,
        [
            invalid(
                "spec",
                "Invalid value: \"object\": 'no such overload': call arguments did not match a "
                "supported operator, function or macro signature for rule: self.name + 1 == 'a'",
            )
        ],
    ),
    (
        "evaluation-error-division-by-zero",
        {"rule": "self.replicas / 0 == 1"},
        {"spec": {"replicas": 1}},
        None,
        [
            invalid(
                "spec",
                'Invalid value: "object": division by zero evaluating rule: self.replicas / 0 == 1',
            )
        ],
    ),
    (
        "numbers-are-doubles",
        {"rule": "self.ratio + 0.5 > 1.0"},
        {"spec": {"ratio": 1}},
        None,
        [],
    ),
    (
        "kubernetes-string-library",
        {"rule": "self.name.lowerAscii() == self.name", "message": "lower case only"},
        {"spec": {"name": "Abc"}},
        None,
        [invalid("spec", 'Invalid value: "object": lower case only')],
    ),
]


@pytest.mark.parametrize(
    ("rule", "obj", "old", "expected"),
    [case[1:] for case in CEL_CASES],
    ids=[case[0] for case in CEL_CASES],
)
def test_cel_rules_report_like_the_api_server(
    rule: dict[str, Any], obj: Any, old: Any, expected: list[FieldError]
) -> None:
    assert validate(ruled(rule), obj, old) == expected


def test_a_rule_that_does_not_parse_is_reported_not_raised() -> None:
    errors = validate(ruled({"rule": "self.replicas >"}), {"spec": {"replicas": 1}})
    assert errors == [
        invalid(
            "spec",
            'Invalid value: "object": rule compile error: compilation failed: ERROR: <input>:1:16: '
            "Syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', "
            "'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}",
        )
    ]


def test_rules_on_list_items_carry_the_item_index() -> None:
    schema = {
        "type": "object",
        "properties": {
            "ports": {
                "type": "array",
                "items": {
                    "type": "integer",
                    "x-kubernetes-validations": [
                        {"rule": "self > 1024", "message": "use an unprivileged port"}
                    ],
                },
            }
        },
    }
    assert validate(schema, {"ports": [8080, 80]}) == [
        invalid("ports[1]", 'Invalid value: "integer": use an unprivileged port'),
    ]


def test_transition_rules_on_map_lists_compare_items_with_the_same_key() -> None:
    item = {
        "type": "object",
        "x-kubernetes-validations": [
            {"rule": "self.size >= oldSelf.size", "message": "volumes only grow"}
        ],
        "properties": {"name": {"type": "string"}, "size": {"type": "integer"}},
    }
    schema = {
        "type": "object",
        "properties": {
            "volumes": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                "items": item,
            }
        },
    }
    old = {"volumes": [{"name": "a", "size": 5}, {"name": "b", "size": 5}]}
    new = {
        "volumes": [{"name": "b", "size": 4}, {"name": "a", "size": 6}, {"name": "c", "size": 1}]
    }
    assert validate(schema, new, old) == [
        invalid("volumes[0]", 'Invalid value: "object": volumes only grow')
    ]


def test_a_blocking_schema_error_stops_the_rules() -> None:
    schema = ruled({"rule": "false", "message": "never"})
    assert validate(schema, {"spec": {"replicas": "two"}}) == [
        type_invalid(
            "spec.replicas",
            'Invalid value: "string": spec.replicas in body must be of type integer: "string"',
        ),
        RULES_NOT_CHECKED,
    ]


def test_a_non_blocking_schema_error_lets_the_rules_run() -> None:
    schema = ruled({"rule": "false", "message": "never"})
    schema["properties"]["spec"]["properties"]["replicas"]["minimum"] = 0
    assert validate(schema, {"spec": {"replicas": -1}}) == [
        invalid(
            "spec.replicas",
            "Invalid value: -1: spec.replicas in body should be greater than or equal to 0",
        ),
        invalid("spec", 'Invalid value: "object": never'),
    ]


# --- a Workspace-like CRD -----------------------------------------------------------------------

WORKSPACE: dict[str, Any] = {
    "type": "object",
    "x-kubernetes-validations": [
        {
            "rule": "has(self.inference) != has(self.tuning)",
            "message": "exactly one of inference or tuning must be set",
        }
    ],
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "resource": {
            "type": "object",
            "required": ["instanceType"],
            "properties": {
                "count": {"type": "integer", "minimum": 1, "default": 1},
                "instanceType": {"type": "string", "pattern": "^Standard_[A-Za-z0-9_]+$"},
                "labelSelector": {
                    "type": "object",
                    "properties": {
                        "matchLabels": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        },
                    },
                },
            },
        },
        "inference": {
            "type": "object",
            "properties": {
                "preset": {
                    "type": "object",
                    "properties": {"name": {"type": "string", "minLength": 1}},
                }
            },
        },
        "tuning": {
            "type": "object",
            "properties": {
                "method": {"type": "string", "enum": ["lora", "qlora"], "default": "lora"},
            },
        },
    },
}
ONE_OF_THEM = invalid("", 'Invalid value: "object": exactly one of inference or tuning must be set')
RESOURCE = {"instanceType": "Standard_NC12s_v3"}

WORKSPACE_CASES: list[tuple[str, dict[str, Any], list[FieldError]]] = [
    ("inference-only", {"resource": RESOURCE, "inference": {"preset": {"name": "falcon-7b"}}}, []),
    ("tuning-only", {"resource": RESOURCE, "tuning": {"method": "qlora"}}, []),
    ("both", {"resource": RESOURCE, "inference": {}, "tuning": {}}, [ONE_OF_THEM]),
    ("neither", {"resource": RESOURCE}, [ONE_OF_THEM]),
    (
        "bad-label-selector",
        {"resource": {**RESOURCE, "labelSelector": {"matchLabels": {"apps": 1}}}, "tuning": {}},
        [
            type_invalid(
                "resource.labelSelector.matchLabels.apps",
                'Invalid value: "integer": resource.labelSelector.matchLabels.apps in body must '
                'be of type string: "integer"',
            ),
            RULES_NOT_CHECKED,
        ],
    ),
    (
        "wrong-tuning-method-and-no-instance-type",
        {"resource": {"count": 2}, "tuning": {"method": "dora"}},
        [
            FieldError("resource.instanceType", REQUIRED, "Required value"),
            FieldError(
                "tuning.method",
                NOT_SUPPORTED,
                'Unsupported value: "dora": supported values: "lora", "qlora"',
            ),
            RULES_NOT_CHECKED,
        ],
    ),
]


@pytest.mark.parametrize(
    ("obj", "expected"),
    [case[1:] for case in WORKSPACE_CASES],
    ids=[case[0] for case in WORKSPACE_CASES],
)
def test_a_workspace_needs_exactly_one_of_inference_or_tuning(
    obj: dict[str, Any], expected: list[FieldError]
) -> None:
    assert validate(WORKSPACE, apply_defaults(WORKSPACE, obj)) == expected


def test_a_workspace_goes_through_prune_default_and_validate_as_on_the_api_server() -> None:
    body = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "ws", "labels": {"a": "b"}},
        "resource": {"instanceType": "Standard_NC12s_v3", "colour": "red"},
        "tuning": {"method": None},
        "status": {"ready": True},
    }
    pruned, removed = prune(WORKSPACE, body)
    assert removed == ["resource.colour", "status"]
    defaulted = apply_defaults(WORKSPACE, pruned)
    assert defaulted == {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "ws", "labels": {"a": "b"}},
        "resource": {"instanceType": "Standard_NC12s_v3", "count": 1},
        "tuning": {"method": "lora"},
    }
    assert validate(WORKSPACE, defaulted) == []
    changed = {**defaulted, "resource": {**defaulted["resource"], "count": 0}}
    assert validate(WORKSPACE, changed, defaulted) == [
        invalid(
            "resource.count",
            "Invalid value: 0: resource.count in body should be greater than or equal to 1",
        ),
    ]
