"""Batches: what sbs/standard/distill feed the model, length grouping, and the rank/accumulation split."""

from __future__ import annotations

import random
from unittest.mock import patch

from sbs_trainer import batching
from sbs_trainer.batching import (
    IGNORE,
    BatchStream,
    Encoded,
    collate,
    encode_rows,
    epoch_batches,
    padded_cost,
)
from sbs_trainer.data import Row
from transformers import ByT5Tokenizer

TOK = ByT5Tokenizer()


def _rows() -> list[Row]:
    return [
        Row("a", "svamp", "one two", "( 1 + 2 )", {"label": "( 1 + 2 )", "rationale": "1 + 2 = 3"}),
        Row(
            "b",
            "svamp",
            "a much longer input",
            "( 4 * 5 )",
            {"label": "( 4 * 5 )", "rationale": "4 * 5 is 20"},
        ),
    ]


def _text(ids) -> str:
    return TOK.decode(
        [i for i in ids.tolist() if i not in (IGNORE, TOK.pad_token_id)], skip_special_tokens=True
    )


def test_sbs_batch_stacks_prefixed_inputs():
    enc = encode_rows(_rows(), TOK, "sbs", 64, 32)
    b = collate(enc, [0, 1], TOK.pad_token_id)
    assert [_text(r) for r in b["input_ids"]] == [
        "predict: one two",
        "predict: a much longer input",
        "explain: one two",
        "explain: a much longer input",
    ]
    assert [_text(r) for r in b["labels"]] == ["( 1 + 2 )", "( 4 * 5 )"]
    assert [_text(r) for r in b["rationale_labels"]] == ["1 + 2 = 3", "4 * 5 is 20"]
    assert b["split_cols"] == (
        len("predict: a much longer input") + 1,
        len("explain: a much longer input") + 1,
    )
    assert b["attention_mask"].sum(1).tolist() == [len(_text(r)) + 1 for r in b["input_ids"]]
    assert (b["labels"][0] == IGNORE).sum() == 0 or b["labels"].shape[1] > len("( 1 + 2 )") + 1


def test_standard_and_distill_batches_have_no_prefix():
    rows = _rows()
    for r in rows:
        r.targets = {"label": r.targets["label"]}
    enc = encode_rows(rows, TOK, "standard", 64, 32)
    b = collate(enc, [1, 0], TOK.pad_token_id)
    assert set(b) == {"input_ids", "attention_mask", "labels"}
    assert [_text(r) for r in b["input_ids"]] == ["a much longer input", "one two"]
    assert [_text(r) for r in b["labels"]] == ["( 4 * 5 )", "( 1 + 2 )"]
    assert int((b["labels"] == IGNORE).sum()) == 0  # same-length targets: no padding


def test_truncation_to_max_lengths():
    enc = encode_rows(_rows(), TOK, "sbs", 8, 4)
    assert max(len(s) for s in enc.inputs["label"] + enc.inputs["rationale"]) == 8
    assert max(len(s) for s in enc.targets["rationale"]) == 4


def test_epoch_batches_cover_all_rows_and_group_lengths():
    rng = random.Random(0)
    lengths = [(rng.randint(5, 200), rng.randint(5, 200)) for _ in range(400)]
    for group in (True, False):
        batches = epoch_batches(lengths, 8, seed=3, epoch=0, group=group)
        assert sorted(i for b in batches for i in b) == list(range(400))
        assert batches == epoch_batches(lengths, 8, seed=3, epoch=0, group=group)
    assert epoch_batches(lengths, 8, 3, 0) != epoch_batches(lengths, 8, 3, 1)

    def efficiency(batches, k):
        return sum(x[k] for x in lengths) / sum(len(b) * max(lengths[i][k] for i in b) for b in batches)

    grouped, random_ = (
        epoch_batches(lengths, 8, 3, 0, group=True),
        epoch_batches(lengths, 8, 3, 0, group=False),
    )
    assert efficiency(grouped, 0) > 0.85 and efficiency(grouped, 1) > 0.75  # both keys, uncorrelated
    assert efficiency(random_, 0) < 0.75 and efficiency(random_, 1) < 0.75


def test_stream_ranks_match_accumulation_and_resume():
    lengths = list(range(1, 23))
    one = BatchStream(lengths, 2, seed=1)
    r0, r1 = BatchStream(lengths, 2, seed=1), BatchStream(lengths, 2, seed=1)
    for _ in range(15):  # crosses epoch boundaries (11 batches per epoch)
        assert [one.next(), one.next()] == [r0.take(2, 0), r1.take(2, 1)]
    again = BatchStream(lengths, 2, seed=1)
    again.load_state(one.state())
    assert [again.next() for _ in range(5)] == [one.next() for _ in range(5)]


def test_lengths_cover_both_tasks():
    enc = Encoded(
        {"label": [[1, 2], [1]], "rationale": [[1, 2, 3], [1]]},
        {"label": [[1], [1]], "rationale": [[1, 2], [1]]},
    )
    # (longest target, encoder tokens over both prefixed inputs, the other target)
    assert enc.lengths() == [(2, 5, 1), (1, 2, 1)] and len(enc) == 2


def test_refined_grouping_pads_less_than_two_sorts():
    """Re-splitting neighbouring batches lowers the padded cost and keeps every row exactly once."""
    rng = random.Random(1)
    inputs = [rng.randint(20, 80) for _ in range(640)]  # (rationale, 2 prefixed inputs, label) lengths
    lengths = [(x // 2 + rng.randint(5, 60), 2 * x, rng.randint(1, 15)) for x in inputs]
    refined = epoch_batches(lengths, 16, seed=0, epoch=0)
    assert sorted(i for b in refined for i in b) == list(range(640))
    assert all(len(b) == 16 for b in refined)
    with patch.object(batching, "_refine", lambda batches, keys: None):
        unrefined = epoch_batches(lengths, 16, seed=0, epoch=0)
    cost = sum(padded_cost(b, lengths) for b in refined)
    assert cost < 0.985 * sum(padded_cost(b, lengths) for b in unrefined)
