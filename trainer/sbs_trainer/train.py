"""The training loop: one readable function, AdamW + linear warm-up/decay, accumulation, clipping, DDP or FSDP.

Reading order: `run` sets up data, model and optimiser, then loops over optimizer steps; each step
pulls world*grad_accum micro-batches from a deterministic `BatchStream`, evaluates on validation
every --eval-every steps (keeping the best checkpoint), and at the end evaluates test with the best
weights and writes OUT/metrics.json, OUT/predictions.jsonl and OUT/curves.png. What differs under
--strategy fsdp (sharding, sharded checkpoints, gathering the weights to save them) is in sharding.py.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from . import sharding
from .batching import BatchStream, collate, count_tokens, encode_rows, pad_inputs
from .data import (
    PREDICT_PREFIX,
    ExportError,
    Row,
    build_rows,
    check_columns,
    drop_hinted,
    read_manifest,
    read_split_rows,
)
from .logs import CURVES_NAME, LOG_NAME, RunLog, check_report_to, draw_curves
from .metrics import accuracy, is_arithmetic, is_correct
from .model import StudentStep, combine, load_student

STRATEGIES = ("ddp", "fsdp")
# Checkpoint fields that must match for --resume to continue the same run exactly.
_RESUME_KEYS = (
    "mode",
    "alpha",
    "seed",
    "batch_size",
    "grad_accum",
    "world_size",
    "group_by_length",
    "strategy",
)
_RESUME_DEFAULTS = {"strategy": "ddp"}  # checkpoints written before the field existed


class ResumeError(ValueError):
    """--resume was asked to continue a run with settings that would change its trajectory."""


class ConfigError(ValueError):
    """Options that cannot work together, or not in this environment."""


@dataclass
class TrainConfig:
    data: str
    model: str
    output: str
    mode: str = "sbs"
    alpha: float = 0.5
    max_steps: int | None = None
    epochs: float = 1.0
    batch_size: int = 8
    eval_batch_size: int | None = None
    grad_accum: int = 1
    lr: float = 5e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    max_input_len: int = 1024
    max_target_len: int = 256
    eval_every: int = 0
    max_eval_examples: int | None = None
    save_every: int | None = None
    log_every: int = 10
    seed: int = 42
    resume: bool = False
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 elsewhere
    compile: bool = False
    group_by_length: bool = True
    device: str = "auto"
    strategy: str = "ddp"  # ddp: a full replica per process; fsdp: parameters sharded over processes
    report_to: str = "none"  # none | tensorboard
    hinted: str = "keep"  # keep | drop: train rows whose teacher saw the gold answer (sbs-data rationalize)
    stop_after: int | None = None  # stop (checkpointed, as if pre-empted) after this many steps
    world_size: int = field(default=1, init=False)


# ---------------------------------------------------------------------------------------------- setup


def _setup_distributed(device: str, strategy: str) -> tuple[int, int, torch.device]:
    """(rank, world, device); under torchrun initialise NCCL on GPU, gloo on CPU.

    FSDP needs a process group even for one process; DDP with one process runs without one.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if strategy == "fsdp" and "LOCAL_RANK" not in os.environ:
        raise ConfigError(
            "--strategy fsdp runs under torchrun: torchrun --nproc-per-node N -m sbs_trainer ..."
        )
    if world > 1 or strategy == "fsdp":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if use_cuda:
            torch.cuda.set_device(local)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        return dist.get_rank(), world, torch.device(f"cuda:{local}" if use_cuda else "cpu")
    return 0, 1, torch.device("cuda" if use_cuda else "cpu")


def _log(rank: int, msg: str) -> None:
    if rank == 0:
        print(msg, flush=True)


def _lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return f


def _rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------ evaluation


@torch.no_grad()
def predict(
    model,
    tokenizer,
    rows: list[Row],
    prefix: str,
    cfg: TrainConfig,
    device,
    bf16: bool,
    rank: int,
    world: int,
    fsdp_root: torch.nn.Module | None = None,
) -> list[str]:
    """Greedy generations for `rows`, sharded over ranks (longest first) and gathered on every rank.

    Under FSDP every forward is a collective, so generation runs through the sharded root's forward,
    every rank runs the same number of batches (a rank out of rows repeats a row and drops the
    output), and `synced_gpus` keeps a rank whose batch has finished stepping until all have.
    """
    model.eval()
    ids = tokenizer([prefix + r.input for r in rows], truncation=True, max_length=cfg.max_input_len)[
        "input_ids"
    ]
    mine = sorted(range(len(rows)), key=lambda i: -len(ids[i]))[rank::world]
    bs = cfg.eval_batch_size or cfg.batch_size
    n_batches = math.ceil(math.ceil(len(rows) / world) / bs) if fsdp_root else math.ceil(len(mine) / bs)
    kw = {"max_new_tokens": cfg.max_target_len, "do_sample": False, "num_beams": 1}
    out: dict[int, str] = {}
    for b in range(n_batches):
        idx = mine[b * bs : (b + 1) * bs]
        x, m = pad_inputs([ids[i] for i in idx or [0]], tokenizer.pad_token_id)
        x, m = x.to(device), m.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            if fsdp_root is not None:
                gen = fsdp_root(x, m, generate={**kw, "synced_gpus": world > 1})
            else:
                gen = model.generate(input_ids=x, attention_mask=m, **kw)
        out.update(zip(idx, tokenizer.batch_decode(gen, skip_special_tokens=True)[: len(idx)], strict=True))
    if fsdp_root is not None:
        fsdp_root.reshard()  # the root keeps its gathered weights after a forward that has no backward
    if world > 1:
        parts: list[dict[int, str]] = [{} for _ in range(world)]
        dist.all_gather_object(parts, out)
        out = {k: v for p in parts for k, v in p.items()}
    return [out[i].strip() for i in range(len(rows))]


def evaluate(
    model,
    tokenizer,
    rows: list[Row],
    split: str,
    cfg: TrainConfig,
    device,
    bf16: bool,
    rank: int,
    world: int,
    fsdp_root: torch.nn.Module | None = None,
):
    """(metrics, prediction records) for one split, with task-aware comparison."""
    prefix = PREDICT_PREFIX if cfg.mode == "sbs" else ""
    preds = predict(model, tokenizer, rows, prefix, cfg, device, bf16, rank, world, fsdp_root)
    golds = [r.gold for r in rows]
    task = rows[0].task if rows else ""
    arith = is_arithmetic(task, golds)
    records = [
        {
            "split": split,
            "example_id": r.example_id,
            "input": r.input,
            "prediction": p,
            "gold": r.gold,
            "correct": is_correct(p, r.gold, arith),
        }
        for r, p in zip(rows, preds, strict=True)
    ]
    return accuracy(preds, golds, task), records


# --------------------------------------------------------------------------------------------- training


def run(cfg: TrainConfig) -> dict | None:
    """Train, evaluate and write OUT/metrics.json; returns the metrics (None when stopped by --stop-after)."""
    if cfg.strategy not in STRATEGIES:
        raise ConfigError(f"--strategy must be one of {', '.join(STRATEGIES)}, not {cfg.strategy!r}")
    if cfg.strategy == "fsdp" and cfg.compile:
        raise ConfigError("--compile is not supported with --strategy fsdp")
    check_report_to(cfg.report_to)
    owns_group = not dist.is_initialized()  # a caller that set up the process group keeps it
    rank, world, device = _setup_distributed(cfg.device, cfg.strategy)
    cfg.world_size = world
    ok = False
    try:
        metrics = _run(cfg, rank, world, device)
        ok = True
        return metrics
    finally:
        if owns_group and dist.is_initialized():
            _teardown_distributed(ok)


def _teardown_distributed(ok: bool) -> None:
    """Free the DDP wrapper (it sits in reference cycles) while the process group is alive, let every rank
    arrive, then destroy the group. Left to interpreter shutdown, gloo's objects were freed in an arbitrary
    order and a rank now and then died with "terminate called without an active exception" (SIGABRT) after
    finishing its work. After an error there is no barrier: the other ranks may never arrive."""
    gc.collect()
    if ok:
        dist.barrier()
    dist.destroy_process_group()
    gc.collect()


def _finish_swap(out: Path) -> None:
    """A save writes checkpoint.tmp/, then renames checkpoint/ to checkpoint.old/ and checkpoint.tmp/ to
    checkpoint/. Killed between the two renames, checkpoint/ is missing and checkpoint.tmp/ is complete."""
    if (
        not (out / "checkpoint").exists()
        and (out / "checkpoint.old").exists()
        and (out / "checkpoint.tmp").exists()
    ):
        (out / "checkpoint.tmp").rename(out / "checkpoint")


def _run(cfg: TrainConfig, rank: int, world: int, device: torch.device) -> dict | None:
    out = Path(cfg.output)
    ckpt_dir = out / "checkpoint"
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")

    # -- data: read shards, keep rows that have the mode's targets, tokenise once
    manifest = read_manifest(cfg.data)
    check_columns(cfg.data, manifest, cfg.mode)
    raw_train = read_split_rows(cfg.data, manifest, "train")
    hinted_dropped = 0
    if cfg.hinted == "drop":
        raw_train, hinted_dropped = drop_hinted(raw_train)
    train_rows, dropped = build_rows(raw_train, cfg.mode, "train", training=True)
    if not train_rows:
        raise ExportError(f"{cfg.data}: the export has no train rows")
    val_rows, _ = build_rows(read_split_rows(cfg.data, manifest, "validation"), cfg.mode, "validation", False)
    test_rows, _ = build_rows(read_split_rows(cfg.data, manifest, "test"), cfg.mode, "test", False)
    val_rows = val_rows[: cfg.max_eval_examples] if cfg.max_eval_examples else val_rows
    if dropped:
        _log(rank, f"note: {dropped} train rows lack a {cfg.mode} target and are skipped")

    model, tokenizer = load_student(cfg.model, cfg.seed)
    enc = encode_rows(train_rows, tokenizer, cfg.mode, cfg.max_input_len, cfg.max_target_len)
    stream = BatchStream(enc.lengths(), cfg.batch_size, cfg.seed, cfg.group_by_length)
    per_step = world * cfg.grad_accum
    max_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * stream.batches_per_epoch() / per_step))
    _log(
        rank,
        f"{len(train_rows)} train rows, {len(val_rows)} validation, {len(test_rows)} test; {max_steps} steps on {world} x {device}",
    )

    # -- model, optimiser, schedule
    fsdp = cfg.strategy == "fsdp"
    step_module: torch.nn.Module = StudentStep(model)
    if fsdp:  # fully_shard moves each block to the device as it shards it: no full copy on the GPU
        blocks = sharding.shard(step_module, model, device, bf16)
        _log(rank, f"FSDP over {world} processes: sharded {', '.join(blocks) or 'no blocks'} and the root")
    else:
        model.to(device)
        if cfg.compile:
            step_module = torch.compile(step_module)
        if world > 1:
            # warm-started encoder-decoders have parts (e.g. BERT poolers) that take no part in the loss
            unused = model.config.model_type == "encoder-decoder"
            step_module = torch.nn.parallel.DistributedDataParallel(
                step_module,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=unused,
            )
    fsdp_root = step_module if fsdp else None
    params = {"total": sharding.full_numel(model), "per_rank": [sharding.local_numel(model)]}
    if world > 1:
        params["per_rank"] = [None] * world
        dist.all_gather_object(params["per_rank"], sharding.local_numel(model))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg.warmup_steps, max_steps))
    state = {
        "step": 0,
        "examples": 0,
        "tokens": 0,
        "runtime_s": 0.0,
        "cpu_s": 0.0,
        "best": None,
        "history": [],
        "last": {},
    }

    if cfg.resume and rank == 0:
        _finish_swap(out)
    if cfg.resume and world > 1:
        dist.barrier()
    resumed = cfg.resume and (ckpt_dir / "state.pt").is_file()
    if resumed:
        ck = torch.load(ckpt_dir / "state.pt", map_location="cpu", weights_only=False)
        was = {**_RESUME_DEFAULTS, **ck["config"]}
        for k in _RESUME_KEYS:
            if was.get(k) != asdict(cfg).get(k):
                raise ResumeError(f"--resume: {k} was {was.get(k)!r}, now {asdict(cfg).get(k)!r}")
        if fsdp:
            sharding.load(model, optimizer, ckpt_dir / "sharded")
        else:
            model.load_state_dict(ck["model"])
            optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        stream.load_state(ck["stream"])
        state = ck["state"]
        _set_rng_state(torch.load(ckpt_dir / f"rng-rank{rank}.pt", weights_only=False))
        _log(rank, f"resumed from {ckpt_dir} at step {state['step']}")
    elif rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    run_log = (
        RunLog(out, state["step"] if resumed else None, cfg.report_to == "tensorboard") if rank == 0 else None
    )

    def save_pretrained(folder: Path) -> None:
        """A plain transformers folder; under FSDP the shards are gathered to rank 0 first."""
        weights = sharding.full_state_dict(model) if fsdp else None
        if rank == 0:
            model.save_pretrained(folder, state_dict=weights)
            tokenizer.save_pretrained(folder)

    def save_checkpoint() -> None:
        """Written into checkpoint.tmp/, then swapped in whole, so a kill mid-save keeps the last one."""
        tmp, old = out / "checkpoint.tmp", out / "checkpoint.old"
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        if world > 1:
            dist.barrier()
        torch.save(_rng_state(), tmp / f"rng-rank{rank}.pt")
        if fsdp:
            sharding.save(model, optimizer, tmp / "sharded")
        if rank == 0:
            torch.save(
                {
                    **({} if fsdp else {"model": model.state_dict(), "optimizer": optimizer.state_dict()}),
                    "scheduler": scheduler.state_dict(),
                    "stream": stream.state(),
                    "state": state,
                    "config": asdict(cfg),
                },
                tmp / "state.pt",
            )
        if world > 1:
            dist.barrier()
        if rank == 0:
            if ckpt_dir.exists():
                ckpt_dir.rename(old)
            tmp.rename(ckpt_dir)
            shutil.rmtree(old, ignore_errors=True)
        if world > 1:
            dist.barrier()

    def validate() -> dict:
        """Evaluate validation at the current step; keep the weights if it is the best so far."""
        m, records = evaluate(
            model, tokenizer, val_rows, "validation", cfg, device, bf16, rank, world, fsdp_root
        )
        state["history"].append({"step": state["step"], **m})
        _log(rank, f"step {state['step']}: validation accuracy {m['accuracy']} (n={m['n']})")
        best = state["best"]
        if best is None or (m["accuracy"] or 0.0) > (best["accuracy"] or 0.0):
            state["best"] = {"step": state["step"], **m, "records": records}
            save_pretrained(out / "best")
        if world > 1:
            dist.barrier()
        return m

    def finish_log() -> None:
        if run_log:
            run_log.close()
            draw_curves(out / LOG_NAME, out / CURVES_NAME)

    # -- the loop
    save_every = cfg.save_every if cfg.save_every is not None else cfg.eval_every
    while state["step"] < max_steps:
        t0, c0 = time.perf_counter(), time.process_time()
        step_module.train()
        sums = torch.zeros(4, dtype=torch.float64)  # label loss, rationale loss, examples, tokens
        for micro in range(cfg.grad_accum):
            idx = stream.take(world, rank)
            batch = {
                k: (v.to(device) if torch.is_tensor(v) else v)
                for k, v in collate(enc, idx, tokenizer.pad_token_id).items()
            }
            # DDP all-reduces only the last micro-batch's gradients; FSDP reduce-scatters each one, so a
            # rank never holds a full gradient
            accumulate = world > 1 and not fsdp and micro < cfg.grad_accum - 1
            with step_module.no_sync() if accumulate else contextlib.nullcontext():
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    losses = step_module(**batch)
                    loss = combine(losses, cfg.alpha) / cfg.grad_accum
                loss.backward()
            sums[0] += losses["label"].item() / cfg.grad_accum
            sums[1] += losses["rationale"].item() / cfg.grad_accum if "rationale" in losses else 0.0
            sums[2] += len(idx)
            sums[3] += count_tokens(batch)
        grad_norm = torch.nn.utils.clip_grad_norm_(
            model.parameters(), cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")
        )
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if world > 1:
            dist.all_reduce(sums)
            sums[:2] /= world
        step_s = time.perf_counter() - t0
        state["runtime_s"] += step_s
        state["cpu_s"] += time.process_time() - c0
        state["step"] += 1
        state["examples"] += int(sums[2])
        state["tokens"] += int(sums[3])
        last = {"label": sums[0].item()}
        if cfg.mode == "sbs":
            last["rationale"] = sums[1].item()
            last["total"] = cfg.alpha * last["label"] + (1 - cfg.alpha) * last["rationale"]
        state["last"] = last
        rec = {
            "step": state["step"],
            "loss": last,
            "lr": scheduler.get_last_lr()[0],
            "grad_norm": sharding.as_float(grad_norm),
            "step_s": round(step_s, 5),  # wall time of the step: data, forward, backward, optimizer
        }
        if val_rows and (
            state["step"] == max_steps or (cfg.eval_every and state["step"] % cfg.eval_every == 0)
        ):
            rec["validation"] = {k: v for k, v in validate().items() if k in ("accuracy", "n")}
        if run_log:
            run_log.write(rec)
        if cfg.log_every and state["step"] % cfg.log_every == 0:
            rate = state["examples"] / max(state["runtime_s"], 1e-9)
            _log(
                rank,
                f"step {state['step']}/{max_steps} loss {last} lr {rec['lr']:.2e} {rate:.1f} ex/s",
            )
        if cfg.stop_after and state["step"] >= cfg.stop_after and state["step"] < max_steps:
            save_checkpoint()
            finish_log()
            _log(rank, f"stopped after step {state['step']} (--stop-after); continue with --resume")
            return None
        if save_every and state["step"] % save_every == 0 and state["step"] < max_steps:
            save_checkpoint()

    # -- the end: checkpoint, final weights, test with the best weights, metrics, curves
    if val_rows and not any(h["step"] == state["step"] for h in state["history"]):
        validate()  # a resumed run that had already taken its last step
    save_checkpoint()
    save_pretrained(out / "final")
    finish_log()
    best = state["best"]
    eval_model = model
    if best is not None and best["step"] != state["step"]:
        if fsdp:  # the best weights go into the sharded model: no full copy per GPU
            sharding.load_pretrained(model, out / "best")
        else:
            eval_model = type(model).from_pretrained(out / "best").to(device)
    test_m, test_records = (
        evaluate(eval_model, tokenizer, test_rows, "test", cfg, device, bf16, rank, world, fsdp_root)
        if test_rows
        else ({}, [])
    )
    runtime = state["runtime_s"]
    train = {
        "steps": state["step"],
        "examples_seen": state["examples"],
        "tokens_seen": state["tokens"],
        "train_runtime_s": round(runtime, 3),
        "train_cpu_s": round(state["cpu_s"], 3),  # this process's CPU time: steadier on a shared machine
        "examples_per_s": state["examples"] / runtime if runtime else None,
        "tokens_per_s": state["tokens"] / runtime if runtime else None,
        "final_loss": state["last"],
        "rows": len(train_rows),
        "rows_skipped": dropped,
        "rows_hinted_dropped": hinted_dropped,
    }
    if device.type == "cuda":
        train["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    metrics = {
        "mode": cfg.mode,
        "alpha": cfg.alpha if cfg.mode == "sbs" else None,
        "task": manifest.get("task"),
        "model": cfg.model,
        "world_size": world,
        "strategy": cfg.strategy,
        "parameters": params,  # per_rank: elements each process stores (a shard under FSDP)
        "device": str(device),
        "precision": "bf16" if bf16 else "fp32",
        "train": train,
        "validation": ({k: v for k, v in best.items() if k != "records"} if best else {}),
        "validation_history": state["history"],
        "test": {**test_m, "checkpoint_step": best["step"] if best else state["step"]} if test_m else {},
    }
    if rank == 0:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        with (out / "predictions.jsonl").open("w") as f:
            for r in (best["records"] if best else []) + test_records:
                f.write(json.dumps(r) + "\n")
    return metrics
