"""FileClock: the time of an operator in another process, moved through a file; a time written is seen by the next
call (an uptime report of that time, handled after it was written, is checked against it)."""

from __future__ import annotations

import pathlib

import pytest

from tfgrid_operator import clock


def write(path: pathlib.Path, ts: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(str(ts))
    tmp.replace(path)  # atomically, as the benchmark and the kill test do


def test_a_time_written_is_seen_by_the_next_call(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "now"
    write(path, 100)
    c = clock.FileClock(path)
    assert [c.now() for _ in range(3)] == [100] * 3
    for ts in (3700, 7300, 7301):
        write(path, ts)
        assert c.now() == ts  # at once, not after some interval


def test_a_missing_file_is_an_error_not_a_time(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FileNotFoundError):
        clock.FileClock(tmp_path / "absent").now()
