"""`sbs-train`: command-line front end of `sbs_trainer.train.run`, and `sbs-train sweep` of `sbs_trainer.sweep.sweep`."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .causal import PACKINGS
from .data import HINTED, MODES, ExportError
from .logs import REPORT_TO, TensorBoardMissing
from .lora import LoraMissing
from .metrics import sig4
from .model import TINY_NAME, ModelError
from .prompts import FORMATS, PromptError
from .sweep import SweepConfig, SweepError, parse_list, sweep
from .train import STRATEGIES, ConfigError, ResumeError, TrainConfig, run


class _Help(argparse.HelpFormatter):
    """`--help` shows every option's default (argparse's ArgumentDefaultsHelpFormatter skips options
    without help text, and prints `None` and `False`, which say nothing)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        # `is`, not `in`: 0 == False, and a default of 0 or 0.0 (--weight-decay, --warmup-steps) says something
        shown = (
            action.default is not None
            and action.default is not False
            and action.default != argparse.SUPPRESS
            and action.option_strings
        )
        if shown and "%(default)" not in text and not isinstance(action, argparse._StoreFalseAction):
            text += (" " if text else "") + "(default: %(default)s)"
        return text


def build_parser(sweep: bool = False) -> argparse.ArgumentParser:
    """The training options; with `sweep`, --modes/--fractions/--seeds replace --mode/--seed/--resume."""
    if sweep:
        p = argparse.ArgumentParser(
            prog="sbs-train sweep",
            formatter_class=_Help,
            allow_abbrev=False,  # `--mode` must not pass for `--modes`
            description="The paper's experiment: train every mode x fraction of the training data x seed as an "
            "ordinary run in OUT/runs/, on nested, stratified subsets shared by the modes; then write "
            "OUT/results.csv, OUT/summary.md and OUT/curves.png. Re-running the command resumes it.",
        )
    else:
        p = argparse.ArgumentParser(
            prog="sbs-train",
            formatter_class=_Help,
            description="Train a seq2seq or decoder-only student on an sbs-data export (Distilling "
            "Step-by-Step). Run under `torchrun --nproc-per-node N` for DDP or FSDP (--strategy fsdp). "
            "`sbs-train sweep --help`: the paper's experiment (modes x data fractions x seeds).",
        )
    a = p.add_argument
    a("--data", required=True, help="export folder holding manifest.json and <split>/part-*.parquet")
    a(
        "--model",
        required=True,
        help="hub name or local folder of a seq2seq model (T5, BART...) or a causal LM (Qwen, Llama, SmolLM, "
        f"Gemma, GPT-2...), or {TINY_NAME!r} (offline tiny T5)",
    )
    if sweep:
        a("--modes", default="standard,sbs", help="comma-separated modes to compare (sbs, standard, distill)")
        a("--fractions", default="0.125,0.25,0.5,1.0", help="comma-separated fractions of the train examples")
        a("--seeds", default="0,1,2", help="comma-separated seeds (each its own subsets and initialisation)")
        a(
            "--output",
            required=True,
            help="sweep folder (sweep.json, runs/, results.csv, summary.md, curves.png)",
        )
    else:
        a(
            "--mode",
            choices=MODES,
            default="sbs",
            help="sbs: label+rationale multi-task; standard: gold label; distill: teacher label",
        )
        a(
            "--output",
            required=True,
            help="output folder (metrics.json, predictions.jsonl, checkpoint/, best/, final/)",
        )
    a("--alpha", type=float, default=0.5, help="sbs loss = alpha*label_loss + (1-alpha)*rationale_loss")
    a(
        "--max-steps",
        type=int,
        default=None,
        help="optimizer steps (default: --epochs worth); in a sweep, the same for every run",
    )
    a("--epochs", type=float, default=1.0, help="passes over the train split (fractions allowed)")
    a("--batch-size", type=int, default=8, help="rows per micro-batch per process")
    a("--eval-batch-size", type=int, default=None, help="rows per evaluation batch (default: --batch-size)")
    a("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    a("--lr", type=float, default=5e-5, help="peak learning rate (AdamW, linear decay)")
    a("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    a("--warmup-steps", type=int, default=0, help="linear warm-up steps")
    a("--max-grad-norm", type=float, default=1.0, help="gradient clipping norm (0: off)")
    a("--max-input-len", type=int, default=1024, help="input tokens kept per example")
    a("--max-target-len", type=int, default=256, help="target tokens kept (label or rationale)")
    a(
        "--max-new-tokens",
        type=int,
        default=None,
        help="generation cap at evaluation (default: --max-target-len)",
    )
    a("--eval-every", type=int, default=0, help="validate every N steps (0: only at the end)")
    a("--max-eval-examples", type=int, default=None, help="cap on validation examples")
    a("--save-every", type=int, default=None, help="checkpoint every N steps (default: --eval-every)")
    a("--log-every", type=int, default=10, help="print the losses every N steps")
    if not sweep:
        a("--seed", type=int, default=42, help="initialisation, data order and sampling seed")
        a("--resume", action="store_true", help="continue from OUT/checkpoint exactly where it stopped")
        a(
            "--train-ids",
            default=None,
            help="a file of example ids, one per line: train on those examples only",
        )
    a(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="auto: bf16 autocast on CUDA, fp32 on CPU",
    )
    a("--compile", action="store_true", help="torch.compile the model (helps on GPU; slow on CPU)")
    a(
        "--no-group-by-length",
        dest="group_by_length",
        action="store_false",
        help="random batches (more padding)",
    )
    a("--device", default="auto", help="auto, cpu or cuda")
    a(
        "--strategy",
        choices=STRATEGIES,
        default="ddp",
        help="ddp: a full model copy per process; fsdp: weights, gradients and optimizer state sharded "
        "over the processes (needs torchrun)",
    )
    a(
        "--report-to",
        choices=REPORT_TO,
        default="none",
        help="tensorboard: also write TensorBoard event files to OUT/runs (pip install 'sbs-trainer[tensorboard]')",
    )
    a(
        "--hinted",
        choices=HINTED,
        default="keep",
        help="keep or drop train rows whose teacher saw the gold answer as a hint (sbs-data rationalize)",
    )
    g = p.add_argument_group("causal students")
    g.add_argument(
        "--prompt-format",
        choices=FORMATS,
        default="auto",
        help="auto: the tokenizer's chat template if it has one, else plain text (see the trainer README)",
    )
    g.add_argument(
        "--packing",
        choices=PACKINGS,
        default="auto",
        help="auto: flat with flash-attention on CUDA, else rows (each example's sequences in one row); "
        "none: one padded row per sequence",
    )
    g = p.add_argument_group("LoRA (needs peft: pip install 'sbs-trainer[lora]')")
    g.add_argument("--lora-r", type=int, default=None, help="train rank-R LoRA adapters, not every weight")
    g.add_argument("--lora-alpha", type=float, default=None, help="adapter scale alpha/r (default alpha: 2R)")
    g.add_argument("--lora-dropout", type=float, default=0.05, help="dropout on the adapters' input")
    g.add_argument(
        "--lora-targets",
        default="all-linear",
        help="comma-separated module names, or all-linear (every linear layer but the output layer)",
    )
    a("--stop-after", type=int, default=None, help=argparse.SUPPRESS)  # simulate pre-emption in tests
    if sweep:
        a(
            "--stop-after-runs", type=int, default=None, help=argparse.SUPPRESS
        )  # a kill between runs, in tests
    return p


def config_from_args(argv: list[str] | None = None) -> TrainConfig:
    return TrainConfig(**vars(build_parser().parse_args(argv)))


def sweep_config_from_args(argv: list[str]) -> SweepConfig:
    ns = vars(build_parser(sweep=True).parse_args(argv))
    modes = parse_list(ns.pop("modes"), "modes")
    fractions = parse_list(ns.pop("fractions"), "fractions")
    try:
        seeds = [int(x) for x in parse_list(ns.pop("seeds"), "seeds")]
    except ValueError as e:
        raise SweepError(f"--seeds must be integers ({e})") from None
    stop_after_runs = ns.pop("stop_after_runs")
    train = TrainConfig(**ns, mode=modes[0])
    return SweepConfig(ns["data"], ns["output"], modes, fractions, seeds, train, stop_after_runs)


USER_ERRORS = (
    ExportError,
    ModelError,
    PromptError,
    ResumeError,
    ConfigError,
    TensorBoardMissing,
    LoraMissing,
    SweepError,
)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sweep"]:
        try:
            sweep(sweep_config_from_args(argv[1:]))
        except USER_ERRORS as e:
            print(f"sbs-train sweep: error: {e}", file=sys.stderr)
            return 2
        return 0
    cfg = config_from_args(argv)
    try:
        metrics = run(cfg)
    except USER_ERRORS as e:
        print(f"sbs-train: error: {e}", file=sys.stderr)
        return 2
    if metrics is not None and os.environ.get("RANK", "0") == "0":
        summary = {
            "validation": metrics["validation"].get("accuracy"),
            "test": metrics["test"].get("accuracy"),
            **{k: metrics["train"][k] for k in ("steps", "examples_per_s", "final_loss")},
        }
        print(json.dumps(sig4(summary), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
