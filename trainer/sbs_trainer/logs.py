"""The run's step log: OUT/train_log.jsonl (one JSON record per optimizer step), its picture, TensorBoard.

train_log.jsonl is the source of truth; the picture (OUT/curves.png) is drawn from it alone, offline,
so it can also be redrawn for an old run: `python -m sbs_trainer.logs OUT`. TensorBoard event files
(`--report-to tensorboard`, in OUT/runs/ like the transformers Trainer) mirror the same numbers.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
from pathlib import Path

LOG_NAME = "train_log.jsonl"
CURVES_NAME = "curves.png"


REPORT_TO = ("none", "tensorboard")


class TensorBoardMissing(ImportError):
    """--report-to tensorboard without the tensorboard package."""


def check_report_to(report_to: str) -> None:
    """Fail before training starts (on every rank alike) if the requested reporter cannot run."""
    if report_to not in REPORT_TO:
        raise ValueError(f"--report-to must be one of {', '.join(REPORT_TO)}, not {report_to!r}")
    if report_to == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise TensorBoardMissing(
            "--report-to tensorboard needs the tensorboard package: pip install 'sbs-trainer[tensorboard]'"
        )


def read_log(path: str | Path) -> list[dict]:
    """The step records in step order; where a step appears twice (a rerun), the later record wins."""
    by_step: dict[int, dict] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            by_step[rec["step"]] = rec
    return [by_step[s] for s in sorted(by_step)]


class RunLog:
    """Appends step records to train_log.jsonl (rank 0 only) and mirrors them to TensorBoard if asked."""

    def __init__(self, out: Path, resume_step: int | None, tensorboard: bool):
        self.path = out / LOG_NAME
        if resume_step is None:
            self.path.write_text("")
        elif self.path.exists():  # drop steps logged after the checkpoint: they are about to be redone
            keep = [r for r in read_log(self.path) if r["step"] <= resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in keep))
        self.file = self.path.open("a")
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            if resume_step is None:  # a fresh run replaces the old run's events, as it does its log
                shutil.rmtree(out / "runs", ignore_errors=True)
            purge = None if resume_step is None else resume_step + 1  # hide the lost steps' old events
            self.tb = SummaryWriter(log_dir=str(out / "runs"), purge_step=purge)

    def write(self, rec: dict) -> None:
        self.file.write(json.dumps(rec) + "\n")
        self.file.flush()
        if self.tb is None:
            return
        step = rec["step"]
        for task, value in rec["loss"].items():
            self.tb.add_scalar("train/loss" if task == "total" else f"train/{task}_loss", value, step)
        if "total" not in rec["loss"]:
            self.tb.add_scalar("train/loss", rec["loss"]["label"], step)
        self.tb.add_scalar("train/learning_rate", rec["lr"], step)
        self.tb.add_scalar("train/grad_norm", rec["grad_norm"], step)
        if rec.get("validation", {}).get("accuracy") is not None:
            self.tb.add_scalar("eval/accuracy", rec["validation"]["accuracy"], step)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def draw_curves(log_path: str | Path, png_path: str | Path) -> Path:
    """Label and rationale loss, learning rate and validation accuracy over steps, as one PNG."""
    fig = curves_figure(read_log(log_path))
    png_path = Path(png_path)
    fig.savefig(png_path, dpi=100)
    return png_path


def curves_figure(recs: list[dict]):
    """The matplotlib Figure of `draw_curves` (three panels: losses, learning rate, validation accuracy)."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend, nothing to close

    steps = [r["step"] for r in recs]
    fig = Figure(figsize=(13, 3.6), layout="constrained")
    ax_loss, ax_lr, ax_acc = fig.subplots(1, 3)
    for task in ("label", "rationale", "total"):
        pts = [(r["step"], r["loss"][task]) for r in recs if task in r["loss"]]
        if pts:
            ax_loss.plot(*zip(*pts, strict=True), label=f"{task} loss", lw=1.2)
    ax_loss.set(title="training loss", xlabel="step", yscale="log" if _positive(recs) else "linear")
    ax_loss.legend()
    ax_lr.plot(steps, [r["lr"] for r in recs], color="tab:purple", lw=1.2)
    ax_lr.set(title="learning rate", xlabel="step")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    val = [
        (r["step"], r["validation"]["accuracy"])
        for r in recs
        if r.get("validation", {}).get("accuracy") is not None
    ]
    if val:
        ax_acc.plot(*zip(*val, strict=True), marker="o", color="tab:green", lw=1.2)
        ax_acc.set_ylim(-0.02, 1.02)
    else:
        ax_acc.text(0.5, 0.5, "no validation split", ha="center", va="center", transform=ax_acc.transAxes)
    ax_acc.set(title="validation accuracy", xlabel="step")
    for ax in (ax_loss, ax_lr, ax_acc):
        ax.grid(alpha=0.3)
        if steps:
            ax.set_xlim(0, max(steps) + 1)
    return fig


def _positive(recs: list[dict]) -> bool:
    return bool(recs) and all(v > 0 for r in recs for v in r["loss"].values())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m sbs_trainer.logs", description="(Re)draw OUT/curves.png")
    p.add_argument("out", type=Path, help="a run's output folder (holds train_log.jsonl)")
    a = p.parse_args(argv)
    print(draw_curves(a.out / LOG_NAME, a.out / CURVES_NAME))


if __name__ == "__main__":
    main()
