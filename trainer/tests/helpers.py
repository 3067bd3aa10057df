"""Builders for the trainer tests: exports written in the shard contract's exact format (pyarrow only)."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SHARD_SCHEMA = pa.schema(
    [
        ("example_id", pa.string()),
        ("task", pa.string()),
        ("split", pa.string()),
        ("input", pa.string()),
        ("label", pa.string()),
        ("gold_label", pa.string()),
        ("teacher_label", pa.string()),
        ("rationale", pa.string()),
        ("teacher", pa.string()),
        ("sample_idx", pa.int64()),
        ("choices", pa.list_(pa.string())),
        ("quality", pa.struct([("rationale_len", pa.float64()), ("label_agrees", pa.bool_())])),
    ]
)


def svamp_rows(n: int, split: str, seed: int = 0, samples: int = 1) -> list[dict]:
    """SVAMP-like rows: `a + b` word problems whose rationale spells out the sum."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        expr = f"( {a}.0 + {b}.0 )"
        for s in range(samples):
            rows.append(
                {
                    "example_id": f"{split}-{i}",
                    "task": "svamp",
                    "split": split,
                    "input": f"Tom has {a} apples and gets {b} more. How many now?",
                    "label": expr,
                    "gold_label": expr,
                    "teacher_label": expr if i % 4 else f"( {a}.0 * {b}.0 )",
                    "rationale": f"{a} + {b} = {a + b}.",
                    "teacher": "fake:teacher",
                    "sample_idx": s,
                    "choices": None,
                    "quality": {"rationale_len": 9.0, "label_agrees": True},
                }
            )
    return rows


def write_export(
    root: Path,
    splits: dict[str, list[dict]],
    task: str = "svamp",
    shard_rows: int = 4,
    drop_columns: tuple[str, ...] = (),
    **manifest_overrides,
) -> Path:
    """Write DIR/manifest.json and DIR/<split>/part-NNNNN.parquet exactly as the exporter does."""
    root.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([f for f in SHARD_SCHEMA if f.name not in drop_columns])
    manifest_splits = {}
    for split, rows in splits.items():
        (root / split).mkdir(exist_ok=True)
        shards = []
        for k, start in enumerate(range(0, max(len(rows), 1), shard_rows)):
            part = [{c: r[c] for c in schema.names} for r in rows[start : start + shard_rows]]
            rel = f"{split}/part-{k:05d}.parquet"
            pq.write_table(pa.Table.from_pylist(part, schema=schema), root / rel)
            digest = hashlib.sha256((root / rel).read_bytes()).hexdigest()
            shards.append({"path": rel, "rows": len(part), "sha256": digest})
        manifest_splits[split] = {"rows": len(rows), "shards": shards}
    manifest = {
        "format": "sbs-data-shards",
        "schema_version": 1,
        "toolkit_version": "0.1.0",
        "source": "toy@1",
        "task": task,
        "label_source": "gold",
        "file_format": "parquet",
        "columns": schema.names,
        "splits": manifest_splits,
        "lineage": [],
        "totals": {"rows": sum(len(r) for r in splits.values())},
    }
    manifest.update(manifest_overrides)
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root


def train_args(export: Path, model: Path, out: Path, *extra: str) -> list[str]:
    """Small, fast sbs-train arguments shared by the end-to-end tests."""
    return [
        "--data", str(export), "--model", str(model), "--output", str(out),
        "--batch-size", "4", "--lr", "3e-3", "--max-target-len", "24", "--log-every", "0", "--seed", "7",
        *extra,
    ]  # fmt: skip
