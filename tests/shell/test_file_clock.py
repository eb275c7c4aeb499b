"""FileClock: the time of an operator in another process, moved through a file; looked at once per recheck_s."""

from __future__ import annotations

import os
import pathlib

import pytest

from tfgrid_operator import clock


def write(path: pathlib.Path, ts: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(str(ts))
    tmp.replace(path)  # atomically, as the benchmark and the kill test do


@pytest.fixture
def stats(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = os.stat

    def counted(name: str) -> os.stat_result:
        seen.append(name)
        return real(name)
    monkeypatch.setattr(clock.os, "stat", counted)
    return seen


def test_a_time_written_is_seen_once_the_recheck_interval_passed(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "now"
    write(path, 100)
    c = clock.FileClock(path, recheck_s=0.0)
    assert c.now() == 100
    write(path, 3700)
    assert c.now() == 3700  # no interval: every call looks


def test_many_calls_within_the_interval_look_at_the_file_once(tmp_path: pathlib.Path, stats: list[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "now"
    write(path, 100)
    at = [1000.0]
    monkeypatch.setattr(clock.time, "monotonic", lambda: at[0])
    c = clock.FileClock(path, recheck_s=0.005)
    assert [c.now() for _ in range(1000)] == [100] * 1000
    assert len(stats) == 1
    write(path, 200)
    assert c.now() == 100  # within the interval: the time read last
    at[0] += 0.005
    assert c.now() == 200 and len(stats) == 2


def test_a_missing_file_is_an_error_not_a_time(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FileNotFoundError):
        clock.FileClock(tmp_path / "absent").now()
