"""The Secrets payers name, read through a watch (kube/secrets.py) against the strict emulator over HTTPS: one GET
the first time, then the watch's events (a change, a deletion, a re-creation); only what was asked for is kept;
reads while the watch is not current are GETs; a dropped watch misses nothing; namespaces never mix."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest

from polling import eventually
from tfgrid_operator.kube import client, secrets

SECRETS = "/api/v1/namespaces/{ns}/secrets"


@pytest.fixture
async def cluster(tls, monkeypatch):
    for ns in ("a", "b"):
        await tls.namespace(ns)
    monkeypatch.setenv("KUBECONFIG", str(tls.kubeconfig(tls.token_user())))
    return tls


def encoded(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def put(cluster, ns: str, name: str, value: str) -> None:
    path = SECRETS.format(ns=ns)
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": {"key": encoded(value)}}
    resp = await cluster.emulator.post(path, json=body)
    if resp.status == 409:
        resp = await cluster.emulator.patch(f"{path}/{name}", json={"data": body["data"]},
                                            headers={"Content-Type": "application/merge-patch+json"})
    assert resp.status in (200, 201), await resp.text()


def gets(cluster) -> int:
    return sum(1 for c in cluster.emulator.calls if c.verb == "get" and c.resource == "secrets")


@pytest.fixture
async def view(cluster) -> AsyncIterator[tuple[secrets.SecretView, client.KubeClient, list[asyncio.Task[None]]]]:
    kube = client.KubeClient()
    v = secrets.SecretView()
    tasks: list[asyncio.Task[None]] = []
    try:
        yield v, kube, tasks
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await kube.close()


async def value(v: secrets.SecretView, kube: client.KubeClient, ns: str, name: str) -> str:
    return base64.b64decode((await v.data(kube, ns, name))["key"]).decode()


async def started(v: secrets.SecretView, kube: client.KubeClient, tasks: list, namespace: str | None = None) -> None:
    tasks.append(asyncio.create_task(v.follow(kube, namespace)))
    await eventually(lambda: v._current, what="the watch of Secrets listed")


async def test_a_secret_is_read_once_then_followed_through_changes_deletion_and_recreation(cluster, view):
    v, kube, tasks = view
    await put(cluster, "a", "payer", "one")
    await put(cluster, "a", "unasked", "x" * 1000)
    await started(v, kube, tasks)
    assert await value(v, kube, "a", "payer") == "one" and gets(cluster) == 1
    for _ in range(5):
        assert await value(v, kube, "a", "payer") == "one"
    assert gets(cluster) == 1 and v.kept() == 1  # the Secret nobody asked for is not kept
    await put(cluster, "a", "payer", "two")  # a renewed grant
    await eventually(lambda: v._kept[("a", "payer")] == {"key": encoded("two")}, what="the change")
    assert await value(v, kube, "a", "payer") == "two" and gets(cluster) == 1
    assert (await cluster.emulator.delete(f"{SECRETS.format(ns='a')}/payer")).status == 200  # a revoked key
    await eventually(lambda: v._kept[("a", "payer")] is None, what="the deletion")
    with pytest.raises(client.ApiError) as err:
        await v.data(kube, "a", "payer")
    assert err.value.status == 404 and gets(cluster) == 1
    await put(cluster, "a", "payer", "three")
    await eventually(lambda: v._kept[("a", "payer")] is not None, what="the re-creation")
    assert await value(v, kube, "a", "payer") == "three" and gets(cluster) == 1


async def test_a_missing_secret_is_read_once_and_shows_when_it_is_created(cluster, view):
    v, kube, tasks = view
    await started(v, kube, tasks)
    for _ in range(2):
        with pytest.raises(client.ApiError):
            await v.data(kube, "a", "later")
    assert gets(cluster) == 1
    await put(cluster, "a", "later", "now")
    await eventually(lambda: v._kept.get(("a", "later")) is not None, what="the creation")
    assert await value(v, kube, "a", "later") == "now" and gets(cluster) == 1


async def test_without_a_current_watch_every_read_is_a_get(cluster, view):
    v, kube, _tasks = view
    await put(cluster, "a", "payer", "one")
    for _ in range(3):
        assert await value(v, kube, "a", "payer") == "one"
    assert gets(cluster) == 3 and v.kept() == 0


async def test_a_dropped_watch_reads_with_gets_until_it_lists_again_and_misses_nothing(cluster, view):
    v, kube, tasks = view
    await put(cluster, "a", "payer", "one")
    await put(cluster, "a", "other", "one")
    await started(v, kube, tasks)
    assert await value(v, kube, "a", "payer") == "one" and await value(v, kube, "a", "other") == "one"
    await cluster.restart()  # every watch drops; the store survives
    await put(cluster, "a", "payer", "two")
    assert (await cluster.emulator.delete(f"{SECRETS.format(ns='a')}/other")).status == 200
    await eventually(lambda: v._current and v._kept[("a", "payer")] == {"key": encoded("two")}
                     and v._kept[("a", "other")] is None, what="what changed while the watch was down")
    before = gets(cluster)
    assert await value(v, kube, "a", "payer") == "two" and gets(cluster) == before


async def test_namespaces_never_mix_and_a_namespace_scoped_watch_keeps_only_its_own(cluster, view):
    v, kube, tasks = view
    await put(cluster, "a", "payer", "in a")
    await put(cluster, "b", "payer", "in b")
    await started(v, kube, tasks, namespace="a")
    assert await value(v, kube, "a", "payer") == "in a" and await value(v, kube, "b", "payer") == "in b"
    assert await value(v, kube, "b", "payer") == "in b"
    assert gets(cluster) == 3 and v.kept() == 1  # b's is outside the watch: a GET each time, never kept
    await put(cluster, "b", "payer", "b again")
    assert await value(v, kube, "b", "payer") == "b again"


class SlowKube:
    """A client whose GET answers only when told to, with the Secret as it was when asked."""

    def __init__(self) -> None:
        self.answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def path(self, *parts: Any) -> str:
        return "/".join(str(p) for p in parts if p)

    async def get_shared(self, path: str) -> Any:
        return await self.answer


async def test_an_event_that_comes_while_a_get_is_on_its_way_wins_over_its_older_answer():
    v, kube = secrets.SecretView(), SlowKube()
    v.listing()
    v.listed_all()  # a current watch (of nothing yet)
    reading = asyncio.create_task(v.data(kube, "a", "payer"))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    v.changed("MODIFIED", {"metadata": {"namespace": "a", "name": "payer"}, "data": {"key": "new"}})
    kube.answer.set_result({"data": {"key": "old"}})
    assert await reading == {"key": "new"}
    assert await v.data(kube, "a", "payer") == {"key": "new"}  # type: ignore[arg-type]
    v.changed("DELETED", {"metadata": {"namespace": "a", "name": "payer"}})
    with pytest.raises(client.ApiError):
        await v.data(kube, "a", "payer")  # type: ignore[arg-type]


async def test_past_its_limit_the_view_drops_what_it_keeps_and_reads_it_again(monkeypatch):
    monkeypatch.setattr(secrets, "KEPT_LIMIT", 2)
    v, kube = secrets.SecretView(), SlowKube()
    kube.answer.set_result({"data": {"key": "v"}})
    v.listing()
    v.listed_all()
    for name in ("x", "y", "z"):
        await v.data(kube, "a", name)  # type: ignore[arg-type]
    assert v.kept() == 1  # x and y dropped when z came
