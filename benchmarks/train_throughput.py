"""Training throughput of `sbs-train --mode sbs` vs the original Distilling Step-by-Step compute pattern.

Both sides train the same tiny T5 (random init from a config) on the same shards with the same batch
size, optimizer and schedule. The baseline re-implements the paper's code: random batches, each task's
batch padded to its own longest row, and two full forward passes per step
(`model(**pred).loss`, `model(**expl).loss`). `sbs-train` groups rows of similar length, encodes the
`predict:` and `explain:` inputs in one encoder call and applies the output layer only at real target
positions. Reported per torch thread setting (by default torch's default, as a user runs it, and 1
thread): examples/s and tokens/s on the wall clock over every step (non-pad encoder + target tokens),
the same without the first --warm-steps steps, examples per CPU-second (this process's CPU time, all
threads: steadier than wall time when other jobs share the cores), padding efficiency, the host-side
batch preparation per step, and the speed-ups (medians over interleaved repeats).

Data: SVAMP train with the paper's PaLM rationales when /work/shared/... (or --svamp-dir) is there,
synthetic SVAMP-like rows otherwise, or any export folder via --data. The tokenizer is word-level,
built from the data (ByT5 bytes would make rows ~7x longer than a real student's subwords).

    python benchmarks/train_throughput.py                                   # CPU, d_model 64, fp32, default + 1 thread
    python benchmarks/train_throughput.py --d-model 256 --bf16              # CPU with AMX
    python benchmarks/train_throughput.py --phases                          # where the time goes, per phase
    python benchmarks/train_throughput.py --device cuda --bf16 --d-model 768 --layers 12 --heads 12 --batch-size 32
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from sbs_trainer.batching import collate, count_tokens, encode_rows, epoch_batches, two_pass_batches
from sbs_trainer.data import build_rows, read_manifest, read_split_rows
from sbs_trainer.model import StudentStep, combine, two_pass_losses
from sbs_trainer.train import TrainConfig, _lr_lambda, run

SVAMP_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "sbs_original" / "datasets" / "svamp"


# ------------------------------------------------------------------------------------------------ data


def svamp_rows(svamp_dir: Path, n: int) -> list[dict]:
    """SVAMP train rows with the PaLM rationales the paper's repo ships (text before the next `Q:`)."""
    inputs = [
        json.loads(line) for line in (svamp_dir / "svamp_train.json").read_text().splitlines() if line.strip()
    ]
    rationales: list[str] = []
    for f in sorted(
        (svamp_dir / "llm").glob("train_CoT_*.json"), key=lambda p: int(p.stem.rsplit("_", 1)[1])
    ):
        rationales += json.loads(f.read_text())
    rows = []
    for i, (ex, r) in enumerate(zip(inputs, rationales, strict=False)):
        rationale = r.split("\n\nQ:")[0].strip()
        rows.append(_row(i, ex["input"], ex["label"], rationale))
    return rows[:n]


def synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    """SVAMP-like rows with SVAMP-like length spread, for machines without the shared data."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(2000)]
    rows = []
    for i in range(n):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        question = " ".join(rng.choices(words, k=rng.randint(12, 70))) + f" {a} and {b} ?"
        rationale = " ".join(rng.choices(words, k=rng.randint(8, 110))) + f" {a} + {b} = {a + b} ."
        rows.append(_row(i, question, f"( {a}.0 + {b}.0 )", rationale))
    return rows


def _row(i: int, text: str, label: str, rationale: str) -> dict:
    return {
        "example_id": f"train-{i}", "task": "svamp", "split": "train", "input": text, "label": label,
        "gold_label": label, "teacher_label": label, "rationale": rationale, "teacher": "palm", "sample_idx": 0,
        "choices": None,
    }  # fmt: skip


COLUMNS = list(_row(0, "", "", ""))  # the shard columns: a row's keys


def write_export(root: Path, rows: list[dict], shard_rows: int = 256) -> Path:
    """Shards + manifest in the sbs-data export format (train split only)."""
    (root / "train").mkdir(parents=True, exist_ok=True)
    shards = []
    for k, start in enumerate(range(0, len(rows), shard_rows)):
        rel = f"train/part-{k:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(rows[start : start + shard_rows]), root / rel)
        sha = hashlib.sha256((root / rel).read_bytes()).hexdigest()
        shards.append({"path": rel, "rows": len(rows[start : start + shard_rows]), "sha256": sha})
    manifest = {
        "format": "sbs-data-shards", "schema_version": 1, "toolkit_version": "bench", "source": "bench@1",
        "task": "svamp", "label_source": "gold", "file_format": "parquet", "columns": COLUMNS,
        "splits": {"train": {"rows": len(rows), "shards": shards}}, "lineage": [], "totals": {"rows": len(rows)},
    }  # fmt: skip
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def write_student(folder: Path, rows: list[dict], a: argparse.Namespace) -> Path:
    """A random T5 of the requested size plus a word-level tokenizer built from the data."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    transformers.utils.logging.disable_progress_bar()
    pre = pre_tokenizers.Whitespace()
    words: set[str] = {"predict", "explain", ":"}
    for r in rows:
        for text in (r["input"], r["label"], r["rationale"]):
            words.update(w for w, _ in pre.pre_tokenize_str(text))
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {w: i + 3 for i, w in enumerate(sorted(words))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre
    tk.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    cfg = T5Config(
        vocab_size=len(vocab), d_model=a.d_model, d_kv=a.d_model // a.heads, d_ff=a.d_ff or 4 * a.d_model,
        num_layers=a.layers, num_heads=a.heads, dropout_rate=0.1, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    T5ForConditionalGeneration(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


# ------------------------------------------------------------------------------------------- the runs


def padding_efficiency(enc, batches, stacked: bool) -> float:
    """Real tokens / computed tokens over the encoder and both decoders."""
    real = padded = 0
    for b in batches:
        if stacked:  # predict and explain rows share one encoder batch
            ins = [enc.inputs[t][i] for t in ("label", "rationale") for i in b]
            real += sum(map(len, ins))
            padded += len(ins) * max(map(len, ins))
        for t in ("label", "rationale"):
            groups = [enc.targets[t]] if stacked else [enc.inputs[t], enc.targets[t]]
            for seqs in groups:
                lens = [len(seqs[i]) for i in b]
                real += sum(lens)
                padded += len(lens) * max(lens)
    return real / padded


def run_baseline(data: Path, model_dir: Path, a: argparse.Namespace, device: torch.device) -> dict:
    """The original compute pattern: random batches, per-task padding, two full forward passes per step."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    torch.manual_seed(a.seed)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).to(device)
    rows, _ = build_rows(read_split_rows(data, read_manifest(data), "train"), "sbs", "train", training=True)
    enc = encode_rows(rows, tok, "sbs", 1024, 256)
    batches = epoch_batches(enc.lengths(), a.batch_size, a.seed, 0, group=False)
    steps = len(batches)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(0, steps))
    model.train()
    examples = tokens = 0
    runtime = cpu = 0.0
    step_s = []
    for idx in batches:
        t0, c0 = time.perf_counter(), time.process_time()
        two = {
            t: {k: v.to(device) for k, v in b.items()}
            for t, b in two_pass_batches(enc, idx, tok.pad_token_id).items()
        }
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=a.bf16):
            losses = two_pass_losses(model, two)
            loss = a.alpha * losses["label"] + (1 - a.alpha) * losses["rationale"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        _ = losses["label"].item(), losses["rationale"].item()  # the same host sync sbs-train does
        step_s.append(time.perf_counter() - t0)
        runtime += step_s[-1]
        cpu += time.process_time() - c0
        examples += len(idx)
        tokens += sum(count_tokens(b) for b in two.values())
    return {
        "examples_per_s": examples / runtime,
        "tokens_per_s": tokens / runtime,
        "train_runtime_s": runtime,
        "examples_per_cpu_s": examples / cpu,
        "steps": steps,
        "step_s": step_s,
        "step_examples": [len(idx) for idx in batches],
        **(
            {"peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30}
            if device.type == "cuda"
            else {}
        ),
        "padding_efficiency": padding_efficiency(enc, batches, stacked=False),
        "final_loss": {"label": losses["label"].item(), "rationale": losses["rationale"].item()},
    }


def run_sbs_train(data: Path, model_dir: Path, out: Path, a: argparse.Namespace) -> dict:
    """`sbs-train --mode sbs` itself (in-process), one epoch, no evaluation split."""
    cfg = TrainConfig(
        data=str(data), model=str(model_dir), output=str(out), mode="sbs", alpha=a.alpha, epochs=1.0,
        batch_size=a.batch_size, lr=a.lr, seed=a.seed, log_every=0, device=a.device,
        precision="bf16" if a.bf16 else "fp32", compile=a.compile,
    )  # fmt: skip
    t0 = time.perf_counter()
    t = run(cfg)["train"]
    total_s = time.perf_counter() - t0
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    keep = ("examples_per_s", "tokens_per_s", "train_runtime_s", "steps", "final_loss")
    return (
        {k: t[k] for k in keep}
        | {"examples_per_cpu_s": t["examples_seen"] / t["train_cpu_s"], "run_total_s": total_s}
        | {"step_s": [r["step_s"] for r in log]}  # main() adds step_examples: it knows the batches
        | ({"peak_memory_gb": t["peak_memory_gb"]} if "peak_memory_gb" in t else {})
    )


def warm_rate(run: dict, skip: int) -> float:
    """Examples per wall second without the first `skip` steps (allocator and kernel warm-up)."""
    return sum(run["step_examples"][skip:]) / sum(run["step_s"][skip:])


def host_prep_ms(enc, batch_size: int, seed: int, pad_id: int) -> dict:
    """Per-step host work outside the model, in ms of CPU: building the padded tensors (and counting
    tokens) of one epoch's batches, sbs-train's stacked batches vs the baseline's per-task ones."""
    grouped = epoch_batches(enc.lengths(), batch_size, seed, 0, True)
    random_ = epoch_batches(enc.lengths(), batch_size, seed, 0, False)
    c0 = time.process_time()
    for _ in range(3):
        for idx in grouped:
            count_tokens(collate(enc, idx, pad_id))
    ours = (time.process_time() - c0) / 3 / len(grouped)
    c0 = time.process_time()
    for _ in range(3):
        for idx in random_:
            sum(count_tokens(b) for b in two_pass_batches(enc, idx, pad_id).values())
    base = (time.process_time() - c0) / 3 / len(random_)
    c0 = time.process_time()
    epoch_batches(enc.lengths(), batch_size, seed, 1, True)
    return {
        "sbs_train": ours * 1e3,
        "baseline": base * 1e3,
        "grouping_per_epoch": (time.process_time() - c0) * 1e3,
    }


PHASES = ("prep", "forward", "backward", "optimizer", "bookkeeping")


def interleaved_phases(model_dir: Path, enc, a: argparse.Namespace, threads: dict[int, int]) -> dict:
    """Where the wall-clock time goes, baseline vs sbs-train, per thread setting.

    One model copy per (side, thread setting), all from the same init; every step index runs each copy
    once, in a shuffled order, so all of them see the same load from other jobs (full runs one after the
    other do not). Each step is timed by phase: prep (padded tensors from token ids), forward, backward,
    optimizer (clipping, AdamW, schedule), bookkeeping (the loss readouts and token counts).
    """
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    pad_id = AutoTokenizer.from_pretrained(model_dir).pad_token_id
    batches = {
        "baseline": epoch_batches(enc.lengths(), a.batch_size, a.seed, 0, group=False),
        "sbs_train": epoch_batches(enc.lengths(), a.batch_size, a.seed, 0, group=True),
    }
    sides = {}
    for t in threads:
        for name in batches:
            torch.manual_seed(a.seed)
            model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).train()
            opt = torch.optim.AdamW(model.parameters(), lr=a.lr)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(0, len(batches[name])))
            sides[(t, name)] = {"model": model, "step": StudentStep(model), "opt": opt, "sched": sched,
                                "ms": {k: [] for k in PHASES}, "examples": 0}  # fmt: skip
    order, rng = list(sides), random.Random(a.seed)
    for i in range(min(len(b) for b in batches.values())):
        rng.shuffle(order)
        for t, name in order:
            torch.set_num_threads(threads[t])
            s, idx = sides[(t, name)], batches[name][i]
            clock = [time.perf_counter()]
            if name == "baseline":
                batch = two_pass_batches(enc, idx, pad_id)
                clock.append(time.perf_counter())
                losses = two_pass_losses(s["model"], batch)
            else:
                batch = collate(enc, idx, pad_id)
                clock.append(time.perf_counter())
                losses = s["step"](**batch)
            loss = combine(losses, a.alpha)
            clock.append(time.perf_counter())
            loss.backward()
            clock.append(time.perf_counter())
            torch.nn.utils.clip_grad_norm_(s["model"].parameters(), 1.0)
            s["opt"].step()
            s["sched"].step()
            s["opt"].zero_grad(set_to_none=True)
            clock.append(time.perf_counter())
            _ = losses["label"].item(), losses["rationale"].item()
            _ = count_tokens(batch) if name == "sbs_train" else sum(count_tokens(b) for b in batch.values())
            clock.append(time.perf_counter())
            for k, t0, t1 in zip(PHASES, clock, clock[1:]):
                s["ms"][k].append((t1 - t0) * 1e3)
            s["examples"] += len(idx)
    out: dict = {}
    for (t, name), s in sides.items():
        total = sum(sum(v) for v in s["ms"].values())
        out.setdefault(f"{threads[t]} thread(s)", {})[name] = {
            "examples_per_s": s["examples"] / total * 1e3,
            "ms_per_step": {k: statistics.mean(v) for k, v in s["ms"].items()},
            "first_step_ms": sum(v[0] for v in s["ms"].values()),
            "median_step_ms": statistics.median(map(sum, zip(*s["ms"].values()))),
        }
    for r in out.values():
        r["speedup"] = r["sbs_train"]["examples_per_s"] / r["baseline"]["examples_per_s"]
    return out


def summarise(base: list[dict], ours: list[dict], warm_steps: int, base_eff: float, ours_eff: float) -> dict:
    """Medians of one thread setting's repeats, and the speed-ups by each way of counting time."""

    def side(runs: list[dict], eff: float) -> dict:
        med = {
            k: statistics.median(r[k] for r in runs)
            for k in ("examples_per_s", "tokens_per_s", "examples_per_cpu_s")
        }
        return {
            **med,
            "examples_per_s_warm": statistics.median(warm_rate(r, warm_steps) for r in runs),
            "first_steps_s": statistics.median(sum(r["step_s"][:warm_steps]) for r in runs),
            "padding_efficiency": eff,
            "runs_examples_per_s": [r["examples_per_s"] for r in runs],
            **(
                {"peak_memory_gb": max(r["peak_memory_gb"] for r in runs)}
                if "peak_memory_gb" in runs[0]
                else {}
            ),
        }

    out = {"baseline": side(base, base_eff), "sbs_train": side(ours, ours_eff)}
    for key in ("examples_per_s", "examples_per_s_warm", "examples_per_cpu_s"):
        out[f"speedup_{key}"] = out["sbs_train"][key] / out["baseline"][key]
    # each repeat's own ratios: its baseline and sbs-train runs ran back to back, under much the same load
    out["speedup_per_repeat_wall"] = [o["examples_per_s"] / b["examples_per_s"] for b, o in zip(base, ours)]
    out["speedup_per_repeat_cpu"] = [
        o["examples_per_cpu_s"] / b["examples_per_cpu_s"] for b, o in zip(base, ours)
    ]
    out["sbs_train_run_total_s"] = statistics.median(r["run_total_s"] for r in ours)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="an existing sbs-data export (default: SVAMP or synthetic rows)")
    p.add_argument("--svamp-dir", type=Path, default=SVAMP_DIR)
    p.add_argument("--rows", type=int, default=700, help="train rows (one epoch is timed)")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--d-ff", type=int, default=None, help="default 4*d_model")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--repeats", type=int, default=3, help="interleaved baseline/sbs-train runs; medians reported"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (both sides)")
    p.add_argument("--compile", action="store_true", help="torch.compile in sbs-train (slow on CPU)")
    p.add_argument(
        "--threads", type=int, nargs="+", default=[0, 1],
        help="torch CPU thread settings to measure, interleaved (0: torch's default, as a user runs it)",
    )  # fmt: skip
    p.add_argument("--warm-steps", type=int, default=5, help="steps left out of the *_warm rates")
    p.add_argument(
        "--phases", action="store_true", help="instead: the interleaved per-phase timing (interleaved_phases)"
    )
    p.add_argument("--json", type=Path, help="also write the result here")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    default_threads = torch.get_num_threads()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if a.data:
            data = a.data
            rows = read_split_rows(data, read_manifest(data), "train")
            source = str(a.data)
        elif (a.svamp_dir / "svamp_train.json").is_file():
            rows = svamp_rows(a.svamp_dir, a.rows)
            data, source = write_export(tmp / "export", rows), "svamp train + PaLM rationales"
        else:
            rows = synthetic_rows(a.rows)
            data, source = write_export(tmp / "export", rows), "synthetic svamp-like"
        model_dir = write_student(tmp / "student", rows, a)

        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_dir)
        enc_rows, _ = build_rows(
            read_split_rows(data, read_manifest(data), "train"), "sbs", "train", training=True
        )
        enc = encode_rows(enc_rows, tok, "sbs", 1024, 256)
        grouped = epoch_batches(enc.lengths(), a.batch_size, a.seed, 0, True)
        grouped_eff = padding_efficiency(enc, grouped, stacked=True)
        if a.phases:
            settings = {t: t or default_threads for t in a.threads}
            result = {"config": vars(a) | {"json": None, "data": None, "svamp_dir": None}, "cpu_count": os.cpu_count(),
                      "load_average_start": list(os.getloadavg())}  # fmt: skip
            result["phases"] = interleaved_phases(model_dir, enc, a, settings)
            result["load_average_end"] = list(os.getloadavg())
            print(json.dumps(result, indent=2))
            if a.json:
                a.json.write_text(json.dumps(result, indent=2) + "\n")
            return result

        settings = (
            {t: t or default_threads for t in a.threads} if device.type == "cpu" else {0: default_threads}
        )
        runs: dict[int, tuple[list, list]] = {t: ([], []) for t in settings}
        load_start = list(os.getloadavg())
        for k in range(a.repeats):
            for t, n in settings.items():
                torch.set_num_threads(n)
                base, ours = runs[t]

                # rotated: odd repeats run sbs-train first, so neither side always meets a cold (or warm) box
                for side in ("baseline", "sbs_train") if k % 2 == 0 else ("sbs_train", "baseline"):
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)
                    if side == "baseline":
                        base.append(run_baseline(data, model_dir, a, device))
                        continue
                    ours.append(run_sbs_train(data, model_dir, tmp / f"out{k}-{t}", a))
                    ours[-1]["step_examples"] = [len(b) for b in grouped][: len(ours[-1]["step_s"])]
                print(
                    f"repeat {k}, {n} thread(s): baseline {base[-1]['examples_per_s']:.1f} ex/s "
                    f"({base[-1]['examples_per_cpu_s']:.1f}/cpu-s), sbs-train {ours[-1]['examples_per_s']:.1f} ex/s "
                    f"({ours[-1]['examples_per_cpu_s']:.1f}/cpu-s), load {os.getloadavg()[0]:.1f}",
                    file=sys.stderr,
                )
        torch.set_num_threads(default_threads)
        prep = host_prep_ms(enc, a.batch_size, a.seed, tok.pad_token_id)

    result = {
        "data": source,
        "rows": len(rows),
        "config": {k: getattr(a, k) for k in ("d_model", "layers", "heads", "batch_size", "device", "bf16")},
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu_count": os.cpu_count(),
        "by_threads": {
            f"{n}{' (default)' if t == 0 else ''}": summarise(
                *runs[t], a.warm_steps, runs[t][0][0]["padding_efficiency"], grouped_eff
            )
            for t, n in settings.items()
        },
        "host_prep_ms_per_step": prep,
        "load_average": {"start": load_start, "end": list(os.getloadavg())},
    }
    print(json.dumps(result, indent=2))
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
