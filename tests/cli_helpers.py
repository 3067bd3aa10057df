"""Driving the `sbs-data` CLI in-process from tests (typer's CliRunner), and the demo data they load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from sbs_data.cli import app

#: The demo's NLI data in the paper's released layout (gold + recorded teacher completions).
DEMO_NLI = Path(__file__).resolve().parent.parent / "examples" / "demo" / "demo-nli"

runner = CliRunner()


def run(*args: Any, ok: bool = True):
    """`sbs-data ARGS...` (paths and numbers turned into strings); with `ok`, it must exit 0."""
    r = runner.invoke(app, [str(a) for a in args])
    if ok:
        assert r.exit_code == 0, r.output
    return r
