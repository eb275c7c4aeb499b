"""The operator is SIGKILLed at random points while it places deployments, bills, mints and executes a proposal,
and restarted each time. The ledger must then show: no node overbooked, one live contract per deployment, no
second charge for any second and no billing period lost, money neither made nor lost (funding + minted =
balances + reserves; billed = paid + owed), one mint per node and period, the proposal executed once."""

from __future__ import annotations

import asyncio
import os
import pathlib
import random
import signal
import subprocess
import sys
from collections import defaultdict

import pytest
import sqlalchemy as sa

from e2e.conftest import COUNCIL, PERIOD, START, condition
from e2e.objects import create, deployment, farm, node, obj, proposal, twin_account
from ledger_audit import conserved
from polling import eventually
from tfgrid_operator import agent, backend, ballot
from tfgrid_operator.backend import schema
from tfgrid_operator.domain import identity, money
from tfgrid_operator.domain.units import Resources
from tfgrid_operator.kube.client import KubeClient

pytestmark = pytest.mark.e2e
HERE = pathlib.Path(__file__).resolve().parent
H = 3600
FARMS = {f"k{i}": identity.KeyPair.generate() for i in range(5)}
NODES = {f"kn{i}": (f"k{i % 5}", identity.KeyPair.generate()) for i in range(10)}
CAPACITY = Resources(cru=8, mru=32, sru=1000)  # what each node's agent attests: its spec (e2e.objects.node)
FUNDING = 1_000 * money.UNITS_PER_TFT


class Proc:
    def __init__(self, ledger_url: str, clock_file: pathlib.Path) -> None:
        self.args = [sys.executable, str(HERE / "operator_process.py"), ledger_url, str(clock_file),
                     ",".join(k.public_key for k in COUNCIL)]
        self.p: subprocess.Popen | None = None
        self.log = pathlib.Path(clock_file).with_name("operator.log")
        self.kills = 0

    def start(self) -> None:
        self.p = subprocess.Popen(self.args, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                                  stdout=subprocess.DEVNULL, stderr=open(self.log, "a"))  # noqa: SIM115

    def kill(self) -> None:
        assert self.p is not None
        self.p.send_signal(signal.SIGKILL)
        self.p.wait()
        self.kills += 1


def set_clock(path: pathlib.Path, ts: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(str(ts))
    os.replace(tmp, path)


@pytest.mark.timeout(360)  # seven restarts of a process on a loaded machine; each step waits for the last
async def test_killed_at_random_points_loses_and_doubles_nothing(apiserver, tmp_path):
    rng = random.Random(20261125)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    clock_file = tmp_path / "clock"
    set_clock(clock_file, START)
    from e2e.operator_process import CONFIG

    lg = await backend.open_backend(url, CONFIG)
    for i in range(4):
        await twin_account(lg, apiserver, f"payer{i}")
        await lg.fund(name=f"payer{i}", amount=FUNDING, now=START)
    proc = Proc(url, clock_file)
    proc.start()

    async def maybe_kill() -> None:
        await asyncio.sleep(rng.uniform(0.0, 0.5))  # somewhere in the middle of whatever it is doing
        if rng.random() < 0.6:
            proc.kill()
            proc.start()

    try:
        await create(apiserver, *(farm(f, owner=k.public_key) for f, k in FARMS.items()),
                     *(node(n, f, key=k) for n, (f, k) in NODES.items()))
        await maybe_kill()
        # placement: 24 deployments of 4 cores on 10 nodes of 8: exactly 20 fit
        for i in range(24):
            await create(apiserver, deployment(f"w{i}", payer=f"payer{i % 4}", cru=4, public_ips=0))
            if i % 6 == 5:
                await maybe_kill()
        async def registered():
            return all([await lg.observe_node(name=n) for n in NODES])
        await eventually(registered, timeout=30, what="the ten nodes registered")
        async with KubeClient(user_agent="test-driver") as kube:  # the agents attest their capacity (issue 13)
            for n, (_, k) in NODES.items():
                await agent.send_report(kube, k, namespace="default", node=n, ts=START, uptime=100, capacity=CAPACITY)

        async def attested():
            return set(NODES) <= set(await lg.attestations())
        await eventually(attested, timeout=30, what="the ten nodes attested")

        async def propose_and_vote() -> None:
            """§5: a farm weighs the capacity its nodes held over the last minted period: the proposal opens and
            the five farms vote once period 100 (START to 6 h) is minted, with kills around it."""
            await create(apiserver, proposal("kp", COUNCIL[0], {"type": "SetPricingPolicy", "pricing": {"su": 60_000}}))
            kp = await eventually(lambda: lg.observe_proposal(key="default/kp"), timeout=30, what="proposal open")
            votes = [ballot.signed_vote(k, proposal="default/kp", proposal_id=kp.id, action=kp.action,
                                        threshold=kp.threshold, end_ts=kp.end_ts, farm=f, approve=True, seq=1,
                                        nonce=kp.nonce)
                     for f, k in FARMS.items()]
            resp = await apiserver.patch("/apis/grid.threefold.io/v1alpha1/namespaces/default/proposals/kp",
                                         headers={"Content-Type": "application/merge-patch+json"},
                                         json={"spec": {"votes": votes}})
            assert resp.status == 200, await resp.text()

            async def votes_counted():
                p = await lg.observe_proposal(key="default/kp")
                return p is not None and len(p.votes) == 5
            await eventually(votes_counted, timeout=60, what="the five votes counted")  # before its deadline passes

        # time passes: uptime reports every 40 minutes, billing every hour, minting after 6 h + settle, the
        # proposal and its votes once that mint is done, its deadline 24 h later — with kills in between
        async with KubeClient(user_agent="test-driver") as kube:
            for step in range(1, 38):
                ts = START + step * 2400
                set_clock(clock_file, ts)
                for n, (_, k) in NODES.items():
                    await agent.send_report(kube, k, namespace="default", node=n, ts=ts, uptime=ts - START + 100,
                                            capacity=CAPACITY)
                if step % 4 == 0:
                    await maybe_kill()
                else:
                    await asyncio.sleep(0.15)
                # a Lease holds only the latest report: a real agent reports every 40 minutes, so no restart misses
                # one; here 40 minutes pass in a moment, so the next report waits until this one is on the ledger
                # (or a loaded machine's slow restart would overwrite reports unseen and mint nothing)
                await eventually(lambda t=ts: reports_recorded(lg, t), timeout=30, what=f"the reports of {ts}")
                if step == 12:  # START + 8 h: period 100 minted at 6 h 41 min
                    await eventually(lambda: minted(lg, START // PERIOD), timeout=30, what="period 100 minted")
                    await propose_and_vote()
            # the deadline counts from when the operator registered the proposal (it may have been down then)
            registered = await eventually(lambda: lg.observe_proposal(key="default/kp"), what="proposal registered")
            end = max(START + 37 * 2400, registered.end_ts + 60)
            set_clock(clock_file, end)
            await maybe_kill()  # around the proposal's execution
        assert proc.kills >= 5, proc.kills
        # let the last incarnation catch up, then read the ledger
        await eventually(lambda: lg.watermark(name="bill", default=0), what="ledger readable")

        async def caught_up():
            return (await lg.watermark(name="bill", default=0) == end // H
                    and (await lg.observe_proposal(key="default/kp")) is not None
                    and (await lg.observe_proposal(key="default/kp")).state == "Executed")
        await eventually(caught_up, timeout=30, what="billing and the proposal caught up")
        placed = await eventually(lambda: sum(condition(obj(apiserver, "deployments", f"w{i}")).get("reason") == "Available"
                                              for i in range(24)) == 20, timeout=30, what="20 placed")
        assert placed
    finally:
        proc.kill()
    await check_ledger(lg, end)
    await lg.close()
    assert await_no_double_contracts(apiserver)


async def minted(lg, period: int) -> bool:
    return any(r.period == period for r in await lg.mint_receipts(node=next(iter(NODES))))


async def reports_recorded(lg, ts: int) -> bool:
    summaries = await lg.node_summaries(now=ts)
    return all(n in summaries and summaries[n].last_report_ts == ts for n in NODES)


def await_no_double_contracts(apiserver) -> bool:
    ids = [obj(apiserver, "deployments", f"w{i}")["status"].get("contractId") for i in range(24)]
    live = [i for i in ids if i is not None]
    return len(live) == len(set(live))


async def check_ledger(lg, end: int) -> None:
    c, b, m, n = schema.contracts, schema.bills, schema.mints, schema.nodes
    async with lg.engine.connect() as conn:
        contracts = (await conn.execute(sa.select(c))).all()
        bills = (await conn.execute(sa.select(b).order_by(b.c.contract_id, b.c.period, b.c.until))).all()
        minted = (await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(m.c.amount), 0)))).scalar()
        mint_rows = (await conn.execute(sa.select(m.c.node_id, m.c.period))).all()
        nodes = {r.id: r for r in (await conn.execute(sa.select(n))).all()}
    # no node overbooked; one live contract per deployment
    used: dict[int, int] = defaultdict(int)
    live_keys: dict[str, int] = defaultdict(int)
    for r in contracts:
        if r.state != "Deleted":
            used[r.node_id] += r.cru
            live_keys[r.key] += 1
    assert all(used[i] <= nodes[i].cru for i in used), used
    assert all(v == 1 for v in live_keys.values()) and len(live_keys) == 20, live_keys
    # every second billed at most once, and every ended hour of every live contract billed
    created = {r.id: r.created_at for r in contracts}
    windows: dict[tuple[int, int], list] = defaultdict(list)
    for r in bills:
        windows[(r.contract_id, r.period)].append(r)
    for (cid, period), rows in windows.items():
        start = max(period * H, created[cid])
        covered = sum(r.seconds for r in rows)
        assert covered == rows[-1].until - start <= H, (cid, period, covered)
    for r in contracts:
        if r.state == "Deleted":
            continue
        for period in range(r.created_at // H, end // H):
            rows = windows.get((r.id, period))
            assert rows and rows[-1].until == (period + 1) * H, f"contract {r.id} lost period {period}"
    # each contract's totals are its bills', kept in the same transactions
    for r in contracts:
        mine = [x for x in bills if x.contract_id == r.id]
        assert r.billed_total == sum(x.amount for x in mine), r.id
        assert (r.last_billed_at, r.last_discount) == ((max(x.billed_at for x in mine), mine[-1].discount) if mine
                                                       else (None, None)), r.id
    # money is moved by billing, made only by minting (a bill's payment waits in its contract's reserve, §2.7)
    await conserved(lg, 4 * FUNDING)
    assert len(mint_rows) == len(set(mint_rows)) and minted > 0
    policy, _ = await lg.policies()
    assert policy.su == 60_000
