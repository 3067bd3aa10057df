"""The run's configuration (one typed object from the command line down) and where a process runs."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist


class ConfigError(ValueError):
    """Options that cannot work together, or not in this environment."""


@dataclass
class TrainConfig:
    data: str
    model: str
    output: str
    mode: str = "sbs"
    alpha: float = 0.5
    max_steps: int | None = None
    epochs: float = 1.0
    batch_size: int = 8
    eval_batch_size: int | None = None
    grad_accum: int = 1
    lr: float = 5e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    max_input_len: int = 1024
    max_target_len: int = 256
    max_new_tokens: int | None = None  # generation cap at evaluation (default: --max-target-len)
    eval_every: int = 0
    max_eval_examples: int | None = None
    save_every: int | None = None
    log_every: int = 10
    seed: int = 42
    resume: bool = False
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 elsewhere
    compile: bool = False
    group_by_length: bool = True
    device: str = "auto"
    strategy: str = "ddp"  # ddp: a full replica per process; fsdp: parameters sharded over processes
    report_to: str = "none"  # none | tensorboard
    train_ids: str | None = None  # a file of example ids (one per line): train on those examples only
    hinted: str = "keep"  # keep | drop: train rows whose teacher saw the gold answer (sbs-data rationalize)
    prompt_format: str = "auto"  # causal students: auto (chat template if any) | chat | plain
    packing: str = "auto"  # causal students: auto | rows | flat | none (causal.py)
    lora_r: int | None = None  # train rank-r LoRA adapters instead of every weight
    lora_alpha: float | None = None
    lora_dropout: float = 0.05
    lora_targets: str = "all-linear"
    stop_after: int | None = None  # stop (checkpointed, as if pre-empted) after this many steps
    world_size: int = field(default=1, init=False)


def log(rank: int, msg: str) -> None:
    if rank == 0:
        print(msg, flush=True)


@dataclass
class Env:
    """Where this process runs: its rank, the world, the device and the precision."""

    rank: int
    world: int
    device: torch.device
    bf16: bool

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def log(self, msg: str) -> None:
        log(self.rank, msg)
