"""Evaluation by generation: greedy decoding of the predict task, scored with the task's own answer rules."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .batching import pad_inputs
from .causal import fit_prompt
from .config import Env, TrainConfig
from .data import PREDICT_PREFIX, Row
from .metrics import accuracy, is_arithmetic, is_correct
from .model import Student


def _pad_left(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        if s:
            ids[r, width - len(s) :], mask[r, width - len(s) :] = torch.tensor(s), 1
    return ids, mask


@dataclass
class Evaluator:
    """Greedy generation of the predict task, scored with the task's own answer rules.

    Seq2seq students read `predict: input` (sbs) or `input`; causal students the predict prompt of
    their prompt format, left-padded, and stop at the end token or --max-new-tokens.
    """

    student: Student
    cfg: TrainConfig
    env: Env
    fsdp_root: nn.Module | None = None

    def prompts(self, rows: list[Row]) -> list[list[int]]:
        tok, cfg = self.student.tokenizer, self.cfg
        if self.student.kind == "causal":
            fmt = self.student.prompt
            return [fit_prompt(fmt, tok, "label", r.input, cfg.max_input_len)[0] for r in rows]
        prefix = PREDICT_PREFIX if cfg.mode == "sbs" else ""
        return tok([prefix + r.input for r in rows], truncation=True, max_length=cfg.max_input_len)[
            "input_ids"
        ]

    def generate_kwargs(self) -> dict:
        kw: dict[str, Any] = {
            "max_new_tokens": self.cfg.max_new_tokens or self.cfg.max_target_len,
            "do_sample": False,
            "num_beams": 1,
        }
        if self.student.kind == "causal":
            tok, fmt = self.student.tokenizer, self.student.prompt
            kw["eos_token_id"] = sorted({fmt.end_token_id, tok.eos_token_id} - {None})
            kw["pad_token_id"] = tok.pad_token_id
        return kw

    @torch.no_grad()
    def predict(self, rows: list[Row], model: nn.Module | None = None) -> list[str]:
        """Greedy generations for `rows`, sharded over ranks (longest first) and gathered on every rank.

        Under FSDP every forward is a collective, so generation runs through the sharded root's forward,
        every rank runs the same number of batches (a rank out of rows repeats a row and drops the
        output), and `synced_gpus` keeps a rank whose batch has finished stepping until all have.
        """
        model = self.student.model if model is None else model
        tok, env, root = self.student.tokenizer, self.env, self.fsdp_root
        causal = self.student.kind == "causal"
        model.eval()
        ids = self.prompts(rows)
        mine = sorted(range(len(rows)), key=lambda i: -len(ids[i]))[env.rank :: env.world]
        bs = self.cfg.eval_batch_size or self.cfg.batch_size
        n_batches = math.ceil(math.ceil(len(rows) / env.world) / bs) if root else math.ceil(len(mine) / bs)
        kw = self.generate_kwargs()
        out: dict[int, str] = {}
        for b in range(n_batches):
            idx = mine[b * bs : (b + 1) * bs]
            seqs = [ids[i] for i in idx or [0]]
            x, m = _pad_left(seqs, tok.pad_token_id) if causal else pad_inputs(seqs, tok.pad_token_id)
            x, m = x.to(env.device), m.to(env.device)
            with env.autocast():
                if root is not None:
                    gen = root(x, attention_mask=m, generate={**kw, "synced_gpus": env.world > 1})
                else:
                    gen = model.generate(input_ids=x, attention_mask=m, **kw)
            if causal:
                gen = gen[:, x.size(1) :]  # the new tokens only
            texts = tok.batch_decode(gen, skip_special_tokens=True)
            out.update(zip(idx, texts[: len(idx)], strict=True))
        if root is not None:
            root.reshard()  # the root keeps its gathered weights after a forward that has no backward
        if env.world > 1:
            parts: list[dict[int, str]] = [{} for _ in range(env.world)]
            dist.all_gather_object(parts, out)
            out = {k: v for p in parts for k, v in p.items()}
        return [out[i].strip() for i in range(len(rows))]

    def evaluate(
        self, rows: list[Row], split: str, model: nn.Module | None = None
    ) -> tuple[dict, list[dict]]:
        """(metrics, prediction records) for one split, with task-aware comparison."""
        preds = self.predict(rows, model)
        golds = [r.gold for r in rows]
        task = rows[0].task if rows else ""
        arith = is_arithmetic(task, golds)
        records = [
            {
                "split": split,
                "example_id": r.example_id,
                "input": r.input,
                "prediction": p,
                "gold": r.gold,
                "correct": is_correct(p, r.gold, arith),
            }
            for r, p in zip(rows, preds, strict=True)
        ]
        return accuracy(preds, golds, task), records
