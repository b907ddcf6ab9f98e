"""Fault injection for the fault drills: `EMBODIED_R_FAILPOINT=NAME@STEP` makes the driver stop at the named point of
that step and wait to be killed, so a drill can kill it at an exact place rather than race a short window.

Inert unless the variable is set; bench/faults.py sets it for the run it is about to kill.
"""

from __future__ import annotations

import logging
import os
import time

ENV = "EMBODIED_R_FAILPOINT"
log = logging.getLogger(__name__)


def failpoint(name: str, step: int) -> None:
    """Blocks for good when EMBODIED_R_FAILPOINT is `name@step`; returns at once otherwise."""
    if os.environ.get(ENV) != f"{name}@{step}":
        return
    log.warning("failpoint %s@%d reached: waiting to be killed", name, step)
    while True:
        time.sleep(60)
