"""Waiting in a test for something another task, thread or process does: poll a check, fail with what was awaited."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

# A wait's timeout only bounds how long a failing test takes to say so; a shared 2-core machine running five
# suites at once is several times slower than an idle one, so every bound is stretched by this factor.
SLACK = float(os.environ.get("TFGRID_TEST_SLACK", "3"))


async def eventually(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """The first truthy result of ``check`` (awaited when it is a coroutine), polled every 50 ms; a check that
    raises KeyError, TypeError or AssertionError (the object is not there yet) counts as not yet."""
    deadline = asyncio.get_running_loop().time() + timeout * SLACK
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            last = check()
            if asyncio.iscoroutine(last):
                last = await last
            if last:
                return last
        except (KeyError, TypeError, AssertionError):
            last = None
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")
