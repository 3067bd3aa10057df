"""Tokenise once, then build length-grouped micro-batches with dynamic padding.

Grouping rows of similar length before padding is where most of the saved compute comes from: a
random batch is padded to its longest row, a grouped one to a row of about the same length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .data import EXPLAIN_PREFIX, PREDICT_PREFIX, Row

IGNORE = -100
MEGABATCH = 50  # sort within windows of MEGABATCH batches: grouped, yet still shuffled across epochs
SUBGROUP = 4  # then re-sort runs of SUBGROUP batches by the second key (measured best on SVAMP: 0.80 -> 0.88)
REACH = 8  # finally re-split each batch with its next REACH neighbours where that cuts padding (0.88 -> 0.92)


@dataclass
class Encoded:
    """Token ids of the training rows: one encoder input per task, one target per task."""

    inputs: dict[str, list[list[int]]]  # task -> input ids (prefixed per task in sbs mode)
    targets: dict[str, list[list[int]]]  # task -> target ids
    cut_rows: int = 0  # rows whose input was cut to --max-input-len

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def lengths(self) -> list[tuple[int, int, int]]:
        """Per-row grouping key: (longest target, encoder input tokens, other target tokens).

        The longest target (the rationale in sbs mode) drives the decoder, the costliest part of a
        step, so batches are grouped by it first and by input length second. The input counts every
        task's encoder row, so a batch padded to the maxima of these keys computes
        `len(batch) * sum(maxima)` token positions: the cost that `epoch_batches` minimises.
        """
        keys = []
        for i in range(len(self)):
            targets = [len(t[i]) for t in self.targets.values()]
            inputs = sum(len(x[i]) for x in self.inputs.values())
            keys.append((max(targets), inputs, sum(targets) - max(targets)))
        return keys


def _ids(tokenizer, texts: list[str], max_len: int, target: bool = False) -> list[list[int]]:
    if not texts:
        return []
    kw = {"text_target": texts} if target else {"text": texts}
    return tokenizer(**kw, truncation=True, max_length=max_len)["input_ids"]


def encode_rows(rows: list[Row], tokenizer, mode: str, max_input_len: int, max_target_len: int) -> Encoded:
    """Tokenise every row once, up front, so batching is just index arithmetic."""
    texts = [r.input for r in rows]
    if mode == "sbs":
        inputs = {
            "label": _ids(tokenizer, [PREDICT_PREFIX + t for t in texts], max_input_len),
            "rationale": _ids(tokenizer, [EXPLAIN_PREFIX + t for t in texts], max_input_len),
        }
    else:
        inputs = {"label": _ids(tokenizer, texts, max_input_len)}
    targets = {
        task: _ids(tokenizer, [r.targets[task] for r in rows], max_target_len, target=True) for task in inputs
    }
    # a row at exactly the cap may have been cut: tokenise those few again without truncation to know
    at_cap = {i for ids in inputs.values() for i, x in enumerate(ids) if len(x) >= max_input_len}
    cut = 0
    for i in at_cap:
        prefixes = [PREDICT_PREFIX, EXPLAIN_PREFIX] if mode == "sbs" else [""]
        full = tokenizer([p + texts[i] for p in prefixes])["input_ids"]
        cut += any(len(x) > max_input_len for x in full)
    return Encoded(inputs, targets, cut)


Keys = tuple[int, ...]


def padded_cost(batch: list[int], keys: list[Keys]) -> int:
    """Token positions a batch computes when every length key is padded to the batch's longest row."""
    return len(batch) * sum(max(keys[i][k] for i in batch) for k in range(len(keys[batch[0]])))


def _refine(batches: list[list[int]], keys: list[Keys]) -> None:
    """Re-split neighbouring batches in place where another split of their rows pads less.

    Sorting on one key and then another leaves rows that are long in one key and short in the other
    in the wrong batch; for each pair of nearby batches, the pooled rows are re-cut by each key and the
    cheapest split is kept. Batch sizes do not change. Two passes of this take SVAMP at batch 16 from
    0.88 to 0.92 padding efficiency (batch 64: 0.77 -> 0.81).
    """
    n_keys = len(keys[batches[0][0]]) if batches else 0
    for _ in range(2):
        for i in range(len(batches)):
            for j in range(i + 1, min(len(batches), i + 1 + REACH)):
                a, b = batches[i], batches[j]
                best, pool = padded_cost(a, keys) + padded_cost(b, keys), a + b
                for k in range(n_keys):
                    cut = sorted(pool, key=lambda r, k=k: -keys[r][k])
                    cost = padded_cost(cut[: len(a)], keys) + padded_cost(cut[len(a) :], keys)
                    if cost < best:
                        best, batches[i], batches[j] = cost, cut[: len(a)], cut[len(a) :]


def epoch_batches(
    lengths: list[Keys] | list[int], batch_size: int, seed: int, epoch: int, group: bool = True
) -> list[list[int]]:
    """Micro-batches (lists of row indices) of one epoch; a pure function of (seed, epoch) for resume.

    With `group`, rows are shuffled; inside windows of MEGABATCH batches they are sorted by the first
    length key, then every SUBGROUP batches' worth is re-sorted by the second key before cutting, and
    `_refine` re-splits neighbouring batches, so both the decoder and the encoder see little padding;
    finally the batch order is shuffled.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(len(lengths), generator=g).tolist()
    if not group:
        return [perm[i : i + batch_size] for i in range(0, len(perm), batch_size)]
    keys = [k if isinstance(k, tuple) else (k,) for k in lengths]
    batches: list[list[int]] = []
    window, sub = batch_size * MEGABATCH, batch_size * SUBGROUP
    second = min(1, len(keys[0]) - 1) if keys else 0
    for start in range(0, len(perm), window):
        chunk = sorted(perm[start : start + window], key=lambda j: -keys[j][0])
        cut: list[list[int]] = []
        for s0 in range(0, len(chunk), sub):
            part = sorted(chunk[s0 : s0 + sub], key=lambda j: -keys[j][second])
            cut.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
        _refine(cut, keys)
        batches.extend(cut)
    order = torch.randperm(len(batches), generator=g).tolist()
    return [batches[i] for i in order]


class BatchStream:
    """An endless stream of micro-batches across epochs, positioned by (epoch, index) so resume is exact.

    Every rank holds the same stream; an optimizer step consumes world*grad_accum consecutive
    micro-batches and rank r takes every world-th one, so N ranks see the same batches as one process
    with N times the gradient accumulation.
    """

    def __init__(self, lengths: list[Keys] | list[int], batch_size: int, seed: int, group: bool = True):
        self.lengths, self.batch_size, self.seed, self.group = lengths, batch_size, seed, group
        self.epoch, self.index = 0, 0
        self._batches = epoch_batches(lengths, batch_size, seed, 0, group)

    def state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def load_state(self, state: dict) -> None:
        self.epoch, self.index = state["epoch"], state["index"]
        self._batches = epoch_batches(self.lengths, self.batch_size, self.seed, self.epoch, self.group)

    def next(self) -> list[int]:
        if self.index >= len(self._batches):
            self.epoch, self.index = self.epoch + 1, 0
            self._batches = epoch_batches(self.lengths, self.batch_size, self.seed, self.epoch, self.group)
        batch = self._batches[self.index]
        self.index += 1
        return batch

    def take(self, world: int, rank: int) -> list[int]:
        """Advance by `world` micro-batches and return this rank's one."""
        batches = [self.next() for _ in range(world)]
        return batches[rank]

    def batches_per_epoch(self) -> int:
        return len(self._batches)


def pad(seqs: list[list[int]], value: int) -> torch.Tensor:
    """One tensor from ragged rows, padded on the right; one list-to-tensor call, not one per row."""
    width = max(len(s) for s in seqs)
    return torch.tensor([s + [value] * (width - len(s)) for s in seqs], dtype=torch.long)


def pad_inputs(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids padded to the longest row, and the attention mask built from the true lengths."""
    ids = pad(seqs, pad_id)
    lengths = torch.tensor([len(s) for s in seqs])
    return ids, (torch.arange(ids.size(1)) < lengths[:, None]).long()


def collate(enc: Encoded, idx: list[int], pad_id: int) -> dict:
    """One micro-batch, padded to its own longest row.

    sbs mode stacks the `predict:` rows on top of the `explain:` rows so a single encoder call serves
    both tasks; `split_cols` says how many columns each half really needs, so each decoder
    cross-attends over exactly the padding the two-pass computation would use.
    """
    if "rationale" not in enc.inputs:
        ids, mask = pad_inputs([enc.inputs["label"][i] for i in idx], pad_id)
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": pad([enc.targets["label"][i] for i in idx], IGNORE),
        }
    pred = [enc.inputs["label"][i] for i in idx]
    expl = [enc.inputs["rationale"][i] for i in idx]
    ids, mask = pad_inputs(pred + expl, pad_id)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": pad([enc.targets["label"][i] for i in idx], IGNORE),
        "rationale_labels": pad([enc.targets["rationale"][i] for i in idx], IGNORE),
        "split_cols": (max(len(s) for s in pred), max(len(s) for s in expl)),
    }


def two_pass_batches(enc: Encoded, idx: list[int], pad_id: int) -> dict[str, dict[str, torch.Tensor]]:
    """The original code's batches: one dict per task, each padded on its own (used as the reference)."""
    out = {}
    for task in enc.inputs:
        ids, mask = pad_inputs([enc.inputs[task][i] for i in idx], pad_id)
        out[task] = {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": pad([enc.targets[task][i] for i in idx], IGNORE),
        }
    return out


def count_tokens(batch: dict) -> int:
    """Non-pad tokens a micro-batch carries (encoder inputs + targets), for tokens/s."""
    n = int(batch["attention_mask"].sum())
    n += int((batch["labels"] != IGNORE).sum())
    if "rationale_labels" in batch:
        n += int((batch["rationale_labels"] != IGNORE).sum())
    return n
