"""Contract tests of the development cluster, written from documented Kubernetes API behaviour,
driven through kubernetes-asyncio (and the synchronous kubernetes client where noted) over HTTP."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client as aclient
from kubernetes_asyncio.client.exceptions import ApiException

from localdev.kubeapi.cluster import DevCluster
from tests.kubeapi.crds import GROUP, KIND, PLURAL, WIDGET_CRD, widget

V = "v1beta1"


async def status_of(call: Any) -> tuple[int, dict[str, Any]]:
    """The HTTP status and Status body of an API call that must fail."""
    with pytest.raises(ApiException) as caught:
        await call
    return caught.value.status, json.loads(caught.value.body)


async def raw(cluster: DevCluster, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, cluster.url + path, **kwargs) as resp,
    ):
        text = await resp.text()
        return resp.status, json.loads(text) if text else None


class TestDiscovery:
    async def test_version_and_core_groups_are_served(self, cluster: DevCluster) -> None:
        code, version = await raw(cluster, "GET", "/version")
        assert code == 200
        assert version["major"] == "1"
        _, core = await raw(cluster, "GET", "/api/v1")
        names = {r["name"] for r in core["resources"]}
        assert {
            "pods",
            "services",
            "configmaps",
            "secrets",
            "events",
            "nodes",
            "namespaces",
            "pods/status",
        } <= names
        _, apps = await raw(cluster, "GET", "/apis/apps/v1")
        assert {"deployments", "statefulsets", "controllerrevisions"} <= {
            r["name"] for r in apps["resources"]
        }

    async def test_crd_urls_answer_404_until_the_crd_registers_them(
        self, cluster: DevCluster, api_client: aclient.ApiClient
    ) -> None:
        path = f"/apis/{GROUP}/{V}/namespaces/default/{PLURAL}"
        assert (await raw(cluster, "GET", path))[0] == 404
        await aclient.ApiextensionsV1Api(api_client).create_custom_resource_definition(WIDGET_CRD)
        code, listing = await raw(cluster, "GET", path)
        assert code == 200
        assert listing["kind"] == "WidgetList"
        _, groups = await raw(cluster, "GET", "/apis")
        group = next(g for g in groups["groups"] if g["name"] == GROUP)
        assert group["preferredVersion"]["version"] == "v1beta1"
        assert {v["version"] for v in group["versions"]} == {"v1alpha1", "v1beta1"}
        _, resources = await raw(cluster, "GET", f"/apis/{GROUP}/{V}")
        widget_resource = next(r for r in resources["resources"] if r["name"] == PLURAL)
        assert widget_resource["shortNames"] == ["wd"]
        assert widget_resource["categories"] == ["kaiten"]
        assert any(r["name"] == f"{PLURAL}/status" for r in resources["resources"])
        crd = await aclient.ApiextensionsV1Api(api_client).read_custom_resource_definition(
            f"{PLURAL}.{GROUP}"
        )
        established = {c.type: c.status for c in crd.status.conditions}
        assert established["Established"] == "True"

    async def test_openapi_v3_lists_group_versions_with_field_validation(
        self, cluster: DevCluster, widgets: aclient.CustomObjectsApi
    ) -> None:
        _, index = await raw(cluster, "GET", "/openapi/v3")
        url = index["paths"][f"apis/{GROUP}/{V}"]["serverRelativeURL"]
        _, doc = await raw(cluster, "GET", url)
        item = doc["paths"][f"/apis/{GROUP}/{V}/namespaces/{{namespace}}/{PLURAL}/{{name}}"]
        assert item["patch"]["x-kubernetes-group-version-kind"]["kind"] == KIND
        assert any(p["name"] == "fieldValidation" for p in item["patch"]["parameters"])
        schema = doc["components"]["schemas"][f"dev.kaiten.example.{V}.{KIND}"]
        assert "resource" in schema["properties"]


class TestCreateAndRead:
    async def test_create_answers_201_and_fills_metadata(
        self, widgets: aclient.CustomObjectsApi
    ) -> None:
        created = await widgets.create_namespaced_custom_object(
            GROUP, V, "default", PLURAL, widget("w1")
        )
        meta = created["metadata"]
        assert created is not None  # the client returns the body only on 201
        assert meta["uid"]
        assert meta["creationTimestamp"].endswith("Z")
        assert meta["generation"] == 1
        assert int(meta["resourceVersion"]) > 0
        assert meta["namespace"] == "default"
        assert created["resource"]["count"] == 1  # defaulted from the schema

    async def test_generate_name_makes_a_unique_name(self, cluster: DevCluster) -> None:
        body = {"metadata": {"generateName": "cfg-"}, "data": {"a": "b"}}
        _, first = await raw(cluster, "POST", "/api/v1/namespaces/default/configmaps", json=body)
        _, second = await raw(cluster, "POST", "/api/v1/namespaces/default/configmaps", json=body)
        assert first["metadata"]["name"].startswith("cfg-")
        assert first["metadata"]["name"] != second["metadata"]["name"]

    async def test_duplicate_create_is_409_already_exists(
        self, widgets: aclient.CustomObjectsApi
    ) -> None:
        await widgets.create_namespaced_custom_object(GROUP, V, "default", PLURAL, widget("w1"))
        code, body = await status_of(
            widgets.create_namespaced_custom_object(GROUP, V, "default", PLURAL, widget("w1"))
        )
        assert code == 409
        assert body["reason"] == "AlreadyExists"
        assert body["message"] == f'{PLURAL}.{GROUP} "w1" already exists'

    async def test_missing_object_is_404_with_a_status_body(
        self, widgets: aclient.CustomObjectsApi
    ) -> None:
        code, body = await status_of(
            widgets.get_namespaced_custom_object(GROUP, V, "default", PLURAL, "nope")
        )
        assert code == 404
        assert body == {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": f'{PLURAL}.{GROUP} "nope" not found',
            "reason": "NotFound",
            "code": 404,
            "details": {"name": "nope", "group": GROUP, "kind": PLURAL},
        }

    async def test_create_in_a_missing_namespace_is_404(self, cluster: DevCluster) -> None:
        code, body = await raw(
            cluster, "POST", "/api/v1/namespaces/ghost/configmaps", json={"metadata": {"name": "x"}}
        )
        assert code == 404
        assert body["message"] == 'namespaces "ghost" not found'

    async def test_an_object_reads_the_same_through_every_served_version(
        self, widgets: aclient.CustomObjectsApi
    ) -> None:
        await widgets.create_namespaced_custom_object(GROUP, V, "default", PLURAL, widget("w1"))
        old = await widgets.get_namespaced_custom_object(GROUP, "v1alpha1", "default", PLURAL, "w1")
        assert old["apiVersion"] == f"{GROUP}/v1alpha1"
        assert old["resource"] == {"instanceType": "Standard_NC6s_v3", "count": 1}

    async def test_the_sync_kubernetes_client_creates_and_lists(
        self, kubeconfig: Any, widgets: aclient.CustomObjectsApi
    ) -> None:
        from kubernetes import client, config  # noqa: PLC0415

        def use_sync_client() -> tuple[Any, list[str]]:
            api_client = config.new_client_from_config(config_file=str(kubeconfig))
            objects = client.CustomObjectsApi(api_client)
            created = objects.create_namespaced_custom_object(
                GROUP, V, "default", PLURAL, widget("sync")
            )
            listed = objects.list_namespaced_custom_object(GROUP, V, "default", PLURAL)
            return created, [i["metadata"]["name"] for i in listed["items"]]

        created, names = await asyncio.to_thread(use_sync_client)
        assert created["metadata"]["name"] == "sync"
        assert names == ["sync"]


class TestUpdates:
    async def test_put_with_a_stale_resource_version_is_409_conflict(
        self, widgets: aclient.CustomObjectsApi
    ) -> None:
        first = await widgets.create_namespaced_custom_object(
            GROUP, V, "default", PLURAL, widget("w1")
        )
        first["resource"]["count"] = 2
        await widgets.replace_namespaced_custom_object(GROUP, V, "default", PLURAL, "w1", first)
        first["resource"]["count"] = 3  # still carries the old resourceVersion
        code, body = await status_of(
            widgets.replace_namespaced_custom_object(GROUP, V, "default", PLURAL, "w1", first)
        )
        assert code == 409
        assert body["reason"] == "Conflict"
        assert "the object has been modified" in body["message"]

    async def test_generation_counts_spec_changes_only(
        self, widgets: aclient.CustomObjectsApi
    ) -> None:
        await widgets.create_namespaced_custom_object(GROUP, V, "default", PLURAL, widget("w1"))

        async def patch(body: dict[str, Any], **kw: Any) -> dict[str, Any]:
            call = (
                widgets.patch_namespaced_custom_object_status
                if kw.get("status")
                else widgets.patch_namespaced_custom_object
            )
            result: dict[str, Any] = await call(
                GROUP,
                V,
                "default",
                PLURAL,
                "w1",
                body,
                _content_type="application/merge-patch+json",
            )
            return result

        labelled = await patch({"metadata": {"labels": {"a": "b"}}})
        assert labelled["metadata"]["generation"] == 1
        with_status = await patch({"status": {"state": "Ready"}}, status=True)
        assert with_status["metadata"]["generation"] == 1
        changed = await patch({"resource": {"count": 2}})
        assert changed["metadata"]["generation"] == 2
        assert int(changed["metadata"]["resourceVersion"]) > int(
            with_status["metadata"]["resourceVersion"]
        )

    async def test_status_subresource_separates_status_from_the_rest(
        self, widgets: aclient.CustomObjectsApi
    ) -> None:
        body = widget("w1", status={"state": "Ignored"})
        created = await widgets.create_namespaced_custom_object(GROUP, V, "default", PLURAL, body)
        assert "status" not in created  # status on create is dropped
        created["status"] = {"state": "Ready"}
        created["resource"]["count"] = 5
        via_status = await widgets.replace_namespaced_custom_object_status(
            GROUP, V, "default", PLURAL, "w1", created
        )
        assert via_status["status"] == {"state": "Ready"}
        assert via_status["resource"]["count"] == 1  # only status changes through /status
        via_status["status"] = {"state": "Failed"}
        via_main = await widgets.replace_namespaced_custom_object(
            GROUP, V, "default", PLURAL, "w1", via_status
        )
        assert via_main["status"] == {"state": "Ready"}  # the main resource keeps status

    async def test_merge_and_json_patch_apply_and_a_bad_json_patch_path_is_422(
        self, widgets: aclient.CustomObjectsApi
    ) -> None:
        await widgets.create_namespaced_custom_object(GROUP, V, "default", PLURAL, widget("w1"))
        merged = await widgets.patch_namespaced_custom_object(
            GROUP,
            V,
            "default",
            PLURAL,
            "w1",
            {"metadata": {"annotations": {"x": "1"}}},
            _content_type="application/merge-patch+json",
        )
        assert merged["metadata"]["annotations"] == {"x": "1"}
        patched = await widgets.patch_namespaced_custom_object(
            GROUP,
            V,
            "default",
            PLURAL,
            "w1",
            [{"op": "replace", "path": "/resource/count", "value": 4}],
        )
        assert patched["resource"]["count"] == 4
        code, _ = await status_of(
            widgets.patch_namespaced_custom_object(
                GROUP,
                V,
                "default",
                PLURAL,
                "w1",
                [{"op": "replace", "path": "/resource/nothing/here", "value": 1}],
            )
        )
        assert code == 422

    async def test_a_dict_sent_as_json_patch_is_rejected_like_a_real_server(
        self, widgets: aclient.CustomObjectsApi
    ) -> None:
        """kubernetes-asyncio sends a dict body as JSON Patch unless told otherwise."""
        await widgets.create_namespaced_custom_object(GROUP, V, "default", PLURAL, widget("w1"))
        code, _ = await status_of(
            widgets.patch_namespaced_custom_object(
                GROUP, V, "default", PLURAL, "w1", {"resource": {"count": 2}}
            )
        )
        assert code == 400

    async def test_strategic_merge_is_415_for_custom_resources_and_merges_builtins(
        self, cluster: DevCluster, widgets: aclient.CustomObjectsApi
    ) -> None:
        await widgets.create_namespaced_custom_object(GROUP, V, "default", PLURAL, widget("w1"))
        smp = {"Content-Type": "application/strategic-merge-patch+json"}
        code, body = await raw(
            cluster,
            "PATCH",
            f"/apis/{GROUP}/{V}/namespaces/default/{PLURAL}/w1",
            data=b'{"metadata":{"labels":{"a":"b"}}}',
            headers=smp,
        )
        assert code == 415
        assert body["reason"] == "UnsupportedMediaType"
        pod = {
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]},
        }
        await raw(cluster, "POST", "/api/v1/namespaces/default/pods", json=pod)
        patch = {"spec": {"containers": [{"name": "b", "image": "b:2"}]}}
        code, patched = await raw(
            cluster,
            "PATCH",
            "/api/v1/namespaces/default/pods/p",
            data=json.dumps(patch).encode(),
            headers=smp,
        )
        assert code == 200
        assert [(c["name"], c["image"]) for c in patched["spec"]["containers"]] == [
            ("a", "a:1"),
            ("b", "b:2"),
        ]

    async def test_server_side_apply_creates_then_updates(self, cluster: DevCluster) -> None:
        apply = {"Content-Type": "application/apply-patch+yaml"}
        path = "/api/v1/namespaces/default/configmaps/applied?fieldManager=test"
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "applied"},
            "data": {"a": "1"},
        }
        code, created = await raw(cluster, "PATCH", path, data=json.dumps(body), headers=apply)
        assert code == 201
        body["data"] = {"a": "2"}
        code, updated = await raw(cluster, "PATCH", path, data=json.dumps(body), headers=apply)
        assert code == 200
        assert updated["data"] == {"a": "2"}
        assert updated["metadata"]["uid"] == created["metadata"]["uid"]


class TestSelectors:
    async def test_label_selectors_filter_lists(self, cluster: DevCluster) -> None:
        for name, labels in (
            ("a", {"app": "x", "tier": "web"}),
            ("b", {"app": "y"}),
            ("c", {"tier": "db"}),
        ):
            await raw(
                cluster,
                "POST",
                "/api/v1/namespaces/default/configmaps",
                json={"metadata": {"name": name, "labels": labels}},
            )

        async def names(selector: str) -> list[str]:
            _, body = await raw(
                cluster,
                "GET",
                "/api/v1/namespaces/default/configmaps",
                params={"labelSelector": selector},
            )
            return [i["metadata"]["name"] for i in body["items"]]

        assert await names("app=x") == ["a"]
        assert await names("app==x") == ["a"]
        assert await names("app!=x") == ["b", "c"]
        assert await names("app in (x,y)") == ["a", "b"]
        assert await names("app notin (x)") == ["b", "c"]
        assert await names("tier") == ["a", "c"]
        assert await names("!tier") == ["b"]

    async def test_field_selectors_filter_lists_and_kubectl_describe_events(
        self, cluster: DevCluster
    ) -> None:
        for name, uid in (("e1", "u1"), ("e2", "u2")):
            await raw(
                cluster,
                "POST",
                "/api/v1/namespaces/default/events",
                json={
                    "metadata": {"name": name},
                    "reason": "Scheduled",
                    "message": "m",
                    "involvedObject": {
                        "kind": "Pod",
                        "name": "p",
                        "namespace": "default",
                        "uid": uid,
                    },
                },
            )
        _, body = await raw(
            cluster,
            "GET",
            "/api/v1/namespaces/default/events",
            params={"fieldSelector": "involvedObject.name=p,involvedObject.uid=u2"},
        )
        assert [i["metadata"]["name"] for i in body["items"]] == ["e2"]
        _, body = await raw(
            cluster, "GET", "/api/v1/events", params={"fieldSelector": "metadata.name!=e2"}
        )
        assert [i["metadata"]["name"] for i in body["items"]] == ["e1"]


class TestDeletion:
    async def test_finalizers_hold_an_object_until_they_are_removed(
        self, widgets: aclient.CustomObjectsApi
    ) -> None:
        body = widget("w1")
        body["metadata"]["finalizers"] = ["workspace.finalizer.kaito.sh"]
        await widgets.create_namespaced_custom_object(GROUP, V, "default", PLURAL, body)
        await widgets.delete_namespaced_custom_object(GROUP, V, "default", PLURAL, "w1")
        held = await widgets.get_namespaced_custom_object(GROUP, V, "default", PLURAL, "w1")
        assert held["metadata"]["deletionTimestamp"]
        code, _ = await status_of(
            widgets.patch_namespaced_custom_object(
                GROUP,
                V,
                "default",
                PLURAL,
                "w1",
                [{"op": "add", "path": "/metadata/finalizers/-", "value": "another"}],
            )
        )
        assert code == 422  # no new finalizers once deleting
        await widgets.patch_namespaced_custom_object(
            GROUP,
            V,
            "default",
            PLURAL,
            "w1",
            {"metadata": {"finalizers": None}},
            _content_type="application/merge-patch+json",
        )
        code, _ = await status_of(
            widgets.get_namespaced_custom_object(GROUP, V, "default", PLURAL, "w1")
        )
        assert code == 404

    async def test_owned_objects_are_garbage_collected_with_their_owner(
        self, cluster: DevCluster, widgets: aclient.CustomObjectsApi
    ) -> None:
        owner = await widgets.create_namespaced_custom_object(
            GROUP, V, "default", PLURAL, widget("w1")
        )
        ref = {
            "apiVersion": f"{GROUP}/{V}",
            "kind": KIND,
            "name": "w1",
            "uid": owner["metadata"]["uid"],
            "controller": True,
        }
        await raw(
            cluster,
            "POST",
            "/api/v1/namespaces/default/configmaps",
            json={"metadata": {"name": "owned", "ownerReferences": [ref]}},
        )
        await raw(
            cluster,
            "POST",
            "/api/v1/namespaces/default/configmaps",
            json={"metadata": {"name": "free"}},
        )
        await widgets.delete_namespaced_custom_object(GROUP, V, "default", PLURAL, "w1")
        assert (await raw(cluster, "GET", "/api/v1/namespaces/default/configmaps/owned"))[0] == 404
        assert (await raw(cluster, "GET", "/api/v1/namespaces/default/configmaps/free"))[0] == 200

    async def test_deletecollection_removes_what_the_selector_matches(
        self, cluster: DevCluster
    ) -> None:
        for name, tier in (("a", "web"), ("b", "web"), ("c", "db")):
            await raw(
                cluster,
                "POST",
                "/api/v1/namespaces/default/configmaps",
                json={"metadata": {"name": name, "labels": {"tier": tier}}},
            )
        code, _ = await raw(
            cluster,
            "DELETE",
            "/api/v1/namespaces/default/configmaps",
            params={"labelSelector": "tier=web"},
        )
        assert code == 200
        _, left = await raw(cluster, "GET", "/api/v1/namespaces/default/configmaps")
        assert [i["metadata"]["name"] for i in left["items"]] == ["c"]


class TestValidation:
    @pytest.mark.parametrize(
        ("change", "field", "fragment"),
        [
            (
                {"resource": {"instanceType": "Standard_NC6s_v3", "count": 0}},
                "resource.count",
                "should be greater than or equal to 1",
            ),
            ({"resource": {"count": 1}}, "resource.instanceType", "Required value"),
            ({"resource": {"instanceType": "nc6"}}, "resource.instanceType", "should match"),
            ({"tuning": {"method": "lora"}}, "", "exactly one of inference or tuning"),
            (
                {"resource": {"instanceType": "Standard_NC6s_v3", "count": "two"}},
                "resource.count",
                "must be of type integer",
            ),
        ],
        ids=["minimum", "required", "pattern", "cel-rule", "type"],
    )
    async def test_schema_and_cel_violations_are_422_with_the_field_path(
        self,
        widgets: aclient.CustomObjectsApi,
        change: dict[str, Any],
        field: str,
        fragment: str,
    ) -> None:
        code, body = await status_of(
            widgets.create_namespaced_custom_object(
                GROUP, V, "default", PLURAL, widget("bad", **change)
            )
        )
        assert code == 422
        assert body["reason"] == "Invalid"
        assert body["message"].startswith(f'{KIND}.{GROUP} "bad" is invalid: ')
        assert fragment in body["message"]
        assert any(c.get("field", "") == field for c in body["details"]["causes"])

    async def test_unknown_fields_are_refused_under_strict_validation(
        self, cluster: DevCluster, widgets: aclient.CustomObjectsApi
    ) -> None:
        body = widget("w1", resource={"instanceType": "Standard_NC6s_v3", "colour": "red"})
        code, status = await raw(
            cluster,
            "POST",
            f"/apis/{GROUP}/{V}/namespaces/default/{PLURAL}?fieldValidation=Strict",
            json=body,
        )
        assert code == 400
        assert 'unknown field "resource.colour"' in status["message"]
        code, created = await raw(
            cluster,
            "POST",
            f"/apis/{GROUP}/{V}/namespaces/default/{PLURAL}?fieldValidation=Ignore",
            json=body,
        )
        assert code == 201
        assert "colour" not in created["resource"]  # pruned


class TestTable:
    async def test_lists_render_the_crd_printer_columns(
        self, cluster: DevCluster, widgets: aclient.CustomObjectsApi
    ) -> None:
        await widgets.create_namespaced_custom_object(GROUP, V, "default", PLURAL, widget("w1"))
        await widgets.patch_namespaced_custom_object_status(
            GROUP,
            V,
            "default",
            PLURAL,
            "w1",
            {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
            _content_type="application/merge-patch+json",
        )
        code, table = await raw(
            cluster,
            "GET",
            f"/apis/{GROUP}/{V}/namespaces/default/{PLURAL}",
            headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"},
        )
        assert code == 200
        assert table["kind"] == "Table"
        assert [c["name"] for c in table["columnDefinitions"]] == [
            "Name",
            "Instance",
            "Ready",
            "Age",
        ]
        cells = table["rows"][0]["cells"]
        assert cells[:3] == ["w1", "Standard_NC6s_v3", "True"]
        assert cells[3].endswith("s")
