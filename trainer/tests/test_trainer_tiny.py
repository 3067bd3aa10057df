"""The tiny random models of sbs_trainer.tiny: tokenizers that mimic each family, offline save/reload, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from sbs_trainer.tiny import ARCHES, VOCAB_SIZE, main, tiny_causal, tiny_tokenizer, write_tiny

CAUSAL = [a for a in ARCHES if a != "t5"]
TEXTS = [
    "Tom has 3 apples. He buys 4 more, so he has ( 3.0 + 4.0 ) = 7 apples.",
    "Premise: A man plays a guitar. Hypothesis: A person makes music. Answer: entailment",
    "Zürich, naïve café — 🍎×12 ≠ 13!\n\tNew line, tabs and  double  spaces.",
    "",
]
SMALL = {"d_model": 32, "layers": 1, "heads": 4}


def _load(path: Path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def test_arches():
    assert ARCHES == ("t5", "llama", "qwen2", "gpt2")


@pytest.mark.parametrize("arch", CAUSAL)
def test_tokenizer_is_deterministic_byte_level_and_round_trips(arch):
    tok, again = tiny_tokenizer(arch), tiny_tokenizer(arch)
    assert tok is not again and tok.get_vocab() == again.get_vocab() and len(tok) == VOCAB_SIZE
    assert tok.backend_tokenizer.to_str() == again.backend_tokenizer.to_str()
    for text in TEXTS:
        ids = tok(text, add_special_tokens=False).input_ids
        assert tok.decode(ids) == text
        assert tok.unk_token_id is None or tok.unk_token_id not in ids  # byte-level: nothing is unknown
    assert tok.decode(tok("Tom has 3 apples.", add_special_tokens=False).input_ids) == "Tom has 3 apples."
    for word in (" predict", " explain", " answer", " because", " so", " entailment", "Premise"):
        assert len(tok(word, add_special_tokens=False).input_ids) == 1, word  # corpus words are single tokens


@pytest.mark.parametrize("arch", CAUSAL)
def test_write_reload_offline_same_behaviour(arch, tmp_path, monkeypatch):
    path = write_tiny(tmp_path / arch, arch=arch, seed=0, **SMALL)
    model, tok = _load(path, monkeypatch)
    ref = tiny_tokenizer(arch)

    assert (
        type(model).__name__
        == {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "gpt2": "GPT2LMHeadModel"}[arch]
    )
    for text in TEXTS + ["<|im_start|>user\nhi<|im_end|>\n", "<s> a </s> <pad>"]:
        assert tok(text).input_ids == ref(text).input_ids
        assert tok.decode(tok(text, add_special_tokens=False).input_ids) == text
    assert tok("a b", "c d").input_ids == ref("a b", "c d").input_ids
    assert type(tok) is type(ref) and tok.special_tokens_map == ref.special_tokens_map
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (
        ref.bos_token_id,
        ref.eos_token_id,
        ref.pad_token_id,
    )
    assert tok.chat_template == ref.chat_template
    assert len(tok) == VOCAB_SIZE == model.config.vocab_size

    cfg = model.config
    assert cfg.tie_word_embeddings and cfg._attn_implementation == "sdpa"
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (
        tok.bos_token_id,
        tok.eos_token_id,
        tok.pad_token_id,
    )
    assert model.generation_config.eos_token_id == tok.eos_token_id
    assert model.generation_config.pad_token_id == tok.pad_token_id

    if arch == "llama":
        assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<s>", "</s>", "<pad>")
        assert tok.chat_template is None
        for text in TEXTS:
            assert tok(text).input_ids[0] == tok.bos_token_id
        batch = tok(["a", "a b c"], padding=True)
        assert batch.input_ids[0][-1] == tok.pad_token_id == cfg.pad_token_id
    elif arch == "qwen2":
        assert tok.pad_token is None and tok.bos_token is None and tok.eos_token == "<|im_end|>"
        assert {"<|endoftext|>", "<|im_start|>", "<|im_end|>"} <= set(tok.all_special_tokens)
        assert tok("hi").input_ids == tok("hi", add_special_tokens=False).input_ids  # no bos added
        assert cfg.num_key_value_heads == 2 < cfg.num_attention_heads == 4  # grouped-query attention
        msgs = [{"role": "user", "content": "Tom has 3 apples."}]
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        assert text == "<|im_start|>user\nTom has 3 apples.<|im_end|>\n<|im_start|>assistant\n"
        ids = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True, return_dict=True)[
            "input_ids"
        ]
        assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>") and tok.decode(ids) == text
        assert (path / "chat_template.jinja").exists() or "chat_template" in json.loads(
            (path / "tokenizer_config.json").read_text()
        )
    else:
        assert tok.pad_token is None and tok.chat_template is None
        assert tok.bos_token == tok.eos_token == tok.unk_token == "<|endoftext|>"
        assert tok("hi").input_ids == tok("hi", add_special_tokens=False).input_ids

    x = tok("Tom has 3 apples.", return_tensors="pt")
    out = model.generate(**x, max_new_tokens=4, do_sample=False)
    assert out.shape[0] == 1 and x.input_ids.shape[1] < out.shape[1] <= x.input_ids.shape[1] + 4
    assert torch.equal(out[:, : x.input_ids.shape[1]], x.input_ids)


@pytest.mark.parametrize("arch", CAUSAL)
def test_same_seed_same_weights(arch, tmp_path):
    a, b, c = (
        write_tiny(tmp_path / n, arch=arch, seed=s, **SMALL) for n, s in (("a", 0), ("b", 0), ("c", 1))
    )
    wa, wb, wc = (load_file(p / "model.safetensors") for p in (a, b, c))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)
    assert (a / "tokenizer.json").read_bytes() == (c / "tokenizer.json").read_bytes()


def test_tiny_causal_sizes_and_errors():
    model, tok = tiny_causal("qwen2", d_model=48, layers=3, heads=6)
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (
        48,
        3,
        6,
        3,
    )
    assert cfg.intermediate_size == 96 and cfg.max_position_embeddings == 2048 and cfg.vocab_size == len(tok)
    gpt2, _ = tiny_causal("gpt2", d_model=32, layers=1, heads=2)
    assert (gpt2.config.n_embd, gpt2.config.n_inner, gpt2.config.n_positions) == (32, 64, 2048)
    with pytest.raises(ValueError, match="causal arch"):
        tiny_causal("t5")
    with pytest.raises(ValueError, match="causal arch"):
        tiny_tokenizer("bert")


def test_cli_writes_qwen2(tmp_path, monkeypatch, capsys):
    out = tmp_path / "qwen"
    main([str(out), "--arch", "qwen2", "--d-model", "32", "--layers", "1", "--heads", "4", "--seed", "1"])
    assert capsys.readouterr().out.strip() == str(out)
    model, tok = _load(out, monkeypatch)
    assert model.config.model_type == "qwen2" and model.config.hidden_size == 32
    assert model.config.num_hidden_layers == 1 and tok.pad_token is None and tok.chat_template


def test_cli_default_is_t5(tmp_path, monkeypatch, capsys):
    from transformers import AutoModelForSeq2SeqLM

    main([str(tmp_path / "t5"), "--d-model", "32", "--heads", "2", "--layers", "1"])
    assert capsys.readouterr().out.strip() == str(tmp_path / "t5")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "t5").config.model_type == "t5"
