"""--strategy fsdp (per-parameter `fully_shard`, gloo on CPU, 2 processes) against DDP on the same seed and data:
same losses, half the parameters per rank, exact resume from a sharded checkpoint, and plain
`save_pretrained` folders. The runs come from the one torchrun launch of the `torchrun_runs` fixture."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from sbs_trainer.cli import main
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from .helpers import train_args


def _log(d) -> list[dict]:
    return [json.loads(x) for x in (d / "train_log.jsonl").read_text().splitlines()]


def _metrics(d) -> dict:
    return json.loads((d / "metrics.json").read_text())


def test_fsdp_losses_match_ddp(torchrun_runs):
    fsdp, ddp = _log(torchrun_runs["fsdp"]), _log(torchrun_runs["ddp"])
    assert [r["step"] for r in fsdp] == [1, 2, 3, 4]
    for a, b in zip(fsdp, ddp, strict=True):
        for task in ("label", "rationale"):
            assert a["loss"][task] == pytest.approx(b["loss"][task], abs=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)  # the clipped norm of sharded grads
        assert a["lr"] == b["lr"]
    m, m_ddp = _metrics(torchrun_runs["fsdp"]), _metrics(torchrun_runs["ddp"])
    assert m["strategy"] == "fsdp" and m_ddp["strategy"] == "ddp" and m["world_size"] == 2
    assert m["train"]["examples_seen"] == m_ddp["train"]["examples_seen"] == 16
    assert m["train"]["tokens_seen"] == m_ddp["train"]["tokens_seen"]


def test_each_rank_holds_half_the_parameters(torchrun_runs):
    p = _metrics(torchrun_runs["fsdp"])["parameters"]
    assert len(p["per_rank"]) == 2 and sum(p["per_rank"]) == p["total"]  # every element stored once
    for n in p["per_rank"]:
        assert abs(n - p["total"] / 2) < 0.02 * p["total"]
    # the sharded checkpoint holds no full copy: weights and AdamW state live in per-rank files
    ck = torchrun_runs["fsdp"] / "checkpoint"
    assert "model" not in torch.load(ck / "state.pt", weights_only=False)
    assert len(list((ck / "sharded").glob("*.distcp"))) == 2


def test_fsdp_resume_equals_uninterrupted(torchrun_runs):
    full, resumed = torchrun_runs["fsdp"], torchrun_runs["fsdp_resumed"]
    assert "resumed from" in torchrun_runs["stdout"]
    assert [{**r, "step_s": 0} for r in _log(resumed)] == [{**r, "step_s": 0} for r in _log(full)]
    a, b = load_file(full / "final" / "model.safetensors"), load_file(resumed / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    m = _metrics(resumed)
    assert [h["step"] for h in m["validation_history"]] == [2, 4]
    assert m["train"]["examples_seen"] == _metrics(full)["train"]["examples_seen"]


def test_saved_folders_load_with_from_pretrained(torchrun_runs):
    """best/ and final/ are ordinary transformers folders with DDP's keys (tied weights saved once)."""
    ref = load_file(torchrun_runs["ddp"] / "final" / "model.safetensors")
    got = load_file(torchrun_runs["fsdp"] / "final" / "model.safetensors")
    assert got.keys() == ref.keys()
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], atol=1e-5, rtol=1e-4)
    final = AutoModelForSeq2SeqLM.from_pretrained(torchrun_runs["fsdp"] / "final").state_dict()
    assert all(torch.equal(final[k], got[k]) for k in got)
    assert torch.equal(final["lm_head.weight"], final["shared.weight"])  # still tied after loading
    best = AutoModelForSeq2SeqLM.from_pretrained(torchrun_runs["fsdp"] / "best")
    assert best.config.model_type == "t5"


def test_fsdp_evaluation_is_sharded_and_gathered(torchrun_runs):
    """Test predictions (made by the sharded model, the best weights loaded back into it, ranks running
    unequal batches in lockstep) equal a plain generate() of the saved best/ folder."""
    out = torchrun_runs["fsdp"]
    m = _metrics(out)
    assert m["validation"]["n"] == 5 and m["test"]["n"] == 3
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["split"] for p in preds] == ["validation"] * 5 + ["test"] * 3
    model = AutoModelForSeq2SeqLM.from_pretrained(out / "best").eval()
    tok = AutoTokenizer.from_pretrained(out / "best")
    for p in preds[5:]:
        x = tok(["predict: " + p["input"]], return_tensors="pt")
        with torch.no_grad():
            gen = model.generate(**x, max_new_tokens=12, do_sample=False, num_beams=1)
        assert tok.decode(gen[0], skip_special_tokens=True).strip() == p["prediction"]
    assert m["test"]["checkpoint_step"] == m["validation"]["step"]


def test_fsdp_needs_torchrun(export_dir, tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    args = train_args(export_dir, tiny_model_dir, tmp_path / "out", "--max-steps", "1", "--strategy", "fsdp")
    assert main(args) == 2
    assert "torchrun" in capsys.readouterr().err
