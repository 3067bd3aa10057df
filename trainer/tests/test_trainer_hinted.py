"""`--hinted keep|drop`: rows whose teacher saw the gold answer (sbs-data rationalize, schema 2) are trained
on by default, or dropped."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
from sbs_trainer.cli import config_from_args, main
from sbs_trainer.data import drop_hinted, read_manifest, read_split_rows

from .helpers import svamp_rows, train_args, write_export


def _export(tmp_path):
    """A schema-2 export whose train rows 0 and 4 are hinted (the column added to each shard)."""
    d = write_export(tmp_path / "e", {"train": svamp_rows(8, "train"), "test": svamp_rows(2, "test")})
    m = json.loads((d / "manifest.json").read_text())
    m["schema_version"] = 2
    m["columns"].append("hinted")
    n = 0
    for info in m["splits"].values():
        for shard in info["shards"]:
            t = pq.read_table(d / shard["path"])
            flags = [info is m["splits"]["train"] and (n + i) % 4 == 0 for i in range(t.num_rows)]
            n += t.num_rows if info is m["splits"]["train"] else 0
            pq.write_table(t.append_column("hinted", pa.array(flags, pa.bool_())), d / shard["path"])
            shard["sha256"] = hashlib.sha256((d / shard["path"]).read_bytes()).hexdigest()
    (d / "manifest.json").write_text(json.dumps(m))
    return d


def test_drop_hinted_rows(tmp_path):
    d = _export(tmp_path)
    raw = read_split_rows(d, read_manifest(d), "train")
    kept, n = drop_hinted(raw)
    assert n == 2 and len(kept) == 6 and not any(r["hinted"] for r in kept)
    assert config_from_args(["--data", "d", "--model", "m", "--output", "o"]).hinted == "keep"


def test_train_with_hinted_drop(tmp_path, tiny_model_dir):
    d = _export(tmp_path)
    out = tmp_path / "run"
    assert main(train_args(d, tiny_model_dir, out, "--max-steps", "1", "--hinted", "drop")) == 0
    train = json.loads((out / "metrics.json").read_text())["train"]
    assert train["rows"] == 6 and train["rows_hinted_dropped"] == 2
