"""The node agent measures the machine it runs on, as Zero-OS does, unless a simulation states the capacity."""

from __future__ import annotations

import os
import shutil

import pytest
from click.testing import CliRunner

from tfgrid_operator import agent, cli
from tfgrid_operator.domain.units import Resources


def test_measure_reads_cores_meminfo_and_each_filesystem_once(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       33554432 kB\nMemFree:         1024 kB\n")  # 32 GiB
    got = agent.measure(ssd=[str(tmp_path), str(tmp_path / ".")], hdd=[], meminfo=str(meminfo))
    assert got.cru == len(os.sched_getaffinity(0)) and got.mru == 32 and got.hru == 0
    assert got.sru == shutil.disk_usage(tmp_path).total // 1024**3  # the same filesystem twice counts once


def test_stated_capacity_parses_or_says_what_is_wrong(tmp_path):
    assert agent.parse_capacity("cru=8, mru=32,sru=1000") == Resources(8, 32, 1000, 0)
    for bad in ("cru=8", "cru=8,mru=x", "cpu=8,mru=2", "cru=-1,mru=2", ""):
        with pytest.raises(ValueError, match="capacity"):
            agent.parse_capacity(bad)
    f = tmp_path / "cap.yaml"
    f.write_text("{cru: 4, mru: 16, sru: 500}\n")
    assert agent.load_capacity(f) == Resources(4, 16, 500, 0)
    f.write_text("{cru: 4, mru: true}\n")
    with pytest.raises(ValueError, match="mapping"):
        agent.load_capacity(f)


def test_node_agent_refuses_a_bad_capacity_in_one_line(tmp_path):
    key = tmp_path / "n.key"
    runner = CliRunner()
    assert runner.invoke(cli.main, ["keygen", str(key)]).exit_code == 0
    out = runner.invoke(cli.main, ["node-agent", "--node", "n1", "--key-file", str(key), "--capacity", "cru=lots"])
    assert out.exit_code == 1 and out.output.startswith("Error: capacity 'cru=lots'")
    out = runner.invoke(cli.main, ["node-agent", "--node", "n1", "--key-file", str(key), "--capacity", "cru=1,mru=2",
                                   "--capacity-file", str(key)])
    assert out.exit_code == 2 and "not both" in out.output
