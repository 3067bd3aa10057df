"""Builders shared by many tests: the paper's released data (`SHARED`), examples and generations versions."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from sbs_data.tasks import get_task
from sbs_data.workspace import Version, Workspace

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sbs_original" / "datasets"


def make_examples(ws: Workspace, name: str, task: str, rows: list[dict], split: str = "train") -> Version:
    """An examples version from raw rows in the task's source layout (e.g. svamp: input, label)."""
    t = get_task(task)
    out = []
    for i, r in enumerate(rows):
        c = t.canonicalize(r)
        out.append(
            {
                "example_id": c["id"] or f"{split}-{i}",
                "split": r.get("split", split),
                "row_idx": i,
                "task": t.name,
                "input_text": t.render(c["fields"], c["choices"]),
                "label": c["label"],
                "choices": c["choices"],
                "fields": json.dumps(c["fields"]),
            }
        )
    df = pl.DataFrame(out, schema_overrides={"choices": pl.List(pl.Utf8)})
    with ws.new_version(name, "examples", {"test": name}, task=t.name) as v:
        ws.append("sbs_examples", v, df)
    return ws.by_id(v.version_id)


def make_generations(
    ws: Workspace, examples: Version, rows: list[dict], name: str | None = None, teacher: str = "fake:model"
) -> Version:
    """A generations version; each row needs example_id and raw (sample_idx defaults to 0)."""
    t = get_task(examples.task)
    ex = {
        r[0]: (r[1], r[2])
        for r in ws.con.execute(
            "SELECT example_id, split, choices FROM sbs_examples WHERE version_id = ?", [examples.version_id]
        ).fetchall()
    }
    out = []
    for r in rows:
        split, choices = ex[r["example_id"]]
        p = t.parse_completion(r.get("raw"), choices)
        out.append(
            {
                "example_id": r["example_id"],
                "sample_idx": r.get("sample_idx", 0),
                "split": split,
                "teacher": r.get("teacher", teacher),
                "raw": r.get("raw"),
                "rationale": r.get("rationale", p.rationale),
                "pred_label": r.get("pred_label", p.label),
                "parse_status": r.get("parse_status", p.status),
                "finish_reason": r.get("finish_reason", "stop"),
                "prompt_tokens": r.get("prompt_tokens", 100),
                "completion_tokens": r.get("completion_tokens", 50),
                "cost_usd": r.get("cost_usd", 0.0001),
            }
        )
    with ws.new_version(
        name or f"{examples.dataset}-gen", "generations", {"teacher": teacher}, parents=[examples]
    ) as v:
        ws.append("sbs_generations", v, pl.DataFrame(out))
    return ws.by_id(v.version_id)
