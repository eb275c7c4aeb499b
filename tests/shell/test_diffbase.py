"""kopf's essence of an object (what it compares on every watch event to find spec changes), built our cheaper way
(handlers/startup.DiffBaseInStatus.build), is exactly kopf's own, on arbitrary objects: kopf's storage annotations,
kubectl's last-applied, the legacy diff-base annotation, the fields our handlers filter on, managedFields, status.
And kopf's progress cleared from an essence our way (in place, ProgressInStatus.clear) is kopf's own result."""

from __future__ import annotations

import copy

import kopf
from hypothesis import given, settings
from hypothesis import strategies as st

import tfgrid_operator.handlers  # noqa: F401  (registers the handlers, whose filtered fields kopf passes)
from tfgrid_operator import runtime
from tfgrid_operator.handlers.startup import DiffBaseInStatus, ProgressInStatus

json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=5)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3) |
                           st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=12)
ANNOTATION_KEYS = ["kubectl.kubernetes.io/last-applied-configuration", f"{runtime.PREFIX}/last-handled-configuration",
                   f"{runtime.PREFIX}/kopf-managed", "kopf.zalando.org/last-handled-configuration",
                   "other.kopf.zalando.org/x", f"{runtime.REQUEUE_ANNOTATION}",
                   f"certification.{runtime.PREFIX}/council", "team/a", "plain", "x.example.com/kopf-managed"]
EXTRA_FIELDS = [("spec",), ("metadata", "annotations", runtime.REQUEUE_ANNOTATION),
                ("metadata", "annotations", f"certification.{runtime.PREFIX}/council")]


def kopfs_own(storage: DiffBaseInStatus, body: kopf.Body, extra_fields: list) -> object:
    essence = storage.in_status.build(body=body, extra_fields=extra_fields)
    storage.legacy.remove_annotations(essence, set(storage.legacy.make_keys(storage.legacy.key, body=body)))
    storage.legacy.remove_empty_stanzas(essence)
    return essence


@settings(max_examples=300, deadline=None)
@given(spec=st.dictionaries(st.text(max_size=4), json_values, max_size=4),
       labels=st.dictionaries(st.sampled_from(["a", "b/c", "app.kubernetes.io/name"]), st.text(max_size=3), max_size=3),
       annotations=st.dictionaries(st.sampled_from(ANNOTATION_KEYS), st.text(max_size=6), max_size=6),
       status=st.dictionaries(st.text(max_size=4), json_values, max_size=3),
       extras=st.sampled_from([EXTRA_FIELDS, [], EXTRA_FIELDS[:1], ["spec"], [("status", "x")], [("metadata",)]]),
       with_spec=st.booleans())
def test_the_essence_is_kopfs_own(spec, labels, annotations, status, extras, with_spec):
    raw: dict = {"apiVersion": "grid.threefold.io/v1alpha1", "kind": "Deployment", "status": status,
                 "metadata": {"name": "web", "namespace": "a", "uid": "u", "resourceVersion": "7", "labels": labels,
                              "annotations": annotations, "managedFields": [{"manager": "kopf", "fieldsV1": {}}]}}
    if with_spec:
        raw["spec"] = spec
    storage = DiffBaseInStatus()
    body = kopf.Body(raw)
    ours = storage.build(body=body, extra_fields=extras)
    assert ours == kopfs_own(storage, body, extras)
    if with_spec and spec:  # a copy: what kopf stores must not change when the object does
        assert ours["spec"] is not raw["spec"]


PROGRESS_ANNOTATIONS = [f"{runtime.PREFIX}/create_fn", f"{runtime.PREFIX}/last-handled-configuration",
                        f"other.{runtime.PREFIX}/x", "kopf.zalando.org/create_fn", "team/a", "plain"]


@settings(max_examples=300, deadline=None)
@given(spec=st.dictionaries(st.text(max_size=4), json_values, max_size=3),
       labels=st.dictionaries(st.sampled_from(["a", "b/c"]), st.text(max_size=3), max_size=2),
       annotations=st.dictionaries(st.sampled_from(PROGRESS_ANNOTATIONS), st.text(max_size=6), max_size=4),
       status=st.fixed_dictionaries({}, optional={
           "kopf": st.fixed_dictionaries({}, optional={"progress": json_values, "dummy": json_values}),
           "x": json_values}),
       with_metadata=st.booleans())
def test_clearing_an_essence_of_kopfs_progress_is_kopfs_own(spec, labels, annotations, status, with_metadata):
    """What kopf compares after it drops its progress from both essences: ours clears in place, kopf's copies."""
    essence: dict = {"spec": spec, "status": status}
    if with_metadata:
        essence["metadata"] = {"labels": labels, "annotations": annotations}
    storage = ProgressInStatus()
    kopfs = kopf.MultiProgressStorage.clear(storage, essence=copy.deepcopy(essence))  # kopf's: each storage's own
    assert storage.clear(essence=essence) == kopfs
