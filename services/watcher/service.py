"""The watcher's use cases: observe Workspaces (list-then-watch, resume from the last
resourceVersion, relist on 410), keep Kaito's bookkeeping (finalizer, hash and revision
annotations, ControllerRevisions), announce new generations, write reported conditions to status
(coalesced per workspace, retried on 409), and hold deletion until every involved service cleaned
up. Decisions are ``core``'s; this module does the I/O."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from services.watcher import core
from services.watcher.audit import AuditLog, record_of, status_phases
from services.watcher.kubeapi import GoneError, WorkspaceApi
from services.watcher.store import WatcherStore
from shared.background import periodically
from shared.bus import Bus, Delivered, KeyedLocks
from shared.errors import KaitenError, PermanentError, TransientError
from shared.events import (
    Condition,
    Envelope,
    WorkspaceDeleting,
    WorkspaceObserved,
    WorkspaceRef,
    new_event,
)
from shared.kube import Manifest, older_version

log = structlog.get_logger(__name__)
Clock = Callable[[], datetime]
# A Workspace that failed on a transient error is handled again after this long, doubling.
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0
# Seconds a Workspace's status writer waits for more updates before it writes (a burst of
# reports about one Workspace becomes one status write).
STATUS_COALESCE_S = 0.05
# Status events taken at once per event type (each waits for its write; many share one).
STATUS_CONCURRENCY = 256
# Observed Workspaces handled at once (each waits on the API, the database and the bus).
OBSERVE_CONCURRENCY = 32


@dataclass(frozen=True, slots=True)
class WatcherOptions:
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    resync_s: float = 300.0
    cleanup_timeout_s: float = 300.0
    watch_timeout_s: int = 300


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """What one event asks of a workspace's status."""

    conditions: tuple[Condition, ...] = ()
    worker_nodes: tuple[str, ...] | None = None
    target_node_count: int | None = None
    phases: Mapping[str, Any] | None = None  # status.phases of one generation


@dataclass
class _Pending:
    """Status updates of one Workspace waiting for its writer."""

    ref: WorkspaceRef
    updates: list[tuple[StatusUpdate, asyncio.Future[None]]] = field(default_factory=list)
    writer: asyncio.Task[None] | None = None


class Watcher:
    def __init__(
        self,
        api: WorkspaceApi,
        store: WatcherStore,
        bus: Bus,
        clock: Clock,
        options: WatcherOptions,
        *,
        audit: AuditLog | None = None,
    ) -> None:
        self.api, self.store, self.bus, self.clock, self.options = api, store, bus, clock, options
        self.audit = audit
        self._pending: dict[tuple[str, str, str], _Pending] = {}
        self._rechecks: set[str] = set()
        self._retries: set[tuple[str, str]] = set()
        # (uid, condition type) -> when the newest report taken of it occurred
        self._reported: dict[tuple[str, str], datetime] = {}
        # uid -> the newest generation known announced (saves a query per status write's event)
        self._announced: dict[str, int] = {}
        # (namespace, name) -> the newest Workspace seen (watch, list or own write): a status
        # write starts from it instead of a GET, and a 409 reads again.
        self._latest: dict[tuple[str, str], Manifest] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_order = KeyedLocks()
        self._slots = asyncio.Semaphore(OBSERVE_CONCURRENCY)

    # --- observe -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Observe every configured namespace and resync periodically, until cancelled."""
        scopes: Sequence[str | None] = self.options.namespaces or (None,)
        try:
            async with asyncio.TaskGroup() as group:
                for scope in scopes:
                    group.create_task(self._observe(scope))
                group.create_task(self._resync_forever())
        finally:
            # Deadline rechecks must not outlive the watcher (its client closes after it): the
            # resync after the next start looks at deletions in progress again.
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _observe(self, namespace: str | None) -> None:
        delay = 0.2
        trigger = "list"  # the first list announces what changed; a relist announces everything
        while True:
            try:
                items, version = await self.api.list_workspaces(namespace)
                self._forget_seen(namespace)
                for obj in items:
                    self._dispatch(obj, trigger)
                delay = 0.2
                while True:  # a stream that ends (timeout, cut) resumes from the last version
                    async for kind, obj in self.api.watch(
                        namespace, version, self.options.watch_timeout_s
                    ):
                        version = str(obj["metadata"].get("resourceVersion") or version)
                        if kind in ("ADDED", "MODIFIED"):
                            self._dispatch(obj, "watch")
                        elif kind == "DELETED":
                            meta = obj["metadata"]
                            self._latest.pop((meta["namespace"], meta["name"]), None)
            except GoneError:
                log.info("watch.gone", namespace=namespace or "*")
                trigger = "relist"
            except (KaitenError, OSError) as e:
                log.warning("watch.error", namespace=namespace or "*", error=str(e))
                trigger = "relist"
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _dispatch(self, obj: Manifest, trigger: str) -> None:
        """Handle one observed Workspace in a task of its own: Workspaces overlap (each takes
        several API, database and bus round trips, so a burst handled one by one queued for
        seconds), and one Workspace's observations are handled in the order seen."""
        self._remember(obj)
        meta = obj.get("metadata") or {}
        key = f"{meta.get('namespace')}/{meta.get('name')}"

        async def handle() -> None:
            async with self._in_order.hold(key), self._slots:
                await self._safely(obj, trigger)

        task = asyncio.get_running_loop().create_task(handle())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resync_forever(self) -> None:
        await periodically("resync", self.options.resync_s, self.resync)

    async def resync(self) -> None:
        """Announce every Workspace again (heals lost events) and check deletion timeouts."""
        for scope in self.options.namespaces or (None,):
            items, _ = await self.api.list_workspaces(scope)
            for obj in items:
                await self._safely(obj, "resync")

    async def _safely(self, obj: Manifest, trigger: str, *, delay: float = RETRY_FIRST_S) -> None:
        meta = obj.get("metadata", {})
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        try:
            await self.on_workspace(obj, trigger)
        except KaitenError as e:  # the next event or resync for it tries again
            log.warning("workspace.failed", workspace=f"{namespace}/{name}", error=str(e))
            if isinstance(e, TransientError):
                wait = e.delay if e.delay is not None else delay
                self._retry_later(namespace, name, trigger, wait)
        except Exception:  # the database or the bus away for a moment (or a bug): try again
            log.exception("workspace.error", workspace=f"{namespace}/{name}")
            self._retry_later(namespace, name, trigger, delay)

    def _retry_later(self, namespace: str, name: str, trigger: str, delay: float) -> None:
        """Handle a Workspace again after ``delay`` when a transient error (an API fault) failed
        it, as a controller requeues: no event may come for it before the resync (minutes)."""
        key = (namespace, name)
        if key in self._retries:
            return
        self._retries.add(key)
        backoff = min(delay * 2, RETRY_MAX_S)

        async def retry() -> None:
            await asyncio.sleep(delay)
            self._retries.discard(key)
            try:
                obj = await self.api.get(namespace, name)
            except (KaitenError, OSError):
                self._retry_later(namespace, name, trigger, backoff)
                return
            if obj is not None:
                await self._safely(obj, trigger, delay=backoff)

        task = asyncio.get_running_loop().create_task(retry())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def on_workspace(self, obj: Manifest, trigger: str) -> None:
        ref = core.workspace_ref(obj)
        if core.is_deleting(obj):
            await self._deletion(obj, ref)
            return
        spec_hash = core.spec_hash(obj)
        # A watch event of a status write needs no revision lookup; a resync or relist checks.
        if trigger != "watch" or not core.bookkeeping_current(obj, spec_hash):
            obj = await self._bookkeeping(obj, spec_hash)
        announced = self._announced.get(ref.uid, 0)
        if announced < ref.generation:  # only a generation not known announced asks the store
            announced = await self.store.announced_generation(ref.uid)
            self._announced[ref.uid] = announced
        is_new = announced < ref.generation
        if not is_new and trigger not in ("resync", "relist"):
            return
        reason = trigger if not is_new else ("added" if ref.generation <= 1 else "changed")
        data = WorkspaceObserved(workspace=obj, spec_hash=spec_hash, trigger=reason)
        # Publish, then record: a crash in between publishes again on restart with the same
        # Nats-Msg-Id (same object, same data), which JetStream drops inside its window.
        await self.bus.publish(new_event(data, source="watcher", workspace=ref, now=self.clock()))
        if is_new:
            await self.store.announce(ref, spec_hash, self.clock())
            self._announced[ref.uid] = ref.generation

    async def _bookkeeping(self, obj: Manifest, spec_hash: str) -> Manifest:
        meta = obj["metadata"]
        revisions = await self.api.revisions(meta["namespace"], meta["name"])
        plan = core.plan_revision(obj, revisions, spec_hash)
        if plan.create is not None:
            await self.api.create_revision(plan.create)
        for name in plan.delete:
            await self.api.delete_revision(meta["namespace"], name)
        ops = core.bookkeeping_patch(obj, spec_hash, plan.revision)
        if ops is None:
            return obj
        return await self.api.json_patch(meta["namespace"], meta["name"], ops)

    # --- deletion ----------------------------------------------------------------------------

    async def _deletion(self, obj: Manifest, ref: WorkspaceRef) -> None:
        if core.FINALIZER not in (obj["metadata"].get("finalizers") or []):
            return
        since = await self.store.mark_deleting(ref, self.clock())
        await self._report_deleting(ref, "workspaceDeleted", "workspace is being deleted")
        deleted_at = datetime.fromisoformat(
            str(obj["metadata"]["deletionTimestamp"]).replace("Z", "+00:00")
        )
        await self.bus.publish(
            new_event(
                WorkspaceDeleting(deletion_timestamp=deleted_at),
                source="watcher",
                workspace=ref,
                now=self.clock(),
            )
        )
        await self.finish_deletion(ref, since)
        self._recheck_at_deadline(ref, since)

    def _recheck_at_deadline(self, ref: WorkspaceRef, since: datetime) -> None:
        """Look again when the cleanup timeout expires, even if no event arrives by then (after
        a restart, the resync does this)."""
        if ref.uid in self._rechecks:
            return
        remaining = self.options.cleanup_timeout_s - (self.clock() - since).total_seconds()

        async def recheck() -> None:
            await asyncio.sleep(max(0.0, remaining) + 0.05)
            self._rechecks.discard(ref.uid)
            try:
                await self.finish_deletion(ref)
            except KaitenError as e:
                log.warning("deletion.recheck_failed", workspace=ref.key, error=str(e))

        self._rechecks.add(ref.uid)
        task = asyncio.get_running_loop().create_task(recheck())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def finish_deletion(self, ref: WorkspaceRef, since: datetime | None = None) -> None:
        """Remove the finalizer once every involved service cleaned up, or after the timeout
        with a condition naming the services that did not answer."""
        seen = await self.store.get(ref.uid)
        obj = await self.api.get(ref.namespace, ref.name)
        if obj is None or seen is None or not core.is_deleting(obj):
            return
        waiting = sorted(seen.involved - seen.cleaned)
        started = since or seen.deleting_since or self.clock()
        timeout = timedelta(seconds=self.options.cleanup_timeout_s)
        if waiting and self.clock() - started < timeout:
            return
        if waiting:
            message = (
                f"no CleanupDone from {', '.join(waiting)} within "
                f"{self.options.cleanup_timeout_s:g} s; removed the finalizer anyway: check "
                "that service for objects left behind"
            )
            await self._report_deleting(ref, "CleanupTimedOut", message)
            obj = await self.api.get(ref.namespace, ref.name) or obj
            now = self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")
            with contextlib.suppress(KaitenError):  # best effort: the condition says it too
                await self.api.create_event(
                    core.event_for(obj, "CleanupTimedOut", message, "Warning", now)
                )
        await self._remove_finalizer(ref, obj)
        await self.store.forget(ref.uid)
        for key in [k for k in self._reported if k[0] == ref.uid]:
            del self._reported[key]
        self._announced.pop(ref.uid, None)
        log.info("workspace.released", workspace=ref.key, waited_for=waiting or None)

    async def _remove_finalizer(self, ref: WorkspaceRef, obj: Manifest | None) -> None:
        """The patch tests the resourceVersion; when someone wrote in between, read and retry."""
        for _attempt in range(5):
            ops = core.without_finalizer_patch(obj) if obj is not None else None
            if ops is None:
                return
            try:
                await self.api.json_patch(ref.namespace, ref.name, ops)
            except (PermanentError, TransientError):
                obj = await self.api.get(ref.namespace, ref.name)
            else:
                return
        raise TransientError(f"could not remove the finalizer of {ref.key}; will retry")

    async def _report_deleting(self, ref: WorkspaceRef, reason: str, message: str) -> None:
        condition = Condition(
            type="WorkspaceDeleting",
            status="True",
            reason=reason,
            message=message,
            observed_generation=ref.generation,
        )
        await self.apply_status(ref, StatusUpdate(conditions=(condition,)))

    # --- events from other services ------------------------------------------------------------

    async def on_condition(self, event: Envelope[Any]) -> asyncio.Future[None] | None:
        await self.store.add_involved(event.workspace, event.source, self.clock())
        condition = event.data.condition
        key = (event.workspace.uid, condition.type)
        latest = self._reported.get(key)
        if latest is not None and event.occurred_at < latest:
            # A report redelivered after a failed write (an API fault), older than one already
            # taken: applying it would undo the newer (Ready, then the older Pending again).
            log.info("condition.stale", workspace=event.workspace.key, type=condition.type)
            return None
        self._reported[key] = event.occurred_at
        return self.queue_status(event.workspace, StatusUpdate(conditions=(condition,)))

    async def on_resources_ready(self, event: Envelope[Any]) -> asyncio.Future[None]:
        await self.store.add_involved(event.workspace, event.source, self.clock())
        return self.queue_status(
            event.workspace, StatusUpdate(worker_nodes=tuple(sorted(event.data.node_names)))
        )

    async def on_plan_ready(self, event: Envelope[Any]) -> asyncio.Future[None]:
        return self.queue_status(
            event.workspace, StatusUpdate(target_node_count=event.data.node_count)
        )

    async def on_cleanup_done(self, event: Envelope[Any]) -> None:
        await self.store.add_cleaned(event.workspace, event.source, self.clock())
        await self.finish_deletion(event.workspace)

    # --- audit -------------------------------------------------------------------------------

    async def on_messages(self, batch: Sequence[Delivered]) -> None:
        """Store every message of the stream in the audit log; where a generation reached a new
        phase, write its phases into the Workspace's status. A failed status write is logged,
        not retried: the audit rows are stored, and the next phase writes them all."""
        if self.audit is None:
            return
        prefix = self.bus.settings.subject_prefix
        recorded = await self.audit.record([record_of(m, prefix) for m in batch])
        audit = self.audit
        await asyncio.gather(
            *(self._write_phases(audit, uid, gen) for uid, gen in recorded.advanced)
        )

    async def _write_phases(self, audit: AuditLog, uid: str, generation: int) -> None:
        timeline = await audit.timeline(uid, generation)
        if timeline is None:
            return
        ref = WorkspaceRef(
            uid=uid, namespace=timeline.namespace, name=timeline.name, generation=generation
        )
        try:
            await self.apply_status(ref, StatusUpdate(phases=status_phases(timeline)))
        except KaitenError as e:
            log.warning("phases.write_failed", workspace=ref.key, error=str(e))

    async def prune_audit(self, keep: timedelta) -> int:
        """Forget audit messages older than ``keep``."""
        if self.audit is None:
            return 0
        return await self.audit.prune(self.clock() - keep)

    # --- status writer ---------------------------------------------------------------------

    async def apply_status(self, ref: WorkspaceRef, update: StatusUpdate) -> None:
        """Queue ``update`` and wait until the status write carrying it landed."""
        await self.queue_status(ref, update)

    def queue_status(self, ref: WorkspaceRef, update: StatusUpdate) -> asyncio.Future[None]:
        """Queue ``update`` for the Workspace's writer; the future is done when the write
        carrying it landed (or holds its error). The writer waits ``STATUS_COALESCE_S`` and then
        writes every update queued by then in one status write, in the order queued; updates
        queued during a write go in the next one."""
        key = (ref.namespace, ref.name, ref.uid)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending(ref)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pending.updates.append((update, done))
        if pending.writer is None:
            pending.writer = asyncio.get_running_loop().create_task(self._status_writer(key))
        return done

    async def _status_writer(self, key: tuple[str, str, str]) -> None:
        pending = self._pending[key]
        try:
            while pending.updates:
                await asyncio.sleep(STATUS_COALESCE_S)
                batch, pending.updates = pending.updates, []
                try:
                    await self._write_status(pending.ref, [u for u, _ in batch])
                except Exception as e:  # noqa: BLE001 -- handed to every waiting handler
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(e)
                else:
                    for _, future in batch:
                        if not future.done():
                            future.set_result(None)
        finally:
            del self._pending[key]
            for _, future in pending.updates:  # cancelled mid-wait: their events are retried
                future.cancel()

    async def _write_status(self, ref: WorkspaceRef, updates: list[StatusUpdate]) -> None:
        seen = self._latest.get((ref.namespace, ref.name))
        for _attempt in range(8):
            if seen is not None and seen["metadata"].get("uid") == ref.uid:
                obj: Manifest | None = seen
            else:
                obj = await self.api.get(ref.namespace, ref.name)
            seen = None  # a retry reads again
            if obj is None or obj["metadata"].get("uid") != ref.uid:
                return  # deleted, or another object by that name: nothing to report on
            status = obj.get("status") or {}
            new = self._next_status(obj, status, updates)
            if new is None:
                return
            try:
                written = await self.api.patch_status(
                    ref.namespace, ref.name, new, obj["metadata"]["resourceVersion"]
                )
            except TransientError:
                continue  # 409 (someone wrote first), 429, 5xx: read again and retry
            self._remember(written)
            await self._emit_events(
                obj,
                status.get("conditions") or [],
                new.get("conditions") or status.get("conditions") or [],
            )
            return
        raise TransientError(f"status of {ref.key} kept changing; will retry")

    def _remember(self, obj: Manifest) -> None:
        """Keep ``obj`` as the newest seen of its Workspace unless a newer one is kept."""
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        kept = self._latest.get(key)
        if kept is None or not older_version(
            str(meta.get("resourceVersion") or ""),
            str(kept["metadata"].get("resourceVersion") or ""),
        ):
            self._latest[key] = obj

    def _forget_seen(self, namespace: str | None) -> None:
        """A (re)list replaces what was seen in its scope (deleted Workspaces drop out)."""
        for key in [k for k in self._latest if namespace is None or k[0] == namespace]:
            del self._latest[key]

    def _next_status(
        self, obj: Manifest, status: dict[str, Any], updates: list[StatusUpdate]
    ) -> dict[str, Any] | None:
        now = self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        conditions = [c for u in updates for c in u.conditions]
        merged = (
            core.merge_conditions(status.get("conditions") or [], conditions, now)
            if conditions
            else None
        )
        new: dict[str, Any] = {}
        if merged is not None:
            new["conditions"] = merged
            state = core.workspace_state(
                merged, tuning=core.is_tuning(obj), previous=status.get("state")
            )
            if state != status.get("state"):
                new["state"] = state
        nodes = next(
            (u.worker_nodes for u in reversed(updates) if u.worker_nodes is not None), None
        )
        if nodes is not None and list(nodes) != status.get("workerNodes"):
            new["workerNodes"] = list(nodes)
        target = next((u.target_node_count for u in updates if u.target_node_count), None)
        if target and not status.get("targetNodeCount"):  # written once, as Kaito does
            new["targetNodeCount"] = target
        generation = obj["metadata"].get("generation")
        phases = next(
            (
                u.phases
                for u in reversed(updates)
                if u.phases is not None and u.phases.get("generation") == generation
            ),
            None,
        )
        old = status.get("phases") or {}
        if phases is not None and dict(phases) != old:
            # A merge patch keeps keys it does not name: drop the older generation's.
            new["phases"] = {**{k: None for k in old if k not in phases}, **phases}
        return new or None

    async def _emit_events(self, obj: Manifest, before: list[Any], after: list[Any]) -> None:
        now = self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        for kind, reason, message in core.transition_events(before, after):
            try:
                await self.api.create_event(core.event_for(obj, reason, message, kind, now))
            except KaitenError as e:  # an Event is best effort; the condition is the record
                log.warning("event.failed", reason=reason, error=str(e))
