"""Shared fixtures (pytest finds them here; tests never import them): a fresh workspace, and a loopback
OpenAI/Anthropic/Gemini stand-in. Plain builders live in the *_helpers.py modules, imported normally."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import FakeLLMServer
from generate_helpers import FAKE_KEY

from sbs_data.workspace import Workspace


@pytest.fixture
def ws(tmp_path: Path):
    w = Workspace.open(tmp_path / "ws.duckdb")
    yield w
    w.close()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    """A loopback OpenAI/Anthropic/Gemini stand-in; the SDKs find it (and a fake key) through their usual env
    vars."""
    with FakeLLMServer(latency=0.0) as srv:
        monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", srv.anthropic_url)
        monkeypatch.setenv("GEMINI_API_KEY", FAKE_KEY)
        monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", srv.gemini_url)
        yield srv


@pytest.fixture(scope="module")
def browser():
    """A headless Debian Chromium driven by Playwright, shared by a module's browser tests.

    Module-scoped, not session-scoped: Playwright's sync API keeps an asyncio loop running in the main thread
    while it is open, and every later test that calls asyncio.run() (the generate engine, the README's
    Python example) would fail with "cannot be called from a running event loop"."""
    from browser_helpers import chromium_path

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - dev extra missing
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    exe = chromium_path()
    if exe is None:
        pytest.skip(
            "no Chromium found: `make browser` (as root) installs Debian's chromium, or set SBS_CHROMIUM"
        )
    with sync_playwright() as pw:
        try:
            b = pw.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        except Exception as e:  # noqa: BLE001 - any launch failure means: no usable browser here
            pytest.skip(f"Chromium at {exe} could not be launched: {e}")
        yield b
        b.close()
