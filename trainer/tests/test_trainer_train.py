"""End to end on a tiny T5: outputs, learning, determinism and exact resume."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from sbs_trainer.cli import config_from_args, main
from sbs_trainer.train import ResumeError, run

from .helpers import svamp_rows, train_args, write_export


def _losses(out) -> list[dict]:
    return [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_sbs_run_writes_metrics_and_predictions(export_dir, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    args = train_args(
        export_dir, tiny_model_dir, out, "--max-steps", "4", "--eval-every", "2", "--log-every", "2"
    )
    assert main(args) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed[printed.index("{") :])
    assert summary["steps"] == 4 and "validation" in summary
    floats = [summary["examples_per_s"], *summary["final_loss"].values()]
    assert all(float(f"{x:.4g}") == x for x in floats)  # printed at 4 significant digits
    assert "loss: label " in printed  # the step log names each loss
    m = json.loads((out / "metrics.json").read_text())
    assert m["mode"] == "sbs" and m["alpha"] == 0.5 and m["task"] == "svamp" and m["world_size"] == 1
    t = m["train"]
    assert t["steps"] == 4 and t["examples_seen"] == 16 and t["rows"] == 12
    assert t["train_runtime_s"] > 0 and t["examples_per_s"] > 0 and t["tokens_per_s"] > t["examples_per_s"]
    assert set(t["final_loss"]) == {"label", "rationale", "total"}
    assert m["validation"]["n"] == 4 and m["validation"]["comparison"] == "numeric"
    assert [h["step"] for h in m["validation_history"]] == [2, 4]
    assert m["test"]["n"] == 4 and m["test"]["checkpoint_step"] == m["validation"]["step"]
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["split"] for p in preds] == ["validation"] * 4 + ["test"] * 4
    assert {"example_id", "input", "prediction", "gold", "correct"} <= set(preds[0])
    assert (out / "best" / "config.json").is_file() and (out / "checkpoint" / "state.pt").is_file()
    assert (out / "curves.png").is_file() and not (out / "checkpoint.tmp").exists()


@pytest.mark.parametrize("mode", ["standard", "distill"])
def test_single_task_modes(export_dir, tiny_model_dir, tmp_path, mode):
    m = run(
        config_from_args(
            train_args(export_dir, tiny_model_dir, tmp_path / mode, "--mode", mode, "--max-steps", "2")
        )
    )
    assert m["alpha"] is None and set(m["train"]["final_loss"]) == {"label"}
    assert m["test"]["n"] == 4


def test_loss_decreases_on_memorisable_set(tmp_path, tiny_model_dir):
    d = write_export(tmp_path / "e", {"train": svamp_rows(4, "train", seed=5)})
    out = tmp_path / "out"
    m = run(
        config_from_args(
            train_args(d, tiny_model_dir, out, "--max-steps", "40", "--lr", "1e-2", "--warmup-steps", "4")
        )
    )
    losses = _losses(out)
    assert losses[-1]["label"] < 0.3 * losses[0]["label"]
    assert losses[-1]["rationale"] < 0.3 * losses[0]["rationale"]
    assert m["validation"] == {} and m["test"] == {}  # no validation/test splits: nothing to score


def test_same_seed_same_losses(export_dir, tmp_path):
    """Uses the in-memory `tiny-t5` (dropout 0.1), so the dropout RNG is part of what must repeat."""
    runs = []
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        args = train_args(export_dir, "tiny-t5", tmp_path / name, "--max-steps", "3") + ["--seed", seed]
        run(config_from_args(args))
        runs.append(_losses(tmp_path / name))
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_resume_equals_uninterrupted(export_dir, tmp_path):
    extra = (
        "--max-steps",
        "6",
        "--grad-accum",
        "2",
        "--batch-size",
        "3",
        "--eval-every",
        "2",
        "--warmup-steps",
        "2",
    )
    full = tmp_path / "full"
    run(config_from_args(train_args(export_dir, "tiny-t5", full, *extra)))
    part = tmp_path / "part"
    assert run(config_from_args(train_args(export_dir, "tiny-t5", part, *extra, "--stop-after", "3"))) is None
    assert len(_losses(part)) == 3
    with (part / "train_log.jsonl").open("a") as f:  # a step logged after the checkpoint, then killed
        f.write(json.dumps({"step": 4, "loss": {"label": 9.0}, "lr": 0.0, "grad_norm": 0.0}) + "\n")
    m = run(config_from_args(train_args(export_dir, "tiny-t5", part, *extra, "--resume")))
    assert _losses(part) == _losses(full)
    a, b = load_file(full / "final" / "model.safetensors"), load_file(part / "final" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    m_full = json.loads((full / "metrics.json").read_text())
    assert m["train"]["examples_seen"] == m_full["train"]["examples_seen"]
    assert [h["step"] for h in m["validation_history"]] == [2, 4, 6]


def test_resume_after_a_kill_between_the_checkpoint_renames(export_dir, tmp_path, capsys):
    out = tmp_path / "out"
    args = train_args(
        export_dir, "tiny-t5", out, "--max-steps", "3", "--save-every", "1", "--stop-after", "2"
    )
    run(config_from_args(args))
    (out / "checkpoint").rename(out / "checkpoint.tmp")  # the step-2 checkpoint, complete, not yet swapped in
    (out / "checkpoint.old").mkdir()  # the step-1 one, being replaced
    capsys.readouterr()
    m = run(config_from_args([*args[:-2], "--resume"]))
    assert "at step 2" in capsys.readouterr().out  # resumed, not started afresh
    assert m["train"]["steps"] == 3 and len(_losses(out)) == 3
    assert not (out / "checkpoint.old").exists() and not (out / "checkpoint.tmp").exists()


def test_resume_refuses_changed_batch(export_dir, tmp_path):
    out = tmp_path / "out"
    run(config_from_args(train_args(export_dir, "tiny-t5", out, "--max-steps", "3", "--stop-after", "1")))
    with pytest.raises(ResumeError, match="batch_size"):
        run(
            config_from_args(
                train_args(export_dir, "tiny-t5", out, "--max-steps", "3", "--resume", "--batch-size", "2")
            )
        )
