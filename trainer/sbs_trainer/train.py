"""The training loop: AdamW + linear warm-up/decay, accumulation, clipping, DDP or FSDP, seq2seq or causal.

Reading order, top to bottom as `_run` calls it:
  1. `load_data`: the export's train/validation/test rows for the mode;
  2. `load_student` (model.py), LoRA adapters (lora.py), `encode_train`: tokenise once;
  3. `wrap`: DDP, FSDP (sharding.py) or torch.compile around the step module; AdamW and the schedule;
  4. `Checkpoints.restore` (checkpoints.py) when resuming;
  5. the loop: each optimizer step pulls world*grad_accum micro-batches from a deterministic
     `BatchStream` (`train_step`), validates every --eval-every steps with `Evaluator` (evaluation.py),
     keeping the best weights in OUT/best/;
  6. the end: test with the best weights, OUT/metrics.json, OUT/predictions.jsonl, OUT/curves.png.
The configuration and the process's place in the world (`TrainConfig`, `Env`) are in config.py.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from . import lora, sharding
from .batching import BatchStream, collate, count_tokens, encode_rows
from .causal import PACKINGS, CausalEncoded, collate_causal, encode_causal
from .checkpoints import Checkpoints, ResumeError, TrainState
from .config import ConfigError, Env, TrainConfig
from .data import (
    ExportError,
    Row,
    build_rows,
    check_columns,
    drop_hinted,
    fingerprint,
    read_manifest,
    read_split_rows,
)
from .evaluation import Evaluator
from .logs import CURVES_NAME, LOG_NAME, RunLog, check_report_to, draw_curves
from .metrics import sig4
from .model import Student, combine, load_student

__all__ = ["STRATEGIES", "ConfigError", "ResumeError", "TrainConfig", "run"]

STRATEGIES = ("ddp", "fsdp")


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


def _lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return f


# ------------------------------------------------------------------------------------------------ data


@dataclass
class Data:
    manifest: dict
    train: list[Row]
    validation: list[Row]
    test: list[Row]
    skipped: int  # train rows without the mode's targets
    hinted_dropped: int


def load_data(cfg: TrainConfig) -> Data:
    """Read the shards and keep, per split, the rows the mode can use."""
    manifest = read_manifest(cfg.data)
    check_columns(cfg.data, manifest, cfg.mode)
    raw_train = read_split_rows(cfg.data, manifest, "train")
    if cfg.train_ids:
        raw_train = keep_examples(raw_train, cfg.train_ids)
    hinted_dropped = 0
    if cfg.hinted == "drop":
        raw_train, hinted_dropped = drop_hinted(raw_train)
    train, skipped = build_rows(raw_train, cfg.mode, "train", training=True)
    if not train:
        raise ExportError(f"{cfg.data}: the export has no train rows")
    val, _ = build_rows(read_split_rows(cfg.data, manifest, "validation"), cfg.mode, "validation", False)
    test, _ = build_rows(read_split_rows(cfg.data, manifest, "test"), cfg.mode, "test", False)
    val = val[: cfg.max_eval_examples] if cfg.max_eval_examples else val
    return Data(manifest, train, val, test, skipped, hinted_dropped)


def keep_examples(raw: list[dict], ids_file: str) -> list[dict]:
    """The rows of the examples listed in `ids_file` (one example id per line); every id must exist."""
    path = Path(ids_file)
    try:
        wanted = {line.strip() for line in path.read_text().splitlines() if line.strip()}
    except (OSError, UnicodeDecodeError) as e:
        raise ExportError(f"--train-ids {path}: cannot read it ({e})") from e
    present = {r["example_id"] for r in raw}
    missing = sorted(wanted - present)
    if missing:
        raise ExportError(
            f"--train-ids {path}: {len(missing)} id(s) are not train examples of the export, e.g. {missing[0]!r}"
        )
    return [r for r in raw if r["example_id"] in wanted]


def tasks_of(mode: str) -> tuple[str, ...]:
    return ("label", "rationale") if mode == "sbs" else ("label",)


def encode_train(student: Student, rows: list[Row], cfg: TrainConfig):
    """Tokenise the train rows once: seq2seq (batching.Encoded) or causal (causal.CausalEncoded)."""
    if student.kind == "seq2seq":
        return encode_rows(rows, student.tokenizer, cfg.mode, cfg.max_input_len, cfg.max_target_len)
    assert student.prompt is not None
    try:
        return encode_causal(
            rows, student.tokenizer, student.prompt, tasks_of(cfg.mode), cfg.max_input_len, cfg.max_target_len
        )
    except ValueError as e:
        raise ConfigError(str(e)) from e


# ----------------------------------------------------------------------------------------------- model


def _flash_attention_available(device: torch.device) -> bool:
    return device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None


def resolve_packing(cfg: TrainConfig, device: torch.device) -> tuple[str, str | None]:
    """(packing, attention implementation) for a causal student: `flat` with flash-attention on CUDA,
    else `rows` (causal.py)."""
    if cfg.packing not in PACKINGS:
        raise ConfigError(f"--packing must be one of {', '.join(PACKINGS)}, not {cfg.packing!r}")
    flash = _flash_attention_available(device) and cfg.packing in ("auto", "flat")
    if cfg.packing != "auto":
        return cfg.packing, "flash_attention_2" if flash else None
    return ("flat", "flash_attention_2") if flash else ("rows", None)


def check_packing(student: Student, enc: CausalEncoded, packing: str, attn: str | None, env: Env) -> str:
    """The packed layout if it gives the same losses as one padded row per sequence on two rows, else `none`.

    Packing relies on the model's attention honouring restarting position ids; a family that ignores
    them would let sequences see each other. One forward of two rows, in eval mode, settles it.
    """
    if packing == "none" or attn == "flash_attention_2":
        return packing  # flash-attention reads restarting position ids as varlen sequences by design
    step = student.step_module()
    idx = list(range(min(2, len(enc))))
    was_training = student.model.training
    student.model.eval()
    with torch.no_grad(), env.autocast():
        got = [
            step(
                **{
                    k: v.to(env.device)
                    for k, v in collate_causal(enc, idx, student.tokenizer.pad_token_id, p).items()
                }
            )
            for p in (packing, "none")
        ]
    student.model.train(was_training)
    tol = 3e-2 if env.bf16 else 1e-3
    bad = {
        t: (float(got[0][t]), float(got[1][t]))
        for t in got[1]
        if not math.isclose(float(got[0][t]), float(got[1][t]), rel_tol=tol, abs_tol=tol)
    }
    if bad:
        env.log(
            f"note: --packing {packing} changes this model's losses ({bad}); its attention ignores restarting "
            "position ids, so each sequence gets its own padded row (--packing none)"
        )
        return "none"
    return packing


def wrap(student: Student, cfg: TrainConfig, env: Env) -> tuple[nn.Module, nn.Module | None]:
    """(step module, FSDP root or None): the module one micro-batch's forward goes through."""
    model = student.model
    step: nn.Module = student.step_module()
    if cfg.strategy == "fsdp":  # fully_shard moves each block to the device as it shards it
        blocks = sharding.shard(step, model, env.device, env.bf16)
        env.log(f"FSDP over {env.world} processes: sharded {', '.join(blocks) or 'no blocks'} and the root")
        return step, step
    model.to(env.device)
    if cfg.compile:
        step = torch.compile(step)
    if env.world > 1:
        # warm-started encoder-decoders have parts (e.g. BERT poolers) that take no part in the loss
        unused = model.config.model_type == "encoder-decoder"
        step = nn.parallel.DistributedDataParallel(
            step,
            device_ids=[env.device.index] if env.device.type == "cuda" else None,
            find_unused_parameters=unused,
        )
    return step, None


# --------------------------------------------------------------------------------------------- training


@dataclass
class StepStats:
    """One optimizer step's sums over its micro-batches (averaged over ranks by `all_reduce`)."""

    label_loss: float = 0.0
    rationale_loss: float = 0.0
    examples: int = 0
    tokens: int = 0

    def all_reduce(self, world: int) -> None:
        t = torch.tensor(
            [self.label_loss, self.rationale_loss, self.examples, self.tokens], dtype=torch.float64
        )
        dist.all_reduce(t)
        self.label_loss, self.rationale_loss = t[0].item() / world, t[1].item() / world
        self.examples, self.tokens = int(t[2]), int(t[3])


def accumulate_gradients(step_module: nn.Module, next_batch, cfg: TrainConfig, env: Env) -> StepStats:
    """Forward and backward over one optimizer step's --grad-accum micro-batches; their summed stats.

    `next_batch()` gives (batch on the device, rows, real tokens). Under DDP only the last micro-batch
    all-reduces its gradients; FSDP reduce-scatters each one, so a rank never holds a full gradient.
    """
    stats = StepStats()
    for micro in range(cfg.grad_accum):
        batch, rows, tokens = next_batch()
        accumulate = env.world > 1 and cfg.strategy != "fsdp" and micro < cfg.grad_accum - 1
        with step_module.no_sync() if accumulate else contextlib.nullcontext():
            with env.autocast():
                losses = step_module(**batch)
                loss = combine(losses, cfg.alpha) / cfg.grad_accum
            loss.backward()
        stats.label_loss += losses["label"].item() / cfg.grad_accum
        if "rationale" in losses:
            stats.rationale_loss += losses["rationale"].item() / cfg.grad_accum
        stats.examples += rows
        stats.tokens += tokens
    return stats


def run(cfg: TrainConfig) -> dict | None:
    """Train, evaluate and write OUT/metrics.json; returns the metrics (None when stopped by --stop-after)."""
    if cfg.strategy not in STRATEGIES:
        raise ConfigError(f"--strategy must be one of {', '.join(STRATEGIES)}, not {cfg.strategy!r}")
    if cfg.strategy == "fsdp" and cfg.compile:
        raise ConfigError("--compile is not supported with --strategy fsdp")
    if cfg.strategy == "fsdp" and cfg.lora_r:
        raise ConfigError(
            "--lora-r is not supported with --strategy fsdp: LoRA trains a small fraction of the weights, so "
            "use --strategy ddp (a 3-8B student's frozen weights fit one GPU; see 'Choosing a student' in the "
            "trainer README)"
        )
    if cfg.packing not in PACKINGS:
        raise ConfigError(f"--packing must be one of {', '.join(PACKINGS)}, not {cfg.packing!r}")
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


def _run(cfg: TrainConfig, rank: int, world: int, device: torch.device) -> dict | None:
    out = Path(cfg.output)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    env = Env(
        rank, world, device, cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    )

    # -- 1. data
    data = load_data(cfg)
    if data.skipped:
        env.log(f"note: {data.skipped} train rows lack a {cfg.mode} target and are skipped")

    # -- 2. student, adapters, tokens
    packing, attn = resolve_packing(cfg, device)
    student = load_student(cfg.model, cfg.seed, cfg.prompt_format, attn)
    if student.kind == "seq2seq" and cfg.packing != "auto":
        env.log(
            f"note: --packing {cfg.packing} applies to causal students; a seq2seq student batches as before"
        )
    if cfg.lora_r:
        try:
            student.peft = lora.apply(
                student.model,
                student.kind,
                lora.LoraOptions(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets),
            )
        except ValueError as e:
            raise ConfigError(str(e)) from e
    enc = encode_train(student, data.train, cfg)
    causal = isinstance(enc, CausalEncoded)
    stream = BatchStream(enc.lengths(), cfg.batch_size, cfg.seed, cfg.group_by_length)
    per_step = world * cfg.grad_accum
    max_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * stream.batches_per_epoch() / per_step))
    env.log(
        f"{len(data.train)} train rows, {len(data.validation)} validation, {len(data.test)} test; "
        f"{student.kind} student; {max_steps} steps on {world} x {device}"
    )

    # -- 3. placement, optimiser, schedule
    model, pad_id = student.model, student.tokenizer.pad_token_id
    if causal and cfg.strategy != "fsdp":  # (under FSDP the blocks reach the device as they are sharded)
        model.to(device)
        packing = check_packing(student, enc, packing, attn, env)

    def micro_batch(idx: list[int]) -> tuple[dict, int, int]:
        """A micro-batch on the device, its rows and its real token count."""
        if causal:
            b, n = collate_causal(enc, idx, pad_id, packing), enc.tokens(idx)
        else:
            b = collate(enc, idx, pad_id)
            n = count_tokens(b)
        return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in b.items()}, len(idx), n

    step_module, fsdp_root = wrap(student, cfg, env)
    trainable = [p for p in model.parameters() if p.requires_grad]
    params = {
        "total": sharding.full_numel(model),
        "trainable": sum(p.numel() for p in trainable),
        "per_rank": [sharding.local_numel(model)],
    }
    if world > 1:
        params["per_rank"] = [None] * world
        dist.all_gather_object(params["per_rank"], sharding.local_numel(model))
    # fused AdamW: one kernel for every parameter instead of a Python loop over them (5.8 -> 1.5 ms a step
    # for a 0.7M-parameter student on CPU; TRL's Trainer uses it too). FSDP's sharded DTensors keep the default.
    fused = cfg.strategy != "fsdp" and device.type in ("cpu", "cuda")
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg.warmup_steps, max_steps))
    ckpt = Checkpoints(out, cfg, env, student, optimizer, scheduler, stream, fingerprint(data.manifest))

    # -- 4. resume
    restored = ckpt.restore() if cfg.resume else None
    state = restored or TrainState()
    resumed = restored is not None
    if resumed:
        env.log(f"resumed from {ckpt.dir} at step {state.step}")
    elif rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    if rank == 0 and student.prompt is not None:
        student.prompt.save(out)
    run_log = (
        RunLog(out, state.step if resumed else None, cfg.report_to == "tensorboard") if rank == 0 else None
    )
    evaluator = Evaluator(student, cfg, env, fsdp_root)

    def validate() -> dict:
        """Evaluate validation at the current step; keep the weights if it is the best so far."""
        m, records = evaluator.evaluate(data.validation, "validation")
        state.history.append({"step": state.step, **m})
        env.log(f"step {state.step}: validation accuracy {sig4(m['accuracy'])} (n={m['n']})")
        if state.best is None or (m["accuracy"] or 0.0) > (state.best["accuracy"] or 0.0):
            state.best = {"step": state.step, **m, "records": records}
            ckpt.save_pretrained(out / "best")
        env.barrier()
        return m

    def finish_log() -> None:
        if run_log:
            run_log.close()
            draw_curves(out / LOG_NAME, out / CURVES_NAME)

    # -- 5. the loop
    save_every = cfg.save_every if cfg.save_every is not None else cfg.eval_every
    while state.step < max_steps:
        t0, c0 = time.perf_counter(), time.process_time()
        step_module.train()
        stats = accumulate_gradients(step_module, lambda: micro_batch(stream.take(world, rank)), cfg, env)
        grad_norm = torch.nn.utils.clip_grad_norm_(
            trainable, cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")
        )
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if world > 1:
            stats.all_reduce(world)
        step_s = time.perf_counter() - t0
        state.runtime_s += step_s
        state.cpu_s += time.process_time() - c0
        state.step += 1
        state.examples += stats.examples
        state.tokens += stats.tokens
        state.last = {"label": stats.label_loss}
        if cfg.mode == "sbs":
            state.last["rationale"] = stats.rationale_loss
            state.last["total"] = cfg.alpha * stats.label_loss + (1 - cfg.alpha) * stats.rationale_loss
        rec = {
            "step": state.step,
            "loss": state.last,
            "lr": scheduler.get_last_lr()[0],
            "grad_norm": sharding.as_float(grad_norm),
            "step_s": round(step_s, 5),  # wall time of the step: data, forward, backward, optimizer
        }
        if data.validation and (
            state.step == max_steps or (cfg.eval_every and state.step % cfg.eval_every == 0)
        ):
            rec["validation"] = {k: v for k, v in validate().items() if k in ("accuracy", "n")}
        if run_log:
            run_log.write(rec)
        if cfg.log_every and state.step % cfg.log_every == 0:
            rate = state.examples / max(state.runtime_s, 1e-9)
            losses = " ".join(f"{k} {sig4(v)}" for k, v in state.last.items())
            env.log(f"step {state.step}/{max_steps} loss: {losses}; lr {rec['lr']:.2e}; {rate:.4g} ex/s")
        if cfg.stop_after and state.step >= cfg.stop_after and state.step < max_steps:
            ckpt.save(state)
            finish_log()
            env.log(f"stopped after step {state.step} (--stop-after); continue with --resume")
            return None
        if save_every and state.step % save_every == 0 and state.step < max_steps:
            ckpt.save(state)

    # -- 6. the end: checkpoint, final weights, test with the best weights, metrics, curves
    if data.validation and not any(h["step"] == state.step for h in state.history):
        validate()  # a resumed run that had already taken its last step
    ckpt.save(state)
    ckpt.save_pretrained(out / "final")
    if student.peft is not None and rank == 0:
        lora.save_adapter(student.peft, out / "adapter")
    finish_log()
    best = state.best
    eval_model = None
    if best is not None and best["step"] != state.step:
        eval_model = ckpt.load_best(out / "best")
    test_m, test_records = evaluator.evaluate(data.test, "test", eval_model) if data.test else ({}, [])
    metrics = _metrics(cfg, env, data, student, enc, state, params, packing if causal else None, test_m)
    if rank == 0:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        with (out / "predictions.jsonl").open("w") as f:
            for r in (best["records"] if best else []) + test_records:
                f.write(json.dumps(r) + "\n")
    return metrics


def _metrics(
    cfg: TrainConfig,
    env: Env,
    data: Data,
    student: Student,
    enc,
    state: TrainState,
    params: dict,
    packing: str | None,
    test: dict,
) -> dict:
    """OUT/metrics.json: what was trained, how fast, and the validation and test accuracy."""
    runtime = state.runtime_s
    train = {
        "steps": state.step,
        "examples_seen": state.examples,
        "tokens_seen": state.tokens,
        "train_runtime_s": round(runtime, 3),
        "train_cpu_s": round(state.cpu_s, 3),  # this process's CPU time: steadier on a shared machine
        "examples_per_s": state.examples / runtime if runtime else None,
        "tokens_per_s": state.tokens / runtime if runtime else None,
        "final_loss": state.last,
        "rows": len(data.train),
        "rows_skipped": data.skipped,
        "rows_hinted_dropped": data.hinted_dropped,
        "rows_input_cut": enc.cut_rows,  # inputs shortened to --max-input-len (targets are never cut by it)
    }
    if env.device.type == "cuda":
        train["peak_memory_gb"] = torch.cuda.max_memory_allocated(env.device) / 2**30
    best = state.best
    return {
        "mode": cfg.mode,
        "alpha": cfg.alpha if cfg.mode == "sbs" else None,
        "task": data.manifest.get("task"),
        "model": cfg.model,
        "student": {
            "kind": student.kind,
            "prompt_format": student.prompt.kind if student.prompt else None,
            "packing": packing,
            "attention": getattr(student.model.config, "_attn_implementation", None),
            "lora": (
                {
                    "r": cfg.lora_r,
                    "alpha": cfg.lora_alpha if cfg.lora_alpha is not None else 2 * cfg.lora_r,
                    "dropout": cfg.lora_dropout,
                    "targets": cfg.lora_targets,
                    "modules": len(lora.adapted_modules(student.model)),
                }
                if cfg.lora_r
                else None
            ),
        },
        "world_size": env.world,
        "strategy": cfg.strategy,
        "parameters": params,  # per_rank: elements each process stores (a shard under FSDP)
        "device": str(env.device),
        "precision": "bf16" if env.bf16 else "fp32",
        "train": train,
        "validation": ({k: v for k, v in best.items() if k != "records"} if best else {}),
        "validation_history": state.history,
        "test": {**test, "checkpoint_step": best["step"] if best else state.step} if test else {},
    }
