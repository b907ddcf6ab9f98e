"""Fault injection for the fault drills: `EMBODIED_R_FAILPOINT=NAME@STEP` makes the driver stop at the named point of
that step and wait to be killed (`failpoint`), so a drill can kill it at an exact place rather than race a short window,
pause there for a signal that takes a while to arrive, or while the drill kills a node (`failpoint_pause`), or fail
there as a full disk would (`failpoint_error`). Several points: `NAME@STEP,NAME@STEP`. A pause ends early once the
file `NAME@STEP` exists in the folder EMBODIED_R_FAILPOINT_RELEASE names (the drill's "go on").

Inert unless the variable is set; bench/faults.py and the fault tests set it for the run they are about to hurt.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable

ENV = "EMBODIED_R_FAILPOINT"
RELEASE_ENV = "EMBODIED_R_FAILPOINT_RELEASE"
log = logging.getLogger(__name__)


def armed(name: str, step: int, any_step: bool = False) -> bool:
    """Whether EMBODIED_R_FAILPOINT names `name@step` (or `name@*`, when `any_step` is allowed)."""
    points = {point.strip() for point in os.environ.get(ENV, "").split(",")}
    return f"{name}@{step}" in points or (any_step and f"{name}@*" in points)


def released(name: str, step: int) -> bool:
    """Whether the drill has said "go on" to the pause at `name@step` (its file in EMBODIED_R_FAILPOINT_RELEASE)."""
    folder = os.environ.get(RELEASE_ENV)
    return bool(folder) and os.path.exists(os.path.join(folder, f"{name}@{step}"))


def failpoint(name: str, step: int) -> None:
    """Blocks for good when EMBODIED_R_FAILPOINT is `name@step`; returns at once otherwise."""
    if not armed(name, step):
        return
    log.warning("failpoint %s@%d reached: waiting to be killed", name, step)
    while True:
        time.sleep(60)


def failpoint_pause(name: str, step: int, seconds: float, until: Callable[[], bool] = lambda: False) -> None:
    """When EMBODIED_R_FAILPOINT names `name@step`, waits up to `seconds`, or less once `until()` is true or the drill
    released it (signals are handled meanwhile: a `ray job stop` sent then lands in that step, however short the
    step); returns at once otherwise."""
    if not armed(name, step):
        return
    log.warning("failpoint %s@%d reached: pausing up to %g s", name, step, seconds)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not until() and not released(name, step):
        time.sleep(0.1)


def failpoint_error(name: str, step: int, path: str | os.PathLike, code: int = errno.ENOSPC) -> None:
    """Raises OSError(`code`, ..., `path`) (a full disk by default) when EMBODIED_R_FAILPOINT is `name@step`, or
    `name@*` for every step; returns at once otherwise."""
    if not armed(name, step, any_step=True):
        return
    log.warning("failpoint %s@%d reached: raising %s", name, step, errno.errorcode.get(code, code))
    raise OSError(code, os.strerror(code), str(path))
