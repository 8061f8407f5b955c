"""The three patch formats kube-apiserver accepts: JSON merge patch (RFC 7386), JSON patch
(RFC 6902) and an approximation of strategic merge patch for built-in kinds. Each returns a new
value and never mutates its inputs; picking the format from the Content-Type, and validating the
patched object, is the caller's job."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from typing import Any

from localdev.kubeapi.errors import ApiError

# --- RFC 7386 -----------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merge recursively, ``null`` deletes a member, anything
    else (lists included) replaces. Keys keep the target's order; new keys follow."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    base: Mapping[str, Any] = target if isinstance(target, Mapping) else {}
    result: dict[str, Any] = {}
    for name, value in base.items():
        if name not in patch:
            result[name] = copy.deepcopy(value)
        elif patch[name] is not None:
            result[name] = merge_patch(value, patch[name])
    for name, value in patch.items():
        if name not in base and value is not None:
            result[name] = merge_patch(None, value)
    return result


# --- RFC 6902 -----------------------------------------------------------------------------------

_INDEX = re.compile(r"0|[1-9][0-9]*")


class _Missing:
    """Marks a JSON pointer that resolves to nothing."""


_MISSING = _Missing()


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 JSON patch. A body that is not a list of operation objects is a 400 BadRequest;
    an operation that does not apply, or a failed ``test``, is a 422 Invalid. Operations apply
    in order to a copy, so a failure leaves ``target`` as it was."""
    doc = copy.deepcopy(target)
    for operation in _decode_operations(operations):
        doc = _apply_operation(doc, operation)
    return doc


def _decode_operations(operations: Any) -> list[Mapping[str, Any]]:
    """Reject what Go's JSON decoder would refuse for ``jsonpatch.Patch``; ``null`` is no ops."""
    if operations is None:
        return []
    if not isinstance(operations, list):
        kind = _json_kind(operations)
        raise ApiError(
            400,
            "BadRequest",
            f"json: cannot unmarshal {kind} into Go value of type jsonpatch.Patch",
        )
    for operation in operations:
        if not isinstance(operation, Mapping):
            kind = _json_kind(operation)
            raise ApiError(
                400,
                "BadRequest",
                f"json: cannot unmarshal {kind} into Go value of type jsonpatch.Operation",
            )
    return operations


def _json_kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bool):
        return "bool"
    return "string" if isinstance(value, str) else "number"


def _unprocessable(message: str) -> ApiError:
    """422 Invalid, with the reason also in ``details.causes`` as kube-apiserver puts it there."""
    cause = {"reason": "UnexpectedServerResponse", "message": message}
    return ApiError(422, "Invalid", message, {"causes": [cause]})


def _apply_operation(doc: Any, operation: Mapping[str, Any]) -> Any:
    kind = operation.get("op")
    if not isinstance(kind, str):
        kind = "unknown"
    handler = _OPERATIONS.get(kind)
    if handler is None:
        raise _unprocessable(f"Unexpected kind: {kind}")
    path = _pointer_field(operation, "path", kind)
    return handler(doc, path, operation)


def _pointer_field(operation: Mapping[str, Any], field: str, kind: str) -> list[str]:
    pointer = operation.get(field)
    if not isinstance(pointer, str):
        raise _unprocessable(f'jsonpatch {kind} operation is missing the "{field}" field')
    if pointer == "":
        return []
    if not pointer.startswith("/") or re.search(r"~[^01]|~$", pointer):
        raise _unprocessable(
            f'jsonpatch {kind} operation does not apply: invalid JSON pointer: "{pointer}"'
        )
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def _pointer_text(tokens: list[str]) -> str:
    return "".join("/" + t.replace("~", "~0").replace("/", "~1") for t in tokens)


def _value_field(operation: Mapping[str, Any], kind: str) -> Any:
    if "value" not in operation:
        raise _unprocessable(f'jsonpatch {kind} operation is missing the "value" field')
    return copy.deepcopy(operation["value"])


def _missing(kind: str, tokens: list[str], what: str = "path") -> ApiError:
    pointer = _pointer_text(tokens)
    return _unprocessable(
        f'jsonpatch {kind} operation does not apply: doc is missing {what}: "{pointer}"'
    )


def _resolve(doc: Any, tokens: list[str]) -> Any:
    """The value at ``tokens``, or ``_MISSING``."""
    current = doc
    for token in tokens:
        if isinstance(current, dict) and token in current:
            current = current[token]
        elif isinstance(current, list) and _INDEX.fullmatch(token) and int(token) < len(current):
            current = current[int(token)]
        else:
            return _MISSING
    return current


def _add(doc: Any, tokens: list[str], value: Any, kind: str = "add") -> Any:
    if not tokens:
        return value
    parent, last = _resolve(doc, tokens[:-1]), tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif _INDEX.fullmatch(last) and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise _unprocessable(
                f"jsonpatch {kind} operation does not apply: "
                f'invalid index referenced: "{_pointer_text(tokens)}"'
            )
    else:
        raise _missing(kind, tokens)
    return doc


def _remove(doc: Any, tokens: list[str], kind: str = "remove", what: str = "path") -> Any:
    """Remove the value at ``tokens`` from ``doc`` in place and return it."""
    if not tokens or _resolve(doc, tokens) is _MISSING:
        raise _missing(kind, tokens, what)
    parent, last = _resolve(doc, tokens[:-1]), tokens[-1]
    return parent.pop(int(last) if isinstance(parent, list) else last)


def _op_add(doc: Any, path: list[str], operation: Mapping[str, Any]) -> Any:
    return _add(doc, path, _value_field(operation, "add"))


def _op_remove(doc: Any, path: list[str], operation: Mapping[str, Any]) -> Any:
    _remove(doc, path)
    return doc


def _op_replace(doc: Any, path: list[str], operation: Mapping[str, Any]) -> Any:
    value = _value_field(operation, "replace")
    if not path:
        return value
    if _resolve(doc, path) is _MISSING:
        raise _missing("replace", path)
    parent = _resolve(doc, path[:-1])
    parent[int(path[-1]) if isinstance(parent, list) else path[-1]] = value
    return doc


def _op_move(doc: Any, path: list[str], operation: Mapping[str, Any]) -> Any:
    source = _pointer_field(operation, "from", "move")
    if source == path:
        if _resolve(doc, source) is _MISSING:
            raise _missing("move", source, "from path")
        return doc
    if path[: len(source)] == source:
        raise _unprocessable(
            f'jsonpatch move operation does not apply: cannot move "{_pointer_text(source)}" '
            f'into its own child "{_pointer_text(path)}"'
        )
    return _add(doc, path, _remove(doc, source, "move", "from path"), "move")


def _op_copy(doc: Any, path: list[str], operation: Mapping[str, Any]) -> Any:
    source = _pointer_field(operation, "from", "copy")
    value = _resolve(doc, source)
    if value is _MISSING:
        raise _missing("copy", source, "from path")
    return _add(doc, path, copy.deepcopy(value), "copy")


def _op_test(doc: Any, path: list[str], operation: Mapping[str, Any]) -> Any:
    expected = _value_field(operation, "test")
    actual = _resolve(doc, path)
    if actual is _MISSING:
        raise _missing("test", path)
    if not _json_equal(actual, expected):
        raise _unprocessable(f"testing value {_pointer_text(path)} failed: test failed")
    return doc


_Operation = Callable[[Any, list[str], Mapping[str, Any]], Any]
_OPERATIONS: Mapping[str, _Operation] = {
    "add": _op_add,
    "remove": _op_remove,
    "replace": _op_replace,
    "move": _op_move,
    "copy": _op_copy,
    "test": _op_test,
}


def _json_equal(left: Any, right: Any) -> bool:
    """Equality as JSON defines it: ``1 == 1.0``, but ``true`` is not ``1``."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    if isinstance(left, Mapping) and isinstance(right, Mapping):
        return left.keys() == right.keys() and all(_json_equal(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(_json_equal, left, right))
    return type(left) is type(right) and bool(left == right)


# --- strategic merge patch ----------------------------------------------------------------------

# Merge keys by list field name, tried in order; any other list of maps merges on "name" when
# every element has one, and replaces otherwise.
_MERGE_KEYS: Mapping[str, tuple[str, ...]] = {
    "ports": ("containerPort", "port"),  # container ports, Service ports
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "conditions": ("type",),
    "hostAliases": ("ip",),
    "topologySpreadConstraints": ("topologyKey",),
    "readinessGates": ("conditionType",),
    "ownerReferences": ("uid",),
}
_DEFAULT_MERGE_KEYS = ("name",)
# Lists of scalars whose patch strategy is "merge" (the union is kept); others replace.
_MERGED_SCALAR_LISTS = frozenset({"finalizers"})
_ORDER_PREFIX = "$setElementOrder/"
_DELETE_PREFIX = "$deleteFromPrimitiveList/"


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Kubernetes strategic merge patch, approximated without the Go types' patch tags: lists
    merge by a merge key chosen from the list's field name (see ``_MERGE_KEYS``), directives
    (``$patch``, ``$retainKeys``, ``$setElementOrder/``, ``$deleteFromPrimitiveList/``) are
    honoured and never reach the result. A patch that is not a map is a 400 BadRequest."""
    if not isinstance(patch, Mapping):
        kind = _json_kind(patch) if patch is not None else "null"
        raise ApiError(
            400,
            "BadRequest",
            f"json: cannot unmarshal {kind} into Go value of type map[string]interface {{}}",
        )
    return _merge_map(target, patch)


def _merge_value(field: str, base: Any, patch: Any) -> Any:
    if isinstance(patch, Mapping):
        return _merge_map(base, patch)
    if isinstance(patch, list):
        return _merge_list(field, base, patch)
    return copy.deepcopy(patch)


def _merge_map(base: Any, patch: Mapping[str, Any]) -> dict[str, Any]:
    """``$patch: replace`` takes the patch as it is; ``$patch: delete`` leaves an empty map
    (as Kubernetes does); otherwise members merge and ``null`` deletes."""
    directive = patch.get("$patch")
    if directive == "replace":
        return _merge_map({}, {k: v for k, v in patch.items() if k != "$patch"})
    if directive == "delete":
        return {}
    retain = patch.get("$retainKeys")
    original: Mapping[str, Any] = base if isinstance(base, Mapping) else {}
    result = {
        k: copy.deepcopy(v)
        for k, v in original.items()
        if not isinstance(retain, list) or k in retain
    }
    for name, values in patch.items():
        if name.startswith(_DELETE_PREFIX) and isinstance(values, list):
            field = name.removeprefix(_DELETE_PREFIX)
            if isinstance(result.get(field), list):
                result[field] = [v for v in result[field] if v not in values]
    for name, value in patch.items():
        if name.startswith("$"):
            continue
        if value is None:
            result.pop(name, None)
        else:
            result[name] = _merge_value(name, result.get(name), value)
    for name, order in patch.items():
        field = name.removeprefix(_ORDER_PREFIX)
        if field != name and isinstance(order, list) and isinstance(result.get(field), list):
            result[field] = _reorder(result[field], order)
    return result


def _merge_list(field: str, base: Any, patch: list[Any]) -> list[Any]:
    original = base if isinstance(base, list) else []
    if any(_directive(e) == "replace" for e in patch):
        return [_merge_value(field, None, e) for e in patch if _directive(e) is None]
    key = _merge_key(field, original, patch)
    if key is not None:
        return _merge_by_key(original, patch, key)
    if field in _MERGED_SCALAR_LISTS and not any(isinstance(e, Mapping | list) for e in patch):
        kept = [copy.deepcopy(e) for e in original]
        return kept + [e for i, e in enumerate(patch) if e not in kept and e not in patch[:i]]
    return [_merge_value(field, None, e) for e in patch if _directive(e) != "delete"]


def _directive(element: Any) -> Any:
    return element.get("$patch") if isinstance(element, Mapping) else None


def _merge_key(field: str, original: list[Any], patch: list[Any]) -> str | None:
    """The first candidate key that every map in both lists has; ``None`` when the lists are
    not all maps (or no candidate fits), which makes the patch list replace the original."""
    elements = [*original, *patch]
    if not elements or not all(isinstance(e, Mapping) for e in elements):
        return None
    for key in _MERGE_KEYS.get(field, _DEFAULT_MERGE_KEYS):
        if all(key in e for e in elements):
            return key
    return None


def _merge_by_key(original: list[Any], patch: list[Any], key: str) -> list[Any]:
    """Deletions first (every element with that key value goes), then merges in patch order;
    elements new to the list are appended."""
    doomed = [e[key] for e in patch if _directive(e) == "delete"]
    result = [copy.deepcopy(e) for e in original if e[key] not in doomed]
    for element in patch:
        if _directive(element) == "delete":
            continue
        position = next(
            (i for i, e in enumerate(result) if key in e and e[key] == element[key]), None
        )
        if position is None:
            result.append(_merge_map({}, element))
        else:
            result[position] = _merge_map(result[position], element)
    return result


def _reorder(items: list[Any], order: list[Any]) -> list[Any]:
    """``$setElementOrder``: the listed elements first, in that order; the rest after them,
    keeping their relative order. A map entry matches an element that has all its members."""
    remaining = list(items)
    ordered: list[Any] = []
    for entry in order:
        position = next((i for i, e in enumerate(remaining) if _is_entry(e, entry)), None)
        if position is not None:
            ordered.append(remaining.pop(position))
    return ordered + remaining


def _is_entry(element: Any, entry: Any) -> bool:
    if isinstance(entry, Mapping):
        return isinstance(element, Mapping) and all(
            k in element and element[k] == v for k, v in entry.items()
        )
    return not isinstance(element, Mapping) and bool(element == entry)
