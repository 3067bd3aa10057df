"""`torchrun --nproc-per-node 2` (gloo on CPU) trains the same model as one process with 2x accumulation."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from sbs_trainer.cli import config_from_args
from sbs_trainer.train import run

from .conftest import DIST_ARGS
from .helpers import train_args


def _log(d) -> list[dict]:
    return [json.loads(x) for x in (d / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("student", ["t5", "qwen2"])
def test_two_process_ddp_matches_one_process(torchrun_runs, tiny_model_dir, causal_dirs, tmp_path, student):
    ddp_out, one_out = torchrun_runs["ddp" if student == "t5" else "causal_ddp"], tmp_path / "one"
    # ddp, fsdp, fsdp resumed, causal, causal LoRA: only rank 0 reports
    assert torchrun_runs["stdout"].count('"steps": 4') == 5

    # one process, each step accumulating the two micro-batches the two ranks took
    model = tiny_model_dir if student == "t5" else causal_dirs["qwen2"]
    args = train_args(torchrun_runs["export"], model, one_out, *DIST_ARGS, "--grad-accum", "2")
    run(config_from_args(args))

    logs = [_log(d) for d in (ddp_out, one_out)]
    assert len(logs[0]) == len(logs[1]) == 4
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
    assert m[0]["train"]["examples_seen"] == m[1]["train"]["examples_seen"] == 16
    assert m[0]["train"]["tokens_seen"] == m[1]["train"]["tokens_seen"]
    assert m[0]["validation"]["n"] == 5 and m[0]["test"]["n"] == 3  # eval sharded over ranks, then gathered
    assert m[0]["parameters"]["per_rank"] == [m[0]["parameters"]["total"]] * 2  # a full replica each
    preds = [(d / "predictions.jsonl").read_text() for d in (ddp_out, one_out)]
    assert len(preds[0].splitlines()) == 8


def test_lora_under_ddp(torchrun_runs):
    out = torchrun_runs["causal_lora"]
    m = json.loads((out / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["student"]["lora"]["r"] == 4 and m["train"]["examples_seen"] == 16
    assert m["parameters"]["trainable"] < m["parameters"]["total"]
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert not any("lora" in k for k in load_file(out / "final" / "model.safetensors"))


def test_sweep_under_torchrun(torchrun_runs):
    """Both processes walk the same plan; rank 0 writes the sweep's files."""
    out = torchrun_runs["sweep"]
    assert torchrun_runs["stdout"].count("sweep: run ") == 2  # progress from rank 0 only
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 3 and (out / "summary.md").is_file()
    m = json.loads((out / "runs" / "sbs-f1.0-s0" / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["train"]["steps"] == 4
