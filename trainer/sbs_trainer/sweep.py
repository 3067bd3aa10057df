"""`sbs-train sweep`: the paper's experiment in one command.

Modes × training-data fractions × seeds, each an ordinary sbs-train run in `OUT/runs/{mode}-f{fraction}-s{seed}/`:

1. **Fair subsets** (`subset_order`). For a seed, the train examples that every requested mode can use
   are put in one stratified random order; the subset at fraction f is its first round(f·N) examples.
   So subsets are nested across fractions (12.5% ⊂ 25% ⊂ 50% ⊂ 100%), identical across modes, chosen by
   example (every row of an example, and so both tasks of it, stay together), and stratified by gold
   label when the task has a label space (few distinct labels, each seen several times).
2. **Budget.** `--max-steps N` gives every run the same number of optimizer steps (as in the paper);
   otherwise every run trains `--epochs` over its own subset. `OUT/sweep.json` records the choice and
   the full configuration.
3. **Resumable.** A run whose `metrics.json` exists is skipped untouched; a run with a checkpoint
   continues from it (`--resume`); a different configuration under the same OUT is refused.
4. **Results.** `OUT/results.csv` (one row per run), `OUT/summary.md` (mean ± standard error of test
   accuracy per mode and fraction; SbS − standard per fraction with its paired standard error and the
   seeds SbS won) and `OUT/curves.png` (test accuracy against the fraction, with error bars).
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import statistics
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .config import TrainConfig
from .data import MODES, TARGET_COLUMNS, read_manifest, read_split_rows

SWEEP_FILE = "sweep.json"
IDS_FILE = "train_ids.txt"
# TrainConfig fields the sweep sets per run, and those that change nothing a run computes
_PER_RUN = {"data", "output", "mode", "seed", "resume", "stop_after", "train_ids"}
_COSMETIC = {"log_every", "report_to"}
STRATIFY_MAX_LABELS = 32  # a label space: at most this many distinct gold labels...
STRATIFY_MIN_PER_LABEL = 4  # ...each seen at least this often on average


class SweepError(ValueError):
    """A sweep that cannot run as asked; the message says why (raised before any training)."""


@dataclass
class SweepConfig:
    data: str
    output: str
    modes: list[str]
    fractions: list[str]  # as given on the command line ("0.5"), written with at least one decimal
    seeds: list[int]
    train: TrainConfig  # every other training option; mode, seed and output are set per run
    stop_after_runs: int | None = None  # stop after this many trained runs (tests: a kill between runs)
    runs: list[str] = field(default_factory=list, init=False)

    def budget(self) -> dict:
        if self.train.max_steps:
            return {"kind": "steps", "max_steps": self.train.max_steps}
        return {"kind": "epochs", "epochs": self.train.epochs}

    def record(self) -> dict:
        """What sweep.json stores: the configuration that must not change under the same OUT."""
        train = {
            k: v for k, v in asdict(self.train).items() if k not in _PER_RUN | _COSMETIC | {"world_size"}
        }
        return {
            "format": "sbs-train-sweep",
            "version": 1,
            "data": str(Path(self.data).resolve()),
            "modes": self.modes,
            "fractions": self.fractions,
            "seeds": self.seeds,
            "budget": self.budget(),
            "train": train,
        }


def fraction_label(text: str) -> str:
    """The fraction as given, with at least one decimal: "1" -> "1.0", "0.125" -> "0.125"."""
    value = float(text)
    return text if "." in text and not text.endswith(".") else f"{value:.1f}"


def run_name(mode: str, fraction: str, seed: int) -> str:
    return f"{mode}-f{fraction_label(fraction)}-s{seed}"


def parse_list(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise SweepError(f"--{what} is empty; give a comma-separated list")
    return items


def check(cfg: SweepConfig) -> None:
    """Refuse bad modes, fractions and seeds before reading any data."""
    bad = [m for m in cfg.modes if m not in MODES]
    if bad:
        raise SweepError(f"--modes: unknown mode(s) {', '.join(bad)}; expected some of {', '.join(MODES)}")
    if len(set(cfg.modes)) != len(cfg.modes):
        raise SweepError("--modes lists a mode twice")
    for f in cfg.fractions:
        try:
            value = float(f)
        except ValueError:
            raise SweepError(f"--fractions: {f!r} is not a number") from None
        if not (0.0 < value <= 1.0) or math.isnan(value):
            raise SweepError(f"--fractions: {f} is outside (0, 1]; a fraction of the train examples")
    if len({float(f) for f in cfg.fractions}) != len(cfg.fractions):
        raise SweepError("--fractions lists a fraction twice")
    if not cfg.seeds:
        raise SweepError("--seeds is empty; give at least one seed")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise SweepError("--seeds lists a seed twice")


# ---------------------------------------------------------------------------------------------- subsets


@dataclass
class Examples:
    """The train examples every requested mode can train on, with their gold labels."""

    ids: list[str]  # sorted
    labels: dict[str, str]  # example id -> gold label
    stratified: bool


def usable_examples(data: str, modes: list[str], hinted: str = "keep") -> Examples:
    """Examples with at least one train row carrying the targets of every requested mode."""
    manifest = read_manifest(data)
    raw = read_split_rows(data, manifest, "train")
    if hinted == "drop":
        raw = [r for r in raw if not r.get("hinted")]
    need = {c for m in modes for c in TARGET_COLUMNS[m].values()}
    labels: dict[str, str] = {}
    for r in raw:
        if all(r.get(c) not in (None, "") for c in need):
            gold = r.get("gold_label") if r.get("gold_label") is not None else r.get("label")
            labels.setdefault(r["example_id"], str(gold))
    distinct = set(labels.values())
    stratified = 1 < len(distinct) <= STRATIFY_MAX_LABELS and len(labels) >= STRATIFY_MIN_PER_LABEL * len(
        distinct
    )
    return Examples(sorted(labels), labels, stratified)


def subset_order(ex: Examples, seed: int) -> list[str]:
    """One random order of the examples for `seed`; every prefix is a subset (so subsets nest).

    Stratified: each label's examples are shuffled, the i-th of n gets the key (i + u)/n with u uniform
    in [0, 1), and the order is by key, so any prefix holds each label in its overall share (±1).
    """
    rng = random.Random(f"sbs-train sweep {seed}")
    if not ex.stratified:
        order = list(ex.ids)
        rng.shuffle(order)
        return order
    by_label: dict[str, list[str]] = defaultdict(list)
    for i in ex.ids:
        by_label[ex.labels[i]].append(i)
    keyed = []
    for label in sorted(by_label):
        members = by_label[label]
        rng.shuffle(members)
        keyed += [((k + rng.random()) / len(members), e) for k, e in enumerate(members)]
    return [e for _, e in sorted(keyed)]


def subset_size(n: int, fraction: str) -> int:
    return n if float(fraction) >= 1.0 else max(1, round(float(fraction) * n))


# ------------------------------------------------------------------------------------------------- runs


def _run_config(cfg: SweepConfig, mode: str, seed: int, folder: Path, resume: bool) -> TrainConfig:
    kw = {f.name: getattr(cfg.train, f.name) for f in fields(TrainConfig) if f.init}
    kw.update(data=cfg.data, output=str(folder), mode=mode, seed=seed, resume=resume,
              train_ids=str(folder / IDS_FILE))  # fmt: skip
    return TrainConfig(**kw)


def _fmt_s(seconds: float) -> str:
    seconds = int(round(seconds))
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def sweep(cfg: SweepConfig, train=None, say=print) -> dict:
    """Run every (mode, fraction, seed) not yet finished, then write results.csv, summary.md, curves.png.

    `train` is the function that runs one TrainConfig (default `train.run`). Returns {"trained", "skipped",
    "results"}; "interrupted" is set when a run stopped early (--stop-after), in which case a re-run goes on.
    """
    import torch.distributed as dist

    if train is None:
        from .train import run as train
    check(cfg)
    out = Path(cfg.output)
    record = cfg.record()
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    path = out / SWEEP_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise SweepError(f"{path}: not valid JSON ({e}); move it away to start a new sweep") from e
        if old != record:
            diff = _diff(old, record)
            raise SweepError(
                f"{out} holds a sweep with another configuration ({diff}); results of different "
                "configurations are never mixed: use another --output, or the original options"
            )
    ex = usable_examples(cfg.data, cfg.modes, cfg.train.hinted)
    if not ex.ids:
        raise SweepError(
            f"{cfg.data}: no train example has the targets of every mode in {', '.join(cfg.modes)}"
        )
    per_batch = cfg.train.batch_size * world
    for f in cfg.fractions:
        n = subset_size(len(ex.ids), f)
        if n < per_batch:
            raise SweepError(
                f"--fractions {f}: {n} of {len(ex.ids)} train examples, fewer than one batch "
                f"({cfg.train.batch_size} per process x {world}); raise the fraction or lower --batch-size"
            )
    orders = {s: subset_order(ex, s) for s in cfg.seeds}
    plan = [(m, f, s) for s in cfg.seeds for f in sorted(cfg.fractions, key=float) for m in cfg.modes]
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2) + "\n")

    owns_group = world > 1 and not dist.is_initialized()
    if owns_group:
        import torch

        use_cuda = (
            torch.cuda.is_available() if cfg.train.device == "auto" else cfg.train.device.startswith("cuda")
        )
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if use_cuda else "gloo")
    done_before = sum((out / "runs" / run_name(*p) / "metrics.json").is_file() for p in plan)
    trained, skipped, durations = [], [], []
    interrupted = None
    ok = False
    try:
        for k, (mode, frac, seed) in enumerate(plan, 1):
            name = run_name(mode, frac, seed)
            folder = out / "runs" / name
            if (folder / "metrics.json").is_file():
                skipped.append(name)
                continue
            if cfg.stop_after_runs is not None and len(trained) >= cfg.stop_after_runs:
                interrupted = name
                break
            ids = orders[seed][: subset_size(len(ex.ids), frac)]
            if rank == 0:
                folder.mkdir(parents=True, exist_ok=True)
                (folder / IDS_FILE).write_text("".join(i + "\n" for i in ids))
            if world > 1:
                dist.barrier()
            left = len(plan) - done_before - len(trained)
            eta = f", about {_fmt_s(statistics.mean(durations) * left)} left" if durations else ""
            resume = (folder / "checkpoint" / "state.pt").is_file() or (folder / "checkpoint.tmp").is_dir()
            if rank == 0:
                say(
                    f"sweep: run {k}/{len(plan)} {name} ({len(ids)} examples{', resuming' if resume else ''}); "
                    f"{left} to train{eta}"
                )
            t0 = time.perf_counter()
            metrics = train(_run_config(cfg, mode, seed, folder, resume))
            if world > 1:
                dist.barrier()
            if metrics is None:  # stopped early (pre-empted): the next invocation resumes it
                interrupted = name
                break
            durations.append(time.perf_counter() - t0)
            trained.append(name)
        ok = True
    finally:
        if owns_group and dist.is_initialized():
            from .train import _teardown_distributed

            _teardown_distributed(ok)
    results = collect(out, plan)
    if rank == 0:
        write_results(out, results, cfg)
        say(
            f"sweep: {len(trained)} trained, {len(skipped)} already done"
            + (f"; stopped at {interrupted} (run the same command to go on)" if interrupted else "")
            + f"; {out / 'summary.md'}"
        )
    return {"trained": trained, "skipped": skipped, "results": results, "interrupted": interrupted}


def _diff(old: dict, new: dict) -> str:
    keys = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += [
                f"{k}.{j}: {a.get(j)!r} -> {b.get(j)!r}"
                for j in sorted(set(a) | set(b))
                if a.get(j) != b.get(j)
            ]
        elif a != b:
            keys.append(f"{k}: {a!r} -> {b!r}")
    return "; ".join(keys[:5]) + ("; ..." if len(keys) > 5 else "")


# ---------------------------------------------------------------------------------------------- results

RESULT_COLUMNS = (
    "run", "mode", "fraction", "seed", "n_train", "train_rows", "steps", "validation_accuracy",
    "test_accuracy", "tokens_seen", "seconds",
)  # fmt: skip


def collect(out: Path, plan: list[tuple[str, str, int]]) -> list[dict]:
    """One row per finished run, in plan order."""
    rows = []
    for mode, frac, seed in plan:
        folder = out / "runs" / run_name(mode, frac, seed)
        if not (folder / "metrics.json").is_file():
            continue
        m = json.loads((folder / "metrics.json").read_text())
        ids = (folder / IDS_FILE).read_text().split() if (folder / IDS_FILE).is_file() else []
        t = m.get("train", {})
        rows.append(
            {
                "run": folder.name,
                "mode": mode,
                "fraction": float(frac),
                "seed": seed,
                "n_train": len(ids),
                "train_rows": t.get("rows"),
                "steps": t.get("steps"),
                "validation_accuracy": m.get("validation", {}).get("accuracy"),
                "test_accuracy": m.get("test", {}).get("accuracy"),
                "tokens_seen": t.get("tokens_seen"),
                "seconds": t.get("train_runtime_s"),
            }
        )
    return rows


def mean_se(values: list[float]) -> tuple[float, float | None]:
    """Mean and standard error (sample standard deviation / sqrt(n)); no s.e. for one value."""
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None
    return mean, se


def paired(results: list[dict], a: str, b: str) -> dict[float, dict]:
    """Per fraction: mode a − mode b test accuracy over the seeds both finished (paired by seed)."""
    acc = {(r["mode"], r["fraction"], r["seed"]): r["test_accuracy"] for r in results}
    out = {}
    for frac in sorted({r["fraction"] for r in results}):
        seeds = sorted(
            s
            for (m, f, s) in acc
            if m == a and f == frac and acc.get((b, f, s)) is not None and acc[(m, f, s)] is not None
        )
        if not seeds:
            continue
        d = [acc[(a, frac, s)] - acc[(b, frac, s)] for s in seeds]
        mean, se = mean_se(d)
        out[frac] = {
            "mean": mean,
            "se": se,
            "n": len(d),
            "wins": sum(x > 0 for x in d),
            "ties": sum(x == 0 for x in d),
        }
    return out


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def summary_markdown(results: list[dict], cfg: SweepConfig) -> str:
    """The paper-style table: mean ± s.e. of test accuracy (%) per mode and fraction, then SbS − standard."""
    fracs = sorted({r["fraction"] for r in results})
    lines = [
        "# Sweep: test accuracy (%) by mode and fraction of the training data",
        "",
        f"Data: `{cfg.data}`. Model: `{cfg.train.model}`. Seeds: {', '.join(map(str, cfg.seeds))}. "
        f"Budget: {_budget_text(cfg.budget())}. Mean ± standard error over seeds.",
        "",
        "| mode | " + " | ".join(f"{100 * f:g}%" for f in fracs) + " |",
        "|---|" + "---|" * len(fracs),
    ]
    for mode in cfg.modes:
        cells = []
        for f in fracs:
            vals = [r["test_accuracy"] for r in results if r["mode"] == mode and r["fraction"] == f]
            vals = [v for v in vals if v is not None]
            if not vals:
                cells.append("—")
                continue
            mean, se = mean_se(vals)
            cells.append(
                f"{_pct(mean)} ± {_pct(se)} (n={len(vals)})" if se is not None else f"{_pct(mean)} (n=1)"
            )
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    for other in ("standard", "distill"):
        if "sbs" in cfg.modes and other in cfg.modes:
            d = paired(results, "sbs", other)
            lines += [
                "",
                f"## SbS − {other}, paired by seed (percentage points)",
                "",
                "| fraction | difference | seeds SbS won |",
                "|---|---|---|",
            ]
            for f, v in d.items():
                diff = (
                    f"{100 * v['mean']:+.1f} ± {_pct(v['se'])}"
                    if v["se"] is not None
                    else f"{100 * v['mean']:+.1f}"
                )
                ties = f", {v['ties']} tied" if v["ties"] else ""
                lines.append(f"| {100 * f:g}% | {diff} | {v['wins']} of {v['n']}{ties} |")
    lines += [
        "",
        "A difference larger than about twice its standard error is unlikely to be seed noise. "
        "See `results.csv` for every run and `curves.png` for the curve.",
        "",
    ]
    return "\n".join(lines)


def _budget_text(b: dict) -> str:
    return (
        f"{b['max_steps']} optimizer steps per run"
        if b["kind"] == "steps"
        else f"{b['epochs']:g} epoch(s) per run"
    )


def write_results(out: Path, results: list[dict], cfg: SweepConfig) -> None:
    with (out / "results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
        w.writeheader()
        w.writerows(results)
    (out / "summary.md").write_text(summary_markdown(results, cfg))
    draw_sweep_curves(results, cfg.modes, out / "curves.png")


def draw_sweep_curves(results: list[dict], modes: list[str], path: Path) -> None:
    """Test accuracy against the fraction of training data, one line per mode with s.e. bars (Figure 4)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    fracs = sorted({r["fraction"] for r in results})
    for mode in modes:
        xs, ys, es = [], [], []
        for f in fracs:
            vals = [r["test_accuracy"] for r in results if r["mode"] == mode and r["fraction"] == f]
            vals = [v for v in vals if v is not None]
            if vals:
                mean, se = mean_se(vals)
                xs.append(100 * f)
                ys.append(100 * mean)
                es.append(100 * (se or 0.0))
        if xs:
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=mode)
    if fracs:
        ax.set_xscale("log", base=2)
        ax.set_xticks([100 * f for f in fracs], [f"{100 * f:g}%" for f in fracs])
        ax.minorticks_off()
    ax.set_xlabel("training data used")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
