"""Causal students: `sbs-train --mode sbs` vs TRL's `SFTTrainer` on the same predict/explain sequences.

Both sides train the same tiny random Qwen2 (`sbs_trainer.tiny.write_tiny(arch="qwen2")`, written once,
so both start from the same weights) on the same rows, for the same number of examples:

- sbs-train (`sbs_trainer.train.run`): mode sbs, `--batch-size` B rows per step (2B sequences: the
  predict and the explain sequence of each row), `--steps` steps, no evaluation split, log_every 0;
- TRL: every row becomes two prompt-completion examples (predict prompt -> label, explain prompt ->
  rationale), the prompts rendered by sbs-train's own `PromptFormat`, each completion ended by the same
  end token (`<|im_end|>`), `completion_only_loss=True`; 2B sequences per step for `--steps` steps.
  TRL's collation variants (`--trl`): `padding` (plain padding, random batches), `grouped` (plain padding,
  `train_sampling_strategy="group_by_length"`), `padding_free` and `packing` (bfd; one packed row of about
  2B sequences' tokens per step, one epoch, so the same sequences in about the same number of steps).

Same on both sides: lr, AdamW (betas, eps, no weight decay), linear decay without warm-up, max_grad_norm
1.0, fp32 (or bf16 autocast with --bf16), no evaluation, no checkpoints during the run, 0 dataloader
workers, seed, and the torch thread count (`torch.set_num_threads(--threads)`, in each process).

Every run is its own subprocess (so peak RSS is per run), and repeats alternate the order of the sides
(`--prune F`, on with --quick: after the first repeat only the TRL variants within F times the fastest one
are repeated). Reported per side (medians): the training-loop wall time (sbs-train: its step loop; TRL:
`train()`'s `train_runtime`, the loop after the trainer is built) and the process's CPU time over the same
span (steadier than wall time when other jobs share the cores), the whole call (sbs-train: `run()` from
loading the export to saving final/; TRL: building the trainer, which tokenises the dataset, plus
`train()`), target tokens/s (label + rationale tokens, end token included: the same count on both sides),
examples/s (rows, that is predict + explain pairs), peak RSS (VmHWM of the run's process, imports
included), and what the model computed, counted from each collated micro-batch: positions through the
backbone (padding efficiency = real tokens / positions), attention query x key pairs (rows x width^2:
SDPA with an explicit mask computes every pair of a row), positions projected onto the vocabulary (TRL's
fused LM head scores every position where Triton is missing, e.g. on CPU). The last line printed is
`ratio X.XX`: the median TRL loop wall of the fastest correct TRL variant (picked by loop CPU time in the
first repeat, where all variants run back to back) over the median sbs-train loop wall.

Before the timed runs, a step-1 check: from the same init, on the first --batch-size rows, sbs-train's
per-task losses (its own `CausalStep`, `rows` layout) and the unpacked reference (`collate_causal(...,
"none")` + `full_logits_losses`), against TRL's real first training step (sequential sampler, one step,
the logged loss) for each variant. TRL averages over all completion tokens of the batch, so it must equal
the token-weighted mean of the two per-task losses. The packing variant's first step holds other sequences:
it is checked against a plain padded forward of exactly the sequences packed in it. The tokenised TRL
sequences are also compared id for id with sbs-train's.

    python benchmarks/causal_vs_trl.py --quick              # < 5 min on a 2-core CPU
    python benchmarks/causal_vs_trl.py                      # more steps, 3 repeats
    python benchmarks/causal_vs_trl.py --device cuda --bf16 --d-model 512 --layers 8 --heads 8 --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

VARIANTS = ("padding", "grouped", "padding_free", "packing")
TASKS = ("label", "rationale")
MAX_INPUT_LEN, MAX_TARGET_LEN = 1024, 256  # sbs-train's defaults; no SVAMP row comes near them

# ------------------------------------------------------------------------------------------------ data

_NAMES = ["Tom", "Sara", "Jack", "Mary", "Anna", "Luke", "Emma", "Noah", "Lily", "Ben", "Grace", "Omar"]
_ITEMS = "apples pencils cookies books marbles stickers cards flowers shells toys".split()
_SCENES = [
    "It was a sunny day and the children were playing in the park.",
    "The school fair was about to start in the big hall.",
    "Every week the family goes to the market in the morning.",
    "The teacher asked the class to count everything carefully.",
    "After lunch they walked home along the river.",
    "The shop near the station had just opened its doors.",
    "Some of them were red and the rest were blue or green.",
    "Nobody else in the class had as many as that.",
]
_STEPS = [
    "Let us think step by step.",
    "First we find how many there were at the start.",
    "Then we look at what changed after that.",
    "We only need the numbers from the question.",
    "The colours of the objects do not matter here.",
    "So we write the whole calculation as one expression.",
]


def english_rows(n: int, seed: int = 0) -> list[dict]:
    """SVAMP-like word problems in plain English (real words: the tiny BPE keeps them in few tokens)."""
    from train_throughput import _row

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
        a, b = rng.randint(2, 99), rng.randint(2, 12)
        op = rng.choice("+-*/")
        if op == "-":
            a = a + b
        if op == "/":
            a = a * b
        story = {
            "+": (
                f"{name} has {a} {item}. {name} finds {b} more {item}.",
                f"How many {item} does {name} have now?",
            ),
            "-": (f"{name} had {a} {item} and gave {b} of them to a friend.", f"How many {item} are left?"),
            "*": (f"{name} has {a} boxes with {b} {item} in each box.", f"How many {item} are there in all?"),
            "/": (
                f"{name} shares {a} {item} equally among {b} friends.",
                f"How many {item} does each friend get?",
            ),
        }[op]
        context = " ".join(rng.sample(_SCENES, rng.randint(0, 4)))
        question = " ".join(x for x in (context, story[0], story[1]) if x)
        expr = f"( {a}.0 {op} {b}.0 )"
        value = {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]
        steps = " ".join(rng.sample(_STEPS, rng.randint(0, len(_STEPS))))
        rationale = f"{steps} {story[0]} So we compute {expr} = {value}. The answer is {value}.".strip()
        rows.append(_row(i, question, expr, rationale))
    return rows


def load_rows(a: argparse.Namespace, n: int) -> tuple[list[dict], str]:
    """`n` raw export rows: SVAMP train + PaLM rationales, English synthetic rows, or an export folder."""
    import train_throughput as tt

    if a.data not in ("auto", "svamp", "synthetic"):
        from sbs_trainer.data import read_manifest, read_split_rows

        rows = read_split_rows(a.data, read_manifest(a.data), "train")
        source = f"export {a.data}"
    elif a.data != "synthetic" and (tt.SVAMP_DIR / "svamp_train.json").is_file():
        rows, source = tt.svamp_rows(tt.SVAMP_DIR, n), "SVAMP train + PaLM rationales"
    elif a.data == "svamp":
        raise SystemExit(f"--data svamp: {tt.SVAMP_DIR} is not there")
    else:
        rows, source = english_rows(n, a.seed), "synthetic English SVAMP-like rows"
    if len(rows) < n:
        raise SystemExit(f"--steps x --batch-size = {n} rows, but the data has only {len(rows)}")
    return rows[:n], source


def train_rows(export: str):
    from sbs_trainer.data import build_rows, read_manifest, read_split_rows

    rows, _ = build_rows(
        read_split_rows(export, read_manifest(export), "train"), "sbs", "train", training=True
    )
    return rows


def trl_examples(rows, tok, fmt) -> list[dict]:
    """Two prompt-completion examples per row, interleaved (predict, explain, predict, ...)."""
    return [
        {"prompt": fmt.prompt_text(t, r.input, tok), "completion": r.targets[t] + fmt.end_token}
        for r in rows
        for t in TASKS
    ]


# -------------------------------------------------------------------------------------------- helpers


def max_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so a worker
    would report at least its parent's RSS at the time it was started."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, bytes on macOS


def device_peak(device) -> dict:
    import torch

    if device.type != "cuda":
        return {}
    return {"peak_gpu_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30}


class Counter:
    """Per-run totals of what the model computes, from each micro-batch as collated (a few us per step)."""

    def __init__(self):
        self.positions = self.attention = self.scored = self.batches = 0

    def add(self, batch: dict, scored: int) -> None:
        rows, width = batch["input_ids"].shape
        self.positions += rows * width  # positions through the backbone, padding included
        self.attention += rows * width * width  # query x key pairs (an explicit mask: no causal skipping)
        self.scored += scored  # positions projected onto the vocabulary
        self.batches += 1

    def as_dict(self) -> dict:
        return {
            "positions": self.positions,
            "attention_pairs": self.attention,
            "lm_head_positions": self.scored,
        }


def load_model(model_dir: str, device, attn: str | None = None):
    import torch
    from transformers import AutoModelForCausalLM

    kw = {"attn_implementation": attn} if attn else {}
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, **kw).to(device)


def trl_scores_targets_only(device) -> bool:
    """TRL's fused LM head projects only the target positions where Triton runs, every position elsewhere."""
    from trl.kernels.chunked_logprob import _use_triton

    return _use_triton(device)


def trl_attention(s: dict) -> str | None:
    """flash-attention for TRL's padding-free layouts where it exists (what TRL recommends), else the model's."""
    import importlib.util

    packed = s["variant"] in ("padding_free", "packing")
    return (
        "flash_attention_2"
        if packed and s["device"] == "cuda" and importlib.util.find_spec("flash_attn")
        else None
    )


def trl_trainer(s: dict, model, tok, examples: list[dict], max_steps: int | None = None, sequential=False):
    """The SFTTrainer of one variant. max_steps/sequential: the step-1 check (one step, first batch)."""
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    variant, bsz = s["variant"], 2 * s["batch_size"]
    kw: dict = {"max_length": None, "per_device_train_batch_size": bsz, "max_steps": max_steps or s["steps"]}
    if variant == "packing":
        # one packed row (bfd) of about one step's tokens per step, one epoch: the same 2N sequences
        kw = {"packing": True, "max_length": s["pack_len"], "per_device_train_batch_size": 1}
        kw.update({"max_steps": max_steps} if max_steps else {"num_train_epochs": 1})
    elif variant == "padding_free":
        kw["padding_free"] = True
    elif variant == "grouped":
        kw["train_sampling_strategy"] = "group_by_length"
    if sequential:
        kw["train_sampling_strategy"] = "sequential"
    cuda = s["device"].startswith("cuda")
    cfg = SFTConfig(
        output_dir=s["out"],
        completion_only_loss=True,
        learning_rate=s["lr"],
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        gradient_accumulation_steps=1,
        activation_checkpointing=False,  # SFTConfig turns it on by default; sbs-train does not checkpoint
        bf16=s["bf16"],
        fp16=False,
        use_cpu=not cuda,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        logging_steps=1 if max_steps else max(1, s["steps"]),
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=s["seed"],
        **kw,
    )
    trainer = SFTTrainer(
        model=model, args=cfg, train_dataset=Dataset.from_list(examples), processing_class=tok
    )
    trainer.remove_callback(PrinterCallback)  # disable_tqdm's stand-in prints every log record
    return trainer


# ------------------------------------------------------------------------------------------- workers


def work_sbs(s: dict) -> dict:
    """One sbs-train run, in this process."""
    import torch
    from sbs_trainer import logs, train
    from sbs_trainer.train import TrainConfig, run

    torch.set_num_threads(s["threads"])
    device = torch.device(s["device"])
    stamps: dict[str, float] = {}
    init, write = logs.RunLog.__init__, logs.RunLog.write

    def timed_init(self, *args, **kw):  # created right before the first step
        init(self, *args, **kw)
        stamps["start"], stamps["cpu_start"] = time.perf_counter(), time.process_time()

    def timed_write(self, rec):  # once per step, at its end
        write(self, rec)
        stamps["end"], stamps["cpu_end"] = time.perf_counter(), time.process_time()

    logs.RunLog.__init__, logs.RunLog.write = timed_init, timed_write
    count, collate = Counter(), train.collate_causal

    def counted_collate(*args, **kw):
        b = collate(*args, **kw)
        if "start" in stamps:  # the training steps (not the packing check before them)
            count.add(b, int((b["labels"] != -100).sum()))  # logits_to_keep: target positions only
        return b

    train.collate_causal = counted_collate
    cfg = TrainConfig(
        data=s["data"], model=s["model"], output=s["out"], mode="sbs", alpha=s["alpha"], max_steps=s["steps"],
        batch_size=s["batch_size"], lr=s["lr"], weight_decay=0.0, warmup_steps=0, max_grad_norm=1.0,
        max_input_len=MAX_INPUT_LEN, max_target_len=MAX_TARGET_LEN, eval_every=0, log_every=0, seed=s["seed"],
        device=s["device"], precision="bf16" if s["bf16"] else "fp32", packing=s.get("packing", "auto"),
    )  # fmt: skip
    rss0 = max_rss_mb()
    t0 = time.perf_counter()
    m = run(cfg)
    total = time.perf_counter() - t0
    t = m["train"]
    return {
        "loop_s": stamps["end"] - stamps["start"],
        "loop_cpu_s": stamps["cpu_end"] - stamps["cpu_start"],
        "steps_s": t["train_runtime_s"],  # sbs-train's own sum of step times
        "total_s": total,
        "steps": t["steps"],
        "rows": t["examples_seen"],
        "final_loss": t["final_loss"],
        "packing": m["student"]["packing"],
        "attention": m["student"]["attention"],
        "threads": torch.get_num_threads(),
        "rss_before_mb": rss0,
        "peak_rss_mb": max_rss_mb(),
        **count.as_dict(),
        **device_peak(device),
    }


def cpu_clock():
    """A TrainerCallback reading this process's CPU time where `train_runtime` starts and ends."""
    from transformers import TrainerCallback

    class CpuClock(TrainerCallback):
        start = end = 0.0

        def on_train_begin(self, *args, **kw):
            self.start = time.process_time()

        def on_train_end(self, *args, **kw):
            self.end = time.process_time()

    return CpuClock()


def work_trl(s: dict) -> dict:
    """One TRL SFTTrainer run, in this process."""
    import torch
    from sbs_trainer.prompts import PromptFormat
    from transformers import AutoTokenizer

    torch.set_num_threads(s["threads"])
    device = torch.device(s["device"])
    rss0 = max_rss_mb()
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(s["model"])
    examples = trl_examples(train_rows(s["data"]), tok, PromptFormat.for_tokenizer(tok))
    trainer = trl_trainer(s, load_model(s["model"], device, trl_attention(s)), tok, examples)
    count, collate = Counter(), trainer.data_collator
    every_position = not trl_scores_targets_only(device)

    def counted_collate(features):
        b = collate(features)
        rows, width = b["input_ids"].shape
        count.add(b, rows * (width - 1) if every_position else int((b["labels"][:, 1:] != -100).sum()))
        return b

    trainer.data_collator = counted_collate
    cpu = cpu_clock()
    trainer.add_callback(cpu)
    built = time.perf_counter() - t0
    out = trainer.train()
    total = time.perf_counter() - t0
    opt = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # accelerate wraps it
    return {
        "loop_s": out.metrics["train_runtime"],
        "loop_cpu_s": cpu.end - cpu.start,
        "build_s": built,
        "total_s": total,
        "steps": trainer.state.global_step,
        "sequences": len(examples),
        "packed_rows": len(trainer.train_dataset) if s["variant"] == "packing" else None,
        "final_loss": out.metrics["train_loss"],
        "attention": trainer.model.config._attn_implementation,
        "optimizer": f"{type(opt).__name__}(fused={opt.defaults.get('fused')})",
        "threads": torch.get_num_threads(),
        "rss_before_mb": rss0,
        "peak_rss_mb": max_rss_mb(),
        **count.as_dict(),
        **device_peak(device),
    }


def quiet(trl: bool = True) -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if trl:  # (the sbs-train worker never imports datasets)
        import datasets

        datasets.disable_progress_bars()
        datasets.utils.logging.set_verbosity_error()


def worker(spec_path: str) -> None:
    s = json.loads(Path(spec_path).read_text())
    quiet(trl=s["side"] == "trl")
    res = work_sbs(s) if s["side"] == "sbs" else work_trl(s)
    Path(s["result"]).write_text(json.dumps(res))


def launch(spec: dict, tmp: Path, name: str) -> dict:
    """Run one side in a fresh Python process (its own peak RSS, no allocator state from other runs)."""
    spec = {**spec, "out": str(tmp / f"out-{name}"), "result": str(tmp / f"{name}.json")}
    path = tmp / f"{name}.spec.json"
    path.write_text(json.dumps(spec))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}
    p = subprocess.run(
        [sys.executable, __file__, "--worker", str(path)], env=env, capture_output=True, text=True
    )
    if p.returncode:
        sys.stderr.write(p.stdout[-4000:] + p.stderr[-4000:])
        raise SystemExit(f"{name}: the worker failed (exit {p.returncode})")
    return json.loads(Path(spec["result"]).read_text())


# ---------------------------------------------------------------------------------------- step-1 check


def padded_ref_loss(model, seqs: list[tuple[list[int], list[int]]], pad_id: int, device) -> tuple[float, int]:
    """Token-summed CE of TRL-style (input_ids, labels) sequences, one padded row each: (sum, tokens)."""
    import torch
    import torch.nn.functional as F

    width = max(len(x) for x, _ in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    lab = torch.full((len(seqs), width), -100, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, (x, y) in enumerate(seqs):
        ids[r, : len(x)], lab[r, : len(x)], mask[r, : len(x)] = torch.tensor(x), torch.tensor(y), 1
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
    tgt = lab[:, 1:].to(device)
    ce = F.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.size(-1)), tgt.reshape(-1), reduction="sum"
    )
    return float(ce), int((tgt != -100).sum())


def step1_check(s: dict, variants: list[str], tmp: Path) -> dict:
    """sbs-train's per-task losses on the first B rows vs TRL's real first step, per variant (see docstring)."""
    import torch
    from sbs_trainer.causal import CausalStep, collate_causal, encode_causal, full_logits_losses
    from sbs_trainer.model import load_student

    torch.set_num_threads(s["threads"])
    device = torch.device(s["device"])
    rows = train_rows(s["data"])
    student = load_student(s["model"])
    tok, fmt, pad = student.tokenizer, student.prompt, student.tokenizer.pad_token_id
    enc = encode_causal(rows, tok, fmt, TASKS, MAX_INPUT_LEN, MAX_TARGET_LEN)
    idx = list(range(s["batch_size"]))
    n = {t: sum(len(enc.targets[t][i]) for i in idx) for t in TASKS}
    model = student.model.to(device).train()
    on = lambda b: {k: v.to(device) for k, v in b.items()}  # noqa: E731
    with torch.no_grad():
        ours = {
            k: float(v) for k, v in CausalStep(model)(**on(collate_causal(enc, idx, pad, "rows"))).items()
        }
        ref = {
            k: float(v)
            for k, v in full_logits_losses(model, on(collate_causal(enc, idx, pad, "none"))).items()
        }
        ce, tokens = padded_ref_loss(
            model,
            [(enc.prompts[t][i] + enc.targets[t][i], [-100] * len(enc.prompts[t][i]) + enc.targets[t][i])
             for i in idx for t in TASKS],
            pad,
            device,
        )  # fmt: skip
    weighted = lambda d: sum(d[t] * n[t] for t in TASKS) / sum(n.values())  # noqa: E731
    out = {
        "rows": len(idx),
        "target_tokens": n,
        "sbs_train": ours,
        "sbs_train_token_weighted": weighted(ours),
        "sbs_train_alpha_mixed": s["alpha"] * ours["label"] + (1 - s["alpha"]) * ours["rationale"],
        "reference_none_layout": ref,
        "reference_token_weighted": weighted(ref),
        "independent_reference": ce / tokens,  # this file's own padded forward, no sbs_trainer code
        "trl": {},
    }
    del model, student
    # TRL's tokenisation of all 2N sequences must be sbs-train's, id for id, targets included
    examples = trl_examples(rows, tok, fmt)
    want = [
        (enc.prompts[t][i] + enc.targets[t][i], [-100] * len(enc.prompts[t][i]) + enc.targets[t][i])
        for i in range(len(rows))
        for t in TASKS
    ]
    for v in variants:
        spec = {**s, "variant": v, "out": str(tmp / f"check-{v}"), "bf16": False}  # the check runs in fp32
        model = load_model(s["model"], device, trl_attention(spec))
        trainer = trl_trainer(spec, model, tok, examples, max_steps=1, sequential=True)
        ds = trainer.train_dataset
        rec: dict = {}
        if v == "packing":  # the packed dataset holds every sequence, whole; step 1 is packed row 0
            seqs = []
            for row in ds:
                start = 0
                for k in row["seq_lengths"]:
                    seqs.append((row["input_ids"][start : start + k], row["labels"][start : start + k]))
                    start += k
            rec["same_sequences"] = sorted(map(str, seqs)) == sorted(map(str, want))
            first, start = [], 0
            for k in ds[0]["seq_lengths"]:
                first.append((ds[0]["input_ids"][start : start + k], ds[0]["labels"][start : start + k]))
                start += k
            with torch.no_grad():
                ce, tokens = padded_ref_loss(load_model(s["model"], device), first, pad, device)
            rec["first_step_sequences"] = len(first)
            rec["reference"] = ce / tokens
        else:
            got = [(ds[j]["input_ids"], ds[j]["labels"]) for j in range(len(ds))]
            rec["same_sequences"] = got == want
            rec["reference"] = out["reference_token_weighted"]
        trainer.train()
        rec["trl_step1"] = trainer.state.log_history[0]["loss"]
        rec["abs_diff"] = abs(rec["trl_step1"] - rec["reference"])
        rec["agree"] = bool(rec["same_sequences"] and rec["abs_diff"] < s["tol"])
        out["trl"][v] = rec
    out["sbs_vs_reference"] = max(abs(ours[t] - ref[t]) for t in TASKS)
    out["agree"] = (
        out["sbs_vs_reference"] < s["tol"]
        and abs(out["independent_reference"] - out["reference_token_weighted"]) < s["tol"]
        and all(r["agree"] for r in out["trl"].values())
    )
    return out


# ---------------------------------------------------------------------------------------------- main


def summarise(runs: list[dict], target_tokens: int, all_tokens: int, n_rows: int) -> dict:
    med = lambda k: statistics.median(r[k] for r in runs)  # noqa: E731
    out = {
        "runs": len(runs),
        "loop_s": med("loop_s"),
        "loop_cpu_s": med("loop_cpu_s"),
        "total_s": med("total_s"),
        "target_tokens_per_s": target_tokens / med("loop_s"),
        "examples_per_s": n_rows / med("loop_s"),
        "sequences_per_s": 2 * n_rows / med("loop_s"),
        "peak_rss_mb": med("peak_rss_mb"),
        "rss_before_mb": med("rss_before_mb"),
        "runs_loop_s": [round(r["loop_s"], 3) for r in runs],
        "steps": runs[0]["steps"],
        "positions": runs[0]["positions"],
        "padding_efficiency": all_tokens / runs[0]["positions"],
        "attention_pairs": runs[0]["attention_pairs"],
        "lm_head_positions": runs[0]["lm_head_positions"],
        "attention": runs[0]["attention"],
        "threads": runs[0]["threads"],
    }
    if "peak_gpu_memory_gb" in runs[0]:
        out["peak_gpu_memory_gb"] = max(r["peak_gpu_memory_gb"] for r in runs)
    for k in ("packing", "optimizer", "packed_rows", "steps_s"):
        if k in runs[0]:
            out[k] = runs[0][k] if k != "steps_s" else med(k)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument(
        "--data", default="auto",
        help="auto (SVAMP + PaLM rationales when the shared data is there, else synthetic), svamp, synthetic, "
        "or an sbs-data export folder",
    )  # fmt: skip
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=8, help="sbs-train rows per step (TRL: 2x sequences)")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps; rows = steps x batch size")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats (order alternates); medians")
    p.add_argument("--threads", type=int, default=1, help="torch threads, both sides (0: torch's default)")
    p.add_argument(
        "--trl", default=",".join(VARIANTS), help=f"TRL variants to run, among {', '.join(VARIANTS)}"
    )
    p.add_argument("--sbs-packing", default="auto", help="sbs-train --packing (auto: rows on CPU)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast on both sides")
    p.add_argument("--tol", type=float, default=1e-4, help="step-1 agreement tolerance (fp32)")
    p.add_argument("--skip-check", action="store_true")
    p.add_argument(
        "--prune", type=float, default=0.0,
        help="after repeat 0, repeat only the TRL variants within this factor of the fastest (0: all)",
    )  # fmt: skip
    p.add_argument(
        "--quick", action="store_true",
        help="a short run: 25 steps of 8 rows, 3 repeats, --prune 1.25 (< 5 min on 2 cores)",
    )  # fmt: skip
    p.add_argument("--json", type=Path, help="also write the result here")
    a = p.parse_args(argv)
    if a.worker:
        worker(a.worker)
        return {}
    if a.quick:
        a.steps, a.batch_size, a.repeats, a.prune = 25, 8, 3, a.prune or 1.25
    variants = [v.strip() for v in a.trl.split(",") if v.strip()]
    if bad := set(variants) - set(VARIANTS):
        p.error(f"unknown --trl variant(s) {sorted(bad)}")

    import torch
    import train_throughput as tt
    from sbs_trainer.causal import encode_causal
    from sbs_trainer.model import load_student
    from sbs_trainer.tiny import write_tiny

    quiet()
    threads = a.threads or torch.get_num_threads()
    n_rows = a.steps * a.batch_size
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="causal_vs_trl-") as tmp:
        tmp = Path(tmp)
        raw, source = load_rows(a, n_rows)
        export = tt.write_export(tmp / "export", raw)
        model_dir = write_tiny(
            tmp / "student", arch="qwen2", seed=a.seed, d_model=a.d_model, layers=a.layers, heads=a.heads
        )
        student = load_student(str(model_dir))
        enc = encode_causal(
            train_rows(str(export)), student.tokenizer, student.prompt, TASKS, MAX_INPUT_LEN, MAX_TARGET_LEN
        )
        target_tokens = sum(len(y) for t in TASKS for y in enc.targets[t])
        all_tokens = enc.tokens(list(range(len(enc))))
        params = sum(p.numel() for p in student.model.parameters())
        del student
        base = {
            "data": str(export), "model": str(model_dir), "steps": a.steps, "batch_size": a.batch_size, "lr": a.lr,
            "alpha": a.alpha, "seed": a.seed, "threads": threads, "device": a.device, "bf16": a.bf16, "tol": a.tol,
            "packing": a.sbs_packing, "variant": None,
            # packing: bfd bins of one step's share of the tokens (plus slack), one bin per step
            "pack_len": max(max(enc.seq_len(t, i) for t in TASKS for i in range(len(enc))),
                            math.ceil(all_tokens / a.steps * 1.02)),
        }  # fmt: skip
        print(
            f"data: {source}, {n_rows} rows ({2 * n_rows} sequences), {target_tokens} target tokens of "
            f"{all_tokens}; qwen2 d_model {a.d_model}, {a.layers} layers, {a.heads} heads, {params / 1e6:.2f}M "
            f"parameters; {a.steps} steps of {a.batch_size} rows; {threads} thread(s) on {a.device}"
            f"{' bf16' if a.bf16 else ''}",
            file=sys.stderr,
        )
        check = None
        if not a.skip_check:
            t0 = time.perf_counter()
            check = step1_check(base, variants, tmp)
            c = check
            print(
                f"step-1 losses agree: {'yes' if c['agree'] else 'no'} (sbs-train label {c['sbs_train']['label']:.6f}, "
                f"rationale {c['sbs_train']['rationale']:.6f}; token-weighted {c['sbs_train_token_weighted']:.6f}; "
                f"reference {c['reference_token_weighted']:.6f}; TRL "
                + ", ".join(
                    f"{v} {r['trl_step1']:.6f} (ref {r['reference']:.6f})" for v, r in c["trl"].items()
                )
                + f"; check took {time.perf_counter() - t0:.1f} s)",
                flush=True,
            )
        runs: dict[str, list[dict]] = {"sbs_train": [], **{f"trl_{v}": [] for v in variants}}
        load_start = list(os.getloadavg())
        active = list(runs)
        for k in range(a.repeats):
            if k == 1 and a.prune:  # keep the TRL variants within --prune of the fastest one
                fastest = min(runs[n][0]["loop_cpu_s"] for n in active if n != "sbs_train")
                active = [
                    n for n in active if n == "sbs_train" or runs[n][0]["loop_cpu_s"] <= a.prune * fastest
                ]
            order = active if k % 2 == 0 else active[::-1]
            for name in order:
                spec = {**base, "side": "sbs" if name == "sbs_train" else "trl", "variant": name[4:] or None}
                r = launch(spec, tmp, f"{name}-{k}")
                runs[name].append(r)
                print(
                    f"repeat {k} {name:<17} loop {r['loop_s']:7.2f} s (cpu {r['loop_cpu_s']:6.2f} s)  "
                    f"total {r['total_s']:7.2f} s  "
                    f"steps {r['steps']}  peak RSS {r['peak_rss_mb']:.0f} MB  load {os.getloadavg()[0]:.1f}",
                    file=sys.stderr,
                    flush=True,
                )
        load_end = list(os.getloadavg())

    sides = {name: summarise(r, target_tokens, all_tokens, n_rows) for name, r in runs.items() if r}
    ok = {v for v in variants if check is None or check["trl"][v]["agree"]}
    # the fastest variant by the first repeat, where every variant ran back to back, on CPU time (a variant
    # pruned after it must not win by having run only while the box was quieter)
    best = min(ok or variants, key=lambda v: runs[f"trl_{v}"][0]["loop_cpu_s"])
    ours = sides["sbs_train"]
    for s in sides.values():
        s["ratio_vs_sbs_train_loop"] = s["loop_s"] / ours["loop_s"]
        s["ratio_vs_sbs_train_total"] = s["total_s"] / ours["total_s"]
        s["ratio_vs_sbs_train_cpu"] = s["loop_cpu_s"] / ours["loop_cpu_s"]
    result = {
        "data": source,
        "rows": n_rows,
        "sequences": 2 * n_rows,
        "target_tokens": target_tokens,
        "all_tokens": all_tokens,
        "config": {
            k: getattr(a, k)
            for k in ("d_model", "layers", "heads", "batch_size", "steps", "lr", "device", "bf16", "repeats")
        }
        | {"threads": threads, "parameters": params, "pack_len": base["pack_len"]},
        "cpu_count": os.cpu_count(),
        "load_average": {"start": load_start, "end": load_end},
        "step1_check": check,
        "sides": sides,
        "trl_best": best,
        "ratio": sides[f"trl_{best}"]["loop_s"] / ours["loop_s"],
        "ratio_total": sides[f"trl_{best}"]["total_s"] / ours["total_s"],
        "ratio_cpu": sides[f"trl_{best}"]["loop_cpu_s"] / ours["loop_cpu_s"],
        # each repeat's own ratio: its two runs ran back to back, under much the same load
        "ratio_per_repeat": [
            t["loop_s"] / o["loop_s"] for t, o in zip(runs[f"trl_{best}"], runs["sbs_train"])
        ],
        "wall_s": time.perf_counter() - started,
    }
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"\n{'side':<18} {'runs':>4} {'loop s':>7} {'cpu s':>6} {'total s':>7} {'target tok/s':>12} {'rows/s':>7} "
        f"{'peak RSS':>8} {'pad eff':>7} {'attn pairs':>10} {'LM-head pos':>11} {'TRL/sbs':>7}"
    )
    for name, s in sides.items():
        print(
            f"{name:<18} {s['runs']:4d} {s['loop_s']:7.2f} {s['loop_cpu_s']:6.2f} {s['total_s']:7.2f} {s['target_tokens_per_s']:12.0f} "
            f"{s['examples_per_s']:7.2f} {s['peak_rss_mb']:6.0f}MB {s['padding_efficiency']:7.1%} "
            f"{s['attention_pairs'] / 1e6:9.1f}M {s['lm_head_positions']:11d} {s['ratio_vs_sbs_train_loop']:7.2f}"
        )
    print(
        f"fastest correct TRL variant: {best}; TRL/sbs-train: loop wall {result['ratio']:.2f}, loop CPU time "
        f"{result['ratio_cpu']:.2f}, whole call {result['ratio_total']:.2f}; load {load_start[0]:.1f} -> "
        f"{load_end[0]:.1f}; took {result['wall_s']:.0f} s"
    )
    print("per-repeat ratios (loop wall): " + ", ".join(f"{x:.2f}" for x in result["ratio_per_repeat"]))
    print(f"ratio {result['ratio']:.2f}")
    return result


if __name__ == "__main__":
    main()
