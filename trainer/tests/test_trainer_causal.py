"""Decoder-only students: target-only logits and packing compute the naive losses, prompts, end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from unittest.mock import patch

import pytest
import torch
from sbs_trainer.batching import IGNORE
from sbs_trainer.causal import CausalStep, collate_causal, encode_causal, fit_prompt, full_logits_losses
from sbs_trainer.cli import config_from_args, main
from sbs_trainer.data import Row
from sbs_trainer.model import ModelError, combine, load_student
from sbs_trainer.prompts import PromptFormat
from sbs_trainer.train import run

from .helpers import svamp_rows, train_args, write_export

ARCHES = ("llama", "qwen2", "gpt2")


def _rows(n: int = 4) -> list[Row]:
    return [
        Row(
            str(i),
            "svamp",
            "Tom has apples " * (1 + 3 * i),
            None,
            {"label": f"( {i}.0 + 1.0 )", "rationale": "because it adds " * (1 + 2 * i)},
        )
        for i in range(n)
    ]


def _student(dirs, arch):
    torch.manual_seed(0)
    return load_student(str(dirs[arch]))


def _grads(model) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("arch", ARCHES)
def test_target_only_logits_equal_full_logits(causal_dirs, arch):
    """Logits at target positions only (logits_to_keep) = the naive full [B, T, V] computation: values
    and gradients of the alpha-mixed loss."""
    s = _student(causal_dirs, arch)
    enc = encode_causal(_rows(), s.tokenizer, s.prompt, ("label", "rationale"), 128, 64)
    batch = collate_causal(enc, [0, 1, 2, 3], s.tokenizer.pad_token_id, "none")
    ours = CausalStep(s.model)(**batch)
    ref = full_logits_losses(s.model, batch)
    for task in ("label", "rationale"):
        assert ours[task].item() == pytest.approx(ref[task].item(), abs=1e-6)
    combine(ours, 0.3).backward()
    g = _grads(s.model)
    s.model.zero_grad()
    combine(ref, 0.3).backward()
    for a, b in zip(g, _grads(s.model), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("packing", ["rows", "flat"])
def test_packed_losses_equal_unpacked(causal_dirs, arch, packing):
    s = _student(causal_dirs, arch)
    enc = encode_causal(_rows(), s.tokenizer, s.prompt, ("label", "rationale"), 128, 64)
    step = CausalStep(s.model)
    packed = collate_causal(enc, [3, 0, 2, 1], s.tokenizer.pad_token_id, packing)
    unpacked = collate_causal(enc, [3, 0, 2, 1], s.tokenizer.pad_token_id, "none")
    assert "attention_mask" not in packed and packed["input_ids"].size(0) == (4 if packing == "rows" else 1)
    a, b = step(**packed), step(**unpacked)
    for task in ("label", "rationale"):
        assert a[task].item() == pytest.approx(b[task].item(), abs=1e-5)
    # the same target tokens are scored in every layout
    assert (packed["labels"] != IGNORE).sum() == (unpacked["labels"] != IGNORE).sum()


def test_one_forward_per_micro_batch(causal_dirs):
    s = _student(causal_dirs, "qwen2")
    enc = encode_causal(_rows(), s.tokenizer, s.prompt, ("label", "rationale"), 128, 64)
    calls = []
    original, step = s.model.forward, CausalStep(s.model)
    with patch.object(s.model, "forward", lambda *a, **k: calls.append(k) or original(*a, **k)):
        losses = step(**collate_causal(enc, [0, 1, 2], s.tokenizer.pad_token_id, "rows"))
    assert set(losses) == {"label", "rationale"} and len(calls) == 1
    assert calls[0]["logits_to_keep"].dtype == torch.bool  # only target positions reach the output layer


def test_prompt_formats_and_targets(causal_dirs):
    qwen, llama = _student(causal_dirs, "qwen2"), _student(causal_dirs, "llama")
    assert qwen.prompt.kind == "chat" and qwen.prompt.end_token == "<|im_end|>"
    assert qwen.tokenizer.pad_token == qwen.tokenizer.eos_token  # no pad token: EOS pads (documented)
    text = qwen.tokenizer.decode(qwen.prompt.prompt_ids(qwen.tokenizer, "label", "2 apples"))
    assert text == "<|im_start|>user\npredict: 2 apples<|im_end|>\n<|im_start|>assistant\n"
    assert llama.prompt.kind == "plain" and llama.prompt.end_token == "</s>"
    ids = llama.prompt.prompt_ids(llama.tokenizer, "rationale", "2 apples")
    assert ids[0] == llama.tokenizer.bos_token_id
    assert llama.tokenizer.decode(ids[1:]) == "explain: 2 apples\n"
    # targets end with the end token and are cut by --max-target-len only
    t = qwen.prompt.target_ids(qwen.tokenizer, "because " * 50, 10)
    assert len(t) == 10 and t[-1] == qwen.prompt.end_token_id
    # plain forced on a chat tokenizer; chat refused on a tokenizer without a template
    assert PromptFormat.for_tokenizer(qwen.tokenizer, "plain").kind == "plain"
    with pytest.raises(ModelError, match="no chat template"):
        load_student(str(causal_dirs["llama"]), prompt_format="chat")


def test_long_input_is_cut_never_the_target(causal_dirs):
    s = _student(causal_dirs, "qwen2")
    long = Row("x", "svamp", "Tom has many apples " * 40, None, {"label": "( 1.0 + 2.0 )"})
    enc = encode_causal([long, _rows(1)[0]], s.tokenizer, s.prompt, ("label",), 40, 16)
    assert enc.cut_rows == 1 and len(enc.prompts["label"][0]) <= 40
    full_target = s.prompt.target_ids(s.tokenizer, "( 1.0 + 2.0 )", 16)
    assert enc.targets["label"][0] == full_target
    ids, cut = fit_prompt(s.prompt, s.tokenizer, "label", long.input, 40)
    assert cut and s.tokenizer.decode(ids).endswith("<|im_start|>assistant\n")  # the template stays whole


def test_broken_chat_template_is_a_clear_error(causal_dirs, tmp_path, export_dir, capsys):
    from transformers import AutoTokenizer

    folder = tmp_path / "broken"
    s = _student(causal_dirs, "qwen2")
    s.model.save_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(causal_dirs["qwen2"])
    tok.chat_template = "{{ raise_exception('only system turns') }}"
    tok.save_pretrained(folder)
    assert main(train_args(export_dir, folder, tmp_path / "out", "--max-steps", "1")) == 2
    err = capsys.readouterr().err
    assert "chat template failed to render" in err and "only system turns" in err


def _memorise_export(tmp_path):
    rows = svamp_rows(4, "train", seed=5)
    val = [{**r, "split": "validation"} for r in rows]
    return write_export(tmp_path / "mem", {"train": rows, "validation": val, "test": val})


@pytest.mark.parametrize("arch", ARCHES)
def test_causal_student_learns_and_final_loads_alone(causal_dirs, tmp_path, arch):
    """sbs training memorises 4 rows; evaluation by generation then scores them right, and final/ loads
    with AutoModelForCausalLM alone and answers the stored prompt format the same way."""
    out = tmp_path / arch
    args = train_args(
        _memorise_export(tmp_path), causal_dirs[arch], out, "--max-steps", "200", "--lr", "1e-2"
    )
    m = run(config_from_args([*args, "--warmup-steps", "10"]))
    assert m["student"] == {
        "kind": "causal",
        "prompt_format": "chat" if arch == "qwen2" else "plain",
        "packing": "rows",
        "attention": "sdpa",
        "lora": None,
    }
    assert m["validation"]["accuracy"] == 1.0 and m["test"]["accuracy"] == 1.0
    assert set(m["train"]["final_loss"]) == {"label", "rationale", "total"}
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out / "final")
    tok = AutoTokenizer.from_pretrained(out / "final")
    fmt = PromptFormat.load(out / "final")
    row = svamp_rows(4, "train", seed=5)[0]
    ids = torch.tensor([fmt.prompt_ids(tok, "label", row["input"])])
    gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False)
    assert tok.decode(gen[0, ids.size(1) :], skip_special_tokens=True).strip() == row["label"]


@pytest.mark.parametrize("arch", ["qwen2", "gpt2"])
def test_standard_mode(causal_dirs, export_dir, tmp_path, arch):
    m = run(config_from_args(train_args(export_dir, causal_dirs[arch], tmp_path / "o", "--mode", "standard",
                                        "--max-steps", "2")))  # fmt: skip
    assert m["alpha"] is None and set(m["train"]["final_loss"]) == {"label"}
    assert m["test"]["n"] == 4 and m["train"]["tokens_seen"] > 0


def _losses(out) -> list[dict]:
    return [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("lora_args", [(), ("--lora-r", "4", "--lora-dropout", "0.1")])
def test_causal_resume_is_exact(causal_dirs, export_dir, tmp_path, lora_args):
    extra = ("--max-steps", "6", "--grad-accum", "2", "--batch-size", "3", "--eval-every", "3", *lora_args)
    full, part = tmp_path / "full", tmp_path / "part"
    run(config_from_args(train_args(export_dir, causal_dirs["qwen2"], full, *extra)))
    assert (
        run(config_from_args(train_args(export_dir, causal_dirs["qwen2"], part, *extra, "--stop-after", "2")))
        is None
    )
    run(config_from_args(train_args(export_dir, causal_dirs["qwen2"], part, *extra, "--resume")))
    assert _losses(part) == _losses(full)
    from safetensors.torch import load_file

    a, b = load_file(full / "final" / "model.safetensors"), load_file(part / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lora_adapter_and_merged_final_without_peft(causal_dirs, export_dir, tmp_path):
    out = tmp_path / "lora"
    m = run(config_from_args(train_args(export_dir, causal_dirs["llama"], out, "--max-steps", "3",
                                        "--lr", "1e-2", "--lora-r", "8")))  # fmt: skip
    p = m["parameters"]
    assert 0 < p["trainable"] < p["total"] and m["student"]["lora"]["modules"] == 14  # 7 linears x 2 layers
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    # final/ is the merged model: no adapter tensors, loadable with peft made unimportable
    code = f"""
import sys, torch
sys.modules["peft"] = None
from transformers import AutoModelForCausalLM
m = AutoModelForCausalLM.from_pretrained({str(out / "final")!r})
assert not any("lora" in k for k in m.state_dict())
ids = torch.tensor([[0, 5, 6, 7]])
print(m(ids).logits[0, -1, :4].tolist())
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the merged weights compute what the adapted model computes
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(causal_dirs["llama"])
    adapted = PeftModel.from_pretrained(base, out / "adapter").eval()
    want = adapted(torch.tensor([[0, 5, 6, 7]])).logits[0, -1, :4].tolist()
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == pytest.approx(want, abs=1e-5)
    # the base weights did not move
    from safetensors.torch import load_file

    before = load_file(causal_dirs["llama"] / "model.safetensors")
    after = load_file(out / "final" / "model.safetensors")
    assert torch.equal(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"])
    assert not torch.equal(
        before["model.layers.0.self_attn.q_proj.weight"], after["model.layers.0.self_attn.q_proj.weight"]
    )


def test_lora_on_seq2seq(export_dir, tiny_model_dir, tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    out = tmp_path / "t5lora"
    m = run(
        config_from_args(train_args(export_dir, tiny_model_dir, out, "--max-steps", "2", "--lora-r", "4"))
    )
    assert m["student"]["kind"] == "seq2seq" and m["student"]["lora"]["r"] == 4
    assert m["parameters"]["trainable"] < m["parameters"]["total"]
    model = AutoModelForSeq2SeqLM.from_pretrained(out / "final")
    assert not any("lora" in k for k in model.state_dict())


def test_lora_refused_with_fsdp_and_bad_targets(causal_dirs, export_dir, tmp_path, capsys):
    args = train_args(export_dir, causal_dirs["llama"], tmp_path / "o", "--max-steps", "1", "--lora-r", "4")
    assert main([*args, "--strategy", "fsdp"]) == 2
    assert "--lora-r is not supported with --strategy fsdp" in capsys.readouterr().err
    assert main([*args, "--lora-targets", "no_such_proj"]) == 2
    assert "--lora-targets 'no_such_proj'" in capsys.readouterr().err
