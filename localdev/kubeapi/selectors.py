"""Label and field selectors: parse kube-apiserver's query syntax (and ``metav1.LabelSelector``
maps) into values and match them against objects. Which field paths a resource allows in a field
selector is left to the caller; here any dotted path is looked up in the object as it is."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any

from localdev.kubeapi.errors import ApiError


class Operator(StrEnum):
    """A requirement's operator, spelled as ``selection.Operator`` spells it."""

    IN = "in"
    NOT_IN = "notin"
    EQUALS = "="
    DOUBLE_EQUALS = "=="
    NOT_EQUALS = "!="
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"
    GREATER_THAN = "gt"
    LESS_THAN = "lt"


@dataclass(frozen=True)
class Requirement:
    """One label requirement: ``key``, an operator and its values (sorted for set operators)."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """``labels.Requirement.Matches``: NotIn and != also match when the label is absent."""
        present = self.key in labels
        if self.operator in _POSITIVE:
            return present and labels[self.key] in self.values
        if self.operator in _NEGATIVE:
            return not present or labels[self.key] not in self.values
        if self.operator is Operator.EXISTS:
            return present
        if self.operator is Operator.DOES_NOT_EXIST:
            return not present
        return present and _compare_integers(self.operator, labels[self.key], self.values)

    def __str__(self) -> str:
        if self.operator is Operator.EXISTS:
            return self.key
        if self.operator is Operator.DOES_NOT_EXIST:
            return f"!{self.key}"
        joined = ",".join(sorted(self.values))
        if self.operator in (Operator.IN, Operator.NOT_IN):
            return f"{self.key} {self.operator} ({joined})"
        return f"{self.key}{_SYMBOLS.get(self.operator, self.operator)}{joined}"


@dataclass(frozen=True)
class LabelSelector:
    """Requirements that must all hold, sorted by key as Kubernetes sorts them. No requirements
    matches everything; ``matches_nothing`` is ``labels.Nothing()`` (from a nil selector)."""

    requirements: tuple[Requirement, ...] = ()
    matches_nothing: bool = False

    @property
    def empty(self) -> bool:
        """Whether the selector matches every object."""
        return not self.requirements and not self.matches_nothing

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


@dataclass(frozen=True)
class FieldRequirement:
    """One field term: a dotted ``field`` path, ``=``/``==``/``!=`` and the unescaped value."""

    field: str
    operator: str
    value: str

    def matches(self, obj: Mapping[str, Any]) -> bool:
        equal = _field_text(obj, self.field) == self.value
        return not equal if self.operator == "!=" else equal

    def __str__(self) -> str:
        op = "!=" if self.operator == "!=" else "="
        return f"{self.field}{op}{_escape_field_value(self.value)}"


@dataclass(frozen=True)
class FieldSelector:
    """Field terms that must all hold; no terms matches everything."""

    requirements: tuple[FieldRequirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.requirements

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def parse_label_selector(text: str) -> LabelSelector:
    """``labels.Parse``: the ``labelSelector`` query parameter. Bad syntax, keys or values raise
    ``ApiError`` 400 BadRequest worded as kube-apiserver words it."""
    requirements = _LabelParser(text).parse()
    return LabelSelector(tuple(sorted(requirements, key=lambda r: r.key)))


def label_selector_from_dict(sel: Mapping[str, Any] | None) -> LabelSelector:
    """``metav1.LabelSelectorAsSelector``: ``None`` selects nothing, ``{}`` selects everything,
    otherwise ``matchLabels`` and ``matchExpressions`` are ANDed. Invalid content raises
    ``ApiError`` 400 BadRequest with Kubernetes' wording."""
    if sel is None:
        return LabelSelector(matches_nothing=True)
    match_labels = sel.get("matchLabels") or {}
    expressions = sel.get("matchExpressions") or []
    if not isinstance(match_labels, Mapping) or not isinstance(expressions, list):
        raise _bad_request("matchLabels must be a map and matchExpressions a list")
    try:
        requirements = [
            _new_requirement(str(k), Operator.EQUALS, (_label_text(v),), "")
            for k, v in match_labels.items()
        ]
        requirements.extend(_expression_requirement(e) for e in expressions)
    except _SelectorError as err:
        raise _bad_request(str(err)) from None
    return LabelSelector(tuple(sorted(requirements, key=lambda r: r.key)))


def matches_labels(selector: LabelSelector, labels: Mapping[str, str] | None) -> bool:
    """Whether ``labels`` (``None`` counts as no labels) satisfy every requirement."""
    if selector.matches_nothing:
        return False
    present = labels or {}
    return all(r.matches(present) for r in selector.requirements)


def parse_field_selector(text: str) -> FieldSelector:
    """``fields.ParseSelector``: comma-separated ``path=value``, ``path==value`` or
    ``path!=value`` terms; ``\\,``, ``\\=`` and ``\\\\`` escape a value's special characters.
    Anything else raises ``ApiError`` 400 BadRequest."""
    terms = sorted(_split_field_terms(text))
    requirements: list[FieldRequirement] = []
    for term in (t.strip() for t in terms):
        if not term:
            continue
        split = _split_field_term(term)
        if split is None:
            raise _bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        lhs, op, rhs = split
        requirements.append(FieldRequirement(lhs.strip(), op, _unescape_field_value(rhs.strip())))
    return FieldSelector(tuple(requirements))


def matches_fields(selector: FieldSelector, obj: Mapping[str, Any]) -> bool:
    """Whether ``obj`` satisfies every term; a missing field compares as the empty string."""
    return all(r.matches(obj) for r in selector.requirements)


# --- label requirements -------------------------------------------------------------------------

_POSITIVE = frozenset({Operator.IN, Operator.EQUALS, Operator.DOUBLE_EQUALS})
_EXACT = frozenset({Operator.EQUALS, Operator.DOUBLE_EQUALS, Operator.NOT_EQUALS})
_NEGATIVE = frozenset({Operator.NOT_IN, Operator.NOT_EQUALS})
_SYMBOLS = {Operator.GREATER_THAN: ">", Operator.LESS_THAN: "<"}
_DICT_OPERATORS = {
    "In": Operator.IN,
    "NotIn": Operator.NOT_IN,
    "Exists": Operator.EXISTS,
    "DoesNotExist": Operator.DOES_NOT_EXIST,
}
_INTEGER = re.compile(r"[+-]?[0-9]+")


class _SelectorError(Exception):
    """A requirement Kubernetes would refuse; the message is Kubernetes' own."""


def _bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def _compare_integers(op: Operator, label: str, values: tuple[str, ...]) -> bool:
    if not _INTEGER.fullmatch(label) or len(values) != 1 or not _INTEGER.fullmatch(values[0]):
        return False
    if op is Operator.GREATER_THAN:
        return int(label) > int(values[0])
    return int(label) < int(values[0])


def _label_text(value: Any) -> str:
    if not isinstance(value, str):
        raise _SelectorError(f"label values must be strings, not {json.dumps(value)}")
    return value


def _expression_requirement(expr: Any) -> Requirement:
    if not isinstance(expr, Mapping):
        raise _SelectorError("each matchExpressions entry must be a map")
    op = _DICT_OPERATORS.get(expr.get("operator", ""))
    if op is None:
        raise _SelectorError(f'"{expr.get("operator", "")}" is not a valid label selector operator')
    values = expr.get("values") or []
    if not isinstance(values, list):
        raise _SelectorError("matchExpressions values must be a list")
    return _new_requirement(str(expr.get("key", "")), op, tuple(_label_text(v) for v in values), "")


def _new_requirement(key: str, op: Operator, values: tuple[str, ...], path: str) -> Requirement:
    """``labels.NewRequirement``: every problem found, joined as ``ToAggregate`` joins them."""
    prefix = f"{path}." if path else ""
    errors = [_invalid(f"{prefix}key", key, e) for e in _key_errors(key)]
    errors += _value_count_errors(op, values, f"{prefix}values")
    for i, value in enumerate(values):
        errors += [_invalid(f"{prefix}values[{i}][{key}]", value, e) for e in _value_errors(value)]
    if errors:
        unique = list(dict.fromkeys(errors))
        raise _SelectorError(unique[0] if len(unique) == 1 else f"[{', '.join(unique)}]")
    return Requirement(key, op, values)


def _value_count_errors(op: Operator, values: tuple[str, ...], path: str) -> list[str]:
    count = len(values)
    if op in (Operator.IN, Operator.NOT_IN) and count == 0:
        return [_invalid(path, values, "for 'in', 'notin' operators, values set can't be empty")]
    if op in _EXACT and count != 1:
        return [_invalid(path, values, "exact-match compatibility requires one single value")]
    if op in (Operator.EXISTS, Operator.DOES_NOT_EXIST) and count:
        detail = "values set must be empty for exists and does not exist"
        return [_invalid(path, values, detail)]
    if op not in (Operator.GREATER_THAN, Operator.LESS_THAN):
        return []
    errors = []
    if count != 1:
        errors.append(
            _invalid(path, values, "for 'Gt', 'Lt' operators, exactly one value is required")
        )
    detail = "for 'Gt', 'Lt' operators, the value must be an integer"
    errors += [
        _invalid(f"{path}[{i}]", v, detail)
        for i, v in enumerate(values)
        if not _INTEGER.fullmatch(v)
    ]
    return errors


def _invalid(path: str, value: str | Sequence[str], detail: str) -> str:
    """``field.Invalid(...).Error()``; a nil path prints as ``<nil>``, a list as Go's ``%#v``."""
    if isinstance(value, str):
        shown = json.dumps(value, ensure_ascii=False)
    else:
        shown = "[]string{" + ", ".join(json.dumps(v, ensure_ascii=False) for v in value) + "}"
    return f"{path or '<nil>'}: Invalid value: {shown}: {detail}"


# --- Kubernetes name validation (k8s.io/apimachinery/pkg/util/validation) ------------------------

_QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QUALIFIED_NAME_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)
_LABEL_VALUE_FMT = f"({_QUALIFIED_NAME_FMT})?"
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)
_DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_FMT = _DNS1123_LABEL_FMT + "(\\." + _DNS1123_LABEL_FMT + ")*"
_DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character"
)
_NAME_MAX = 63
_SUBDOMAIN_MAX = 253
_KEY_PARTS_MAX = 2  # prefix/name


def _regex_error(message: str, fmt: str, *examples: str) -> str:
    """``validation.RegexError``, double spaces included."""
    shown = " or ".join(f"'{e}', " for e in examples)
    return f"{message} (e.g. {shown}regex used for validation is '{fmt}')"


def _qualified_name_error() -> str:
    return _regex_error(_QUALIFIED_NAME_MSG, _QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")


def _key_errors(key: str) -> list[str]:
    """``validation.IsQualifiedName``."""
    parts = key.split("/")
    if len(parts) > _KEY_PARTS_MAX:
        return [
            f"a qualified name {_qualified_name_error()} with an optional DNS subdomain prefix "
            "and '/' (e.g. 'example.com/MyName')"
        ]
    errors = [f"prefix part {e}" for e in _prefix_errors(parts[0])] if len(parts) > 1 else []
    name = parts[-1]
    if not name:
        errors.append("name part must be non-empty")
    elif len(name) > _NAME_MAX:
        errors.append(f"name part must be no more than {_NAME_MAX} characters")
    if not re.fullmatch(_QUALIFIED_NAME_FMT, name):
        errors.append(f"name part {_qualified_name_error()}")
    return ["; ".join(errors)] if errors else []


def _prefix_errors(prefix: str) -> list[str]:
    if not prefix:
        return ["must be non-empty"]
    errors = []
    if len(prefix) > _SUBDOMAIN_MAX:
        errors.append(f"must be no more than {_SUBDOMAIN_MAX} characters")
    if not re.fullmatch(_DNS1123_SUBDOMAIN_FMT, prefix):
        errors.append(_regex_error(_DNS1123_SUBDOMAIN_MSG, _DNS1123_SUBDOMAIN_FMT, "example.com"))
    return errors


def _value_errors(value: str) -> list[str]:
    """``validation.IsValidLabelValue``."""
    errors = []
    if len(value) > _NAME_MAX:
        errors.append(f"must be no more than {_NAME_MAX} characters")
    if not re.fullmatch(_LABEL_VALUE_FMT, value):
        errors.append(
            _regex_error(_LABEL_VALUE_MSG, _LABEL_VALUE_FMT, "MyValue", "my_value", "12345")
        )
    return ["; ".join(errors)] if errors else []


# --- label selector lexer and parser (labels/selector.go) ---------------------------------------


class _Tok(Enum):
    END = "end"
    IDENTIFIER = "identifier"
    OPEN = "("
    CLOSE = ")"
    COMMA = ","
    NOT = "!"
    EQUALS = "="
    DOUBLE_EQUALS = "=="
    NOT_EQUALS = "!="
    GREATER = ">"
    LESS = "<"
    IN = "in"
    NOT_IN = "notin"


_SPECIAL = frozenset("=!(),><")
_WHITESPACE = frozenset(" \t\r\n")
_SYMBOL_TOKENS = {t.value: t for t in _Tok if t.value and set(t.value) <= _SPECIAL}
_BINARY = {
    _Tok.IN: Operator.IN,
    _Tok.NOT_IN: Operator.NOT_IN,
    _Tok.EQUALS: Operator.EQUALS,
    _Tok.DOUBLE_EQUALS: Operator.DOUBLE_EQUALS,
    _Tok.NOT_EQUALS: Operator.NOT_EQUALS,
    _Tok.GREATER: Operator.GREATER_THAN,
    _Tok.LESS: Operator.LESS_THAN,
}


def _lex(text: str) -> list[tuple[_Tok, str]]:
    items: list[tuple[_Tok, str]] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos] in _WHITESPACE:
            pos += 1
        if pos >= len(text):
            items.append((_Tok.END, ""))
            return items
        end = pos
        if text[pos] in _SPECIAL:
            while end < len(text) and text[pos : end + 1] in _SYMBOL_TOKENS:
                end += 1
            items.append((_SYMBOL_TOKENS[text[pos:end]], text[pos:end]))
        else:
            while end < len(text) and text[end] not in _SPECIAL | _WHITESPACE:
                end += 1
            word = text[pos:end]
            keyword = {"in": _Tok.IN, "notin": _Tok.NOT_IN}.get(word, _Tok.IDENTIFIER)
            items.append((keyword, word))
        pos = end


class _LabelParser:
    """Recursive descent over the lexed items, with Kubernetes' error messages. In a value
    position ``in`` and ``notin`` are plain identifiers."""

    def __init__(self, text: str) -> None:
        self._items = _lex(text)
        self._pos = 0

    def _peek(self, values: bool = True) -> tuple[_Tok, str]:
        return self._as(self._items[self._pos], values)

    def _take(self, values: bool = True) -> tuple[_Tok, str]:
        item = self._items[self._pos]
        self._pos = min(self._pos + 1, len(self._items) - 1)
        return self._as(item, values)

    @staticmethod
    def _as(item: tuple[_Tok, str], values: bool) -> tuple[_Tok, str]:
        if values and item[0] in (_Tok.IN, _Tok.NOT_IN):
            return _Tok.IDENTIFIER, item[1]
        return item

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        while True:
            tok, lit = self._peek()
            if tok is _Tok.END:
                return requirements
            if tok not in (_Tok.IDENTIFIER, _Tok.NOT):
                raise _bad_request(f"found '{lit}', expected: !, identifier, or 'end of string'")
            try:
                requirements.append(self._requirement())
            except _SelectorError as err:
                raise _bad_request(f"unable to parse requirement: {err}") from None
            tok, lit = self._take()
            if tok is _Tok.END:
                return requirements
            if tok is not _Tok.COMMA:
                raise _bad_request(f"found '{lit}', expected: ',' or 'end of string'")
            tok, lit = self._peek()
            if tok not in (_Tok.IDENTIFIER, _Tok.NOT):
                raise _bad_request(f"found '{lit}', expected: identifier after ','")

    def _requirement(self) -> Requirement:
        negated = self._peek()[0] is _Tok.NOT
        if negated:
            self._take()
        tok, key = self._take()
        if tok is not _Tok.IDENTIFIER:
            raise _SelectorError(f"found '{key}', expected: identifier")
        errors = _key_errors(key)
        if errors:
            raise _SelectorError(_invalid("", key, errors[0]))
        if negated or self._peek()[0] in (_Tok.END, _Tok.COMMA):
            unary = Operator.DOES_NOT_EXIST if negated else Operator.EXISTS
            return _new_requirement(key, unary, (), "")
        tok, lit = self._take(values=False)
        op = _BINARY.get(tok)
        if op is None:
            raise _SelectorError(f"found '{lit}', expected: '=', '!=', '==', 'in', notin'")
        values = self._set_values() if op in (Operator.IN, Operator.NOT_IN) else self._exact_value()
        return _new_requirement(key, op, tuple(sorted(values)), "")

    def _set_values(self) -> set[str]:
        tok, lit = self._take()
        if tok is not _Tok.OPEN:
            raise _SelectorError(f"found '{lit}' expected: '('")
        tok, lit = self._peek()
        if tok is _Tok.CLOSE:
            self._take()
            return {""}
        if tok not in (_Tok.IDENTIFIER, _Tok.COMMA):
            raise _SelectorError(f"found '{lit}', expected: ',', ')' or identifier")
        values = self._identifier_list()
        if self._take()[0] is not _Tok.CLOSE:
            raise _SelectorError(f"found '{lit}', expected: ')'")
        return values

    def _identifier_list(self) -> set[str]:
        values: set[str] = set()
        while True:
            tok, lit = self._take()
            if tok is _Tok.IDENTIFIER:
                values.add(lit)
                tok, lit = self._peek()
                if tok is _Tok.CLOSE:
                    return values
                if tok is not _Tok.COMMA:
                    raise _SelectorError(f"found '{lit}', expected: ',' or ')'")
            elif tok is _Tok.COMMA:  # "(,", ",," and ",)" stand for the empty value
                if not values:
                    values.add("")
                if self._peek()[0] is _Tok.CLOSE:
                    values.add("")
                    return values
                if self._peek()[0] is _Tok.COMMA:
                    self._take()
                    values.add("")
            else:
                raise _SelectorError(f"found '{lit}', expected: ',', or identifier")

    def _exact_value(self) -> set[str]:
        if self._peek()[0] in (_Tok.END, _Tok.COMMA):
            return {""}
        tok, lit = self._take()
        if tok is not _Tok.IDENTIFIER:
            raise _SelectorError(f"found '{lit}', expected: identifier")
        return {lit}


# --- field selectors (fields/selector.go) -------------------------------------------------------

_FIELD_OPERATORS = ("!=", "==", "=")


def _split_field_terms(text: str) -> list[str]:
    """Split on commas not escaped by a backslash; escapes stay in the terms."""
    terms: list[str] = []
    start, escaped = 0, False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            terms.append(text[start:i])
            start = i + 1
    return [*terms, text[start:]] if text else []


def _split_field_term(term: str) -> tuple[str, str, str] | None:
    """The first operator found splits the term; the field part has no escaping."""
    for i in range(len(term)):
        for op in _FIELD_OPERATORS:
            if term.startswith(op, i):
                return term[:i], op, term[i + len(op) :]
    return None


def _unescape_field_value(value: str) -> str:
    out: list[str] = []
    escaped = False
    for ch in value:
        if escaped:
            if ch not in "\\,=":
                raise _bad_request(f"invalid field selector: invalid escape sequence: \\{ch}")
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in ",=":
            raise _bad_request(f"invalid field selector: unescaped character in value: {ord(ch)}")
        else:
            out.append(ch)
    if escaped:
        raise _bad_request("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


def _escape_field_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


def _field_text(obj: Any, path: str) -> str:
    """The dotted path's value as field selectors see it: strings as they are, booleans and
    numbers as Go prints them, anything missing or null as ``""``."""
    current = obj
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return ""
        current = current[part]
    if current is None:
        return ""
    if isinstance(current, str):
        return current
    if isinstance(current, bool):
        return "true" if current else "false"
    if isinstance(current, int | float):
        return str(current)
    return json.dumps(current, separators=(",", ":"), sort_keys=True)
