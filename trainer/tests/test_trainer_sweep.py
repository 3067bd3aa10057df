"""`sbs-train sweep`: fair subsets, resume, refusals, and the statistics of its table."""

from __future__ import annotations

import csv
import json
import math
from collections import Counter

import pytest
from sbs_trainer.cli import main, sweep_config_from_args
from sbs_trainer.sweep import (
    Examples,
    SweepError,
    fraction_label,
    mean_se,
    paired,
    subset_order,
    subset_size,
    summary_markdown,
    sweep,
    usable_examples,
)

from .helpers import svamp_rows, write_export


def _export(tmp_path, n=16):
    """n examples x 2 teacher samples; 4 validation, 4 test."""
    return write_export(
        tmp_path / "export",
        {
            "train": svamp_rows(n, "train", seed=1, samples=2),
            "validation": svamp_rows(4, "validation", seed=2),
            "test": svamp_rows(4, "test", seed=3),
        },
    )


def _args(data, out, *extra):
    return [
        "--data", str(data), "--model", "tiny-t5", "--output", str(out), "--modes", "standard,sbs",
        "--fractions", "0.5,1", "--seeds", "0,1", "--max-steps", "3", "--batch-size", "4",
        "--max-target-len", "16", "--log-every", "0", *extra,
    ]  # fmt: skip


def _ids(out, name):
    return (out / "runs" / name / "train_ids.txt").read_text().split()


def _losses(folder):
    return [json.loads(x)["loss"] for x in (folder / "train_log.jsonl").read_text().splitlines()]


def test_subsets_are_nested_stratified_and_seeded():
    labels = {f"e{i:03d}": ("yes" if i % 4 == 0 else "no") for i in range(200)}  # 25% yes
    ex = Examples(sorted(labels), labels, stratified=True)
    order = subset_order(ex, 0)
    assert sorted(order) == ex.ids and order == subset_order(ex, 0) and order != subset_order(ex, 1)
    for frac in ("0.125", "0.25", "0.5"):
        subset = order[: subset_size(200, frac)]
        share = Counter(labels[i] for i in subset)["yes"] / len(subset)
        assert abs(share - 0.25) <= 1 / len(subset) + 1e-9  # each label in its overall share (±1)
    # nested: a prefix of one order, so a smaller fraction is inside every larger one
    assert set(order[:25]) <= set(order[:50]) <= set(order[:100])
    assert subset_size(200, "1.0") == 200 and subset_size(200, "0.125") == 25 and subset_size(3, "0.1") == 1
    assert (
        fraction_label("1") == "1.0" and fraction_label("0.125") == "0.125" and fraction_label("1.") == "1.0"
    )


def test_label_space_decides_stratification(tmp_path):
    d = _export(tmp_path)
    ex = usable_examples(str(d), ["standard", "sbs"])
    assert len(ex.ids) == 16 and not ex.stratified  # svamp: every gold label is its own expression
    nli = [{**r, "gold_label": ["entailment", "neutral", "contradiction"][i % 3]}
           for i, r in enumerate(svamp_rows(30, "train", seed=4))]  # fmt: skip
    ex = usable_examples(str(write_export(tmp_path / "nli", {"train": nli})), ["standard"])
    assert ex.stratified and len(set(ex.labels.values())) == 3


def test_sweep_end_to_end_then_a_rerun_trains_nothing(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", *_args(_export(tmp_path), out)]) == 0
    said = capsys.readouterr().out
    assert "sweep: run 1/8 standard-f0.5-s0 (8 examples); 8 to train" in said and "left" in said
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 8 and {r["run"] for r in rows} == {
        f"{m}-f{f}-s{s}" for m in ("standard", "sbs") for f in ("0.5", "1.0") for s in (0, 1)
    }
    assert {r["n_train"] for r in rows} == {"8", "16"} and all(r["test_accuracy"] != "" for r in rows)
    assert all(r["steps"] == "3" for r in rows)  # the same step budget for every run
    for s in (0, 1):  # identical across modes, nested across fractions
        assert _ids(out, f"sbs-f0.5-s{s}") == _ids(out, f"standard-f0.5-s{s}")
        assert _ids(out, f"sbs-f1.0-s{s}") == _ids(out, f"standard-f1.0-s{s}")
        assert set(_ids(out, f"sbs-f0.5-s{s}")) < set(_ids(out, f"sbs-f1.0-s{s}"))
    assert _ids(out, "sbs-f0.5-s0") != _ids(out, "sbs-f0.5-s1")
    m = json.loads((out / "runs" / "sbs-f0.5-s1" / "metrics.json").read_text())
    assert m["train"]["rows"] == 16  # 8 examples x 2 teacher samples: every row of an example is kept
    summary = (out / "summary.md").read_text()
    assert "| standard |" in summary and "| sbs |" in summary and "SbS − standard" in summary
    assert (out / "curves.png").stat().st_size > 1000
    record = json.loads((out / "sweep.json").read_text())
    assert record["budget"] == {"kind": "steps", "max_steps": 3} and record["train"]["batch_size"] == 4

    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()}

    def no_training(cfg):
        raise AssertionError(f"trained {cfg.output}")

    res = sweep(sweep_config_from_args(_args(_export(tmp_path), out)), train=no_training, say=lambda m: None)
    assert res["trained"] == [] and len(res["skipped"]) == 8
    assert stamps == {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()}


def test_a_run_killed_half_way_resumes_from_its_checkpoint(tmp_path, capsys):
    data = _export(tmp_path)
    extra = ("--modes", "sbs", "--fractions", "1.0", "--seeds", "0", "--max-steps", "4", "--save-every", "1")
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["sweep", *_args(data, full, *extra)]) == 0
    # the run stops after step 2 with its checkpoint, as if killed; the sweep stops with it
    res = sweep(sweep_config_from_args([*_args(data, cut, *extra), "--stop-after", "2"]), say=lambda m: None)
    assert (
        res["interrupted"] == "sbs-f1.0-s0" and not (cut / "runs" / "sbs-f1.0-s0" / "metrics.json").exists()
    )
    capsys.readouterr()
    assert main(["sweep", *_args(data, cut, *extra)]) == 0
    said = capsys.readouterr().out
    assert "resuming" in said and "resumed from" in said
    assert _losses(cut / "runs" / "sbs-f1.0-s0") == _losses(full / "runs" / "sbs-f1.0-s0")


def test_a_sweep_stopped_between_runs_goes_on(tmp_path):
    data, out = _export(tmp_path), tmp_path / "s"
    res = sweep(sweep_config_from_args([*_args(data, out), "--stop-after-runs", "3"]), say=lambda m: None)
    assert len(res["trained"]) == 3 and res["interrupted"] and len(res["results"]) == 3
    res = sweep(sweep_config_from_args(_args(data, out)), say=lambda m: None)
    assert len(res["trained"]) == 5 and len(res["skipped"]) == 3 and len(res["results"]) == 8


def test_a_changed_configuration_is_refused(tmp_path, capsys):
    data, out = _export(tmp_path), tmp_path / "s"
    sweep(sweep_config_from_args([*_args(data, out), "--stop-after-runs", "1"]), say=lambda m: None)
    before = sorted(p.name for p in (out / "runs").iterdir())
    assert main(["sweep", *_args(data, out, "--lr", "1e-3")]) == 2
    err = capsys.readouterr().err
    assert "another configuration" in err and "train.lr: 5e-05 -> 0.001" in err
    assert main(["sweep", *_args(data, out, "--seeds", "0,1,2")]) == 2
    assert "seeds: [0, 1] -> [0, 1, 2]" in capsys.readouterr().err
    assert sorted(p.name for p in (out / "runs").iterdir()) == before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--modes", "sbs,bogus"), "unknown mode(s) bogus"),
        (("--fractions", "0,0.5"), "0 is outside (0, 1]"),
        (("--fractions", "1.5"), "1.5 is outside (0, 1]"),
        (("--seeds", ""), "--seeds is empty"),
        (("--fractions", "0.1"), "fewer than one batch"),  # 16 examples x 0.1 = 2 < batch 4
    ],
)
def test_bad_input_is_refused_before_training(tmp_path, capsys, extra, message):
    out = tmp_path / "s"
    assert main(["sweep", *_args(_export(tmp_path), out, *extra)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (out / "runs").exists()


def test_statistics_against_a_hand_computation():
    results = [
        {"mode": m, "fraction": 0.5, "seed": s, "test_accuracy": a}
        for m, accs in (("sbs", (0.5, 0.7, 0.6)), ("standard", (0.4, 0.5, 0.6)))
        for s, a in enumerate(accs)
    ]
    mean, se = mean_se([0.5, 0.7, 0.6])
    assert mean == pytest.approx(0.6) and se == pytest.approx(0.1 / math.sqrt(3))  # sd([.5,.7,.6]) = 0.1
    d = paired(results, "sbs", "standard")[0.5]  # differences 0.1, 0.2, 0.0
    assert d["mean"] == pytest.approx(0.1) and d["se"] == pytest.approx(0.1 / math.sqrt(3))
    assert d["wins"] == 2 and d["ties"] == 1 and d["n"] == 3
    cfg = sweep_config_from_args(["--data", "d", "--model", "m", "--output", "o", "--seeds", "0,1,2"])
    md = summary_markdown(results, cfg)
    assert "| sbs | 60.0 ± 5.8 (n=3) |" in md and "| standard | 50.0 ± 5.8 (n=3) |" in md
    assert "| 50% | +10.0 ± 5.8 | 2 of 3, 1 tied |" in md


def test_a_causal_student_in_a_sweep(tmp_path, causal_dirs):
    out = tmp_path / "c"
    args = _args(_export(tmp_path), out, "--fractions", "1.0", "--seeds", "0")
    args[args.index("tiny-t5")] = str(causal_dirs["qwen2"])
    res = sweep(sweep_config_from_args(args), say=lambda m: None)
    assert len(res["results"]) == 2 and all(r["test_accuracy"] is not None for r in res["results"])
    m = json.loads((out / "runs" / "sbs-f1.0-s0" / "metrics.json").read_text())
    assert m["student"]["kind"] == "causal" and m["train"]["rows"] == 32
    with pytest.raises(SweepError, match="--seeds must be integers"):
        sweep_config_from_args(["--data", "d", "--model", "m", "--output", "o", "--seeds", "a"])
