"""`torchrun --nproc_per_node 2` (gloo on CPU) trains the same model as one process with 2x accumulation."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file
from sbs_trainer.cli import config_from_args
from sbs_trainer.train import run

from .helpers import train_args


def test_two_process_ddp_matches_one_process(export_dir, tiny_model_dir, tmp_path):
    extra = ["--max-steps", "3", "--batch-size", "2", "--eval-every", "2", "--max-target-len", "12"]
    ddp_out, one_out = tmp_path / "ddp", tmp_path / "one"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "sbs_trainer",
    ]
    proc = subprocess.run(
        cmd + train_args(export_dir, tiny_model_dir, ddp_out, *extra),
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('"steps": 3') == 1  # only rank 0 reports

    # one process, each step accumulating the two micro-batches the two ranks took
    run(config_from_args(train_args(export_dir, tiny_model_dir, one_out, *extra, "--grad-accum", "2")))

    logs = [
        [json.loads(x) for x in (d / "train_log.jsonl").read_text().splitlines()] for d in (ddp_out, one_out)
    ]
    assert len(logs[0]) == len(logs[1]) == 3
    for a, b in zip(*logs, strict=True):
        for task in ("label", "rationale"):
            assert abs(a["loss"][task] - b["loss"][task]) < 1e-5
        assert (
            abs(a["grad_norm"] - b["grad_norm"]) < 1e-5 * b["grad_norm"]
        )  # norm of the rank-averaged gradient
    # AdamW's first moment is a running mean of the (averaged) gradients: it must agree too
    opt = [
        torch.load(d / "checkpoint" / "state.pt", weights_only=False)["optimizer"]["state"]
        for d in (ddp_out, one_out)
    ]
    for k in opt[1]:
        torch.testing.assert_close(opt[0][k]["exp_avg"], opt[1][k]["exp_avg"], atol=1e-7, rtol=1e-4)
    w = [load_file(d / "final" / "model.safetensors") for d in (ddp_out, one_out)]
    for k in w[1]:
        torch.testing.assert_close(w[0][k], w[1][k], atol=1e-5, rtol=1e-4)

    m = [json.loads((d / "metrics.json").read_text()) for d in (ddp_out, one_out)]
    assert m[0]["world_size"] == 2 and m[1]["world_size"] == 1
    assert m[0]["train"]["examples_seen"] == m[1]["train"]["examples_seen"] == 12
    assert m[0]["train"]["tokens_seen"] == m[1]["train"]["tokens_seen"]
    assert m[0]["validation"]["n"] == m[0]["test"]["n"] == 4  # eval sharded over ranks, then gathered
    preds = [(d / "predictions.jsonl").read_text() for d in (ddp_out, one_out)]
    assert len(preds[0].splitlines()) == 8
