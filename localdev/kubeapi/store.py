"""The development cluster's storage: every object keyed by resource, namespace and name, one
global resourceVersion counter, a bounded log of changes, and the watches fed from it. It knows
nothing of HTTP or of API semantics (generation, status, finalizers): ``api.py`` does."""

from __future__ import annotations

import asyncio
import builtins
import copy
import json
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localdev.kubeapi.errors import ApiError

Obj = dict[str, Any]
Key = tuple[str, str]  # (group, plural)
ObjKey = tuple[str, str]  # (namespace or "", name)

# A watch queue gets None when the stream must end (cut by a fault, or the server stops).
WatchEvent = tuple[str, int, Obj]  # (type, resourceVersion, object)
WatchItem = WatchEvent | None


@dataclass(eq=False)
class Watch:
    """One open watch: the resource it follows, its filter, and its queue of (type, rv, obj)."""

    resource: Key
    namespace: str | None
    accepts: Callable[[Obj], bool]
    queue: asyncio.Queue[WatchItem] = field(default_factory=asyncio.Queue)


@dataclass(frozen=True, slots=True)
class Change:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    resource: Key
    obj: Obj


class Store:
    """Objects and their history. Stored objects are never mutated in place: every write stores
    a new deep copy, so the log and watches hold consistent snapshots."""

    def __init__(self, history: int = 10_000) -> None:
        self.rv = 0
        self._objects: dict[Key, dict[ObjKey, Obj]] = {}
        self._log: deque[Change] = deque(maxlen=history)
        self._watches: set[Watch] = set()
        self._first_rv = 1  # the oldest resourceVersion a watch can resume after (minus one)
        self.on_change: list[Callable[[Change], None]] = []

    # --- reads -----------------------------------------------------------------------------

    def get(self, resource: Key, namespace: str, name: str) -> Obj | None:
        obj = self._objects.get(resource, {}).get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def list(
        self,
        resource: Key,
        namespace: str | None = None,
        where: Callable[[Obj], bool] | None = None,
    ) -> list[Obj]:
        """Copies of the objects (of ``namespace``, for which ``where`` holds), by name. Only
        those selected are copied: a label-selected list of a few among thousands stays cheap."""
        return [
            copy.deepcopy(obj)
            for obj in self.scan(resource, namespace)
            if where is None or where(obj)
        ]

    def scan(self, resource: Key, namespace: str | None = None) -> Iterator[Obj]:
        """The stored objects themselves, by name, uncopied: read them, never change them (every
        write stores a new copy, so what this yields stays a consistent snapshot)."""
        items = self._objects.get(resource, {})
        for (ns, _), obj in sorted(items.items(), key=lambda item: item[0]):
            if namespace is None or ns == namespace:
                yield obj

    def count(self, resource: Key) -> int:
        return len(self._objects.get(resource, {}))

    def all_objects(self) -> Iterable[tuple[Key, Obj]]:
        for resource, items in list(self._objects.items()):
            for obj in list(items.values()):
                yield resource, obj

    # --- writes ----------------------------------------------------------------------------

    def put(self, resource: Key, obj: Obj, event: str) -> Obj:
        """Store ``obj`` with the next resourceVersion; returns the stored copy."""
        self.rv += 1
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(self.rv)
        meta = stored["metadata"]
        key = (meta.get("namespace") or "", meta["name"])
        self._objects.setdefault(resource, {})[key] = stored
        self._record(Change(self.rv, event, resource, stored))
        return copy.deepcopy(stored)

    def remove(self, resource: Key, namespace: str, name: str) -> Obj | None:
        stored = self._objects.get(resource, {}).pop((namespace, name), None)
        if stored is None:
            return None
        self.rv += 1
        gone = copy.deepcopy(stored)
        gone["metadata"]["resourceVersion"] = str(self.rv)
        self._record(Change(self.rv, "DELETED", resource, gone))
        return copy.deepcopy(gone)

    def _record(self, change: Change) -> None:
        if len(self._log) == self._log.maxlen:
            self._first_rv = self._log[0].rv + 1
        self._log.append(change)
        for watch in list(self._watches):
            if _follows(watch, change):
                watch.queue.put_nowait((change.type, change.rv, change.obj))
        for listener in self.on_change:
            listener(change)

    # --- watches ---------------------------------------------------------------------------

    def open_watch(self, watch: Watch, since: int | None) -> builtins.list[WatchEvent]:
        """Register ``watch``; return the changes after ``since`` it missed (none when ``since``
        is None). Raises 410 Gone when ``since`` is older than the retained history."""
        replay: builtins.list[WatchEvent] = []
        if since is not None:
            if since < self._first_rv - 1:
                raise ApiError(
                    410, "Expired", f"too old resource version: {since} ({self._first_rv - 1})"
                )
            replay = [
                (change.type, change.rv, change.obj)
                for change in self._log
                if change.rv > since and _follows(watch, change)
            ]
        self._watches.add(watch)
        return replay

    @property
    def open_watches(self) -> int:
        """How many watch streams are open (tests wait on it instead of sleeping)."""
        return len(self._watches)

    def close_watch(self, watch: Watch) -> None:
        self._watches.discard(watch)

    def cut_watches(self) -> int:
        """End every open watch stream (fault injection, shutdown). Returns how many."""
        watches = list(self._watches)
        for watch in watches:
            watch.queue.put_nowait(None)
        self._watches.clear()
        return len(watches)

    def compact(self) -> None:
        """Forget the history: any watch resuming from an older resourceVersion gets 410."""
        self._log.clear()
        self._first_rv = self.rv + 1

    # --- persistence -----------------------------------------------------------------------

    def dump(self) -> Obj:
        return {
            "resourceVersion": self.rv,
            "objects": [
                {"group": g, "plural": p, "object": obj}
                for (g, p), items in self._objects.items()
                for obj in items.values()
            ],
        }

    def load(self, data: Obj) -> None:
        """Replace the contents with a ``dump()``. History starts empty (old watches get 410)."""
        self._objects.clear()
        for entry in data.get("objects", []):
            obj = entry["object"]
            meta = obj["metadata"]
            key = (meta.get("namespace") or "", meta["name"])
            self._objects.setdefault((entry["group"], entry["plural"]), {})[key] = obj
        self.rv = int(data.get("resourceVersion", 0))
        self.compact()

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.dump()))
        tmp.replace(path)


def _follows(watch: Watch, change: Change) -> bool:
    """Whether ``change`` belongs on ``watch``: same resource, namespace and selection."""
    namespace = change.obj["metadata"].get("namespace")
    return (
        watch.resource == change.resource
        and (watch.namespace is None or namespace == watch.namespace)
        and watch.accepts(change.obj)
    )
