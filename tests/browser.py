"""Headless Chromium for the viewer's tests: the DOM after the page's scripts ran, and a screenshot (Debian's
`chromium` package; .ci/run installs it where apt can)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BUDGET_MS = 5000  # virtual time for the page's scripts (lazy data loading included); virtual, so it costs no wall time


def find_browser() -> str | None:
    """The path of a Chromium-family browser, or None."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def why_no_browser() -> str:
    return ("no Chromium browser on PATH (looked for " + ", ".join(CANDIDATES) + "); install Debian's package as root: "
            "apt-get update && apt-get install -y chromium (.ci/run does so where apt is available)")


def _run(browser: str, args: list[str], timeout: float = 120.0) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="er-chromium-") as profile:
        command = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-extensions",
                   "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--virtual-time-budget={BUDGET_MS}", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def dump_dom(browser: str, url: str) -> str:
    """The serialized DOM of `url` once its scripts ran (--dump-dom)."""
    done = _run(browser, ["--dump-dom", url])
    if done.returncode != 0 or "<html" not in done.stdout:
        raise RuntimeError(f"chromium --dump-dom {url} failed (rc {done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def screenshot(browser: str, url: str, path: Path, size: tuple[int, int] = (1400, 1800)) -> Path:
    """A PNG of `url` at `size` once its scripts ran."""
    done = _run(browser, [f"--screenshot={path}", f"--window-size={size[0]},{size[1]}", "--hide-scrollbars", url])
    if not path.is_file():
        raise RuntimeError(f"chromium --screenshot {url} wrote nothing (rc {done.returncode}): {done.stderr[-2000:]}")
    return path
