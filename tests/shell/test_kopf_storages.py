"""kopf's bookkeeping lives in status (one PATCH per reconcile), and what an earlier version left in annotations is
still read, so an upgrade neither re-runs create handlers nor loses a retry in progress."""

from __future__ import annotations

import json

import kopf

from tfgrid_operator.handlers.startup import DiffBaseInStatus, ProgressInStatus

LEGACY_DIFFBASE = "grid.threefold.io/last-handled-configuration"


def body(**extra):
    return kopf.Body({"apiVersion": "grid.threefold.io/v1alpha1", "kind": "Deployment",
                      "metadata": {"name": "d", "namespace": "ns", "uid": "u", "resourceVersion": "7", "generation": 2,
                                   "labels": {"app": "web"}, "annotations": {"team": "a", **extra.pop("annotations", {})}},
                      "spec": {"resources": {"cru": 2}}, "status": {"node": "n1", **extra.pop("status", {})}})


def test_the_essence_is_kopfs_without_status_or_our_storage_keys():
    essence = DiffBaseInStatus().build(body=body(annotations={LEGACY_DIFFBASE: "{}"}, status={"lastHandledConfiguration": "{}"}))
    assert essence == {"spec": {"resources": {"cru": 2}}, "metadata": {"labels": {"app": "web"}, "annotations": {"team": "a"}}}
    assert essence == kopf.AnnotationsDiffBaseStorage(prefix="grid.threefold.io").build(body=body())


def test_diffbase_is_stored_in_status_only_and_read_back_from_status_or_the_legacy_annotation():
    storage = DiffBaseInStatus()
    patch = kopf.Patch()
    storage.store(body=body(), patch=patch, essence={"spec": {"a": 1}})
    assert dict(patch) == {"status": {"lastHandledConfiguration": '{"spec":{"a":1}}'}}
    assert storage.fetch(body=body(status={"lastHandledConfiguration": '{"spec":{"a":1}}'})) == {"spec": {"a": 1}}
    upgraded = body(annotations={LEGACY_DIFFBASE: json.dumps({"spec": {"old": True}})})
    assert storage.fetch(body=upgraded) == {"spec": {"old": True}}
    assert storage.fetch(body=body()) is None


def test_progress_is_stored_in_status_and_a_legacy_annotation_is_read_then_purged():
    storage = ProgressInStatus()
    patch = kopf.Patch()
    storage.store(key="reconcile", record={"retries": 2}, body=body(), patch=patch)
    assert patch["status"]["kopf"]["progress"]["reconcile"]["retries"] == 2
    assert not patch.get("metadata")  # no annotation, no kopf-managed marker: the object itself is not patched
    legacy = body(annotations={"grid.threefold.io/reconcile": json.dumps({"retries": 4})})
    assert storage.fetch(key="reconcile", body=legacy)["retries"] == 4
    purge = kopf.Patch()
    storage.purge(key="reconcile", body=legacy, patch=purge)
    assert purge["metadata"]["annotations"]["grid.threefold.io/reconcile"] is None
    touch = kopf.Patch()
    storage.touch(body=body(), patch=touch, value="x")
    assert not touch.get("metadata") and touch["status"]["kopf"]
