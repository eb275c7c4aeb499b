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

    The file is looked at (one ``stat``) on every call: whatever the operator handles after the time was written
    (an uptime report of the new time, say) is checked against the new time. A check at most every few milliseconds
    was tried (issue 17: the stat was 4 % of a restart's profile) and lost that order: the kill test's reports,
    sent just after the time moved, were refused as off the operator's clock."""

    def __init__(self, path: str | pathlib.Path) -> None:
        self.path, self._stamp, self._now = pathlib.Path(path), (-1, -1), 0
        self._name = str(self.path)  # os.stat of a str: pathlib's own stat was ~2 % of a restart's CPU, per handler call

    def now(self) -> int:
        st = os.stat(self._name)
        stamp = (st.st_mtime_ns, st.st_ino)  # a rename over it gives another inode, even within one mtime tick
        if stamp != self._stamp:
            self._now, self._stamp = int(self.path.read_text()), stamp
        return self._now
