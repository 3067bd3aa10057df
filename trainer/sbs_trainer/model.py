"""Load any Hugging Face seq2seq or causal student; the seq2seq per-task losses of a micro-batch.

Causal students compute their losses in causal.py; both step modules share one calling convention
(`forward(**batch)` -> {"label": loss, "rationale": loss}, or `forward(..., generate=kwargs)`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .batching import IGNORE
from .causal import CausalStep
from .prompts import PromptError, PromptFormat

TINY_NAME = "tiny-t5"


class ModelError(ValueError):
    """The model cannot serve as a student."""


KINDS = ("seq2seq", "causal")


@dataclass
class Student:
    """A loaded student: the transformers model, its tokenizer and how it is trained and prompted."""

    model: nn.Module  # the transformers model; with --lora-r its linear layers carry the adapters in place
    tokenizer: Any
    kind: str  # "seq2seq" (encoder-decoder) or "causal" (decoder-only)
    prompt: PromptFormat | None = None  # causal students: the prompt format (prompts.py)
    peft: Any = None  # the peft wrapper when training LoRA adapters (lora.py)

    def step_module(self) -> nn.Module:
        """The module whose forward computes one micro-batch's per-task losses (what DDP/FSDP wrap)."""
        return StudentStep(self.model) if self.kind == "seq2seq" else CausalStep(self.model)


def load_student(
    name_or_path: str, seed: int = 0, prompt_format: str = "auto", attn: str | None = None
) -> Student:
    """The student from a hub name, a local folder, or the offline special name `tiny-t5`.

    Encoder-decoders load with `AutoModelForSeq2SeqLM`, decoder-only models with `AutoModelForCausalLM`,
    always in fp32 (the master weights; bf16 runs as autocast). `attn` picks the attention implementation
    of a causal student (default: the model's own choice, usually sdpa).
    """
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    transformers.utils.logging.disable_progress_bar()
    if name_or_path == TINY_NAME and not Path(name_or_path).exists():
        from .tiny import tiny_t5

        torch.manual_seed(seed)
        return Student(*tiny_t5(), kind="seq2seq")
    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(f"cannot load a model config from {name_or_path!r}: {e}") from e
    if getattr(config, "is_encoder_decoder", False):
        kind, auto = "seq2seq", AutoModelForSeq2SeqLM
    elif type(config) in AutoModelForCausalLM._model_mapping:
        kind, auto = "causal", AutoModelForCausalLM
    else:
        raise ModelError(
            f"{name_or_path!r} is a {config.model_type!r} model with neither a seq2seq nor a causal LM head; "
            "use an encoder-decoder (T5, Flan-T5, BART) or a decoder-only LM (Qwen, Llama, SmolLM, Gemma, GPT-2)"
        )
    kw: dict[str, Any] = {"dtype": torch.float32}
    if kind == "causal" and attn:
        kw["attn_implementation"] = attn
    try:
        model = auto.from_pretrained(name_or_path, **kw)
    except (OSError, ValueError, ImportError) as e:
        raise ModelError(f"cannot load {name_or_path!r} as a {kind} LM: {e}") from e
    tokenizer = _load_tokenizer(name_or_path)
    if kind == "seq2seq":
        _fill_special_ids(model, tokenizer)
        return Student(model, tokenizer, kind)
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ModelError(f"the tokenizer in {name_or_path!r} has neither a pad nor an EOS token")
        # Documented choice: pad with EOS. Padding is never attended to nor scored (masks come from
        # lengths, not from ids), so this changes nothing the model learns; it is saved with the model.
        tokenizer.pad_token = tokenizer.eos_token
    try:
        fmt = PromptFormat.for_tokenizer(tokenizer, prompt_format)
    except PromptError as e:
        raise ModelError(f"{name_or_path!r}: {e}") from e
    # saved with best/ and final/, so a plain `model.generate` stops where the targets were ended
    gen = model.generation_config
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    gen.eos_token_id = [fmt.end_token_id] + [e for e in eos if e is not None and e != fmt.end_token_id]
    gen.pad_token_id = tokenizer.pad_token_id
    return Student(model, tokenizer, kind, prompt=fmt)


def _load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(
            f"cannot load a tokenizer from {name_or_path!r} (save it next to the model): {e}"
        ) from e
    # transformers may build a vocabulary-less tokenizer from a folder that has none: it knows its special
    # tokens and little else (a word-level vocabulary of the task's own words is fine: no English probe)
    if len(tokenizer.get_vocab()) <= len(set(tokenizer.all_special_tokens)) + 2:
        raise ModelError(
            f"the tokenizer in {name_or_path!r} has no vocabulary; save the tokenizer next to the model"
        )
    return tokenizer


def _fill_special_ids(model, tokenizer) -> None:
    """EncoderDecoderModels warm-started from two encoders often lack start/pad ids; borrow the tokenizer's."""
    cfg = model.config
    if getattr(cfg, "pad_token_id", None) is None:
        cfg.pad_token_id = tokenizer.pad_token_id
    if getattr(cfg, "decoder_start_token_id", None) is None:
        start = getattr(model.generation_config, "decoder_start_token_id", None)
        cfg.decoder_start_token_id = (
            start if start is not None else (tokenizer.cls_token_id or tokenizer.bos_token_id)
        )
    for key in ("pad_token_id", "decoder_start_token_id"):
        if getattr(model.generation_config, key, None) is None:
            setattr(model.generation_config, key, getattr(cfg, key))
    if getattr(model.generation_config, "eos_token_id", None) is None:
        model.generation_config.eos_token_id = tokenizer.sep_token_id or tokenizer.eos_token_id


def token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over non-pad target tokens, in fp32 (what HF's seq2seq loss computes)."""
    return F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE
    )


def _decoder_input_ids(model, labels: torch.Tensor) -> torch.Tensor:
    return model.prepare_decoder_input_ids_from_labels(labels=labels)


def output_layer(model) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The model's own decoder-states -> logits step, for the families whose forward we mirror; else None.

    Applying it only to the decoder states at non-pad target positions gives the same loss as the
    full forward, which projects every padded position onto the vocabulary and then ignores it (the
    vocabulary projection is the largest matmul of a small student's decoder).
    """
    cfg = model.config
    if cfg.model_type in ("t5", "umt5") and hasattr(cfg, "scale_decoder_outputs"):
        if not cfg.scale_decoder_outputs:
            return model.lm_head
        return lambda h: model.lm_head(h * cfg.d_model**-0.5)
    if cfg.model_type == "bart":
        return lambda h: model.lm_head(h) + model.final_logits_bias
    return None


def decode_loss(
    model, encoder_hidden: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Decoder pass over given encoder states: the second half of a seq2seq forward, and its loss."""
    decoder_input_ids = _decoder_input_ids(model, labels)
    head = output_layer(model)
    if head is None:  # a family whose output layer we do not mirror: the model's own full forward
        out = model(
            encoder_outputs=(encoder_hidden,),
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            use_cache=False,
        )
        return token_loss(out.logits, labels)
    h = model.get_decoder()(
        input_ids=decoder_input_ids,
        encoder_hidden_states=encoder_hidden,
        encoder_attention_mask=attention_mask,
        use_cache=False,
    ).last_hidden_state
    keep = labels != IGNORE
    return token_loss(head(h[keep]), labels[keep])


class StudentStep(nn.Module):
    """Per-task losses of one micro-batch; one module so DDP sees a single forward per step.

    sbs batches hold the `predict:` rows stacked on the `explain:` rows: one encoder call encodes
    both, then each decoder half runs on its own targets over its own (trimmed) padding, and the
    output layer only at real target positions; this gives the same per-task losses as the original
    two full forward passes. With `generate=` kwargs it returns `model.generate(...)` instead: under
    FSDP this module is the root, and only a call of its forward gathers the root's weights.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
        rationale_labels: torch.Tensor | None = None,
        split_cols: tuple[int, int] | None = None,
        generate: dict | None = None,
    ) -> dict[str, torch.Tensor] | torch.Tensor:
        if generate is not None:  # generation inside this forward, so FSDP's root hooks gather the weights
            return self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **generate)
        h = self.model.get_encoder()(
            input_ids=input_ids, attention_mask=attention_mask, return_dict=True
        ).last_hidden_state
        if rationale_labels is None:
            return {"label": decode_loss(self.model, h, attention_mask, labels)}
        b = labels.size(0)
        lp, le = split_cols if split_cols is not None else (input_ids.size(1), input_ids.size(1))
        return {
            "label": decode_loss(self.model, h[:b, :lp], attention_mask[:b, :lp], labels),
            "rationale": decode_loss(self.model, h[b:, :le], attention_mask[b:, :le], rationale_labels),
        }


def combine(losses: dict[str, torch.Tensor], alpha: float) -> torch.Tensor:
    """alpha * label_loss + (1 - alpha) * rationale_loss, as in the paper's code; the label loss alone otherwise."""
    if "rationale" not in losses:
        return losses["label"]
    return alpha * losses["label"] + (1.0 - alpha) * losses["rationale"]


def two_pass_losses(model, batches: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The original compute pattern: one full `model(**inputs, labels=...)` per task; the reference."""
    return {task: model(**b).loss for task, b in batches.items()}
