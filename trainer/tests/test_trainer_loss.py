"""The one-encoder-call sbs step (output layer at real target positions only) computes exactly the paper's
two-pass loss (values and gradients)."""

from __future__ import annotations

from unittest.mock import patch

import pytest
import torch
from sbs_trainer import model as model_module
from sbs_trainer.batching import Encoded, collate, encode_rows, two_pass_batches
from sbs_trainer.data import Row
from sbs_trainer.model import StudentStep, combine, output_layer, two_pass_losses
from sbs_trainer.tiny import tiny_t5
from transformers import BartConfig, BartForConditionalGeneration


def _t5():
    torch.manual_seed(0)
    return tiny_t5(d_model=32, heads=2, dropout=0.0)


def _encoded(tok) -> Encoded:
    rows = [
        Row(
            str(i),
            "svamp",
            "x " * (3 + 5 * i),
            None,
            {"label": f"( {i} + 1 )" * (1 + i % 2), "rationale": "because " * (1 + 2 * i)},
        )
        for i in range(4)
    ]
    return encode_rows(rows, tok, "sbs", 128, 64)


def _grads(model) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("alpha", [0.5, 0.2])
def test_one_encoder_pass_equals_two_passes(alpha):
    model, tok = _t5()
    enc = _encoded(tok)
    idx = [0, 1, 2, 3]
    ours = StudentStep(model)(**collate(enc, idx, tok.pad_token_id))
    ref = two_pass_losses(model, two_pass_batches(enc, idx, tok.pad_token_id))
    for task in ("label", "rationale"):
        assert ours[task].item() == pytest.approx(ref[task].item(), abs=1e-6)
    # alpha weighting, checked against the direct two-pass computation, gradients included
    combine(ours, alpha).backward()
    g_ours = _grads(model)
    model.zero_grad()
    (alpha * ref["label"] + (1 - alpha) * ref["rationale"]).backward()
    for a, b in zip(g_ours, _grads(model), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert combine(ours, alpha).item() == pytest.approx(
        alpha * ours["label"].item() + (1 - alpha) * ours["rationale"].item()
    )


def test_fallback_without_mirrored_output_layer_equals_two_passes():
    """Families whose output layer is not mirrored run the model's full forward: same losses."""
    model, tok = _t5()
    enc = _encoded(tok)
    assert output_layer(model) is not None
    with patch.object(model_module, "output_layer", lambda m: None):
        ours = StudentStep(model)(**collate(enc, [2, 0, 3], tok.pad_token_id))
    ref = two_pass_losses(model, two_pass_batches(enc, [2, 0, 3], tok.pad_token_id))
    for task in ("label", "rationale"):
        assert ours[task].item() == pytest.approx(ref[task].item(), abs=1e-6)


def test_standard_step_equals_model_loss():
    model, tok = _t5()
    enc = _encoded(tok)
    enc = Encoded({"label": enc.inputs["label"]}, {"label": enc.targets["label"]})
    ours = StudentStep(model)(**collate(enc, [3, 1], tok.pad_token_id))
    ref = two_pass_losses(model, two_pass_batches(enc, [3, 1], tok.pad_token_id))
    assert set(ours) == {"label"}
    assert ours["label"].item() == pytest.approx(ref["label"].item(), abs=1e-6)


def test_bart_one_encoder_pass_equals_two_passes():
    """Works for other seq2seq families too (BART: learned positions, pad id 1)."""
    torch.manual_seed(0)
    cfg = BartConfig(
        vocab_size=64, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64,
        dropout=0.0, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
    )  # fmt: skip
    model = BartForConditionalGeneration(cfg)
    g = torch.Generator().manual_seed(1)

    def seqs(lo, hi):
        return [
            torch.randint(3, 64, (int(torch.randint(lo, hi, (1,), generator=g)),), generator=g).tolist() + [2]
            for _ in range(3)
        ]

    enc = Encoded(
        {"label": seqs(3, 20), "rationale": seqs(3, 20)}, {"label": seqs(1, 4), "rationale": seqs(5, 15)}
    )
    ours = StudentStep(model)(**collate(enc, [0, 1, 2], 1))
    ref = two_pass_losses(model, two_pass_batches(enc, [0, 1, 2], 1))
    for task in ("label", "rationale"):
        assert ours[task].item() == pytest.approx(ref[task].item(), abs=1e-6)
