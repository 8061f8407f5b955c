"""Pure apply decisions: is a live object what was rendered, and what to write when it is not.

Every rendered object carries ``kaiten.sh/rendered-hash``, the sha256 of what was rendered. An
object is up to date when its hash annotation matches and every field Kaiten renders still has the
rendered value (so an edit by hand is seen; fields the API server defaults, or that other
controllers add, are left alone). When it is not, the object is replaced as a whole, with the
resourceVersion read: fields Kaiten no longer renders (an adapter's init container) go away, and a
concurrent writer makes the replace fail with a conflict instead of being overwritten.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal

Manifest = dict[str, Any]
HASH_ANNOTATION = "kaiten.sh/rendered-hash"
# Set by the API server on Services and kept on replace (a Service's IP never changes).
_SERVICE_ALLOCATED = ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy")

Action = Literal["create", "replace", "none"]


def stamp(obj: Mapping[str, Any]) -> Manifest:
    """``obj`` with its rendered-hash annotation."""
    out = copy.deepcopy(dict(obj))
    meta = out.setdefault("metadata", {})
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != HASH_ANNOTATION}
    digest = hashlib.sha256(
        json.dumps(
            {**out, "metadata": {**meta, "annotations": annotations}}, sort_keys=True
        ).encode()
    ).hexdigest()
    meta["annotations"] = {**annotations, HASH_ANNOTATION: digest}
    return out


def decide(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> Action:
    if live is None or live.get("metadata", {}).get("deletionTimestamp"):
        return "create" if live is None else "none"  # a deleting one is recreated once gone
    wanted = desired["metadata"]["annotations"][HASH_ANNOTATION]
    have = (live.get("metadata", {}).get("annotations") or {}).get(HASH_ANNOTATION)
    if have != wanted or not covers(desired, live):
        return "replace"
    return "none"


def covers(desired: Any, live: Any) -> bool:
    """Every field of ``desired`` has the same value in ``live`` (maps may hold more keys; lists
    must have the same length, element by element; an empty value matches an absent one, as the
    API server drops empty lists and maps)."""
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(
            covers(value, live[key]) if key in live else value in ({}, [], None)
            for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(desired) == len(live)
            and all(covers(d, v) for d, v in zip(desired, live, strict=True))
        )
    return bool(desired == live or _same_quantity(desired, live))


def _same_quantity(desired: Any, live: Any) -> bool:
    """``"1"`` and ``1``, or ``"0.5"`` and ``"500m"`` (a CPU request in a user's template), are
    the same value once the API server has written it in its canonical form."""
    if not (isinstance(desired, str | int) and isinstance(live, str | int)):
        return False
    if str(desired) == str(live):
        return True
    a, b = _quantity(str(desired)), _quantity(str(live))
    return a is not None and a == b


_QUANTITY = re.compile(
    r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?:([eE][+-]?[0-9]+)|([a-zA-Z]*))$"
)
_SUFFIXES = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


def _quantity(text: str) -> Decimal | None:
    """A Kubernetes resource quantity's value, or None when ``text`` is not one."""
    match = _QUANTITY.fullmatch(text)
    if match is None:
        return None
    number, exponent, suffix = match.groups()
    if exponent:
        return Decimal(number + exponent)
    scale = _SUFFIXES.get(suffix or "")
    return None if scale is None else Decimal(number) * scale


def replacement(desired: Mapping[str, Any], live: Mapping[str, Any]) -> Manifest:
    """The body of a PUT turning ``live`` into ``desired``: labels and annotations others added
    are kept, the resourceVersion read makes it conditional, a Service keeps its IPs."""
    body = copy.deepcopy(dict(desired))
    meta, live_meta = body["metadata"], live.get("metadata") or {}
    for key in ("labels", "annotations"):
        meta[key] = {**(live_meta.get(key) or {}), **(meta.get(key) or {})}
    meta["resourceVersion"] = live_meta.get("resourceVersion")
    if body.get("kind") == "Service":
        live_spec = live.get("spec") or {}
        for key in _SERVICE_ALLOCATED:
            if key in live_spec and key not in body["spec"]:
                body["spec"][key] = live_spec[key]
    return body
