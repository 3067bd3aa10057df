"""FSDP for students bigger than one GPU: shard with `fully_shard`, checkpoint with `torch.distributed.checkpoint`.

DDP keeps a full copy of the weights, gradients and AdamW state on every GPU (16 bytes per parameter in
fp32), so the largest student is whatever one GPU holds. Per-parameter FSDP splits each tensor along its
first dimension over the ranks and all-gathers one transformer block at a time for its forward and
backward, so a rank holds about 1/world of those 16 bytes plus one unsharded block.

Every function here is collective: all ranks must call it, in the same order.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor


def shard(root: nn.Module, model: nn.Module, device: torch.device, bf16: bool) -> list[str]:
    """Shard each transformer block of `model`, then `root` (the module whose forward runs a step).

    The blocks are the classes the model lists in `_no_split_modules` (T5Block, BART's encoder and
    decoder layers...), the same units transformers and accelerate keep whole. Whatever is left (the
    embeddings, final norms, output layer) is sharded with the root, whose forward all-gathers it. On
    CUDA with bf16, blocks compute in bf16 while the sharded fp32 weights and the gradient reduction
    stay in fp32. Returns the names of the sharded block classes.
    """
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    on_gpu = bf16 and device.type == "cuda"
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if on_gpu else None
    kw = {"mesh": mesh, **({"mp_policy": mp} if mp else {})}
    # T5Block returns a view of its hidden states; nothing in the model modifies it in place (the
    # FSDP-vs-DDP test compares losses and gradients), so the warning about it is noise on every step
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    names = set(getattr(model, "_no_split_modules", None) or ())
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    for block in blocks:
        fully_shard(block, **kw)
    fully_shard(root, **kw)
    return sorted({type(b).__name__ for b in blocks})


def local_numel(model: nn.Module) -> int:
    """Parameter elements this rank stores (its shards under FSDP, everything otherwise)."""
    return sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in model.parameters())


def full_numel(model: nn.Module) -> int:
    """Parameter elements of the whole model (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters())


def as_float(x: torch.Tensor) -> float:
    """A scalar that may be a DTensor (e.g. clip_grad_norm_'s total norm over sharded gradients)."""
    return float(x.full_tensor() if isinstance(x, DTensor) else x)


def save(model: nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Each rank writes its own shards of the weights and AdamW state into the folder `path`."""
    msd, osd = get_state_dict(model, optimizer)
    dcp.save({"model": msd, "optimizer": osd}, checkpoint_id=path)


def load(model: nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Load a `save` checkpoint into the sharded model and optimizer (the world size may differ)."""
    msd, osd = get_state_dict(model, optimizer)
    sd = {"model": msd, "optimizer": osd}
    dcp.load(sd, checkpoint_id=path)
    set_state_dict(model, optimizer, model_state_dict=sd["model"], optim_state_dict=sd["optimizer"])


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded weights, gathered to CPU on rank 0 (empty elsewhere), for `save_pretrained`.

    Tied weights come back as separate copies under every alias (T5: shared, both embed_tokens and
    lm_head), which save_pretrained cannot recognise as tied; only each tensor's first name is kept, as
    save_pretrained itself writes it.
    """
    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    names = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    return {k: v for k, v in sd.items() if k in names}


def load_pretrained(model: nn.Module, path: Path) -> None:
    """Put the weights of a `save_pretrained` folder into the sharded model: rank 0 reads, then scatters."""
    sd = {}
    if dist.get_rank() == 0:
        sd = type(model).from_pretrained(path).state_dict()  # full names, tied weights included
    set_model_state_dict(model, sd, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
