"""On the paper's released PaLM data (skipped when absent): funnel counts add up, and the svamp
gold-agreement rate of test rows equals what the raw files give."""

from __future__ import annotations

import json

import pytest
from workspace_helpers import SHARED

from sbs_data.ingest import import_original
from sbs_data.quality.filter import filter_version
from sbs_data.quality.report import report
from sbs_data.tasks import get_task

pytestmark = pytest.mark.skipif(
    not (SHARED / "svamp" / "llm").exists(), reason="shared PaLM data not present"
)


def _raw_svamp_test_agreement() -> tuple[int, int]:
    folder = SHARED / "svamp"
    gold = [
        json.loads(line)["label"]
        for line in (folder / "svamp_test.json").read_text().splitlines()
        if line.strip()
    ]
    chunks = sorted((folder / "llm").glob("test_CoT_*.json"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    completions = [c for p in chunks for c in json.loads(p.read_text())]
    assert len(completions) == len(gold)
    task = get_task("svamp")
    agree = sum(task.same_label(task.parse_completion(c).label, g) for c, g in zip(completions, gold))
    return agree, len(gold)


def test_original_svamp_and_cqa(ws):
    import_original(ws, SHARED / "svamp", task="svamp", name="svamp")
    res = filter_version(ws, "svamp-palm", "strict")
    rep = report(ws, res.scored.ref)
    agree, n = _raw_svamp_test_agreement()
    test = rep["signals"]["test"]["gold_match"]
    assert test["count"] == n == 200
    assert test["rate"] == pytest.approx(agree / n, abs=1e-6)
    assert 0.6 < agree / n < 0.9  # the issue: PaLM disagrees with gold on 23-34% of test rows (give or take)

    import_original(ws, SHARED / "cqa", task="cqa", name="cqa")
    res = filter_version(ws, "cqa-palm", "strict")
    for r in (res, filter_version(ws, "svamp-palm@3", "default")):
        f = r.funnel
        assert all(a["out"] == b["in"] for a, b in zip(f, f[1:]))
        assert f[0]["in"] - sum(s["dropped"] for s in f) == f[-1]["out"] == r.version.row_count
        for sp, d in f[-1]["by_split"].items():
            assert d["out"] == r.version.stats["rows_by_split"].get(sp, 0)
        assert report(ws, r.version.ref)["funnel"] == f
