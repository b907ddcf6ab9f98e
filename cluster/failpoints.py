"""Fault injection for the fault drills: `EMBODIED_R_FAILPOINT=NAME@STEP` makes the driver stop at the named point of
that step and wait to be killed (`failpoint`), so a drill can kill it at an exact place rather than race a short window,
pause there for a signal that takes a while to arrive (`failpoint_pause`), or fail there as a full disk would
(`failpoint_error`).

Inert unless the variable is set; bench/faults.py sets it for the run it is about to kill.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable

ENV = "EMBODIED_R_FAILPOINT"
log = logging.getLogger(__name__)


def failpoint(name: str, step: int) -> None:
    """Blocks for good when EMBODIED_R_FAILPOINT is `name@step`; returns at once otherwise."""
    if os.environ.get(ENV) != f"{name}@{step}":
        return
    log.warning("failpoint %s@%d reached: waiting to be killed", name, step)
    while True:
        time.sleep(60)


def failpoint_pause(name: str, step: int, seconds: float, until: Callable[[], bool] = lambda: False) -> None:
    """When EMBODIED_R_FAILPOINT is `name@step`, waits up to `seconds`, or less once `until()` is true (signals are
    handled meanwhile: a `ray job stop` sent then lands in that step, however short the step); returns at once
    otherwise."""
    if os.environ.get(ENV) != f"{name}@{step}":
        return
    log.warning("failpoint %s@%d reached: pausing up to %g s", name, step, seconds)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not until():
        time.sleep(0.1)


def failpoint_error(name: str, step: int, path: str | os.PathLike, code: int = errno.ENOSPC) -> None:
    """Raises OSError(`code`, ..., `path`) (a full disk by default) when EMBODIED_R_FAILPOINT is `name@step`, or
    `name@*` for every step; returns at once otherwise."""
    if os.environ.get(ENV) not in (f"{name}@{step}", f"{name}@*"):
        return
    log.warning("failpoint %s@%d reached: raising %s", name, step, errno.errorcode.get(code, code))
    raise OSError(code, os.strerror(code), str(path))
