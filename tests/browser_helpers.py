"""Real-browser tests: Playwright (from pip) drives Debian's Chromium through `executable_path`, since
Playwright's own browser download cannot work offline. `make browser` (part of `make test`, so of `.ci/run`)
installs Chromium when it is missing; a test skips, saying why, only when none can be found or launched."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

#: Screenshots of the main pages land here (gitignored), for a person to look at after a run.
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-output" / "screenshots"


def chromium_path() -> str | None:
    """The Chromium binary: $SBS_CHROMIUM, else the first of chromium / chromium-browser / google-chrome."""
    env = os.environ.get("SBS_CHROMIUM")
    if env:
        return env
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot_path(name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / name
