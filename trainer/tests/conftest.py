"""Fixtures for the trainer tests; torch runs on one thread (with other processes busy on the 2 cores,
2-thread runs were 2-11x slower)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .helpers import svamp_rows, train_args, write_export

torch.set_num_threads(1)


@pytest.fixture
def export_dir(tmp_path: Path) -> Path:
    """12 train rows (2 teacher samples each of 6 examples), 4 validation, 4 test, in several shards."""
    return write_export(
        tmp_path / "export",
        {
            "train": svamp_rows(6, "train", seed=1, samples=2),
            "validation": svamp_rows(4, "validation", seed=2),
            "test": svamp_rows(4, "test", seed=3),
        },
    )


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random T5 (d_model 32, no dropout) + ByT5 tokenizer saved with save_pretrained."""
    from sbs_trainer.tiny import write_tiny_t5

    return write_tiny_t5(tmp_path_factory.mktemp("tiny") / "t5", seed=0, d_model=32, heads=2, dropout=0.0)


# One configuration for every multi-process run: 4 optimizer steps of 2 ranks x batch 2 cross an epoch
# boundary (12 rows); 5 validation rows leave the ranks with unequal evaluation batches (eval batch 2).
DIST_ARGS = ("--max-steps", "4", "--batch-size", "2", "--eval-batch-size", "2", "--eval-every", "2",
             "--max-target-len", "12")  # fmt: skip


@pytest.fixture(scope="session")
def torchrun_runs(tmp_path_factory, tiny_model_dir, causal_dirs) -> dict:
    """One `torchrun --nproc-per-node 2` launch (gloo) that trains, in order: DDP; FSDP; FSDP stopped after
    step 2; that FSDP run resumed; a causal (Qwen2) student under DDP; the same with LoRA adapters; a sweep
    (standard and sbs, one fraction, one seed).
    Returns the export, the output folders and the launch's stdout."""
    root = tmp_path_factory.mktemp("torchrun")
    export = write_export(
        root / "export",
        {
            "train": svamp_rows(6, "train", seed=1, samples=2),
            "validation": svamp_rows(5, "validation", seed=2),
            "test": svamp_rows(3, "test", seed=3),
        },
    )
    dirs = {
        name: root / name for name in ("ddp", "fsdp", "fsdp_resumed", "causal_ddp", "causal_lora", "sweep")
    }
    fsdp = (*DIST_ARGS, "--strategy", "fsdp")
    sweep_args = train_args(export, tiny_model_dir, dirs["sweep"], *DIST_ARGS)
    del sweep_args[sweep_args.index("--seed") : sweep_args.index("--seed") + 2]  # a sweep takes --seeds
    runs = [
        train_args(export, tiny_model_dir, dirs["ddp"], *DIST_ARGS),
        train_args(export, tiny_model_dir, dirs["fsdp"], *fsdp),
        train_args(export, tiny_model_dir, dirs["fsdp_resumed"], *fsdp, "--stop-after", "2"),
        train_args(export, tiny_model_dir, dirs["fsdp_resumed"], *fsdp, "--resume"),
        train_args(export, causal_dirs["qwen2"], dirs["causal_ddp"], *DIST_ARGS),
        train_args(export, causal_dirs["qwen2"], dirs["causal_lora"], *DIST_ARGS, "--lora-r", "4"),
        ["sweep", *sweep_args, "--modes", "standard,sbs", "--fractions", "1.0", "--seeds", "0"],
    ]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(Path(__file__).with_name("torchrun_driver.py")), json.dumps(runs)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return {"export": export, **dirs, "stdout": proc.stdout}


@pytest.fixture(scope="session")
def causal_dirs(tmp_path_factory) -> dict[str, Path]:
    """Tiny random Llama, Qwen2 (chat template, no pad token) and GPT-2 (no pad token) students, saved."""
    from sbs_trainer.tiny import CAUSAL_ARCHES, write_tiny

    root = tmp_path_factory.mktemp("causal")
    return {arch: write_tiny(root / arch, arch=arch, seed=0, d_model=32, heads=2) for arch in CAUSAL_ARCHES}
