"""Watches: resume, timeout, bookmarks, the initial-events-end bookmark, 410 Gone, cut streams,
and the official clients' list-then-watch recovering from the last two."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from kubernetes_asyncio import client as aclient
from kubernetes_asyncio import watch as awatch
from kubernetes_asyncio.client.exceptions import ApiException

from localdev.kubeapi.cluster import DevCluster
from tests.support.polling import eventually

CM = "/api/v1/namespaces/default/configmaps"


async def create_cm(cluster: DevCluster, name: str, **data: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(cluster.url + CM, json={"metadata": {"name": name}, "data": data}) as resp,
    ):
        body: dict[str, Any] = await resp.json()
        return body


async def stream(cluster: DevCluster, params: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(cluster.url + CM, params={"watch": "true", **params}) as resp,
    ):
        assert resp.headers["Content-Type"].startswith("application/json")
        async for line in resp.content:
            if line.strip():
                yield json.loads(line)


async def collect(cluster: DevCluster, params: dict[str, str], count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []

    async def read() -> None:
        async for event in stream(cluster, params):
            events.append(event)
            if len(events) >= count:
                return

    await asyncio.wait_for(read(), timeout=10)
    return events


async def test_watch_resumes_after_a_resource_version(cluster: DevCluster) -> None:
    first = await create_cm(cluster, "a")
    await create_cm(cluster, "b")
    await create_cm(cluster, "c")
    events = await collect(cluster, {"resourceVersion": first["metadata"]["resourceVersion"]}, 2)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "b"),
        ("ADDED", "c"),
    ]


async def test_watch_without_a_version_starts_with_the_current_objects(
    cluster: DevCluster,
) -> None:
    await create_cm(cluster, "a")
    events: list[dict[str, Any]] = []

    async def read() -> None:
        async for event in stream(cluster, {}):
            events.append(event)
            if len(events) == 1:
                await create_cm(cluster, "b")
            if len(events) == 2:
                return

    await asyncio.wait_for(read(), timeout=10)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
    ]


async def test_send_initial_events_ends_with_the_initial_events_end_bookmark(
    cluster: DevCluster,
) -> None:
    await create_cm(cluster, "a")
    events = await collect(
        cluster,
        {
            "sendInitialEvents": "true",
            "allowWatchBookmarks": "true",
            "resourceVersionMatch": "NotOlderThan",
        },
        2,
    )
    assert events[0]["type"] == "ADDED"
    assert events[1]["type"] == "BOOKMARK"
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


async def test_bookmarks_arrive_while_idle_and_timeout_ends_the_stream(
    cluster: DevCluster,
) -> None:
    created = await create_cm(cluster, "a")
    events = [
        e
        async for e in stream(
            cluster,
            {
                "resourceVersion": created["metadata"]["resourceVersion"],
                "allowWatchBookmarks": "true",
                "timeoutSeconds": "1",
            },
        )
    ]
    assert events  # the fixture's bookmark interval is 0.2 s
    assert {e["type"] for e in events} == {"BOOKMARK"}
    assert (
        events[-1]["object"]["metadata"]["resourceVersion"]
        == created["metadata"]["resourceVersion"]
    )


async def test_a_too_old_resource_version_is_410_gone(cluster: DevCluster) -> None:
    first = await create_cm(cluster, "a")
    await create_cm(cluster, "b")
    cluster.store.compact()
    events = await collect(cluster, {"resourceVersion": first["metadata"]["resourceVersion"]}, 1)
    assert events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410
    assert events[0]["object"]["reason"] == "Expired"


async def test_label_selected_watch_sees_only_matching_objects(cluster: DevCluster) -> None:
    listing_rv = str(cluster.store.rv)
    async with aiohttp.ClientSession() as s:
        for name, app in (("x", "other"), ("y", "mine")):
            await s.post(
                cluster.url + CM, json={"metadata": {"name": name, "labels": {"app": app}}}
            )
    events = await collect(cluster, {"resourceVersion": listing_rv, "labelSelector": "app=mine"}, 1)
    assert [e["object"]["metadata"]["name"] for e in events] == ["y"]


async def list_then_watch(core: aclient.CoreV1Api, seen: list[str], stop_after: int) -> int:
    """The standard informer pattern: list, watch from the list's version, and on 410 or a
    closed stream list again. Returns how many times it listed."""
    lists = 0
    while len(seen) < stop_after:
        listing = await core.list_namespaced_config_map("default")
        lists += 1
        for item in listing.items:
            if item.metadata.name not in seen:
                seen.append(item.metadata.name)
        rv = listing.metadata.resource_version
        try:
            async with awatch.Watch().stream(
                core.list_namespaced_config_map,
                "default",
                resource_version=rv,
                timeout_seconds=5,
            ) as events:
                async for event in events:
                    name = event["object"].metadata.name
                    if name not in seen:
                        seen.append(name)
                    if len(seen) >= stop_after:
                        return lists
        except ApiException as e:
            if e.status != 410:
                raise
    return lists


async def test_kubernetes_asyncio_list_then_watch_recovers_from_cut_streams_and_410(
    cluster: DevCluster, api_client: aclient.ApiClient
) -> None:
    core = aclient.CoreV1Api(api_client)
    seen: list[str] = []
    await create_cm(cluster, "before")
    task = asyncio.create_task(list_then_watch(core, seen, stop_after=4))
    await eventually(lambda: seen == ["before"], what="the initial list")
    await eventually(lambda: cluster.store.cut_watches() > 0, what="an open watch to cut")
    await create_cm(cluster, "after-cut")
    await eventually(lambda: "after-cut" in seen, what="the watch to resume")
    cluster.faults.gone_next_watch = True
    await eventually(lambda: cluster.store.cut_watches() > 0, what="an open watch to cut")
    await create_cm(cluster, "after-gone-1")
    await create_cm(cluster, "after-gone-2")
    lists = await asyncio.wait_for(task, timeout=20)
    assert seen == ["before", "after-cut", "after-gone-1", "after-gone-2"]
    assert lists >= 2  # the 410 forced a relist


async def test_sync_kubernetes_client_watch_raises_410_so_callers_relist(
    cluster: DevCluster, kubeconfig: Any
) -> None:
    from kubernetes import client, config, watch  # noqa: PLC0415
    from kubernetes.client.exceptions import ApiException as SyncApiException  # noqa: PLC0415

    first = await create_cm(cluster, "a")
    await create_cm(cluster, "b")
    cluster.store.compact()

    def watch_from_old_version() -> int:
        core = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
        try:
            for _ in watch.Watch().stream(
                core.list_namespaced_config_map,
                "default",
                resource_version=first["metadata"]["resourceVersion"],
                timeout_seconds=2,
            ):
                pass
        except SyncApiException as e:
            return int(e.status)
        return 0

    assert await asyncio.to_thread(watch_from_old_version) == 410
