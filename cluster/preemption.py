"""Preemption: a SIGTERM to the driver (a spot node's notice, Kubernetes, `ray job stop`) ends the run at a checkpoint.

The handler only sets a flag; the training loop finishes the step in flight (with trainer.max_staleness=1, also the
step whose rollouts were already being generated, so that the checkpoint is a barrier), writes its checkpoint, shuts
every actor down and exits with EXIT_PREEMPTED, printing the command that resumes the run. A watchdog timer of
trainer.preemption_grace_s bounds all of it: when the grace runs out first, the step in flight is abandoned and the
driver exits at once with the same code (the newest complete checkpoint stays; Ray ends the actors of a driver that
is gone, and the local instance's watchdog the rest). A second SIGTERM abandons at once too.

Exit codes of `embodied-r train` / `python -m cluster.train` (sysexits.h):
- 75 (EX_TEMPFAIL): preempted; resume with trainer.resume=true.
- 74 (EX_IOERR): a checkpoint could not be written and trainer.checkpoint_failure=stop.
- 69 (EX_UNAVAILABLE): a node died and no live node has what it held within trainer.placement_timeout_s.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

EXIT_PREEMPTED = 75  # EX_TEMPFAIL
EXIT_CHECKPOINT_FAILED = 74  # EX_IOERR
EXIT_RESOURCES_LOST = 69  # EX_UNAVAILABLE

log = logging.getLogger("embodied_r.train")


def resume_command(run_dir) -> str:
    return f"embodied-r train --config {os.path.join(str(run_dir), 'config.yaml')} trainer.resume=true"


class Preempted(Exception):
    """The run stopped on a SIGTERM after its checkpoint was written and its actors shut down."""

    exit_code = EXIT_PREEMPTED

    def __init__(self, message: str, resume: str):
        super().__init__(message)
        self.resume = resume


class CheckpointFailed(Exception):
    """trainer.checkpoint_failure=stop: a checkpoint could not be written; the run stopped with its actors shut down."""

    exit_code = EXIT_CHECKPOINT_FAILED

    def __init__(self, message: str, resume: str):
        super().__init__(message)
        self.resume = resume


class ResourcesLost(Exception):
    """A node died and the cluster had no room for what it held within trainer.placement_timeout_s; the run stopped
    with its actors shut down, and resumes from its newest complete checkpoint once the cluster has the resources."""

    exit_code = EXIT_RESOURCES_LOST

    def __init__(self, message: str, resume: str):
        super().__init__(message)
        self.resume = resume


class Preemption:
    """The driver's SIGTERM handler and its grace watchdog. `install` in the main thread (signal handlers live there),
    `uninstall` when the run is over. `newest_checkpoint` names what a resume would use, for the messages."""

    def __init__(self, grace_s: float, run_dir, newest_checkpoint: Callable[[], str | None],
                 exit: Callable[[int], None] = os._exit):
        self.grace_s = float(grace_s)
        self.run_dir = run_dir
        self.newest_checkpoint = newest_checkpoint
        self._exit = exit
        self.requested = False
        self.received_at: float | None = None
        self._timer: threading.Timer | None = None
        self._previous = None
        self._installed = False

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            log.warning("not in the main thread: no SIGTERM handler, a preemption ends the run without a checkpoint")
            return
        self._previous = signal.signal(signal.SIGTERM, self._handle)  # replaces ray.init's (sys.exit, then an abort)
        self._installed = True

    def uninstall(self) -> None:
        self.cancel()
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
            self._installed = False

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _handle(self, signum, frame) -> None:
        if self.requested:
            self.expire("a second SIGTERM")
            return
        self.request()

    def request(self) -> None:
        """What SIGTERM does: sets the flag the loop checks, and starts the grace watchdog."""
        self.requested = True
        self.received_at = time.monotonic()
        log.warning("SIGTERM: finishing the step in flight, then a checkpoint and exit %d; abandoned if not done "
                    "within trainer.preemption_grace_s=%g s", EXIT_PREEMPTED, self.grace_s)
        self._timer = threading.Timer(self.grace_s, self.expire, args=(f"trainer.preemption_grace_s={self.grace_s:g} s ran out",))
        self._timer.daemon = True
        self._timer.start()

    def expire(self, why: str) -> None:
        """Abandons the run now: logs what a resume will use and exits with EXIT_PREEMPTED."""
        try:
            newest = self.newest_checkpoint()
        except Exception as error:  # the message must not stop the exit
            newest = f"unknown ({error})"
        message = (f"preempted: {why} before the run was checkpointed and shut down; abandoning the step in flight. "
                   f"A resume starts from {newest or 'the beginning (no complete checkpoint)'}: {resume_command(self.run_dir)}")
        log.error(message)
        print(message, file=sys.stderr, flush=True)
        for handler in logging.getLogger().handlers + log.handlers:
            try:
                handler.flush()
            except Exception:
                pass
        self._exit(EXIT_PREEMPTED)
