"""JSON merge patch, JSON patch and strategic merge patch as kube-apiserver applies them."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from localdev.kubeapi.errors import ApiError
from localdev.kubeapi.patches import json_patch, merge_patch, strategic_merge_patch

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)
OBJECTS = st.dictionaries(st.text(max_size=4), JSON, max_size=4)


def _null_free(value: Any) -> bool:
    if isinstance(value, dict):
        return all(v is not None and _null_free(v) for v in value.values())
    if isinstance(value, list):
        return all(_null_free(v) for v in value)
    return True


def _diff(original: Any, wanted: Any) -> Any:
    """The merge patch that turns ``original`` into ``wanted`` (RFC 7386 section 1's inverse)."""
    if not isinstance(original, dict) or not isinstance(wanted, dict):
        return wanted
    patch: dict[str, Any] = {k: None for k in original if k not in wanted}
    for key, value in wanted.items():
        if key not in original or original[key] != value:
            patch[key] = _diff(original.get(key), value)
    return patch


# --- RFC 7386 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
        (
            {
                "title": "Goodbye!",
                "author": {"givenName": "John", "familyName": "Doe"},
                "tags": ["example", "sample"],
                "content": "This will be unchanged",
            },
            {
                "title": "Hello!",
                "phoneNumber": "+01-123-456-7890",
                "author": {"familyName": None},
                "tags": ["example"],
            },
            {
                "title": "Hello!",
                "author": {"givenName": "John"},
                "tags": ["example"],
                "content": "This will be unchanged",
                "phoneNumber": "+01-123-456-7890",
            },
        ),
    ],
    ids=[
        "a member is replaced",
        "a member is added",
        "null removes the only member",
        "null removes one member",
        "a list is replaced by a string",
        "a string is replaced by a list",
        "nested maps merge and null removes inside",
        "a list of maps is replaced, not merged",
        "a list replaces a list",
        "a list replaces a map",
        "a null patch is null",
        "a string patch is that string",
        "nulls already in the target stay",
        "a map patch on a list starts from an empty map",
        "nested nulls with nothing to remove vanish",
        "the RFC's section 3 example",
    ],
)
def test_merge_patch_follows_rfc_7386_examples(target: Any, patch: Any, expected: Any) -> None:
    assert merge_patch(target, patch) == expected


@given(OBJECTS, OBJECTS.filter(_null_free))
def test_a_merge_patch_computed_from_the_wanted_object_produces_it(
    original: dict[str, Any], wanted: dict[str, Any]
) -> None:
    assert merge_patch(original, _diff(original, wanted)) == wanted


@given(JSON, JSON)
def test_merge_patch_neither_mutates_nor_shares_its_inputs(target: Any, patch: Any) -> None:
    target_before, patch_before = copy.deepcopy(target), copy.deepcopy(patch)
    result = merge_patch(target, patch)
    if isinstance(result, dict):
        for value in result.values():
            if isinstance(value, dict | list):
                value.clear()
    assert (target, patch) == (target_before, patch_before)


# --- RFC 6902 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "operations", "expected"),
    [
        (
            {"foo": "bar"},
            [{"op": "add", "path": "/baz", "value": "qux"}],
            {"baz": "qux", "foo": "bar"},
        ),
        (
            {"foo": ["bar", "baz"]},
            [{"op": "add", "path": "/foo/1", "value": "qux"}],
            {"foo": ["bar", "qux", "baz"]},
        ),
        ({"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}], {"foo": "bar"}),
        (
            {"foo": ["bar", "qux", "baz"]},
            [{"op": "remove", "path": "/foo/1"}],
            {"foo": ["bar", "baz"]},
        ),
        (
            {"baz": "qux", "foo": "bar"},
            [{"op": "replace", "path": "/baz", "value": "boo"}],
            {"baz": "boo", "foo": "bar"},
        ),
        (
            {"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
            [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
            {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}},
        ),
        (
            {"foo": ["all", "grass", "cows", "eat"]},
            [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
            {"foo": ["all", "cows", "eat", "grass"]},
        ),
        (
            {"baz": "qux", "foo": ["a", 2, "c"]},
            [
                {"op": "test", "path": "/baz", "value": "qux"},
                {"op": "test", "path": "/foo/1", "value": 2},
            ],
            {"baz": "qux", "foo": ["a", 2, "c"]},
        ),
        (
            {"foo": "bar"},
            [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
            {"foo": "bar", "child": {"grandchild": {}}},
        ),
        (
            {"foo": "bar"},
            [{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}],
            {"foo": "bar", "baz": "qux"},
        ),
        (
            {"/": 9, "~1": 10},
            [{"op": "test", "path": "/~01", "value": 10}],
            {"/": 9, "~1": 10},
        ),
        (
            {"foo": ["bar"]},
            [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
            {"foo": ["bar", ["abc", "def"]]},
        ),
    ],
    ids=[
        "A.1 adding an object member",
        "A.2 adding an array element",
        "A.3 removing an object member",
        "A.4 removing an array element",
        "A.5 replacing a value",
        "A.6 moving a value",
        "A.7 moving an array element",
        "A.8 testing a value: success",
        "A.10 adding a nested member object",
        "A.11 ignoring unrecognized elements",
        "A.14 escape ordering",
        "A.16 adding an array value",
    ],
)
def test_json_patch_follows_rfc_6902_examples(
    doc: Any, operations: list[dict[str, Any]], expected: Any
) -> None:
    assert json_patch(doc, operations) == expected


@pytest.mark.parametrize(
    ("doc", "operations", "expected"),
    [
        (
            {"metadata": {"annotations": {}}},
            [{"op": "add", "path": "/metadata/annotations/kaito.sh~1runtime", "value": "vllm"}],
            {"metadata": {"annotations": {"kaito.sh/runtime": "vllm"}}},
        ),
        ({"a": 1}, [{"op": "replace", "path": "", "value": [1]}], [1]),
        ({"a": 1}, [{"op": "add", "path": "", "value": {"b": 2}}], {"b": 2}),
        (
            {"a": {"x": 1}},
            [
                {"op": "copy", "from": "/a", "path": "/b"},
                {"op": "replace", "path": "/b/x", "value": 2},
            ],
            {"a": {"x": 1}, "b": {"x": 2}},
        ),
        ({"a": 1}, [{"op": "move", "from": "/a", "path": "/a"}], {"a": 1}),
        ({"a": 1.0}, [{"op": "test", "path": "/a", "value": 1}], {"a": 1.0}),
        ({"a": [1, 2]}, [{"op": "add", "path": "/a/2", "value": 3}], {"a": [1, 2, 3]}),
        ({"a": 1}, None, {"a": 1}),
        ({"a": 1}, [], {"a": 1}),
        (
            {"spec": {"replicas": 1}},
            [
                {"op": "test", "path": "/spec/replicas", "value": 1},
                {"op": "replace", "path": "/spec/replicas", "value": 3},
            ],
            {"spec": {"replicas": 3}},
        ),
    ],
    ids=[
        "a slash in a key is escaped as ~1",
        "replacing the whole document",
        "adding at the root replaces the document",
        "a copy is independent of its source",
        "moving a value onto itself changes nothing",
        "numbers compare by value",
        "adding at the end index appends",
        "a null patch has no operations",
        "an empty patch changes nothing",
        "test guards a replace",
    ],
)
def test_json_patch_applies_operations_in_order(
    doc: Any, operations: list[dict[str, Any]] | None, expected: Any
) -> None:
    assert json_patch(doc, operations) == expected


def _missing(op: str, path: str, what: str = "path") -> str:
    return f'jsonpatch {op} operation does not apply: doc is missing {what}: "{path}"'


def _not_applied(op: str, reason: str) -> str:
    return f"jsonpatch {op} operation does not apply: {reason}"


def _failed(path: str) -> str:
    return f"testing value {path} failed: test failed"


@pytest.mark.parametrize(
    ("doc", "operations", "message"),
    [
        ({"baz": "qux"}, [{"op": "test", "path": "/baz", "value": "bar"}], _failed("/baz")),
        (
            {"foo": "bar"},
            [{"op": "add", "path": "/baz/bat", "value": "qux"}],
            _missing("add", "/baz/bat"),
        ),
        ({"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": "10"}], _failed("/~01")),
        ({"a": 1}, [{"op": "test", "path": "/a", "value": True}], _failed("/a")),
        (
            {"spec": {}},
            [{"op": "replace", "path": "/spec/foo", "value": 1}],
            _missing("replace", "/spec/foo"),
        ),
        ({"a": [1]}, [{"op": "remove", "path": "/a/5"}], _missing("remove", "/a/5")),
        ({"a": [1]}, [{"op": "remove", "path": "/a/-"}], _missing("remove", "/a/-")),
        ({"a": 1}, [{"op": "remove", "path": ""}], _missing("remove", "")),
        (
            {"a": [1]},
            [{"op": "add", "path": "/a/5", "value": 2}],
            _not_applied("add", 'invalid index referenced: "/a/5"'),
        ),
        (
            {"a": [1]},
            [{"op": "add", "path": "/a/01", "value": 2}],
            _not_applied("add", 'invalid index referenced: "/a/01"'),
        ),
        (
            {"a": 1},
            [{"op": "move", "from": "/x", "path": "/y"}],
            _missing("move", "/x", "from path"),
        ),
        (
            {"a": 1},
            [{"op": "copy", "from": "/x", "path": "/y"}],
            _missing("copy", "/x", "from path"),
        ),
        (
            {"a": {}},
            [{"op": "move", "from": "/a", "path": "/a/b"}],
            _not_applied("move", 'cannot move "/a" into its own child "/a/b"'),
        ),
        ({"a": 1}, [{"op": "test", "path": "/nope", "value": 1}], _missing("test", "/nope")),
        ({"a": 1}, [{"op": "frob", "path": "/a"}], "Unexpected kind: frob"),
        ({"a": 1}, [{"path": "/a"}], "Unexpected kind: unknown"),
        (
            {"a": 1},
            [{"op": "add", "value": 1}],
            'jsonpatch add operation is missing the "path" field',
        ),
        (
            {"a": 1},
            [{"op": "add", "path": "/b"}],
            'jsonpatch add operation is missing the "value" field',
        ),
        (
            {"a": 1},
            [{"op": "add", "path": "b", "value": 1}],
            _not_applied("add", 'invalid JSON pointer: "b"'),
        ),
        (
            {"a": 1},
            [{"op": "add", "path": "/~2", "value": 1}],
            _not_applied("add", 'invalid JSON pointer: "/~2"'),
        ),
        ({"a": "x"}, [{"op": "add", "path": "/a/b", "value": 1}], _missing("add", "/a/b")),
    ],
    ids=[
        "A.9 testing a value: error",
        "A.12 adding to a nonexistent target",
        "A.15 comparing strings and numbers",
        "true is not the number one",
        "replacing a missing member",
        "removing past the end of an array",
        "removing the end marker",
        "removing the whole document",
        "adding past the end of an array",
        "an index with a leading zero",
        "moving from a missing path",
        "copying from a missing path",
        "moving a value into its own child",
        "testing a missing path",
        "an unknown operation",
        "no operation",
        "no path",
        "no value",
        "a pointer without a leading slash",
        "an unknown pointer escape",
        "adding inside a string",
    ],
)
def test_a_json_patch_that_does_not_apply_is_unprocessable(
    doc: Any, operations: list[dict[str, Any]], message: str
) -> None:
    before = copy.deepcopy(doc)
    with pytest.raises(ApiError) as caught:
        json_patch(doc, [{"op": "add", "path": "/first", "value": 0}, *operations])
    error = caught.value
    assert (error.code, error.reason, error.message) == (422, "Invalid", message)
    assert error.details == {"causes": [{"reason": "UnexpectedServerResponse", "message": message}]}
    assert doc == before


@pytest.mark.parametrize(
    ("operations", "message"),
    [
        ({"op": "add"}, "json: cannot unmarshal object into Go value of type jsonpatch.Patch"),
        ("[]", "json: cannot unmarshal string into Go value of type jsonpatch.Patch"),
        (5, "json: cannot unmarshal number into Go value of type jsonpatch.Patch"),
        (["add"], "json: cannot unmarshal string into Go value of type jsonpatch.Operation"),
        ([[]], "json: cannot unmarshal array into Go value of type jsonpatch.Operation"),
        ([True], "json: cannot unmarshal bool into Go value of type jsonpatch.Operation"),
    ],
    ids=[
        "a map instead of a list",
        "a string",
        "a number",
        "a list of strings",
        "a list of lists",
        "a list of booleans",
    ],
)
def test_a_json_patch_that_is_not_a_list_of_operations_is_a_bad_request(
    operations: Any, message: str
) -> None:
    with pytest.raises(ApiError) as caught:
        json_patch({"a": 1}, operations)
    assert (caught.value.code, caught.value.reason, caught.value.message) == (
        400,
        "BadRequest",
        message,
    )


def _pointer(key: str) -> str:
    return "/" + key.replace("~", "~0").replace("/", "~1")


@given(OBJECTS, st.text(max_size=6), JSON)
def test_adding_a_member_then_removing_it_gives_back_the_object(
    doc: dict[str, Any], key: str, value: Any
) -> None:
    assume(key not in doc)
    before = copy.deepcopy(doc)
    added = json_patch(doc, [{"op": "add", "path": _pointer(key), "value": value}])
    assert added == {**doc, key: value}
    assert json_patch(added, [{"op": "remove", "path": _pointer(key)}]) == doc == before


@given(st.lists(JSON, max_size=5), st.data())
def test_inserting_an_element_then_removing_it_gives_back_the_list(
    items: list[Any], data: st.DataObject
) -> None:
    index = data.draw(st.integers(min_value=0, max_value=len(items)))
    path = f"/items/{index}"
    added = json_patch({"items": items}, [{"op": "add", "path": path, "value": "new"}])
    assert added["items"] == [*items[:index], "new", *items[index:]]
    assert json_patch(added, [{"op": "remove", "path": path}]) == {"items": items}


# --- strategic merge patch ----------------------------------------------------------------------

DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "labels": {"app": "web"}, "finalizers": ["a", "b"]},
    "spec": {
        "replicas": 1,
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "main",
                        "image": "img:1",
                        "args": ["--a"],
                        "ports": [{"containerPort": 80, "name": "http"}],
                        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                        "volumeMounts": [{"mountPath": "/data", "name": "data"}],
                    },
                    {"name": "sidecar", "image": "side:1"},
                ],
                "tolerations": [{"key": "gpu", "operator": "Exists"}],
                "volumes": [{"name": "data", "emptyDir": {}}],
            }
        },
    },
}
MAIN = DEPLOYMENT["spec"]["template"]["spec"]["containers"][0]
SIDECAR = DEPLOYMENT["spec"]["template"]["spec"]["containers"][1]


def _pod(**fields: Any) -> dict[str, Any]:
    return {"spec": {"template": {"spec": fields}}}


def _at(value: Any, path: str) -> Any:
    for key in path.split("."):
        value = value[key] if isinstance(value, dict) else value[int(key)]
    return value


@pytest.mark.parametrize(
    ("patch", "path", "expected"),
    [
        (
            _pod(containers=[{"name": "sidecar", "image": "side:2"}]),
            "spec.template.spec.containers",
            [MAIN, {"name": "sidecar", "image": "side:2"}],
        ),
        (
            _pod(containers=[{"name": "extra", "image": "x"}]),
            "spec.template.spec.containers",
            [MAIN, SIDECAR, {"name": "extra", "image": "x"}],
        ),
        (
            _pod(containers=[{"name": "sidecar", "$patch": "delete"}]),
            "spec.template.spec.containers",
            [MAIN],
        ),
        (
            _pod(
                containers=[{"name": "main", "env": [{"name": "B", "value": "3"}, {"name": "C"}]}]
            ),
            "spec.template.spec.containers.0.env",
            [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C"}],
        ),
        (
            _pod(containers=[{"name": "main", "env": [{"name": "A", "value": None}]}]),
            "spec.template.spec.containers.0.env",
            [{"name": "A"}, {"name": "B", "value": "2"}],
        ),
        (
            _pod(containers=[{"name": "main", "ports": [{"containerPort": 8080}]}]),
            "spec.template.spec.containers.0.ports",
            [{"containerPort": 80, "name": "http"}, {"containerPort": 8080}],
        ),
        (
            _pod(
                containers=[
                    {"name": "main", "volumeMounts": [{"mountPath": "/data", "readOnly": True}]}
                ]
            ),
            "spec.template.spec.containers.0.volumeMounts",
            [{"mountPath": "/data", "name": "data", "readOnly": True}],
        ),
        (
            _pod(containers=[{"name": "main", "args": ["--b"]}]),
            "spec.template.spec.containers.0.args",
            ["--b"],
        ),
        (
            _pod(tolerations=[{"key": "x", "operator": "Exists"}]),
            "spec.template.spec.tolerations",
            [{"key": "x", "operator": "Exists"}],
        ),
        (
            _pod(volumes=[{"$patch": "replace"}, {"name": "cache", "emptyDir": {}}]),
            "spec.template.spec.volumes",
            [{"name": "cache", "emptyDir": {}}],
        ),
        (
            _pod(**{"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "main"}]}),
            "spec.template.spec.containers",
            [SIDECAR, MAIN],
        ),
        (
            _pod(
                **{"$setElementOrder/containers": [{"name": "extra"}, {"name": "main"}]},
                containers=[{"name": "extra", "image": "x"}],
            ),
            "spec.template.spec.containers",
            [{"name": "extra", "image": "x"}, MAIN, SIDECAR],
        ),
        (
            _pod(
                **{"$setElementOrder/containers": [{"name": "main"}]},
                containers=[
                    {"name": "main", "image": "img:2"},
                    {"name": "sidecar", "$patch": "delete"},
                ],
            ),
            "spec.template.spec.containers",
            [{**MAIN, "image": "img:2"}],
        ),
        (
            {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}},
            "spec.strategy",
            {"type": "Recreate"},
        ),
        (
            {"spec": {"strategy": {"$patch": "replace", "type": "Recreate"}}},
            "spec.strategy",
            {"type": "Recreate"},
        ),
        ({"spec": {"strategy": {"$patch": "delete"}}}, "spec.strategy", {}),
        (
            {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}},
            "metadata.finalizers",
            ["b"],
        ),
        ({"metadata": {"finalizers": ["c", "a"]}}, "metadata.finalizers", ["a", "b", "c"]),
        (
            {"metadata": {"$setElementOrder/finalizers": ["b", "a"]}},
            "metadata.finalizers",
            ["b", "a"],
        ),
        ({"metadata": {"labels": None}}, "metadata", {"name": "web", "finalizers": ["a", "b"]}),
        (
            {"metadata": {"$unknown": 1, "labels": {"$x": 1, "tier": "db"}}},
            "metadata",
            {"name": "web", "labels": {"app": "web", "tier": "db"}, "finalizers": ["a", "b"]},
        ),
        (
            _pod(affinity={"nodeAffinity": {"$patch": "merge", "x": None, "y": 1}}),
            "spec.template.spec.affinity",
            {"nodeAffinity": {"y": 1}},
        ),
        ({"spec": {"replicas": 3}}, "spec.replicas", 3),
    ],
    ids=[
        "a container changes by name",
        "a new container is appended",
        "a container is deleted by its merge key",
        "env merges by name",
        "null removes a field of a merged element",
        "container ports merge by containerPort",
        "volume mounts merge by mountPath",
        "args, a list of strings, replace",
        "tolerations, which have no merge key, replace",
        "a replace directive in a list replaces it",
        "setElementOrder reorders a list",
        "setElementOrder puts unlisted elements after the listed ones",
        "kubectl apply's patch: order, change and delete",
        "retainKeys clears the fields not listed",
        "a replace directive on a map replaces it",
        "a delete directive on a map empties it",
        "deleteFromPrimitiveList removes finalizers",
        "finalizers merge as a union",
        "setElementOrder reorders a list of strings",
        "null removes a map",
        "unknown directives are dropped",
        "new content is cleaned of directives and nulls",
        "a scalar is replaced",
    ],
)
def test_strategic_merge_patch_merges_a_deployment_like_kubernetes(
    patch: dict[str, Any], path: str, expected: Any
) -> None:
    before = copy.deepcopy(DEPLOYMENT)
    assert _at(strategic_merge_patch(DEPLOYMENT, patch), path) == expected
    assert before == DEPLOYMENT


SERVICE: dict[str, Any] = {
    "spec": {
        "ports": [
            {"name": "http", "port": 80, "targetPort": 8080},
            {"name": "metrics", "port": 9090},
        ]
    }
}


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        (
            [{"port": 80, "targetPort": 8081}],
            [{"name": "http", "port": 80, "targetPort": 8081}, {"name": "metrics", "port": 9090}],
        ),
        ([{"port": 9090, "$patch": "delete"}], [{"name": "http", "port": 80, "targetPort": 8080}]),
        (
            [{"name": "grpc", "port": 9000}],
            [
                {"name": "http", "port": 80, "targetPort": 8080},
                {"name": "metrics", "port": 9090},
                {"name": "grpc", "port": 9000},
            ],
        ),
    ],
    ids=["a port merges by number", "a port is deleted by number", "a new port is appended"],
)
def test_strategic_merge_patch_merges_service_ports_by_port(
    patch: list[dict[str, Any]], expected: list[dict[str, Any]]
) -> None:
    assert strategic_merge_patch(SERVICE, {"spec": {"ports": patch}})["spec"]["ports"] == expected


def test_strategic_merge_patch_merges_configmap_data_like_a_merge_patch() -> None:
    target = {"data": {"a": "0", "b": "x", "c": "y"}}
    patched = strategic_merge_patch(target, {"data": {"a": "1", "b": None}})
    assert patched == {"data": {"a": "1", "c": "y"}}


@pytest.mark.parametrize(
    ("patch", "kind"),
    [([{"a": 1}], "array"), ("x", "string"), (None, "null")],
    ids=["a list", "a string", "null"],
)
def test_a_strategic_merge_patch_that_is_not_a_map_is_a_bad_request(patch: Any, kind: str) -> None:
    with pytest.raises(ApiError) as caught:
        strategic_merge_patch({}, patch)
    assert (caught.value.code, caught.value.message) == (
        400,
        f"json: cannot unmarshal {kind} into Go value of type map[string]interface {{}}",
    )


DIRECTIVE_KEYS = st.sampled_from(
    ["a", "name", "$patch", "$retainKeys", "$x", "$setElementOrder/a", "$deleteFromPrimitiveList/a"]
)
DIRECTIVE_VALUES = st.sampled_from(["delete", "replace", "merge", "a", "b"])
PATCH_JSON = st.recursive(
    st.one_of(SCALARS, DIRECTIVE_VALUES),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(DIRECTIVE_KEYS, inner, max_size=4),
    max_leaves=15,
)
PLAIN_KEYS = st.sampled_from(["a", "b", "name"])
TARGET_JSON = st.recursive(
    st.one_of(SCALARS, DIRECTIVE_VALUES),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(PLAIN_KEYS, inner, max_size=3),
    max_leaves=15,
)


def _dollar_keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        own = [k for k in value if k.startswith("$")]
        return own + [k for v in value.values() for k in _dollar_keys(v)]
    if isinstance(value, list):
        return [k for v in value for k in _dollar_keys(v)]
    return []


@given(TARGET_JSON, st.dictionaries(DIRECTIVE_KEYS, PATCH_JSON, max_size=4))
def test_a_strategic_merge_patch_result_never_holds_directives(
    target: Any, patch: dict[str, Any]
) -> None:
    before = copy.deepcopy(patch)
    assert _dollar_keys(strategic_merge_patch(target, patch)) == []
    assert patch == before


def _list_free(value: Any) -> bool:
    if isinstance(value, dict):
        return all(_list_free(v) for v in value.values())
    return not isinstance(value, list)


@given(OBJECTS, OBJECTS.filter(_list_free))
def test_a_strategic_merge_patch_without_lists_or_directives_is_a_merge_patch(
    target: dict[str, Any], patch: dict[str, Any]
) -> None:
    assume(not _dollar_keys(patch))
    assert strategic_merge_patch(target, patch) == merge_patch(target, patch)
