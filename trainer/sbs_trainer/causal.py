"""Decoder-only students: one sequence per task, packed, with logits only at target positions.

Each training row gives one sequence per task: `prompt(task, input) + target + end token` (prompts.py).
The loss runs on target tokens only (the end token included); each task's loss is the mean
cross-entropy over its own target tokens, mixed with --alpha exactly as for seq2seq students.

Three layouts of a micro-batch, all one forward pass for both tasks:

- `rows` (the default on CPU): each row holds one example's sequences back to back (predict, then
  explain), right-padded to the batch's longest row; the padding is a sequence of its own. Position
  ids restart at every sequence, and transformers turns restarting position ids into a block-diagonal
  causal mask (sdpa/eager) or varlen flash-attention, so no sequence sees another.
- `flat` (CUDA with flash-attention): every sequence of the micro-batch in one row, no padding at all.
- `none`: one padded row per sequence with an attention mask; the reference the packed layouts are
  tested against, and the fallback for a model whose attention ignores restarting position ids.

The model's forward gets `logits_to_keep` as a boolean mask of the positions whose next token is a
target, so the vocabulary projection (most of a small student's compute with a 150k vocabulary) runs
on those positions only, through the model's own output layer (soft-capping and scaling included).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .batching import IGNORE
from .data import Row
from .prompts import PromptFormat

PACKINGS = ("auto", "rows", "flat", "none")
TASK_IDS = {"label": 0, "rationale": 1}


@dataclass
class CausalEncoded:
    """Token ids of the training rows: per task, the prompt and the target (end token included)."""

    prompts: dict[str, list[list[int]]]
    targets: dict[str, list[list[int]]]
    cut_rows: int = 0  # rows whose input was shortened to fit --max-input-len

    def __len__(self) -> int:
        return len(next(iter(self.prompts.values())))

    def seq_len(self, task: str, i: int) -> int:
        return len(self.prompts[task][i]) + len(self.targets[task][i])

    def tokens(self, idx: list[int]) -> int:
        """Real (non-pad) tokens of these rows' sequences, prompts and targets, for tokens/s."""
        return sum(self.seq_len(t, i) for t in self.prompts for i in idx)

    def lengths(self) -> list[tuple[int, ...]]:
        """Grouping key per row: every task's sequence back to back (the `rows` layout's row length)."""
        return [(sum(self.seq_len(t, i) for t in self.prompts),) for i in range(len(self))]


def fit_prompt(fmt: PromptFormat, tokenizer, task: str, text: str, max_len: int) -> tuple[list[int], bool]:
    """The prompt's ids, with the input cut (from its end) until the whole prompt fits `max_len` tokens.

    The template and the instruction are never cut, nor is the target. Returns (ids, was_cut).
    """
    ids = fmt.prompt_ids(tokenizer, task, text)
    if len(ids) <= max_len:
        return ids, False
    text_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    keep = len(text_ids) - (len(ids) - max_len)
    for _ in range(8):  # re-tokenising the cut text can merge differently: shave a little more each time
        if keep <= 0:
            break
        ids = fmt.prompt_ids(tokenizer, task, tokenizer.decode(text_ids[:keep], skip_special_tokens=True))
        if len(ids) <= max_len:
            return ids, True
        keep -= len(ids) - max_len
    ids = fmt.prompt_ids(tokenizer, task, "")
    if len(ids) > max_len:
        raise ValueError(
            f"--max-input-len {max_len} is shorter than the prompt template alone ({len(ids)} tokens)"
        )
    return ids, True


def encode_causal(
    rows: list[Row],
    tokenizer,
    fmt: PromptFormat,
    tasks: tuple[str, ...],
    max_input_len: int,
    max_target_len: int,
) -> CausalEncoded:
    """Tokenise every row once: per task, the fitted prompt and the ended target."""
    prompts: dict[str, list[list[int]]] = {t: [] for t in tasks}
    targets: dict[str, list[list[int]]] = {t: [] for t in tasks}
    cut = 0
    for r in rows:
        row_cut = False
        for t in tasks:
            ids, was_cut = fit_prompt(fmt, tokenizer, t, r.input, max_input_len)
            row_cut |= was_cut
            prompts[t].append(ids)
            targets[t].append(fmt.target_ids(tokenizer, r.targets[t], max_target_len))
        cut += row_cut
    return CausalEncoded(prompts, targets, cut)


def _sequence(enc: CausalEncoded, task: str, i: int) -> tuple[list[int], list[int]]:
    """(ids, labels) of one sequence; labels[t] is the target token at t+1, else IGNORE."""
    p, y = enc.prompts[task][i], enc.targets[task][i]
    ids = p + y
    labels = [IGNORE] * (len(p) - 1) + y + [IGNORE]
    return ids, labels


def collate_causal(enc: CausalEncoded, idx: list[int], pad_id: int, packing: str) -> dict:
    """One micro-batch in the given layout (see the module docstring); every layout has the same targets."""
    tasks = list(enc.prompts)
    if packing == "none":
        seqs = [(_sequence(enc, t, i), TASK_IDS[t]) for t in tasks for i in idx]
        width = max(len(s[0]) for s, _ in seqs)
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
        task = torch.zeros((len(seqs), width), dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, ((x, y), k) in enumerate(seqs):
            ids[r, : len(x)], labels[r, : len(x)], mask[r, : len(x)] = torch.tensor(x), torch.tensor(y), 1
            task[r, : len(x)] = k
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, "task_ids": task}
    groups = [list(idx)] if packing == "flat" else [[i] for i in idx]
    rows = []
    for g in groups:
        x, y, pos, task = [], [], [], []
        for i in g:
            for t in tasks:
                a, b = _sequence(enc, t, i)
                x += a
                y += b
                pos += range(len(a))
                task += [TASK_IDS[t]] * len(a)
        rows.append((x, y, pos, task))
    width = max(len(r[0]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    task_ids = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (x, y, pos, task) in enumerate(rows):
        n = len(x)
        ids[r, :n], labels[r, :n] = torch.tensor(x), torch.tensor(y)
        positions[r, :n], task_ids[r, :n] = torch.tensor(pos), torch.tensor(task)
        positions[r, n:] = torch.arange(width - n)  # the padding: a sequence of its own, seen by nothing
    return {"input_ids": ids, "position_ids": positions, "labels": labels, "task_ids": task_ids}


def supports_logits_to_keep(model: nn.Module) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


class CausalStep(nn.Module):
    """Per-task losses of one micro-batch in a single forward; with `generate=` kwargs, `model.generate`.

    Under DDP/FSDP this module is what is wrapped, so one call is one forward of the whole step.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.keep_logits = supports_logits_to_keep(model)

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        task_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        generate: dict | None = None,
    ) -> dict[str, torch.Tensor] | torch.Tensor:
        if generate is not None:
            return self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **generate)
        keep = labels != IGNORE
        kw = {"logits_to_keep": keep} if self.keep_logits else {}
        logits = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
            **kw,
        ).logits
        if logits.dim() == 3:  # a model that projects every position: keep the target ones
            logits = logits[keep]
        return task_losses(logits, labels[keep], task_ids[keep])


def task_losses(logits: torch.Tensor, targets: torch.Tensor, tasks: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean fp32 cross-entropy per task over that task's target tokens."""
    ce = F.cross_entropy(logits.float(), targets, reduction="none")
    out = {}
    for name, k in TASK_IDS.items():
        sel = tasks == k
        if name == "label" or bool(sel.any()):
            out[name] = ce[sel].sum() / sel.sum().clamp(min=1)
    return out


def full_logits_losses(model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
    """The naive reference: every position projected onto the vocabulary, then the target ones kept."""
    logits = model(
        input_ids=batch["input_ids"],
        attention_mask=batch.get("attention_mask"),
        position_ids=batch.get("position_ids"),
        use_cache=False,
    ).logits
    keep = batch["labels"] != IGNORE
    return task_losses(logits[keep], batch["labels"][keep], batch["task_ids"][keep])
