"""LoRA adapters through peft, for seq2seq and causal students alike.

`--lora-r R` freezes the student and trains rank-R adapters on its linear layers (`--lora-targets`,
default `all-linear`: every linear layer but the output layer, which peft resolves per family: Llama and
Qwen `q/k/v/o_proj` and `gate/up/down_proj`, GPT-2 `c_attn/c_proj/c_fc`, T5 `q/k/v/o/wi*/wo`).
The adapters sit inside the transformers model (peft injects them in place), so the training step,
DDP and generation run unchanged. Saving writes two things: the adapter alone (`OUT/adapter/`, loadable
with peft), and the merged weights `W + (alpha/r) B A` as a plain transformers folder (`best/`, `final/`)
that loads without peft. The merge is computed on the side: the adapters in training are never merged
and unmerged, so the weights (and --resume) stay exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

ADAPTER = "default"


class LoraMissing(RuntimeError):
    """--lora-r was given but peft is not installed."""


@dataclass
class LoraOptions:
    r: int
    alpha: float | None = None  # default: 2 * r
    dropout: float = 0.05
    targets: str = "all-linear"  # comma-separated module names, or all-linear

    def target_modules(self) -> str | list[str]:
        if self.targets.strip().lower() == "all-linear":
            return "all-linear"
        return [t.strip() for t in self.targets.split(",") if t.strip()]


def apply(model: nn.Module, kind: str, opts: LoraOptions):
    """Freeze `model` and inject LoRA adapters in place; returns the peft wrapper (for saving the adapter)."""
    try:
        from peft import LoraConfig, TaskType, get_peft_model
    except ImportError as e:
        raise LoraMissing("--lora-r needs peft: pip install 'sbs-trainer[lora]'") from e
    if opts.r <= 0:
        raise ValueError(f"--lora-r must be a positive rank, not {opts.r}")
    config = LoraConfig(
        r=opts.r,
        lora_alpha=opts.alpha if opts.alpha is not None else 2 * opts.r,
        lora_dropout=opts.dropout,
        target_modules=opts.target_modules(),
        task_type=TaskType.SEQ_2_SEQ_LM if kind == "seq2seq" else TaskType.CAUSAL_LM,
    )
    try:
        wrapped = get_peft_model(model, config)
    except ValueError as e:  # peft's message names the target modules it could not find
        raise ValueError(f"--lora-targets {opts.targets!r}: {e}") from e
    return wrapped


def trainable_names(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def adapted_modules(model: nn.Module) -> list[str]:
    """Names of the modules that carry an adapter (for metrics.json)."""
    from peft.tuners.lora import LoraLayer

    return [n for n, m in model.named_modules() if isinstance(m, LoraLayer)]


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights of `model` with every adapter folded in, under the names of the plain model.

    peft stores an adapted layer's weight as `<name>.base_layer.weight` next to `<name>.lora_A...`; this
    returns `<name>.weight = base + delta` and drops the adapter tensors, so `save_pretrained` writes a
    folder that `AutoModelFor*LM.from_pretrained` loads without peft.
    """
    from peft.tuners.lora import LoraLayer

    deltas = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, LoraLayer) and ADAPTER in module.lora_A:
                deltas[name] = module.get_delta_weight(ADAPTER)
        out: dict[str, torch.Tensor] = {}
        for key, value in model.state_dict().items():
            if ".lora_" in key:
                continue
            plain = key.replace(".base_layer.", ".")
            owner, leaf = plain.rsplit(".", 1)
            if leaf == "weight" and owner in deltas:
                value = value + deltas[owner].to(value.dtype)
            out[plain] = value
    return out


def save_adapter(wrapped, folder: Path) -> None:
    """The adapter alone (`adapter_config.json`, `adapter_model.safetensors`), loadable with peft."""
    wrapped.save_pretrained(folder)
