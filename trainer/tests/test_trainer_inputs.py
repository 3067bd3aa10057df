"""Bad exports and bad checkpoints give clear errors naming the file, never a traceback."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sbs_trainer.cli import main
from sbs_trainer.tiny import write_tiny_t5

from .helpers import svamp_rows, train_args, write_export


def _rehash(export, rel):
    """Make the manifest's sha256 of one shard match the file again (a shard changed consistently)."""
    m = json.loads((export / "manifest.json").read_text())
    for info in m["splits"].values():
        for s in info["shards"]:
            if s["path"] == rel:
                s["sha256"] = hashlib.sha256((export / rel).read_bytes()).hexdigest()
    (export / "manifest.json").write_text(json.dumps(m))


def _fail(args, capsys) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_a_shard_with_a_wrong_column_type(export_dir, tiny_model_dir, tmp_path, capsys):
    rel = "train/part-00000.parquet"
    t = pq.read_table(export_dir / rel)
    t = t.set_column(t.schema.get_field_index("input"), "input", pa.array(range(t.num_rows), pa.int64()))
    pq.write_table(t, export_dir / rel)
    _rehash(export_dir, rel)
    err = _fail(train_args(export_dir, tiny_model_dir, tmp_path / "o", "--max-steps", "1"), capsys)
    assert rel in err and "column 'input' holds int, not text" in err


def test_a_truncated_shard_whose_sha_matches(export_dir, tiny_model_dir, tmp_path, capsys):
    rel = "train/part-00001.parquet"
    data = (export_dir / rel).read_bytes()
    (export_dir / rel).write_bytes(data[: len(data) // 2])
    _rehash(export_dir, rel)
    err = _fail(train_args(export_dir, tiny_model_dir, tmp_path / "o", "--max-steps", "1"), capsys)
    assert rel in err and "not a readable parquet shard" in err


@pytest.mark.parametrize("bad", ["../outside.parquet", "/etc/passwd", "train/../../x.parquet"])
def test_shard_paths_outside_the_export_are_refused(export_dir, tiny_model_dir, tmp_path, capsys, bad):
    m = json.loads((export_dir / "manifest.json").read_text())
    m["splits"]["train"]["shards"][0]["path"] = bad
    (export_dir / "manifest.json").write_text(json.dumps(m))
    (tmp_path / "outside.parquet").write_bytes((export_dir / "train" / "part-00000.parquet").read_bytes())
    err = _fail(train_args(export_dir, tiny_model_dir, tmp_path / "o", "--max-steps", "1"), capsys)
    assert f"shard path {bad!r} points outside the export folder" in err


def test_standard_mode_refuses_all_empty_inputs(tmp_path, tiny_model_dir, capsys):
    rows = [{**r, "input": None} for r in svamp_rows(4, "train")]
    d = write_export(tmp_path / "e", {"train": rows})
    err = _fail(
        train_args(d, tiny_model_dir, tmp_path / "o", "--mode", "standard", "--max-steps", "1"), capsys
    )
    assert "every train row has an empty input" in err


@pytest.fixture
def stopped(export_dir, tiny_model_dir, tmp_path):
    """A run stopped (checkpointed) after step 1 of 3."""
    out = tmp_path / "run"
    args = train_args(export_dir, tiny_model_dir, out, "--max-steps", "3")
    assert main([*args, "--stop-after", "1"]) == 0
    return args, out


def test_resume_from_a_truncated_checkpoint(stopped, capsys):
    args, out = stopped
    state = out / "checkpoint" / "state.pt"
    state.write_bytes(state.read_bytes()[:100])
    err = _fail([*args, "--resume"], capsys)
    assert "state.pt cannot be read" in err and "corrupt or was cut short" in err


def test_resume_without_the_rng_file(stopped, capsys):
    args, out = stopped
    (out / "checkpoint" / "rng-rank0.pt").unlink()
    assert "rng-rank0.pt is missing" in _fail([*args, "--resume"], capsys)


def test_resume_with_another_model_size(stopped, tmp_path, capsys):
    args, out = stopped
    bigger = write_tiny_t5(tmp_path / "bigger", seed=0, d_model=48, heads=2, dropout=0.0)
    args[args.index("--model") + 1] = str(bigger)
    assert "does not fit --model" in _fail([*args, "--resume"], capsys)


def test_resume_on_another_export(stopped, tmp_path, capsys):
    args, out = stopped
    other = write_export(tmp_path / "other", {"train": svamp_rows(6, "train", seed=9, samples=2)})
    args[args.index("--data") + 1] = str(other)
    assert "trained on another export" in _fail([*args, "--resume"], capsys)
