"""Work kopf does that does nothing for us, cut: what kopf keeps of a watch event (the object without its
managedFields, decoded by orjson), and a deep copy of the whole object on each of its patches.

kopf queues each object's watch events until one of its workers (``TFGRID_WORKER_LIMIT`` per kind) takes them, with
no back-pressure on the watch: during a burst thousands of events wait, each a full object as the API server sent it.
About half of one of our objects as kube-apiserver serves it is ``metadata.managedFields`` (server-side apply's
bookkeeping: who set which field), which no handler reads and kopf's own processing only copies around.
controller-runtime's caches offer the same cut (``cache.TransformStripManagedFields``). So every event kopf's watch
yields — the initial LIST's objects and each WATCH event — loses its managedFields before kopf queues it, as kopf's
API module decodes it (below); the writes kopf and our handlers make are patches, which never carry them.

kopf decodes each line of a watch stream with the standard library's ``json``, and each response (its LISTs, the
object every PATCH answers with) with aiohttp's default, the same; both go through ``kube.jsonwire`` (orjson, about
three times faster; JSON decoding was ~11 % of a burst's CPU with objects as served, and the stdlib's decoding of
kopf's LISTs and PATCH answers still ~3 % of a restart's at grid size) instead, and slimmed as they are decoded.

kopf builds the JSON patch of a change's callable part (its finalizers) after every PATCH it sends, deep-copying the
object the server answered first, also when there is no such part (every status PATCH): ~2 % of a burst's CPU for
a copy it throws away. Where there is one (adding the finalizer, removing it), it copies and diffs the whole object
to find the one field that changed (~2.4 % of a burst's CPU, and still ~2 % diffing the whole metadata, labels and
annotations included): only the fields the patch names are copied and diffed, and of the metadata its finalizers.

kopf holds a worker for ``settings.persistence.consistency_timeout`` (5 s) after it removes an object's last
finalizer: it marks the version it waits for as one that never arrives (its workaround for the API server answering
that PATCH with the version before it), so its worker waits out the whole timeout after the object's DELETED event,
the last one there can be. With ``worker_limit`` workers a kind, that capped deleting a namespace at about
worker_limit / 5 objects a second (issue 17: 224 s to delete 11,050 objects at grid size, the operator idle most of
it). After that PATCH nothing is waited for: the DELETED event comes next and the worker ends after its idle
timeout. A stale event still queued behind the PATCH can at most run the delete handler again, which closes nothing
twice (the ledger's close is idempotent) and whose finalizer PATCH then finds the object gone.

kopf lists each kind in chunks (``settings.watching.chunk_size``) and queues every listed object for a worker at
once: a restart at grid size had ~8,400 objects waiting, a decoded object each (~4.7 KB), for the ``worker_limit``
workers, and the process keeps that peak. The LIST hands on each chunk after the first once fewer objects than
``worker_limit`` still wait for a worker (``fetch_objs``): what waits stays under ``worker_limit`` + one chunk, and a
worker never starves for want of the next chunk; the last chunk handed on, the WATCH starts at once and is read as it
comes (held back, it would delay the echoes of the running workers' PATCHes, and a real API server drops a watcher
that falls behind). While a listing waits, no echo can arrive either (the WATCH has not started): a worker whose
PATCH kopf waits to see echoed holds its slot for kopf's whole consistency timeout (5 s). So a listing stops waiting
once more than a quarter of ``worker_limit`` such PATCHes were made of its kind since it began (a restart that finds
many objects to patch — new ones to take, say — lists as kopf does), and waits LIST_HOLD_S in all at most: the WATCH
then starts from the listing's version inside kube-apiserver's watch cache window (75 s), and the continue token of
the next chunk lives far longer (etcd's compaction, every 5 minutes by default). A continue token the server has
expired all the same (410 Gone) ends the listing as a lost connection does: kopf lists again.

An object waiting for a worker (or with one) also has a queue of its own in kopf: an asyncio.Queue, ~3 KB empty
(four deques and an Event; the burst's traced memory held 10 MB of them beside 15 MB of the events themselves at
scale 0.3), and its waiting events are decoded objects (~4.7 KB each). ``Backlog`` takes its place: what kopf uses of
it (put, get under a timeout by the object's one worker, empty) on a list, and an event that waits kept as its JSON
(~1.5 KB), decoded again when the worker takes it; one the worker is already waiting for is handed over as it is.
While more than PACK_FROM events wait in all, each waiting one is kept deflated against a dictionary of its kind
(~0.13 KB instead of ~1.3 KB: ``Packing``).
Its "new events queued" flag is an asyncio.Event (~1.1 KB with its deque of waiters): ``Pressure`` takes its place,
its list of waiters made only while the worker sleeps on it.
A namespace deleted whole queues an event for every object at once (12,000 at grid size), as a burst of new objects
queues thousands: the listing's wait does not bound those (the WATCH is never held), this shrinks each.

kopf's memory of each object has a daemons' part of its own (~0.4 KB: a set, a dict, a time), also of a kind that
has no daemon or timer (none of ours has), whose objects' parts kopf only reads: they share one empty part until
kopf's daemons' step, which runs only for a kind with a daemon or timer, gives an object its own.

The loop's view of our objects (loop/mirror.py) is fed from kopf's own watch streams (``tap``): what kopf's
LIST and WATCH of a kind bring is shown to the view before kopf queues it, instead of a second LIST + WATCH per kind
decoded again (issue 17: the second stream cost the operator a decode and a read of every event, and the API server
an encoding and a write of each). The view sees what kopf sees, when kopf sees it: a listing that waits for kopf's
workers (below) fills it chunk by chunk, and while kopf pauses a kind's stream (a standby replica under peering)
the view of it stands as last seen.

All hook into kopf's internals (its API module's request and JSON, its Patch class, its listing, its scheduler of
workers and its objects' queues), which is why kopf is pinned; tests/shell/test_kopf_tuning.py runs kopf's own watch
(and its watcher, for the listing and the queues) against the strict emulator through them."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import weakref
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Collection
from typing import Any, cast

import aiohttp
import kopf
from kopf._cogs.aiokits import aiotasks as kopf_aiotasks
from kopf._cogs.clients import api as kopf_api
from kopf._cogs.clients import auth as kopf_auth
from kopf._cogs.clients import errors as kopf_errors
from kopf._cogs.clients import fetching as kopf_fetching
from kopf._cogs.clients import watching as kopf_watching
from kopf._cogs.structs import bodies as kopf_bodies
from kopf._cogs.structs import finalizers as kopf_finalizers
from kopf._cogs.structs import patches as kopf_patches
from kopf._core.actions import application as kopf_application
from kopf._core.engines import daemons as kopf_daemons
from kopf._core.intents import causes as kopf_causes
from kopf._core.reactor import inventory as kopf_inventory
from kopf._core.reactor import processing as kopf_processing
from kopf._core.reactor import queueing as kopf_queueing

from tfgrid_operator.kube import follow, jsonwire

KOPF_INFINITE_WATCH = kopf_watching.infinite_watch
KOPF_CONTINUOUS_WATCH = kopf_watching.continuous_watch
KOPF_AS_JSON_PATCH = kopf_patches.Patch.as_json_patch
KOPF_REQUEST = kopf_api.request
KOPF_PATCH_AND_CHECK = kopf_application.patch_and_check
KOPF_FETCH_OBJS = kopf_fetching.fetch_objs
KOPF_SCHEDULER = kopf_aiotasks.Scheduler
KOPF_STREAM = kopf_queueing.Stream
KOPF_PROCESS_SPAWNING_CAUSE = kopf_processing.process_spawning_cause
log = logging.getLogger("tfgrid_operator.kopf_tuning")
LIST_HOLD_S = 60.0  # the longest a listing waits for kopf's workers, in all (fetch_objs)
ECHO_SHARE = 4  # a listing stops waiting once more than worker_limit / ECHO_SHARE PATCHes of its kind await an echo
NEVER_ARRIVES = "~which~never~arrives"  # kopf's mark on the version after an object's last finalizer is removed


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def slim_object(obj: Any) -> None:
    """Drop ``obj``'s managedFields and kubectl's last-applied annotation (a whole copy of the object as `kubectl
    apply` last sent it, which kopf's essence leaves out too), in place; anything else is left as it is."""
    if isinstance(obj, dict):
        meta = obj.get("metadata")
        if isinstance(meta, dict):
            meta.pop("managedFields", None)
            annotations = meta.get("annotations")
            if isinstance(annotations, dict):
                annotations.pop(LAST_APPLIED, None)


def slim(raw_event: Any) -> Any:
    """A watch event with its object slimmed; a bookmark or an error status is passed as it is."""
    if isinstance(raw_event, dict):
        slim_object(raw_event.get("object"))
    return raw_event


def slim_response(document: Any) -> Any:
    """A response as kopf reads it: a LIST's every item slimmed, or the one object (a GET's, a PATCH's answer)."""
    if isinstance(document, dict):
        items = document.get("items")
        if isinstance(items, list):
            for item in items:
                slim_object(item)
        else:
            slim_object(document)
    return document


def read_event(line: bytes | str) -> Any:
    """One line of a watch stream, decoded and slimmed."""
    return slim(jsonwire.loads(line))


def read_response(text: bytes | str) -> Any:
    """One response's body, decoded and slimmed."""
    return slim_response(jsonwire.loads(text))


STREAMS: weakref.WeakSet[AsyncGenerator[Any, None]] = weakref.WeakSet()  # kopf's watch streams, while alive


def infinite_watch(**kwargs: Any) -> AsyncGenerator[Any, None]:
    """kopf's own watch stream (LIST, then WATCH, reconnecting forever), itself (no wrapper), remembered for
    ``close_streams``."""
    stream = cast(AsyncGenerator[Any, None], KOPF_INFINITE_WATCH(**kwargs))  # an async generator, typed as an iterator
    STREAMS.add(stream)
    return stream


TAPS = "_tfgrid_taps"  # the attribute of an operator's kopf settings that holds its taps: (group, plural) → Sink


def tap(settings: kopf.OperatorSettings, group: str, plural: str, sink: follow.Sink) -> None:
    """Show ``sink`` what this operator's kopf watch of ``plural`` brings, as ``kube.follow`` shows what its own
    LIST + WATCH brings (its settings are the operator's own: two operators in one process keep theirs apart)."""
    taps: dict[tuple[str, str], follow.Sink] = settings.__dict__.setdefault(TAPS, {})
    taps[(group, plural)] = sink


def continuous_watch(**kwargs: Any) -> AsyncIterator[Any]:
    """kopf's one LIST + WATCH of a kind (``infinite_watch`` calls it again after a 410 or a pause); where a tap
    is set for the kind, what it brings is shown to the tap first."""
    stream = cast(AsyncGenerator[Any, None], KOPF_CONTINUOUS_WATCH(**kwargs))  # an async generator, typed as an iterator
    sink = getattr(kwargs["settings"], TAPS, {}).get(kind_of(kwargs["resource"]))
    return stream if sink is None else _tapped(stream, sink)


async def _tapped(stream: AsyncGenerator[Any, None], sink: follow.Sink) -> AsyncIterator[Any]:
    """kopf's one LIST + WATCH, shown to ``sink``; once it ends (a 410, kopf's pause, a failure) the sink is lost
    until ``infinite_watch`` begins the next one."""
    async with contextlib.aclosing(stream):
        try:
            _show(sink.listing)
            async for event in stream:
                if event is kopf_watching.Bookmark.LISTED:
                    _show(sink.listed_all)
                elif isinstance(event, dict):
                    kind, body = event.get("type"), event.get("object")
                    if isinstance(body, dict):
                        if kind is None:
                            _show(sink.listed, body)
                        elif kind in ("ADDED", "MODIFIED", "DELETED"):
                            _show(sink.changed, kind, body)
                yield event
        finally:
            _show(sink.lost)


def _show(call: Any, *args: Any) -> None:
    """A tap's failure is logged, never kopf's: its stream goes on."""
    try:
        call(*args)
    except Exception:
        log.exception("The loop's view failed on a watch event (kopf's stream goes on)")


async def close_streams() -> None:
    """Close the watch streams of a stopped kopf operator, one after the other, before the event loop closes.

    kopf's watcher never closes its stream: cancelled between two events (while it hands one to a worker), it leaves
    the stream suspended after a ``yield``, inside kopf's ``streaming_block`` context. ``asyncio.run`` then closes
    every generator still open at once, the stream and the context's own generator side by side, and when the
    context's generator is closed first, closing the stream fails with "generator didn't stop after athrow()" and a
    traceback on stderr (seen on a stop by SIGTERM under load). Closed here, the stream unwinds its context in order.
    A stream still running (its watcher not stopped) is left to it."""
    for stream in list(STREAMS):
        with contextlib.suppress(RuntimeError):  # "asynchronous generator is already running"
            await stream.aclose()


async def operator(**kwargs: Any) -> None:
    """``kopf.operator(**kwargs)``; once it has stopped, its watch streams closed (``close_streams``)."""
    try:
        await kopf.operator(**kwargs)
    finally:
        await close_streams()


class Scheduler(KOPF_SCHEDULER):
    """kopf's scheduler of per-object workers (one per watcher of a kind), remembered by the task that made it: the
    watcher's task, in which its listing runs and waits for it (``fetch_objs``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._task = asyncio.current_task()
        if self._task is not None:
            SCHEDULERS[self._task] = self

    async def close(self) -> None:
        """kopf's own (its watcher closes its scheduler when it ends), then forgotten: kopf's exception handler, which
        the scheduler keeps, holds the watcher's task, the registry's key."""
        try:
            await super().close()
        finally:
            if self._task is not None and SCHEDULERS.get(self._task) is self:
                del SCHEDULERS[self._task]

    @property
    def limit(self) -> int | None:
        return self._limit

    def waiting(self) -> int:
        """Objects queued for a worker that none has taken yet."""
        return self._pending_coros.qsize()

    async def fewer_waiting_than(self, bound: int) -> None:
        """Return once fewer than ``bound`` objects wait for a worker (kopf's own condition wakes this when a worker
        ends)."""
        async with self._condition:
            await self._condition.wait_for(lambda: self.waiting() < bound)


SCHEDULERS: weakref.WeakKeyDictionary[asyncio.Task[Any], Scheduler] = weakref.WeakKeyDictionary()


def kind_of(resource: Any) -> tuple[str, str]:
    return (getattr(resource, "group", ""), getattr(resource, "plural", ""))


AWAITED: dict[tuple[str, str], int] = {}  # per kind (group, plural): kopf's PATCHes whose echo a worker waited for


async def fetch_objs(**kwargs: Any) -> AsyncIterator[tuple[Collection[Any], str]]:
    """kopf's LIST in chunks, each chunk after the first handed on once fewer objects than ``worker_limit`` wait for
    a worker of this watcher (its scheduler, found by the task that runs the listing); no more waiting once more
    than ``worker_limit / ECHO_SHARE`` PATCHes of its kind awaited their echo since the listing began, or after
    LIST_HOLD_S of waiting in all. A listing with no workers' scheduler (kopf's observers and peering list through
    here too) or no limit never waits. A continue token the server expired (410) ends the listing as a lost
    connection does: kopf's watch returns and lists again."""
    scheduler = SCHEDULERS.get(task) if (task := asyncio.current_task()) is not None else None
    bound = scheduler.limit if scheduler is not None else None
    kind = kind_of(kwargs.get("resource"))
    patched = AWAITED.get(kind, 0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LIST_HOLD_S
    first = True
    # kopf's own generator, typed as an iterator; closed with this one, in order
    async with contextlib.aclosing(cast(AsyncGenerator[Any, None], KOPF_FETCH_OBJS(**kwargs))) as chunks:
        try:
            async for chunk in chunks:
                left = deadline - loop.time()
                if scheduler is not None and bound and not first and left > 0 and scheduler.waiting() >= bound \
                        and AWAITED.get(kind, 0) - patched <= bound // ECHO_SHARE:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(left):
                            await scheduler.fewer_waiting_than(bound)
                first = False
                yield chunk
        except kopf_errors.APIClientError as exc:
            if exc.status != 410:
                raise
            raise TimeoutError(f"the listing's continue token expired: {exc}") from exc


PACK_FROM = 1_000  # events waiting as JSON in all backlogs: from here on each is kept deflated (``pack``)


class Packed:
    """A deflated event, with the dictionary it was deflated against."""

    __slots__ = ("data", "dictionary")

    def __init__(self, dictionary: bytes, data: bytes) -> None:
        self.dictionary, self.data = dictionary, data


class Packing:
    """How many events wait as JSON in all backlogs (a backlog dropped with events in it takes them off), and each
    kind's preset dictionary for deflating them: the JSON of the first event of that kind packed. Objects of a kind
    are alike, so against it a Deployment's event (~1.3 KB) deflates to ~0.13 KB, in ~16 µs, and inflates in ~5 µs
    (less than decoding it): a namespace deleted whole queues an event for every object at once (~15 MB of JSON at
    grid size; issue 17, the deletion's peak). Below PACK_FROM waiting events nothing is deflated: a queue that
    short costs little, and kopf's usual pace pays nothing."""

    __slots__ = ("dictionaries", "waiting")

    def __init__(self) -> None:
        self.waiting = 0
        self.dictionaries: dict[str, bytes] = {}

    def pack(self, event: dict[str, Any]) -> bytes | Packed | None:
        """``event`` as its JSON (``jsonwire.dumps_exact``), deflated against its kind's dictionary past PACK_FROM
        waiting events; None for what orjson refuses."""
        data = jsonwire.dumps_exact(event)
        if data is None:
            return None
        self.waiting += 1
        if self.waiting <= PACK_FROM:
            return data
        obj = event.get("object")
        kind = str(obj.get("kind", "")) if isinstance(obj, dict) else ""
        dictionary = self.dictionaries.setdefault(kind, data)
        deflate = zlib.compressobj(1, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, dictionary)
        return Packed(dictionary, deflate.compress(data) + deflate.flush())

    def unpack(self, item: bytes | Packed) -> Any:
        """The event ``pack`` made ``item`` of."""
        self.waiting -= 1
        if isinstance(item, Packed):
            inflate = zlib.decompressobj(-15, item.dictionary)
            return jsonwire.loads(inflate.decompress(item.data) + inflate.flush())
        return jsonwire.loads(item)


PACKING = Packing()


class Backlog:
    """One object's queue of watch events in kopf's watcher, in place of kopf's asyncio.Queue: the items on a list, at
    most one waiting worker's future (kopf gives an object one worker at a time), an event (a dict) put while no
    worker waits kept as its JSON where that decodes to the same values (``jsonwire.dumps_exact``; deflated while many
    wait: ``Packing``), anything else (kopf's end-of-stream mark) as it is. A get cancelled (kopf's idle timeout)
    leaves every item in place."""

    __slots__ = ("_getter", "_items")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._getter: asyncio.Future[None] | None = None

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    def put_nowait(self, item: Any) -> None:
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)  # handed over as it is
        elif isinstance(item, dict):
            item = PACKING.pack(item) or item
        self._items.append(item)

    async def put(self, item: Any) -> None:
        self.put_nowait(item)

    def __del__(self) -> None:
        if self._items:  # dropped with events still waiting (its worker stopped): they no longer wait
            PACKING.waiting -= sum(isinstance(item, (bytes, Packed)) for item in self._items)

    def get_nowait(self) -> Any:
        if not self._items:
            raise asyncio.QueueEmpty
        item = self._items.pop(0)
        return PACKING.unpack(item) if isinstance(item, (bytes, Packed)) else item

    async def get(self) -> Any:
        while not self._items:
            getter = self._getter = asyncio.get_running_loop().create_future()
            try:
                await getter
            finally:
                if self._getter is getter:
                    self._getter = None
        return self.get_nowait()


class Pressure:
    """One object's "new events queued" flag in kopf's watcher, in place of an asyncio.Event (~1.1 KB each with its
    deque of waiters, made for every object that has events waiting): what kopf uses of it (set, clear, is_set, and
    wait, under a timeout, by the object's one worker while it sleeps) with the list of waiters made only while one
    waits."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if not self._set:
            self._set = True
            for waiter in self._waiters or ():
                if not waiter.done():
                    waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter = asyncio.get_running_loop().create_future()
        waiters = self._waiters = self._waiters or []
        waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            waiters.remove(waiter)
            if not waiters and self._waiters is waiters:
                self._waiters = None


def stream(*, backlog: Any, pressure: asyncio.Event) -> Any:
    """kopf's per-object Stream with a ``Backlog`` and a ``Pressure`` (the empty asyncio.Queue and the asyncio.Event
    kopf made for it are dropped)."""
    return KOPF_STREAM(backlog=cast(Any, Backlog()), pressure=cast(Any, Pressure()))


class JsonWire:
    """Stands in for the ``json`` module in kopf's API module, whose only use of it is ``json.loads`` of a line."""

    loads = staticmethod(read_event)


async def request(*args: Any, **kwargs: Any) -> aiohttp.ClientResponse:
    """kopf's own request, whose response's ``json()`` decodes with ``kube.jsonwire`` (aiohttp's ``loads`` argument:
    its content-type check and empty-body answer stay aiohttp's), with its credentials from ``authenticated``."""
    response = await (KOPF_REQUEST(*args, **kwargs) if "context" in kwargs else authenticated(*args, **kwargs))
    setattr(response, "json", functools.partial(response.json, loads=read_response))  # noqa: B010  (an instance's)
    return response


async def authenticated(*args: Any, **kwargs: Any) -> aiohttp.ClientResponse:
    """kopf's ``auth.authenticated`` loop over its vault's credentials (a 401 invalidates the one tried and the next is
    tried, kopf's re-login included), with the vault's generators run to their end. kopf returns from inside the
    loop and leaves two suspended async generators to the garbage collector, for which asyncio's finalizer hook
    makes a task each and wakes the loop through its self-pipe: two tasks for every request kopf makes (issue 17:
    ~2.5 % of a burst's CPU). Given the context, kopf's own request does the call and keeps track of the response."""
    vault = kopf_auth.vault_var.get()
    tried = cast(AsyncGenerator[Any, None], vault.extended(kopf_auth.APIContext, "contexts"))  # an async generator
    try:
        async for key, info, context in tried:
            try:
                response = await KOPF_REQUEST(*args, **kwargs, context=context)
            except (kopf_errors.APIUnauthorizedError, kopf_errors.APISessionClosed) as exc:
                await vault.invalidate(key, info, exc=exc)
                continue
            await anext(tried, None)  # the vault sees these credentials still held and ends its iteration
            return response
    finally:
        await tried.aclose()  # an error raised on the way (a 404, say): no generator is left suspended on ours
    raise RuntimeError("kopf's vault ended its credentials without a login error")  # as kopf's own loop: unreachable


async def patch_and_check(**kwargs: Any) -> tuple[str | None, Any]:
    """kopf's own, with no version to wait for after the PATCH that removed an object's last finalizer."""
    version, remaining = await KOPF_PATCH_AND_CHECK(**kwargs)
    if version is not None and version.endswith(NEVER_ARRIVES):
        return None, remaining
    if version is not None:  # its worker waits to see it echoed (a listing of its kind holds that back: fetch_objs)
        kind = kind_of(kwargs.get("resource"))
        AWAITED[kind] = AWAITED.get(kind, 0) + 1
    return version, remaining


# every object's until a daemon or timer of its kind needs its own (its idle time is a daemon's: none reads this one)
NO_DAEMONS = kopf_daemons.DaemonsMemory(idle_reset_time=0.0)


@dataclasses.dataclass
class ResourceMemory(kopf_inventory.ResourceMemory):
    """kopf's memory of one object, whose daemons' part (~0.4 KB: a set, a dict, a time) is one shared empty part
    until ``process_spawning_cause`` runs kopf's own for it, the only code that changes that part; until then kopf
    only reads it (no body, no daemon to stop or kill)."""

    daemons_memory: kopf_daemons.DaemonsMemory = dataclasses.field(default_factory=lambda: NO_DAEMONS)


async def process_spawning_cause(registry: kopf.OperatorRegistry, settings: kopf.OperatorSettings,
                                 memory: kopf_inventory.ResourceMemory, cause: kopf_causes.SpawningCause,
                                 operator_paused: Any) -> Collection[float]:
    """kopf's own, on a daemons' memory of the object's own (``ResourceMemory``): kopf runs this step only for a
    kind with a daemon or timer, and it is the only code that changes that memory."""
    if memory.daemons_memory is NO_DAEMONS:
        memory.daemons_memory = kopf_daemons.DaemonsMemory()
    return await KOPF_PROCESS_SPAWNING_CAUSE(registry=registry, settings=settings, memory=memory, cause=cause,
                                             operator_paused=operator_paused)


FINALIZER_FNS = (kopf_finalizers.block_deletion, kopf_finalizers.allow_deletion)  # touch metadata.finalizers only


def as_json_patch(self: kopf_patches.Patch, body: Any = None) -> Any:
    """kopf's own, on the part of the object the patch can change: no deep copy of ``body`` when the patch is empty
    (it returns no operations then), and when its callable part is only kopf's finalizer functions, the copy and the
    diff of the top-level fields it names (and ``metadata``, of which only its finalizers where the merge part names
    no metadata: ``finalizers_part``) alone. The parts left out are the same before and after, so the diff has no
    operation on them either: the operations are the same, in the same order (tests/shell/test_kopf_tuning.py)."""
    if not self:
        return []
    base = body if body is not None else self._original  # kopf's own reference body
    if base is None or not all(isinstance(fn, functools.partial) and fn.func in FINALIZER_FNS for fn in self.fns):
        return KOPF_AS_JSON_PATCH(self, body)
    touched = set(self) | ({"metadata"} if self.fns else set())
    part = {k: v for k, v in base.items() if k in touched}
    meta = part.get("metadata")
    if self.fns and "metadata" not in self and isinstance(meta, dict):
        part["metadata"] = finalizers_part(meta)
    return KOPF_AS_JSON_PATCH(self, cast(kopf_bodies.RawBody, part))


def finalizers_part(meta: dict[str, Any]) -> dict[str, Any]:
    """Of an object's metadata, what kopf's finalizer functions read and change: its ``finalizers``, and whether
    anything else is there (one other key, its value a stand-in equal before and after: ``allow_deletion`` drops a
    metadata it leaves empty, and the whole object's diff then says so)."""
    part = {k: v for k, v in meta.items() if k == "finalizers"}
    other = next((k for k in meta if k != "finalizers"), None)
    if other is not None:
        part[other] = None
    return part


def install() -> None:
    """Route kopf's watch streams through ``infinite_watch`` and ``continuous_watch`` (its taps), its stream and
    response decoding through orjson and ``slim``, its JSON patches through ``as_json_patch``, its patches of objects
    through ``patch_and_check``, its daemons' causes through ``process_spawning_cause``, and its listings through
    ``fetch_objs``, with ``Scheduler`` for its workers, and its objects' queues through ``stream`` (a ``Backlog``
    each; idempotent)."""
    kopf_watching.infinite_watch = infinite_watch
    kopf_watching.continuous_watch = continuous_watch
    kopf_fetching.fetch_objs = fetch_objs
    kopf_aiotasks.Scheduler = Scheduler  # type: ignore[misc]
    setattr(kopf_queueing, "Stream", stream)  # noqa: B010  (the name kopf's watcher calls; a class there)
    kopf_patches.Patch.as_json_patch = as_json_patch  # type: ignore[method-assign]
    kopf_api.request = request
    kopf_application.patch_and_check = patch_and_check
    kopf_processing.process_spawning_cause = process_spawning_cause
    setattr(kopf_inventory, "ResourceMemory", ResourceMemory)  # noqa: B010  (the name kopf's memories call)
    setattr(kopf_api, "json", JsonWire)  # noqa: B010  (kopf's module global, not a typed attribute)
