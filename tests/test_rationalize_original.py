"""`rationalize` on the paper's SVAMP import (skipped when the shared data is absent): one hinted request per
wrong or failed train row (206), none for test, none on a rerun; the combined version keeps every split's
row count, and every recovered row agrees with gold."""

from __future__ import annotations

import pytest
from generate_helpers import fast
from workspace_helpers import SHARED

from sbs_data.generate.options import RequestSpec, RunOptions
from sbs_data.generate.rationalize import rationalize
from sbs_data.ingest import import_original
from sbs_data.tasks import get_task

pytestmark = pytest.mark.skipif(
    not (SHARED / "svamp" / "llm").exists(), reason="shared PaLM data not present"
)


def test_svamp_palm_rationalized(ws, server):
    import_original(ws, SHARED / "svamp", task="svamp", name="svamp")
    gen = ws.get("svamp-palm")
    res = rationalize(
        ws,
        "svamp-palm",
        RequestSpec("openai:gpt-4o-mini"),
        RunOptions(settings=fast(concurrency=32), command="rationalize"),
    )
    assert server.count == 206 == res.summary["requests"] == res.version.row_count
    assert res.version.stats["rows_by_split"] == {"train": 206}
    combined = ws.get(res.summary["combined"])
    assert combined.stats["rows_by_split"] == gen.stats["rows_by_split"] == {"train": 800, "test": 200}
    task = get_task("svamp")
    rows = ws.all("SELECT split, pred_label, gold_label FROM generations_at(?) WHERE hinted", [combined.ref])
    assert len(rows) == res.summary["recovered"] > 150
    assert all(sp == "train" and task.same_label(p, g) for sp, p, g in rows)
    again = rationalize(
        ws,
        "svamp-palm",
        RequestSpec("openai:gpt-4o-mini"),
        RunOptions(settings=fast(), command="rationalize"),
    )
    assert server.count == 206 and again.summary["called"] == 0
    assert again.summary["combined"] == combined.ref
