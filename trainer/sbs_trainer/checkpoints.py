"""Checkpoints: OUT/checkpoint/ for an exact --resume, and the plain transformers folders best/ and final/.

A checkpoint holds the model (with LoRA: the adapters only; the frozen weights come from --model), the
optimiser, the schedule, the position in the batch stream, each rank's RNG state and the loop's state.
It is written to checkpoint.tmp/ and swapped in whole, so a kill mid-save keeps the previous one.
"""

from __future__ import annotations

import pickle
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import lora, sharding
from .batching import BatchStream
from .config import Env, TrainConfig
from .model import Student

# Checkpoint fields that must match for --resume to continue the same run exactly.
_RESUME_KEYS = (
    "mode",
    "alpha",
    "seed",
    "batch_size",
    "grad_accum",
    "world_size",
    "group_by_length",
    "strategy",
    "prompt_format",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "lora_targets",
)
# checkpoints written before a field existed
_RESUME_DEFAULTS = {
    "strategy": "ddp",
    "prompt_format": "auto",
    "lora_r": None,
    "lora_alpha": None,
    "lora_dropout": 0.05,
    "lora_targets": "all-linear",
}


class ResumeError(ValueError):
    """--resume was asked to continue a run with settings that would change its trajectory."""


def _rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class TrainState:
    """What the loop has done so far; saved in every checkpoint."""

    step: int = 0
    examples: int = 0
    tokens: int = 0
    runtime_s: float = 0.0
    cpu_s: float = 0.0
    best: dict | None = None  # the best validation so far: step, accuracy, n, records
    history: list[dict] = field(default_factory=list)
    last: dict = field(default_factory=dict)  # the last step's losses


def _finish_swap(out: Path) -> None:
    """A save writes checkpoint.tmp/, then renames checkpoint/ to checkpoint.old/ and checkpoint.tmp/ to
    checkpoint/. Killed between the two renames, checkpoint/ is missing and checkpoint.tmp/ is complete."""
    if (
        not (out / "checkpoint").exists()
        and (out / "checkpoint.old").exists()
        and (out / "checkpoint.tmp").exists()
    ):
        (out / "checkpoint.tmp").rename(out / "checkpoint")


def _load(path: Path) -> Any:
    """torch.load with a clear error for a truncated or corrupt file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as e:
        raise ResumeError(
            f"--resume: {path} cannot be read ({type(e).__name__}: {str(e)[:200]}); the checkpoint is "
            "corrupt or was cut short: remove OUT/checkpoint/ to start again"
        ) from None


@dataclass
class Checkpoints:
    """OUT/checkpoint/ (exact resume) and the plain transformers folders OUT/best/ and OUT/final/."""

    out: Path
    cfg: TrainConfig
    env: Env
    student: Student
    optimizer: torch.optim.Optimizer
    scheduler: Any
    stream: BatchStream
    export: str = ""  # the export's fingerprint (data.fingerprint): --resume refuses another export

    @property
    def fsdp(self) -> bool:
        return self.cfg.strategy == "fsdp"

    @property
    def dir(self) -> Path:
        return self.out / "checkpoint"

    def _weights(self) -> dict[str, torch.Tensor]:
        """The model tensors a checkpoint holds: with LoRA only the trained ones (the rest is --model)."""
        sd = self.student.model.state_dict()
        if self.student.peft is None:
            return sd
        keep = lora.trainable_names(self.student.model)
        return {k: v for k, v in sd.items() if k in keep}

    def save(self, state: TrainState) -> None:
        """Written into checkpoint.tmp/, then swapped in whole, so a kill mid-save keeps the last one."""
        tmp, old, env = self.out / "checkpoint.tmp", self.out / "checkpoint.old", self.env
        if env.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        env.barrier()
        torch.save(_rng_state(), tmp / f"rng-rank{env.rank}.pt")
        if self.fsdp:
            sharding.save(self.student.model, self.optimizer, tmp / "sharded")
        if env.rank == 0:
            weights = (
                {} if self.fsdp else {"model": self._weights(), "optimizer": self.optimizer.state_dict()}
            )
            torch.save(
                {
                    **weights,
                    "scheduler": self.scheduler.state_dict(),
                    "stream": self.stream.state(),
                    "state": asdict(state),
                    "config": asdict(self.cfg),
                    "export": self.export,
                },
                tmp / "state.pt",
            )
        env.barrier()
        if env.rank == 0:
            if self.dir.exists():
                self.dir.rename(old)
            tmp.rename(self.dir)
            shutil.rmtree(old, ignore_errors=True)
        env.barrier()

    def restore(self) -> TrainState | None:
        """The state of the last checkpoint, loaded into model, optimizer, schedule and stream (or None)."""
        if self.env.rank == 0:
            _finish_swap(self.out)
        self.env.barrier()
        if not (self.dir / "state.pt").is_file():
            return None
        ck = _load(self.dir / "state.pt")
        if not isinstance(ck, dict) or not {"config", "state", "scheduler", "stream"} <= set(ck):
            raise ResumeError(f"--resume: {self.dir / 'state.pt'} is not an sbs-train checkpoint")
        was, now = {**_RESUME_DEFAULTS, **ck["config"]}, asdict(self.cfg)
        for k in _RESUME_KEYS:
            if was.get(k) != now.get(k):
                raise ResumeError(f"--resume: {k} was {was.get(k)!r}, now {now.get(k)!r}")
        if ck.get("export") and self.export and ck["export"] != self.export:
            raise ResumeError(
                f"--resume: the checkpoint was trained on another export than {self.cfg.data} (its shards "
                "differ); resume with the same export, or train into a new --output"
            )
        rng_path = self.dir / f"rng-rank{self.env.rank}.pt"
        if not rng_path.is_file():
            raise ResumeError(f"--resume: {rng_path} is missing; the checkpoint is incomplete")
        model = self.student.model
        try:
            if self.fsdp:
                sharding.load(model, self.optimizer, self.dir / "sharded")
            else:
                missing, unexpected = model.load_state_dict(ck["model"], strict=self.student.peft is None)
                if unexpected or (set(self._weights()) - set(ck["model"])):
                    raise ResumeError(
                        f"--resume: the checkpoint's weights do not fit this model ({unexpected[:3]})"
                    )
                self.optimizer.load_state_dict(ck["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:  # a size mismatch, another architecture
            raise ResumeError(
                f"--resume: the checkpoint in {self.dir} does not fit --model {self.cfg.model} "
                f"({str(e).splitlines()[0][:300]})"
            ) from None
        self.scheduler.load_state_dict(ck["scheduler"])
        self.stream.load_state(ck["stream"])
        _set_rng_state(_load(rng_path))
        return TrainState(**ck["state"])

    def save_pretrained(self, folder: Path) -> None:
        """A plain transformers folder (merged LoRA weights; gathered shards under FSDP) and the prompt format."""
        student = self.student
        weights = None
        if self.fsdp:
            weights = sharding.full_state_dict(student.model)
        elif student.peft is not None:
            weights = lora.merged_state_dict(student.model)
        if self.env.rank == 0:
            student.model.save_pretrained(folder, state_dict=weights)
            student.tokenizer.save_pretrained(folder)
            if student.prompt is not None:
                student.prompt.save(folder)

    def load_best(self, folder: Path) -> nn.Module:
        """The weights of OUT/best/ to test with: into the sharded model (FSDP), else a fresh plain model."""
        model = self.student.model
        if self.fsdp:
            sharding.load_pretrained(model, folder)
            return model
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

        auto = AutoModelForCausalLM if self.student.kind == "causal" else AutoModelForSeq2SeqLM
        kw = (
            {"attn_implementation": model.config._attn_implementation}
            if self.student.kind == "causal"
            else {}
        )
        return auto.from_pretrained(folder, dtype=torch.float32, **kw).to(self.env.device)
