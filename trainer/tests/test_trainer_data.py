"""Reading exports: the manifest contract, per-mode targets, and clear errors."""

from __future__ import annotations

import json

import pytest
from sbs_trainer.cli import main
from sbs_trainer.data import ExportError, build_rows, check_columns, read_manifest, read_split_rows
from sbs_trainer.model import ModelError, load_student

from .helpers import svamp_rows, train_args, write_export


def test_reads_rows_and_targets_per_mode(export_dir):
    m = read_manifest(export_dir)
    raw = read_split_rows(export_dir, m, "train")
    assert len(raw) == 12 and raw[0]["example_id"] == "train-0"
    sbs, _ = build_rows(raw, "sbs", "train", training=True)
    assert sbs[0].targets == {"label": raw[0]["label"], "rationale": raw[0]["rationale"]}
    std, _ = build_rows(raw, "standard", "train", training=True)
    assert std[0].targets == {"label": raw[0]["gold_label"]}
    dis, _ = build_rows(raw, "distill", "train", training=True)
    assert [r.targets["label"] for r in dis] == [r["teacher_label"] for r in raw]
    # evaluation rows: one per example (an export has one row per teacher sample)
    ev, _ = build_rows(raw, "sbs", "train", training=False)
    assert len(ev) == 6 and ev[0].gold == raw[0]["gold_label"]


def test_rows_without_target_are_dropped(tmp_path):
    rows = svamp_rows(4, "train")
    rows[1]["rationale"] = None
    d = write_export(tmp_path / "e", {"train": rows})
    out, dropped = build_rows(read_split_rows(d, read_manifest(d), "train"), "sbs", "train", training=True)
    assert (len(out), dropped) == (3, 1)


def test_missing_manifest(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(ExportError, match="no manifest.json"):
        read_manifest(tmp_path)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"schema_version": 3}, "schema_version 3 is not supported"),
        ({"format": "other"}, "format is 'other'"),
    ],
)
def test_unknown_manifest(tmp_path, override, match):
    d = write_export(tmp_path / "e", {"train": svamp_rows(2, "train")}, **override)
    with pytest.raises(ExportError, match=match):
        read_manifest(d)


def test_sbs_without_rationales(tmp_path, tiny_model_dir, capsys):
    d = write_export(tmp_path / "e", {"train": svamp_rows(3, "train")}, drop_columns=("rationale",))
    with pytest.raises(ExportError, match="'sbs' needs column"):
        check_columns(d, read_manifest(d), "sbs")
    check_columns(d, read_manifest(d), "standard")
    assert main(train_args(d, tiny_model_dir, tmp_path / "out", "--max-steps", "1")) == 2
    assert "needs column(s) ['rationale']" in capsys.readouterr().err
    # the column is there but every value is null
    rows = [dict(r, rationale=None) for r in svamp_rows(3, "train")]
    d2 = write_export(tmp_path / "e2", {"train": rows})
    with pytest.raises(ExportError, match="no train row has them"):
        build_rows(read_split_rows(d2, read_manifest(d2), "train"), "sbs", "train", training=True)


def test_standard_without_gold_labels(tmp_path):
    rows = [dict(r, gold_label=None) for r in svamp_rows(3, "train")]
    d = write_export(tmp_path / "e", {"train": rows})
    with pytest.raises(ExportError, match="'standard' needs column"):
        build_rows(read_split_rows(d, read_manifest(d), "train"), "standard", "train", training=True)


def test_changed_shard_is_refused(export_dir):
    m = json.loads((export_dir / "manifest.json").read_text())
    m["splits"]["train"]["shards"][0]["sha256"] = "0" * 64
    (export_dir / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ExportError, match="sha256 does not match"):
        read_split_rows(export_dir, m, "train")


def test_model_without_lm_head(tmp_path, export_dir, capsys):
    """A model with neither a seq2seq nor a causal LM head (a vision encoder) is refused by name."""
    from transformers import ViTConfig

    ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2).save_pretrained(tmp_path / "vit")
    with pytest.raises(ModelError, match="neither a seq2seq nor a causal LM head"):
        load_student(str(tmp_path / "vit"))
    assert main(train_args(export_dir, tmp_path / "vit", tmp_path / "out", "--max-steps", "1")) == 2
    assert "'vit' model with neither a seq2seq nor a causal LM head" in capsys.readouterr().err


def test_export_without_train_rows(tmp_path, tiny_model_dir, capsys):
    d = write_export(tmp_path / "e", {"test": svamp_rows(2, "test")})
    assert main(train_args(d, tiny_model_dir, tmp_path / "out", "--max-steps", "1")) == 2
    assert "no train rows" in capsys.readouterr().err


def test_model_folder_without_tokenizer(tmp_path, tiny_model_dir):
    from transformers import AutoConfig, T5ForConditionalGeneration

    AutoConfig.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "cfg-only")
    with pytest.raises(ModelError, match="cannot load"):
        load_student(str(tmp_path / "cfg-only"))
    T5ForConditionalGeneration.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "no-tok")
    with pytest.raises(ModelError, match="tokenizer"):
        load_student(str(tmp_path / "no-tok"))
