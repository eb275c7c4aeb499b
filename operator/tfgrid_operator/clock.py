"""One injectable clock. Tests use ManualClock, the sandbox a ScaledClock (a month in seconds), an operator in
another process whose time is driven from outside (the kill test, the scale benchmark) a FileClock."""

from __future__ import annotations

import os
import pathlib
import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> int: ...


class SystemClock:
    def now(self) -> int:
        return int(time.time())


class ManualClock:
    """Time moves only when told to; safe to move from the test thread while the operator runs."""

    def __init__(self, start: int) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> int:
        with self._lock:
            return self._now

    def advance(self, seconds: int) -> int:
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, ts: int) -> None:
        with self._lock:
            self._now = ts


class ScaledClock:
    """Grid time runs ``factor`` times faster than wall time, from ``start``."""

    def __init__(self, start: int, factor: float) -> None:
        self.start, self.factor, self._t0 = start, factor, time.monotonic()

    def now(self) -> int:
        return self.start + int((time.monotonic() - self._t0) * self.factor)


class FileClock:
    """Unix time as the integer in a file, re-read when the file changes (write it atomically: a temporary
    file renamed over it). Lets a test or benchmark move the time of an operator running in another process.

    The file is looked at (one ``stat``) at most every ``recheck_s`` of monotonic time: a handler asks the time
    several times an object, and at grid size a ``stat`` each time was 4 % of a restart's CPU (issue 17, py-spy). A
    time written to the file is seen within ``recheck_s`` (0.005 s); the time it gives never goes back while the
    file's does not."""

    def __init__(self, path: str | pathlib.Path, recheck_s: float = 0.005) -> None:
        self.path, self._stamp, self._now = pathlib.Path(path), (-1, -1), 0
        self._name = str(self.path)  # os.stat of a str: pathlib's own stat was ~2 % of a restart's CPU, per handler call
        self.recheck_s, self._checked_until = recheck_s, -1.0

    def now(self) -> int:
        at = time.monotonic()
        if at < self._checked_until:
            return self._now
        st = os.stat(self._name)
        stamp = (st.st_mtime_ns, st.st_ino)  # a rename over it gives another inode, even within one mtime tick
        if stamp != self._stamp:
            self._now, self._stamp = int(self.path.read_text()), stamp
        self._checked_until = at + self.recheck_s
        return self._now
