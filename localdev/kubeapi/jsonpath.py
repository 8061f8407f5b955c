"""The Kubernetes JSONPath subset (``k8s.io/client-go/util/jsonpath``) that CRD printer columns
and ``-o jsonpath`` templates use, and how kube-apiserver turns a printer column's first match
into a Table cell. Recursive descent (``..``), ``range``/``end`` and multi-part templates are left
out; rejecting a CRD whose column path is invalid is the caller's job."""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, assert_never

# --- syntax tree --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Field:
    name: str


@dataclass(frozen=True)
class _Wildcard:
    pass


@dataclass(frozen=True)
class _Index:
    index: int


@dataclass(frozen=True)
class _Slice:
    start: int | None
    stop: int | None
    step: int


@dataclass(frozen=True)
class _Literal:
    value: Any


@dataclass(frozen=True)
class _Path:
    steps: tuple[_Step, ...]


@dataclass(frozen=True)
class _Filter:
    left: _Path | _Literal
    operator: str  # "exists" when there is no right-hand side
    right: _Path | _Literal | None


@dataclass(frozen=True)
class _Union:
    branches: tuple[_Path, ...]


_Step = _Field | _Wildcard | _Index | _Slice | _Filter | _Union


def evaluate(path: str, obj: Any) -> list[Any]:
    """Every value ``path`` reaches in ``obj``, in order; nothing found is ``[]``. The path may
    be wrapped in braces as in a template (``{.metadata.name}``). Bad syntax raises
    ``ValueError``."""
    return _eval(_parse(path), [obj])


def printer_value(path: str, obj: Any, column_type: str, *, now: datetime | None = None) -> Any:
    """The Table cell kube-apiserver serves for a CRD printer column of ``column_type``: the
    first match, ``None`` when there is none or it has the wrong JSON type. ``integer`` truncates
    a fractional number and ``number`` widens an integer, as Kubernetes does; ``string`` prints
    scalars as Go's ``%v`` and maps or lists as compact JSON (a ``null`` as ``<no value>``).
    ``date`` keeps the timestamp string unless ``now`` (an aware datetime) is given: then it is
    the age Kubernetes would show (``5m``, ``3d4h``; ``<invalid>`` for a malformed timestamp)."""
    matches = evaluate(path, obj)
    if not matches:
        return None
    value = matches[0]
    if column_type == "string":
        return _string_cell(value)
    if column_type == "date":
        return _date_cell(value, now)
    cell = _TYPED_CELLS.get(column_type)
    return None if cell is None or value is None else cell(value)


# --- parsing ------------------------------------------------------------------------------------

_TERMINATORS = frozenset(" \t\r\n.,[]$@{}")
_SLICE = re.compile(r"(-?\d*)(:-?\d*)?(:-?\d*)?")
_FILTER = re.compile(r"([^!<>=]+)([!<>=]+)(.+?)", re.DOTALL)
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?)")
_COMPARISONS = frozenset({"==", "!=", "<", ">", "<=", ">="})


def _parse(path: str) -> _Path:
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    if not text:
        raise ValueError("empty JSONPath expression")
    return _Path(tuple(_parse_steps(text)))


def _parse_steps(text: str) -> list[_Step]:
    """A path: an optional ``$`` or ``@`` (both mean "the current value") and then fields
    (``.name``, ``.*``) and brackets (``[0]``, ``[1:3]``, ``[*]``, ``['key']``, ``[?(...)]``)."""
    steps: list[_Step] = []
    pos = 1 if text[0] in "$@" else 0
    while pos < len(text):
        if text.startswith("..", pos):
            raise ValueError("recursive descent (..) is not supported")
        if text[pos] == ".":
            parsed, pos = _parse_field(text, pos + 1)
        elif text[pos] == "[":
            parsed, pos = _parse_bracket(text, pos)
        else:
            raise ValueError(f"unrecognized character in action: {text[pos]!r} in {text!r}")
        steps.extend(parsed)
    return steps


def _parse_field(text: str, pos: int) -> tuple[list[_Step], int]:
    """A field name runs to the next terminator; a backslash makes the next character part of
    it (``kaito\\.sh/runtime``), and backslashes themselves drop out, as in Kubernetes."""
    name: list[str] = []
    while pos < len(text) and text[pos] not in _TERMINATORS:
        if text[pos] == "\\" and pos + 1 < len(text):
            pos += 1
        if text[pos] != "\\":
            name.append(text[pos])
        pos += 1
    field = "".join(name)
    if field == "*":
        return [_Wildcard()], pos
    return ([_Field(field)] if field else []), pos


def _parse_bracket(text: str, pos: int) -> tuple[list[_Step], int]:
    if text.startswith("[?(", pos):
        return _parse_filter(text, pos + len("[?("))
    end, quoted = pos + 1, False
    while end < len(text) and (quoted or text[end] != "]"):
        quoted = quoted != (text[end] == "'")
        end += 1
    if end >= len(text):
        raise ValueError(f"unterminated array in {text!r}")
    inner = text[pos + 1 : end]
    if "," in inner:
        branches = tuple(_Path(tuple(_bracket_steps(p.strip()))) for p in inner.split(","))
        return [_Union(branches)], end + 1
    return _bracket_steps(inner), end + 1


def _bracket_steps(inner: str) -> list[_Step]:
    """``*``, an index, a slice, or a single-quoted key. As in Kubernetes, a quoted key is read
    as a field path, so its dots must be escaped: ``['kaito\\.sh/runtime']``."""
    if inner == "*":
        return [_Slice(None, None, 1)]
    if len(inner) > 1 and inner[0] == inner[-1] == "'" and "'" not in inner[1:-1]:
        return _parse_steps("." + inner[1:-1])
    match = _SLICE.fullmatch(inner)
    if match is None or inner in ("", "-"):
        raise ValueError(f"invalid array index {inner}")
    start, stop, step = match.groups()
    if stop is None:
        return [_Index(int(start))]
    bounds = [int(t) if t not in ("", "-") else None for t in (start, stop[1:], (step or ":")[1:])]
    if bounds[2] is not None and bounds[2] <= 0:
        raise ValueError("step must be > 0")
    return [_Slice(bounds[0], bounds[1], bounds[2] or 1)]


def _parse_filter(text: str, start: int) -> tuple[list[_Step], int]:
    """``[?(left op right)]`` or ``[?(path)]`` (the path exists); ``)`` inside quotes is text."""
    pos, quote = start, ""
    while pos < len(text) and (quote or text[pos] != ")"):
        if quote and text[pos] == "\\":
            pos += 1
        elif text[pos] in "'\"" and quote in ("", text[pos]):
            quote = "" if quote else text[pos]
        pos += 1
    if pos >= len(text):
        raise ValueError(f"unterminated filter in {text!r}")
    if not text.startswith("]", pos + 1):
        raise ValueError("unclosed array expect ]")
    expression = text[start:pos].strip()
    match = _FILTER.fullmatch(expression)
    if match is None:
        return [_Filter(_operand(expression), "exists", None)], pos + 2
    left, op, right = (g.strip() for g in match.groups())
    if op not in _COMPARISONS:
        raise ValueError(f"unrecognized filter operator {op}")
    return [_Filter(_operand(left), op, _operand(right))], pos + 2


def _operand(text: str) -> _Path | _Literal:
    if not text:
        raise ValueError("empty filter operand")
    if text[0] in "'\"":
        return _Literal(_unquote(text))
    if text in ("true", "false"):
        return _Literal(text == "true")
    if _NUMBER.fullmatch(text):
        is_int = not any(c in text for c in ".eE")
        return _Literal(int(text) if is_int else float(text))
    if text[0] in "@$.":
        return _Path(tuple(_parse_steps(text)))
    raise ValueError(f"unrecognized identifier {text}")


def _unquote(text: str) -> str:
    if len(text) < len("''") or text[-1] != text[0]:
        raise ValueError(f"unterminated quoted string {text}")
    if text[0] == '"':
        value = json.loads(text)
        if not isinstance(value, str):
            raise ValueError(f"invalid quoted string {text}")
        return value
    return re.sub(r"\\(.)", r"\1", text[1:-1])


# --- evaluation ---------------------------------------------------------------------------------


def _eval(path: _Path, values: list[Any]) -> list[Any]:
    for step in path.steps:
        values = _apply(step, values)
    return values


def _apply(step: _Step, values: list[Any]) -> list[Any]:
    match step:
        case _Field(name=name):
            return [v[name] for v in values if isinstance(v, Mapping) and name in v]
        case _Wildcard():
            return [x for v in values if isinstance(v, Mapping) for x in v.values()]
        case _Index(index=index):
            return [v[index] for v in values if isinstance(v, list) and -len(v) <= index < len(v)]
        case _Slice(start=start, stop=stop, step=stride):
            return [x for v in values if isinstance(v, list) for x in v[start:stop:stride]]
        case _Union(branches=branches):
            return [x for branch in branches for x in _eval(branch, values)]
        case _Filter():
            return [x for v in values if isinstance(v, list) for x in v if _keeps(step, x)]
        case _:
            assert_never(step)


def _keeps(condition: _Filter, element: Any) -> bool:
    """Elements whose left side is missing never pass, whatever the operator (as in Kubernetes);
    values of different JSON types never compare equal or unequal."""
    lefts = _operand_values(condition.left, element)
    if not lefts or condition.right is None:
        return bool(lefts)
    rights = _operand_values(condition.right, element)
    if len(lefts) != 1 or len(rights) != 1:
        return False
    return _compare(condition.operator, lefts[0], rights[0])


def _operand_values(operand: _Path | _Literal, element: Any) -> list[Any]:
    if isinstance(operand, _Literal):
        return [operand.value]
    return _eval(operand, [element])


_ORDERINGS: Mapping[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
    "<=": operator.le,
    ">=": operator.ge,
}


def _compare(op: str, left: Any, right: Any) -> bool:
    kind = _kind(left)
    if kind is None or kind != _kind(right):
        return False
    if kind == "bool" and op not in ("==", "!="):
        return False
    return bool(_ORDERINGS[op](left, right))


def _kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "string" if isinstance(value, str) else None


# --- Table cells --------------------------------------------------------------------------------


def _integer_cell(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if math.isfinite(value) else None


def _number_cell(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _boolean_cell(value: Any) -> Any:
    return value if isinstance(value, bool) else None


_TYPED_CELLS: Mapping[str, Callable[[Any], Any]] = {
    "integer": _integer_cell,
    "number": _number_cell,
    "boolean": _boolean_cell,
}


def _string_cell(value: Any) -> str:
    """What the jsonpath printer writes for one value: strings as they are, other scalars as
    Go's ``fmt.Sprint`` prints them, maps and lists as ``json.Marshal`` writes them."""
    if isinstance(value, str):
        return value
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value, json_style=False)
    if isinstance(value, int):
        return str(value)
    return _go_json(value)


def _go_json(value: Any) -> str:
    """Go's ``json.Marshal``: sorted keys, no spaces, ``<``, ``>`` and ``&`` escaped, integral
    floats without a fraction."""
    if isinstance(value, Mapping):
        members = (f"{_go_json(str(k))}:{_go_json(value[k])}" for k in sorted(value, key=str))
        return "{" + ",".join(members) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_go_json(v) for v in value) + "]"
    if isinstance(value, float):
        return _go_float(value, json_style=True)
    text = json.dumps(value, ensure_ascii=False)
    for char, escaped in _GO_JSON_ESCAPES.items():
        text = text.replace(char, escaped)
    return text


_GO_JSON_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_JSON_FIXED_RANGE = (1e-6, 1e21)  # json.Marshal writes plain decimals in [1e-6, 1e21)
_GO_FIXED_EXPONENTS = (-4, 6)  # %v writes plain decimals for exponents in [-4, 6)


def _go_float(value: float, *, json_style: bool) -> str:
    """A float64 as Go writes it: ``json.Marshal`` uses plain decimals between 1e-6 and 1e21;
    ``%v`` (``%g`` with the shortest digits) switches to ``e`` notation from 1e+06 and below
    1e-04."""
    if not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    digits, point = _shortest_digits(abs(value))
    exponent = point - 1
    if json_style:
        low, high = _JSON_FIXED_RANGE
        use_exponent = value != 0 and not low <= abs(value) < high
    else:
        low_exponent, high_exponent = _GO_FIXED_EXPONENTS
        use_exponent = value != 0 and not low_exponent <= exponent < high_exponent
    if not use_exponent:
        return sign + _fixed(digits, point)
    mantissa = digits[0] + (f".{digits[1:]}" if len(digits) > 1 else "")
    width = 1 if json_style else 2  # json.Marshal trims "e-07" to "e-7"; %v keeps two digits
    text = f"{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):0{width}d}"
    return sign + text


def _shortest_digits(value: float) -> tuple[str, int]:
    """The shortest round-tripping digits and where the decimal point goes: 1234.5 gives
    ("12345", 4), 0.001 gives ("1", -2)."""
    if value == 0:
        return "0", 1
    _, digit_tuple, exponent = Decimal(repr(value)).as_tuple()
    digits = "".join(map(str, digit_tuple))
    point = len(digits) + int(exponent)  # an int for every finite value
    stripped = digits.lstrip("0")
    return stripped.rstrip("0") or "0", point - (len(digits) - len(stripped))


def _fixed(digits: str, point: int) -> str:
    if point <= 0:
        return "0." + "0" * -point + digits
    if point >= len(digits):
        return digits + "0" * (point - len(digits))
    return f"{digits[:point]}.{digits[point:]}"


# --- dates --------------------------------------------------------------------------------------

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
_MINUTE, _HOUR, _DAY = 60, 3600, 86400
_YEAR = 365 * _DAY
# (below this many seconds, major unit, its suffix, minor unit or 0, its suffix):
# duration.HumanDuration's steps.
_AGE_STEPS: tuple[tuple[int, int, str, int, str], ...] = (
    (2 * _MINUTE, 1, "s", 0, ""),
    (10 * _MINUTE, _MINUTE, "m", 1, "s"),
    (3 * _HOUR, _MINUTE, "m", 0, ""),
    (8 * _HOUR, _HOUR, "h", _MINUTE, "m"),
    (48 * _HOUR, _HOUR, "h", 0, ""),
    (8 * _DAY, _DAY, "d", _HOUR, "h"),
    (2 * _YEAR, _DAY, "d", 0, ""),
    (8 * _YEAR, _YEAR, "y", _DAY, "d"),
)


def _date_cell(value: Any, now: datetime | None) -> str | None:
    if not isinstance(value, str):
        return None
    if now is None:
        return value
    if value in ("", "null"):
        return "<unknown>"
    if not _RFC3339.fullmatch(value):
        return "<invalid>"
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return "<invalid>"
    return _human_duration(int((now - stamp).total_seconds()))


def _human_duration(seconds: int) -> str:
    """``duration.HumanDuration``: up to two units, coarser as the age grows."""
    if seconds < -1:
        return "<invalid>"
    seconds = max(seconds, 0)
    step = next((s for s in _AGE_STEPS if seconds < s[0]), None)
    if step is None:
        return f"{seconds // _YEAR}y"
    _, unit, suffix, minor_unit, minor_suffix = step
    text = f"{seconds // unit}{suffix}"
    minor = (seconds // minor_unit) % (unit // minor_unit) if minor_unit else 0
    return f"{text}{minor}{minor_suffix}" if minor else text
