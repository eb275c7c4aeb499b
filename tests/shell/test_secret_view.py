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
from tfgrid_operator.kube import client, follow, secrets

SECRETS = "/api/v1/namespaces/{ns}/secrets"


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


async def payers_in_a_and_b(cluster, view, namespace: str | None = None) -> None:
    """Secret payer in namespaces a and b, the view following ``namespace`` (None: every one), each read once."""
    v, kube, tasks = view
    await put(cluster, "a", "payer", "in a")
    await put(cluster, "b", "payer", "in b")
    await started(v, kube, tasks, namespace)
    assert await value(v, kube, "a", "payer") == "in a" and await value(v, kube, "b", "payer") == "in b"


async def test_one_name_in_two_namespaces_is_two_secrets(cluster, view):
    v, kube, _tasks = view
    await payers_in_a_and_b(cluster, view)
    await put(cluster, "b", "payer", "b again")
    await eventually(lambda: v._kept[("b", "payer")] == {"key": encoded("b again")}, what="b's change")
    assert await value(v, kube, "a", "payer") == "in a" and await value(v, kube, "b", "payer") == "b again"
    assert gets(cluster) == 2 and v.kept() == 2


async def test_namespaces_never_mix_and_a_namespace_scoped_watch_keeps_only_its_own(cluster, view):
    v, kube, _tasks = view
    await payers_in_a_and_b(cluster, view, namespace="a")
    assert await value(v, kube, "b", "payer") == "in b"
    assert gets(cluster) == 3 and v.kept() == 1  # b's is outside the watch: a GET each time, never kept
    await put(cluster, "b", "payer", "b again")
    assert await value(v, kube, "b", "payer") == "b again"


class SlowKube:
    """A client whose GETs answer only when told to (``answer``), and count."""

    def __init__(self) -> None:
        self.asked: list[asyncio.Future[Any]] = []

    def path(self, *parts: Any) -> str:
        return "/".join(str(p) for p in parts if p)

    async def get_shared(self, path: str) -> Any:
        self.asked.append(asyncio.get_running_loop().create_future())
        return await self.asked[-1]

    def answer(self, data: dict[str, str]) -> None:
        self.asked[-1].set_result({"data": data})


def current(v: secrets.SecretView, *listed: dict[str, Any]) -> None:
    """The view's watch LISTs (these objects) and follows."""
    v.listing()
    for body in listed:
        v.listed(body)
    v.listed_all()


def secret(name: str, key: str = "v", ns: str = "a") -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name}, "data": {"key": key}}


async def read(v: secrets.SecretView, kube: SlowKube, name: str, data: dict[str, str] | None = None,
               between: Any = None) -> dict[str, str]:
    """Read ``name``; when it asks, ``between()`` runs before the GET is answered with ``data``."""
    reading = asyncio.create_task(v.data(kube, "a", name))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    if data is not None:
        if between is not None:
            between()
        kube.answer(data)
    return await reading


async def test_an_event_that_comes_while_a_get_is_on_its_way_wins_over_its_older_answer():
    v, kube = secrets.SecretView(), SlowKube()
    current(v)
    newer = secret("payer", "new")
    assert await read(v, kube, "payer", {"key": "old"}, lambda: v.changed("MODIFIED", newer)) == {"key": "new"}
    assert await read(v, kube, "payer") == {"key": "new"} and len(kube.asked) == 1  # kept: no GET
    v.changed("DELETED", newer)
    with pytest.raises(client.ApiError):
        await read(v, kube, "payer")
    assert len(kube.asked) == 1


async def test_a_get_that_a_list_overtakes_is_not_kept():
    """Asked while current; the watch fails and LISTs again (the Secret deleted meanwhile: not listed, and no
    event will come for it) before the answer: the answer serves its caller, and is not kept."""
    v, kube = secrets.SecretView(), SlowKube()
    current(v)
    assert await read(v, kube, "payer", {"key": "old"}, lambda: (v.lost(), current(v))) == {"key": "old"}
    assert v.kept() == 0
    again = asyncio.create_task(v.data(kube, "a", "payer"))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    kube.asked[-1].set_exception(client.ApiError(404, "gone"))  # asked again: now it is gone
    with pytest.raises(client.ApiError):
        await again
    assert len(kube.asked) == 2


async def test_a_get_asked_while_the_watch_is_not_current_is_not_kept_even_if_it_is_current_by_its_answer():
    v, kube = secrets.SecretView(), SlowKube()
    assert await read(v, kube, "payer", {"key": "v"}, lambda: current(v)) == {"key": "v"}
    assert v.kept() == 0
    await read(v, kube, "payer", {"key": "v"})
    assert v.kept() == 1 and len(kube.asked) == 2


async def test_a_list_shows_what_changed_or_went_while_nobody_watched():
    v, kube = secrets.SecretView(), SlowKube()
    current(v)
    await read(v, kube, "changed", {"key": "one"})
    await read(v, kube, "gone", {"key": "one"})
    v.lost()
    current(v, secret("changed", "two"), secret("unasked", "x"))
    assert await read(v, kube, "changed") == {"key": "two"}
    with pytest.raises(client.ApiError):
        await read(v, kube, "gone")
    assert len(kube.asked) == 2 and v.kept() == 2  # the Secret never asked for is not kept


async def test_past_its_limit_the_view_drops_what_it_keeps_and_a_get_on_its_way_is_not_kept(monkeypatch):
    monkeypatch.setattr(secrets, "KEPT_LIMIT", 2)
    v, kube = secrets.SecretView(), SlowKube()
    current(v)
    await read(v, kube, "x", {"key": "x"})
    await read(v, kube, "y", {"key": "y"})
    # z's GET is on its way when w's answer drops everything: z's answer is not kept, x is read again
    z = asyncio.create_task(v.data(kube, "a", "z"))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    answer_z = kube.asked[-1]
    await read(v, kube, "w", {"key": "w"})
    answer_z.set_result({"data": {"key": "z"}})
    assert await z == {"key": "z"} and v.kept() == 1
    await read(v, kube, "x", {"key": "x2"})
    assert len(kube.asked) == 5


async def test_what_it_returns_is_a_copy():
    v, kube = secrets.SecretView(), SlowKube()
    current(v)
    (await read(v, kube, "payer", {"key": "v"}))["key"] = "changed by a caller"
    assert await read(v, kube, "payer") == {"key": "v"}


async def test_a_list_that_works_beside_a_watch_that_fails_backs_off(monkeypatch):
    """kube.follow counts failures until a WATCH has run: RBAC with list but not watch on Secrets would otherwise LIST
    every Secret of the cluster once a second."""
    waits: list[float] = []

    class Refusing:
        async def list_pages(self, path: str, limit: int | None = None) -> AsyncIterator[tuple[list[Any], str]]:
            yield [], "7"

        async def watch(self, path: str, read_timeout_s: float) -> AsyncIterator[dict[str, Any]]:
            raise client.ApiError(403, "forbidden")
            yield {}  # an async generator

    async def sleep(s: float) -> None:
        waits.append(s)
        if len(waits) == 4:
            raise asyncio.CancelledError

    monkeypatch.setattr(follow.asyncio, "sleep", sleep)
    v = secrets.SecretView()
    with pytest.raises(asyncio.CancelledError):
        await follow.follow(Refusing(), "/api/v1/secrets", v, "secrets")  # type: ignore[arg-type]
    assert waits == list(follow.RETRY_S[:4]) and not v._current
