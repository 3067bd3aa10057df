"""benchmarks/scale_chain.py keeps working: the whole chain through the public CLI at a tiny size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_scale_chain_runs_every_step(tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "scale_chain.py"), "--sizes", "300", "--concurrency", "32",
         "--latency-ms", "1", "--json", str(out), "--workdir", str(tmp_path / "w")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = json.loads(out.read_text())["results"]
    steps = ["ingest", "generate", "generate (cached)", "score", "filter", "export"]
    assert [r["step"] for r in results] == steps, (tmp_path / "w" / "steps.log").read_text()[-3000:]
    assert all(r["rc"] == 0 and r["peak_rss_mb"] > 0 and r["size"] == 300 for r in results)
    calls = {r["step"]: r["calls"] for r in results}
    # the re-run is checked to call nothing
    assert calls["generate"] == 300 and calls["generate (cached)"] == 0
    assert "| 300 | export |" in proc.stdout
