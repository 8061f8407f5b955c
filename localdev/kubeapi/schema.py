"""Structural-schema handling for custom resources, as kube-apiserver does it for
apiextensions.k8s.io/v1 CRDs: pruning, defaulting and validation (OpenAPI v3 keywords and
``x-kubernetes-validations`` CEL rules), worded like the API server. Picking the version's schema
out of a CRD, ordering the steps (prune, default, validate) and answering HTTP are left to callers.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime
import decimal
import functools
import ipaddress
import itertools
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

import cel
from cel import stdlib as cel_stdlib

from localdev.kubeapi.errors import FieldError

Schema = dict[str, Any]

REQUIRED: Final = "FieldValueRequired"
INVALID: Final = "FieldValueInvalid"
NOT_SUPPORTED: Final = "FieldValueNotSupported"
TYPE_INVALID: Final = "FieldValueTypeInvalid"
TOO_LONG: Final = "FieldValueTooLong"
TOO_MANY: Final = "FieldValueTooMany"
FORBIDDEN: Final = "FieldValueForbidden"
DUPLICATE: Final = "FieldValueDuplicate"

# Errors about the object as a whole have no field. kube-apiserver's causes say "<nil>" there (a
# nil field.Path), and its message "<nil>: ..."; errors.invalid prints such errors bare instead.
ROOT_FIELD: Final = ""
# Errors of these kinds stop CEL evaluation (apiextensions' strategy.go hasBlockingErr).
_BLOCKING: Final = frozenset({NOT_SUPPORTED, REQUIRED, TOO_LONG, TOO_MANY, TYPE_INVALID})
_RULES_NOT_CHECKED: Final = FieldError(
    ROOT_FIELD,
    INVALID,
    'Invalid value: "null": some validation rules were not checked because the object was '
    "invalid; correct the existing errors to complete validation",
)
_RESOURCE_FIELDS: Final = frozenset({"apiVersion", "kind", "metadata"})
_PLAIN_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")
_ABSENT: Final[Any] = object()  # "no old value at this path", distinct from an old null


# --- paths and Go-style rendering ---------------------------------------------------------------


def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _key(path: str, key: str) -> str:
    return _child(path, key) if _PLAIN_KEY.fullmatch(key) else f"{path}[{key}]"


def _index(path: str, i: int) -> str:
    return f"{path}[{i}]"


def _field(path: str) -> str:
    return path or ROOT_FIELD


_GO_ESCAPES: Final = {
    '"': '\\"',
    "\\": "\\\\",
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


_ASCII_END: Final = 0x80
_BMP_END: Final = 0x10000


def _go_quote_char(ch: str) -> str:
    if ch in _GO_ESCAPES:
        return _GO_ESCAPES[ch]
    if ch.isprintable():
        return ch
    if ord(ch) < _ASCII_END:
        return f"\\x{ord(ch):02x}"
    if ord(ch) < _BMP_END:
        return f"\\u{ord(ch):04x}"
    return f"\\U{ord(ch):08x}"


def _go_quote(s: str) -> str:
    """Go's strconv.Quote (``%q``)."""
    return '"' + "".join(_go_quote_char(ch) for ch in s) + '"'


_GO_EXPONENT_FROM: Final = 6  # %v is %g with the shortest digits: 1e+06, not 1000000


def _go_float_special(f: float) -> str | None:
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    return "0" if f == 0 else None


def _go_float(f: float) -> str:
    """Go's ``%v`` for a float64: shortest digits, exponent form below 1e-4 or from 1e6."""
    if (special := _go_float_special(f)) is not None:
        return special
    sign, digits, exp = decimal.Decimal(repr(f)).as_tuple()
    if not isinstance(exp, int):
        return repr(f)
    ds = "".join(map(str, digits)).rstrip("0") or "0"
    point = len(digits) + exp  # position of the decimal point in ds
    minus = "-" if sign else ""
    x = point - 1
    if x < -4 or x >= _GO_EXPONENT_FROM:  # noqa: PLR2004
        mantissa = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{minus}{mantissa}e{'-' if x < 0 else '+'}{abs(x):02d}"
    if point <= 0:
        return f"{minus}0.{'0' * -point}{ds}"
    if point >= len(ds):
        return minus + ds + "0" * (point - len(ds))
    return f"{minus}{ds[:point]}.{ds[point:]}"


def _go_value(v: Any) -> str:
    """A bad value as field.Error prints it: strings quoted, numbers and booleans bare."""
    if v is None:
        return '"null"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _go_float(v)
    if isinstance(v, str):
        return _go_quote(v)
    return _go_quote(_json_type(v))


def _go_json(v: Any) -> str:
    """An enum value as apiextensions lists it: strings as they are, others as JSON."""
    if isinstance(v, str):
        return v
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e21:  # noqa: PLR2004
        return str(int(v))
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


_JSON_TYPES: Final = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (list, "array"),
    (dict, "object"),
)


def _json_type(v: Any) -> str:
    """The OpenAPI type name of a decoded JSON value."""
    if v is None:
        return "null"
    return next((name for py, name in _JSON_TYPES if isinstance(v, py)), type(v).__name__)


# --- field errors, as k8s.io/apimachinery/pkg/util/validation/field builds them -------------------


def _invalid(path: str, value: Any, detail: str) -> FieldError:
    return FieldError(_field(path), INVALID, f"Invalid value: {_go_value(value)}: {detail}")


def _type_invalid(path: str, value: Any, detail: str) -> FieldError:
    return FieldError(_field(path), TYPE_INVALID, f"Invalid value: {_go_value(value)}: {detail}")


def _required(path: str, detail: str = "") -> FieldError:
    return FieldError(
        _field(path), REQUIRED, f"Required value: {detail}" if detail else "Required value"
    )


def _forbidden(path: str, detail: str) -> FieldError:
    return FieldError(_field(path), FORBIDDEN, f"Forbidden: {detail}" if detail else "Forbidden")


def _duplicate(path: str, value: Any) -> FieldError:
    return FieldError(_field(path), DUPLICATE, f"Duplicate value: {_go_value(value)}")


def _not_supported(path: str, value: Any, allowed: list[Any]) -> FieldError:
    values = ", ".join(_go_quote(_go_json(a)) for a in allowed)
    detail = f": supported values: {values}" if values else ""
    return FieldError(_field(path), NOT_SUPPORTED, f"Unsupported value: {_go_value(value)}{detail}")


def _too_long(path: str, limit: int) -> FieldError:
    unit = "byte" if limit == 1 else "bytes"
    return FieldError(_field(path), TOO_LONG, f"Too long: may not be more than {limit} {unit}")


def _too_many(path: str, actual: int, limit: int) -> FieldError:
    unit = "item" if limit == 1 else "items"
    return FieldError(
        _field(path), TOO_MANY, f"Too many: {actual}: must have at most {limit} {unit}"
    )


def _composite(message: str) -> FieldError:
    """go-openapi's composite errors (anyOf, oneOf, ...) reach the client without a field."""
    return FieldError(ROOT_FIELD, INVALID, f'Invalid value: "": {message}')


# --- formats ------------------------------------------------------------------------------------

_DATE_TIME_CLOCK: Final = re.compile(
    r"([0-9]{2}):([0-9]{2}):([0-9]{2})(.[0-9]+)?(z|([+-][0-9]{2}:[0-9]{2}))"
)
_UUID: Final = {
    "uuid": re.compile(r"(?i)[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}"),
    "uuid3": re.compile(r"(?i)[0-9a-f]{8}-?[0-9a-f]{4}-?3[0-9a-f]{3}-?[0-9a-f]{4}-?[0-9a-f]{12}"),
    "uuid4": re.compile(
        r"(?i)[0-9a-f]{8}-?[0-9a-f]{4}-?4[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}"
    ),
    "uuid5": re.compile(
        r"(?i)[0-9a-f]{8}-?[0-9a-f]{4}-?5[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}"
    ),
}
_MAC: Final = re.compile(r"(?i)[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}")
_HEX_COLOR: Final = re.compile(r"#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
# Formats apiextensions keeps (written without dashes); any other format is dropped from the schema.
_SUPPORTED_FORMATS: Final = frozenset(
    {
        *("bsonobjectid", "uri", "email", "hostname", "ipv4", "ipv6", "cidr", "mac"),
        *("uuid", "uuid3", "uuid4", "uuid5", "isbn", "isbn10", "isbn13", "creditcard", "ssn"),
        *("hexcolor", "rgbcolor", "byte", "password", "date", "duration", "datetime"),
    }
)


def _is_date(s: str) -> bool:
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", s):
        return False
    try:
        datetime.date.fromisoformat(s)
    except ValueError:
        return False
    return True


def _is_date_time(s: str) -> bool:
    parts = s.lower().split("t")
    if len(s) < 4 or len(parts) < 2 or not _is_date(parts[0]):  # noqa: PLR2004
        return False
    m = _DATE_TIME_CLOCK.match(parts[1])
    return m is not None and m[1] <= "23" and m[2] <= "59" and m[3] <= "59"


def _is_byte(s: str) -> bool:
    try:
        base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        return False
    return bool(s)


def _is_ip(s: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(s).version == version
    except ValueError:
        return False


def _is_cidr(s: str) -> bool:
    try:
        ipaddress.ip_network(s, strict=False)
    except ValueError:
        return False
    return "/" in s


def _matcher(rx: re.Pattern[str]) -> Callable[[str], bool]:
    return lambda s: rx.fullmatch(s) is not None


_FORMAT_CHECKS: Final[Mapping[str, Callable[[str], bool]]] = MappingProxyType(
    {
        "byte": _is_byte,
        "date": _is_date,
        "datetime": _is_date_time,
        "ipv4": lambda s: _is_ip(s, 4),
        "ipv6": lambda s: _is_ip(s, 6),
        "cidr": _is_cidr,
        "mac": _matcher(_MAC),
        "hexcolor": _matcher(_HEX_COLOR),
        **{name: _matcher(rx) for name, rx in _UUID.items()},
    }
)


def _format(s: Schema) -> str:
    """The schema's format if apiextensions keeps it (int32, int64, ... are dropped), else ""."""
    fmt = s.get("format")
    if isinstance(fmt, str) and fmt.replace("-", "") in _SUPPORTED_FORMATS:
        return fmt
    return ""


# --- OpenAPI v3 keyword validation (kube-openapi's SchemaValidator) ------------------------------


def _types(s: Schema) -> list[str]:
    if s.get("x-kubernetes-int-or-string"):
        return ["integer", "string"]
    t = s.get("type")
    return [t] if isinstance(t, str) and t else []


def _check(s: Schema, v: Any, path: str) -> list[FieldError]:
    """Every keyword error of v against s (CEL rules aside), in kube-openapi's order."""
    errs = _check_type(s, v, path)
    if v is None:
        return errs + _check_enum(s, v, path)
    errs += _check_composition(s, v, path)
    if isinstance(v, str):
        errs += _check_string(s, v, path)
        errs += _check_format(s, v, path)
    elif isinstance(v, int | float) and not isinstance(v, bool):
        errs += _check_number(s, v, path)
    elif isinstance(v, list):
        errs += _check_array(s, v, path)
    errs += _check_enum(s, v, path)
    if isinstance(v, dict):
        errs += _check_object(s, v, path)
    return errs


def _check_type(s: Schema, v: Any, path: str) -> list[FieldError]:
    types, fmt = _types(s), _format(s)
    if v is None:
        if types and not s.get("nullable"):
            return [
                _type_invalid(
                    path, "null", f'{path} in body must be of type {",".join(types)}: "null"'
                )
            ]
        return []
    actual = _json_type(v)
    value_format = {"integer": "int64", "number": "float64"}.get(actual, "")
    float_int = actual == "number" and float(v).is_integer() and "integer" in types
    int_float = actual == "integer" and "number" in types
    if (
        fmt
        and not isinstance(v, str | list)
        and not (actual in types or value_format == fmt or float_int or int_float)
    ):
        detail = f"{path} in body must be of type {fmt}: {_go_quote(value_format)}"
        return [_type_invalid(path, value_format, detail)]
    if not types or (fmt and isinstance(v, str | list) and not {"integer", "number"} & set(types)):
        return []
    if actual in types or float_int or int_float:
        return []
    return [
        _type_invalid(
            path, actual, f"{path} in body must be of type {','.join(types)}: {_go_quote(actual)}"
        )
    ]


def _check_string(s: Schema, v: str, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    if (longest := s.get("maxLength")) is not None and len(v) > longest:
        errs.append(_too_long(path, int(longest)))
    if (shortest := s.get("minLength")) is not None and len(v) < shortest:
        errs.append(
            _invalid(path, v, f"{path} in body should be at least {int(shortest)} chars long")
        )
    if (pattern := s.get("pattern")) is not None:
        try:
            matched = re.search(pattern, v) is not None
        except re.error as e:
            errs.append(
                _invalid(
                    path, v, f"{path} in body should match '{pattern}, but pattern is invalid: {e}'"
                )
            )
        else:
            if not matched:
                errs.append(_invalid(path, v, f"{path} in body should match '{pattern}'"))
    return errs


def _check_format(s: Schema, v: str, path: str) -> list[FieldError]:
    fmt = _format(s)
    check = _FORMAT_CHECKS.get(fmt.replace("-", ""))
    if check is None or check(v):
        return []
    return [_type_invalid(path, v, f"{path} in body must be of type {fmt}: {_go_quote(v)}")]


def _bound(limit: Any, v: float) -> float:
    """The bound as kube-openapi compares it: truncated to an integer when the value is one."""
    return float(int(limit)) if isinstance(v, int) else float(limit)


def _render_bound(limit: Any, v: float) -> str:
    return str(int(limit)) if isinstance(v, int) else _go_float(float(limit))


def _check_number(s: Schema, v: float, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    if (factor := s.get("multipleOf")) is not None and not _is_multiple(v, factor):
        shown = _render_bound(factor, v) if int(factor) != 0 else _go_float(float(factor))
        errs.append(_invalid(path, v, f"{path} in body should be a multiple of {shown}"))
    if (top := s.get("maximum")) is not None:
        exclusive = bool(s.get("exclusiveMaximum"))
        if v > _bound(top, v) or (exclusive and v == _bound(top, v)):
            relation = "less than" if exclusive else "less than or equal to"
            errs.append(
                _invalid(path, v, f"{path} in body should be {relation} {_render_bound(top, v)}")
            )
    if (bottom := s.get("minimum")) is not None:
        exclusive = bool(s.get("exclusiveMinimum"))
        if v < _bound(bottom, v) or (exclusive and v == _bound(bottom, v)):
            relation = "greater than" if exclusive else "greater than or equal to"
            errs.append(
                _invalid(path, v, f"{path} in body should be {relation} {_render_bound(bottom, v)}")
            )
    return errs


def _is_multiple(v: float, factor: Any) -> bool:
    if isinstance(v, int) and int(factor) != 0:
        return v % int(factor) == 0
    ratio = v / float(factor) if float(factor) >= 1 else 1 / float(factor) * v
    return math.isclose(ratio, round(ratio), rel_tol=1e-9, abs_tol=1e-9)


def _check_array(s: Schema, v: list[Any], path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    items = s.get("items")
    if isinstance(items, dict):
        for i, item in enumerate(v):
            errs += _check(items, item, _index(path, i))
    if (fewest := s.get("minItems")) is not None and len(v) < fewest:
        errs.append(
            _invalid(path, len(v), f"{path} in body should have at least {int(fewest)} items")
        )
    if (most := s.get("maxItems")) is not None and len(v) > most:
        errs.append(_too_many(path, len(v), int(most)))
    if s.get("uniqueItems") and len({_canonical(item) for item in v}) < len(v):
        errs.append(_invalid(path, "", f"{path} in body shouldn't contain duplicates"))
    return errs


def _canonical(v: Any) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


def _enum_equal(v: Any, candidate: Any) -> bool:
    numbers = (int, float)
    if isinstance(v, numbers) and isinstance(candidate, numbers):
        both_bool = isinstance(v, bool) and isinstance(candidate, bool)
        neither_bool = not isinstance(v, bool) and not isinstance(candidate, bool)
        return (both_bool or neither_bool) and v == candidate
    return _canonical(v) == _canonical(candidate)


def _check_enum(s: Schema, v: Any, path: str) -> list[FieldError]:
    allowed = s.get("enum")
    if not allowed or any(_enum_equal(v, a) for a in allowed):
        return []
    return [_not_supported(path, v, list(allowed))]


def _check_object(s: Schema, v: dict[str, Any], path: str) -> list[FieldError]:
    if (fewest := s.get("minProperties")) is not None and len(v) < fewest:
        return [
            _invalid(path, len(v), f"{path} in body should have at least {int(fewest)} properties")
        ]
    if (most := s.get("maxProperties")) is not None and len(v) > most:
        return [_too_many(path, len(v), int(most))]
    props: dict[str, Schema] = s.get("properties") or {}
    extra = s.get("additionalProperties")
    errs: list[FieldError] = []
    for k, item in v.items():
        if k in props:
            continue
        if extra is False:
            errs.append(_invalid(path, k, f"{path}.{k} in body is a forbidden property"))
        elif isinstance(extra, dict):
            errs += _check(extra, item, _key(path, k))
    for name, prop in props.items():
        if name in v:
            errs += _check(prop, v[name], _child(path, name))
    errs += [_required(_child(path, name)) for name in s.get("required") or [] if name not in v]
    return errs


def _check_composition(s: Schema, v: Any, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    name = _go_quote(path)
    if any_of := s.get("anyOf"):
        results = [_check(sub, v, path) for sub in any_of]
        if all(results):
            errs.append(_composite(f"{name} must validate at least one schema (anyOf)"))
            errs += _fewest(results)
    if one_of := s.get("oneOf"):
        results = [_check(sub, v, path) for sub in one_of]
        passed = sum(1 for r in results if not r)
        if passed != 1:
            found = "Found none valid" if passed == 0 else f"Found {passed} valid alternatives"
            errs.append(
                _composite(f"{name} must validate one and only one schema (oneOf). {found}")
            )
            errs += _fewest(results) if passed == 0 else []
    if all_of := s.get("allOf"):
        results = [_check(sub, v, path) for sub in all_of]
        errs += [e for r in results for e in r]
        passed = sum(1 for r in results if not r)
        if passed != len(results):
            none = ". None validated" if passed == 0 else ""
            errs.append(_composite(f"{name} must validate all the schemas (allOf){none}"))
    if isinstance(s.get("not"), dict) and not _check(s["not"], v, path):
        errs.append(_composite(f"{name} must not validate the schema (not)"))
    return errs


def _fewest(results: list[list[FieldError]]) -> list[FieldError]:
    """The failing alternative to report (go-openapi picks the one that matched most)."""
    return min(results, key=len)


def _dedupe(errs: list[FieldError]) -> list[FieldError]:
    return list(dict.fromkeys(errs))


# --- CEL: x-kubernetes-validations --------------------------------------------------------------


def _is_sorted(items: list[Any]) -> bool:
    return all(a <= b for a, b in itertools.pairwise(items))


def _find(s: str, pattern: str) -> str:
    m = re.search(pattern, s)
    return m.group(0) if m else ""


def _find_all(s: str, pattern: str, limit: int = -1) -> list[str]:
    found = [m.group(0) for m in re.finditer(pattern, s)]
    return found if limit < 0 else found[:limit]


# cel-go's extension libraries that Kubernetes enables, as far as cel.stdlib and these cover them.
_CEL_FUNCTIONS: Final[Mapping[str, Callable[..., Any]]] = MappingProxyType(
    {**cel_stdlib.STDLIB_FUNCTIONS, "isSorted": _is_sorted, "find": _find, "findAll": _find_all}
)
_CEL_ERRORS: Final = (
    ArithmeticError,
    LookupError,
    TypeError,
    ValueError,
    RuntimeError,
    AttributeError,
)


@dataclass(frozen=True, slots=True)
class _Program:
    program: cel.Program | None
    error: str
    uses_old_self: bool
    functions: Mapping[str, Callable[..., Any]]


def _compile_error(text: str) -> str:
    """cel-go's wording: "compilation failed: ERROR: <input>:1:9: Syntax error: ..."."""
    first = text.splitlines()[0] if text else "invalid expression"
    at = first.find("ERROR: ")
    return f"compilation failed: {first[at:] if at >= 0 else first}"


@functools.lru_cache(maxsize=4096)
def _compile(expression: str) -> _Program:
    try:
        program = cel.compile(expression)
    except ValueError as e:
        return _Program(None, _compile_error(str(e)), False, {})
    used = set(program.functions())
    functions = {name: f for name, f in _CEL_FUNCTIONS.items() if name.rsplit(".", 1)[-1] in used}
    return _Program(program, "", "oldSelf" in program.variables(), MappingProxyType(functions))


def _execute(program: cel.Program, compiled: _Program, activation: dict[str, Any]) -> Any:
    if compiled.functions:
        return program.execute(cel.Context(activation, dict(compiled.functions)))
    return program.execute(activation)


def _cel_value(s: Any, v: Any) -> Any:
    """v as CEL sees it: a copy where values of ``type: number`` fields are doubles."""
    if not isinstance(s, dict):
        return v
    if isinstance(v, dict):
        props = s.get("properties") or {}
        extra = s.get("additionalProperties")
        return {k: _cel_value(props.get(k, extra), item) for k, item in v.items()}
    if isinstance(v, list):
        return [_cel_value(s.get("items"), item) for item in v]
    if s.get("type") == "number" and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    return v


def _has_rules(s: Any) -> bool:
    if not isinstance(s, dict):
        return False
    if s.get("x-kubernetes-validations"):
        return True
    children = [
        *(s.get("properties") or {}).values(),
        s.get("additionalProperties"),
        s.get("items"),
    ]
    return any(_has_rules(c) for c in children)


# id(schema node) -> (the node, kept so its id is not reused; whether a rule under it uses oldSelf)
_OLD_SELF_UNDER: dict[int, tuple[Schema, bool]] = {}


def _uses_old_self(s: Schema) -> bool:
    """Whether a rule of ``s`` or of a node under it is a transition rule (uses oldSelf)."""
    known = _OLD_SELF_UNDER.get(id(s))
    if known is not None and known[0] is s:
        return known[1]
    children = [
        *(s.get("properties") or {}).values(),
        s.get("additionalProperties"),
        s.get("items"),
    ]
    uses = any(
        _compile(str(rule.get("rule", ""))).uses_old_self
        for rule in s.get("x-kubernetes-validations") or []
    ) or any(_uses_old_self(c) for c in children if isinstance(c, dict))
    _OLD_SELF_UNDER[id(s)] = (s, uses)
    return uses


def _cel_walk(s: Any, v: Any, old: Any, path: str) -> list[FieldError]:
    """Rule errors at this node, then at its properties, map values and list items. A value an
    update leaves unchanged is not checked again (CRD validation ratcheting, KEP-4008, GA in
    1.33), unless a transition rule (oldSelf) lies under it."""
    if v is None or not isinstance(s, dict):
        return []
    if old is not _ABSENT and v == old and not _uses_old_self(s):
        return []
    node_type = str(s.get("type", ""))
    errs = [
        e
        for rule in s.get("x-kubernetes-validations") or []
        for e in _check_rule(rule, node_type, path, v, old)
    ]
    if isinstance(v, dict):
        props = s.get("properties") or {}
        extra = s.get("additionalProperties")
        olds = old if isinstance(old, dict) else {}
        for k, item in v.items():
            if k in props:
                errs += _cel_walk(props[k], item, olds.get(k, _ABSENT), _child(path, k))
            elif isinstance(extra, dict):
                errs += _cel_walk(extra, item, olds.get(k, _ABSENT), _key(path, k))
    elif isinstance(v, list) and isinstance(s.get("items"), dict):
        for i, (item, was) in enumerate(zip(v, _correlate(s, v, old), strict=True)):
            errs += _cel_walk(s["items"], item, was, _index(path, i))
    return errs


def _correlate(s: Schema, v: list[Any], old: Any) -> list[Any]:
    """Old items matching new ones: only lists of type map correlate (by their keys)."""
    keys = s.get("x-kubernetes-list-map-keys") or []
    if s.get("x-kubernetes-list-type") != "map" or not keys or not isinstance(old, list):
        return [_ABSENT] * len(v)

    def key_of(item: Any) -> tuple[str, ...]:
        return tuple(_canonical(item.get(k)) for k in keys) if isinstance(item, dict) else ()

    by_key = {key_of(item): item for item in old}
    return [by_key.get(key_of(item), _ABSENT) for item in v]


def _rule_error_string(rule: Mapping[str, Any]) -> str:
    return str(rule.get("message") or "").strip() or str(rule.get("rule", "")).strip()


def _rule_message(rule: Mapping[str, Any]) -> str:
    message = str(rule.get("message") or "").strip()
    return message or f"failed rule: {str(rule.get('rule', '')).strip()}"


def _activation(
    compiled: _Program, rule: Mapping[str, Any], v: Any, old: Any
) -> dict[str, Any] | None:
    """Variables for the rule, or None where a transition rule has no old value to compare."""
    optional = bool(rule.get("optionalOldSelf"))
    if compiled.uses_old_self and old is _ABSENT and not optional:
        return None
    activation: dict[str, Any] = {"self": v}
    if optional:
        activation["oldSelf"] = (
            cel.OptionalValue.none() if old is _ABSENT else cel.OptionalValue.of(old)
        )
    elif old is not _ABSENT:
        activation["oldSelf"] = old
    return activation


def _evaluation_error(e: Exception, rule: Mapping[str, Any]) -> str:
    """The detail of a rule that failed to evaluate, in cel-go's and apiextensions' words."""
    target = _rule_error_string(rule)
    if isinstance(e, TypeError):
        return (
            "'no such overload': call arguments did not match a supported operator, function or "
            f"macro signature for rule: {target}"
        )
    if isinstance(e, KeyError):
        reason = f"no such key: {e.args[0] if e.args else ''}"
    elif isinstance(e, ZeroDivisionError):
        reason = "division by zero"
    elif isinstance(e, OverflowError):
        reason = "integer overflow"
    else:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    return f"{reason} evaluating rule: {target}"


def _check_rule(
    rule: Mapping[str, Any], node_type: str, path: str, v: Any, old: Any
) -> list[FieldError]:
    compiled = _compile(str(rule.get("rule", "")))
    if compiled.program is None:
        return [_invalid(path, node_type, f"rule compile error: {compiled.error}")]
    activation = _activation(compiled, rule, v, old)
    if activation is None:
        return []
    try:
        result = _execute(compiled.program, compiled, activation)
    except _CEL_ERRORS as e:
        return [_invalid(path, node_type, _evaluation_error(e, rule))]
    if result is True:
        return []
    if not isinstance(result, bool):
        return [
            _invalid(path, node_type, "rule compile error: cel expression must evaluate to a bool")
        ]
    detail = _message_expression(rule, activation) or _rule_message(rule)
    return [_error_for_reason(_rule_field_path(path, rule), node_type, detail, rule.get("reason"))]


def _message_expression(rule: Mapping[str, Any], activation: dict[str, Any]) -> str | None:
    """The evaluated messageExpression, or None to fall back to message (as the API server does)."""
    expression = rule.get("messageExpression")
    if not expression:
        return None
    compiled = _compile(str(expression))
    if compiled.program is None:
        return None
    try:
        out = _execute(compiled.program, compiled, activation)
    except _CEL_ERRORS:
        return None
    if not isinstance(out, str) or not out.strip() or "\n" in out.strip() or "\r" in out:
        return None
    return out.strip()


def _error_for_reason(path: str, node_type: str, detail: str, reason: Any) -> FieldError:
    if reason == FORBIDDEN:
        return _forbidden(path, detail)
    if reason == REQUIRED:
        return _required(path, detail)
    if reason == DUPLICATE:
        return _duplicate(path, node_type)
    return _invalid(path, node_type, detail)


_FIELD_PATH_STEP: Final = re.compile(
    r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[\s*'([^']*)'\s*\]|\[\s*\"([^\"]*)\"\s*\]|\[(\d+)\]"
)


def _rule_field_path(path: str, rule: Mapping[str, Any]) -> str:
    """The rule's fieldPath (``.a.b``, ``['k']``, ``[0]``) appended to the node's path."""
    spec = str(rule.get("fieldPath") or "").strip()
    if spec and not spec.startswith(("[", ".")):
        spec = "." + spec
    for m in _FIELD_PATH_STEP.finditer(spec):
        name, single, double, index = m.groups()
        if name is not None:
            path = _child(path, name)
        elif index is not None:
            path = _index(path, int(index))
        else:
            path = _key(path, single if single is not None else double)
    return path


# --- public API ---------------------------------------------------------------------------------


def apply_defaults(schema: dict[str, Any], obj: Any) -> Any:
    """Return a deep copy of obj with `default` values from the schema filled in where the field
    is absent (recursively, including inside array items and additionalProperties maps), as the
    API server does on create/update. Defaults are applied to properties of objects that exist; a
    defaulted object value is itself defaulted recursively. A null in a non-nullable field counts
    as absent."""
    result = copy.deepcopy(obj)
    _default(schema, result)
    return result


def _defaults_null(s: Any, v: Any) -> bool:
    return (
        v is None and isinstance(s, dict) and s.get("default") is not None and not s.get("nullable")
    )


def _default(s: Any, v: Any) -> None:
    if not isinstance(s, dict):
        return
    if isinstance(v, dict):
        props: dict[str, Schema] = s.get("properties") or {}
        for name, prop in props.items():
            if prop.get("default") is not None and (name not in v or _defaults_null(prop, v[name])):
                v[name] = copy.deepcopy(prop["default"])
        extra = s.get("additionalProperties")
        for k in v:
            child: Any = props.get(k, extra)
            if _defaults_null(child, v[k]):
                v[k] = copy.deepcopy(child["default"])
            _default(child, v[k])
    elif isinstance(v, list):
        items: Any = s.get("items")
        for i in range(len(v)):
            if _defaults_null(items, v[i]):
                v[i] = copy.deepcopy(items["default"])
            _default(items, v[i])


def prune(schema: dict[str, Any], obj: Any) -> tuple[Any, list[str]]:
    """Return (copy of obj without fields not declared in the schema, list of dotted paths
    removed). Unknown fields are kept where the schema (or an ancestor) says
    `x-kubernetes-preserve-unknown-fields: true` or where `additionalProperties` is given.
    `metadata` at the top level, plus `apiVersion` and `kind`, are never pruned (the API server
    handles metadata itself), nor are they in embedded resources. Like the API server, nulls in
    non-nullable fields without a default are dropped too (not listed: they are not unknown)."""
    removed: list[str] = []
    result = copy.deepcopy(obj)
    _prune(schema, result, "", removed, resource=True)
    return result, removed


def _prune(s: Schema, v: Any, path: str, removed: list[str], *, resource: bool) -> None:
    if isinstance(v, list):
        items = s.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(v):
                _prune(items, item, _index(path, i), removed, resource=_embedded(items))
        return
    if not isinstance(v, dict):
        return
    props: dict[str, Schema] = s.get("properties") or {}
    extra = s.get("additionalProperties")
    keep_unknown = s.get("x-kubernetes-preserve-unknown-fields") is True or extra is True
    for k in list(v):
        if resource and k in _RESOURCE_FIELDS:
            continue
        child = props[k] if k in props else extra if isinstance(extra, dict) else None
        child_path = _child(path, k) if k in props or child is None else _key(path, k)
        if child is None:
            if not keep_unknown:
                del v[k]
                removed.append(child_path)
        elif v[k] is None and not child.get("nullable") and child.get("default") is None:
            del v[k]
        else:
            _prune(child, v[k], child_path, removed, resource=_embedded(child))


def _embedded(s: Schema) -> bool:
    return s.get("x-kubernetes-embedded-resource") is True


def validate(schema: dict[str, Any], obj: Any, old: Any | None = None) -> list[FieldError]:
    """All problems of obj against the schema, collected (not just the first), as kube-apiserver
    reports them for a custom resource: OpenAPI v3 keywords first, then `x-kubernetes-validations`
    CEL rules, which are skipped (with one error saying so) when a type, required, enum or size
    error means the object does not have the shape the rules were written for. Pass obj after
    pruning and defaulting; `old` is the previous version of the object on update (for transition
    rules using oldSelf); None on create."""
    errs = _dedupe(_check(schema, obj, ""))
    if not _has_rules(schema):
        return errs
    if any(e.kind in _BLOCKING for e in errs):
        return [*errs, _RULES_NOT_CHECKED]
    previous = _ABSENT if old is None else _cel_value(schema, old)
    return _dedupe([*errs, *_cel_walk(schema, _cel_value(schema, obj), previous, "")])
