"""Every run leaves OUT/curves.png drawn from OUT/train_log.jsonl; --report-to tensorboard mirrors the log."""

from __future__ import annotations

import importlib.util
import json

import pytest
from sbs_trainer import logs
from sbs_trainer.cli import config_from_args, main
from sbs_trainer.logs import curves_figure, read_log
from sbs_trainer.train import run

from .helpers import svamp_rows, train_args, write_export


def test_run_leaves_curves_of_its_log(export_dir, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    run(
        config_from_args(train_args(export_dir, tiny_model_dir, out, "--max-steps", "4", "--eval-every", "2"))
    )
    recs = read_log(out / "train_log.jsonl")
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    assert [r["step"] for r in recs if "validation" in r] == [2, 4]
    assert recs[3]["validation"] == {"accuracy": recs[3]["validation"]["accuracy"], "n": 4}
    png = (out / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    ax_loss, ax_lr, ax_acc = curves_figure(recs).axes
    lines = {line.get_label(): line for line in ax_loss.get_lines()}
    assert set(lines) == {"label loss", "rationale loss", "total loss"}
    assert list(lines["rationale loss"].get_ydata()) == [r["loss"]["rationale"] for r in recs]
    assert list(ax_lr.get_lines()[0].get_ydata()) == [r["lr"] for r in recs]
    (acc,) = ax_acc.get_lines()
    assert list(acc.get_xdata()) == [2, 4]
    assert list(acc.get_ydata()) == [recs[1]["validation"]["accuracy"], recs[3]["validation"]["accuracy"]]


def test_curves_without_validation_and_redraw_cli(tmp_path, tiny_model_dir, capsys):
    d = write_export(tmp_path / "e", {"train": svamp_rows(4, "train", seed=5)})
    out = tmp_path / "out"
    run(config_from_args(train_args(d, tiny_model_dir, out, "--max-steps", "2", "--mode", "standard")))
    (out / "curves.png").unlink()
    logs.main([str(out)])  # python -m sbs_trainer.logs OUT
    assert (out / "curves.png").is_file() and "curves.png" in capsys.readouterr().out
    ax_loss, _, ax_acc = curves_figure(read_log(out / "train_log.jsonl")).axes
    assert [line.get_label() for line in ax_loss.get_lines()] == ["label loss"]
    assert not ax_acc.get_lines() and ax_acc.texts[0].get_text() == "no validation split"


def test_read_log_keeps_the_last_record_of_a_step(tmp_path):
    rec = {"loss": {"label": 1.0}, "lr": 0.1, "grad_norm": 1.0}
    lines = [{"step": 1, **rec}, {"step": 2, **rec}, {"step": 2, **rec, "lr": 0.2}]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert [(r["step"], r["lr"]) for r in read_log(tmp_path / "log.jsonl")] == [(1, 0.1), (2, 0.2)]


def test_report_to_tensorboard(export_dir, tiny_model_dir, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "out"
    args = train_args(export_dir, tiny_model_dir, out, "--max-steps", "3", "--eval-every", "2")
    run(config_from_args([*args, "--report-to", "tensorboard"]))
    ev = EventAccumulator(str(out / "runs"))
    ev.Reload()
    tags = set(ev.Tags()["scalars"])
    assert {"train/loss", "train/label_loss", "train/rationale_loss", "train/learning_rate"} <= tags
    assert {"train/grad_norm", "eval/accuracy"} <= tags
    recs = read_log(out / "train_log.jsonl")
    assert [(e.step, e.value) for e in ev.Scalars("train/label_loss")] == [
        (r["step"], pytest.approx(r["loss"]["label"])) for r in recs
    ]
    assert [e.step for e in ev.Scalars("eval/accuracy")] == [2, 3]


def test_report_to_tensorboard_without_the_package(export_dir, tiny_model_dir, tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a)
    )
    out = tmp_path / "out"
    assert (
        main([*train_args(export_dir, tiny_model_dir, out, "--max-steps", "1"), "--report-to", "tensorboard"])
        == 2
    )
    assert "sbs-trainer[tensorboard]" in capsys.readouterr().err
    assert not out.exists()  # refused before any work
