"""The vectorised text features and the chunked scorer agree with plain per-row definitions."""

from __future__ import annotations

import re

import numpy as np
import polars as pl
import pytest
from quality_helpers import CQA_EXAMPLES, CQA_GENS, scores_by_key
from workspace_helpers import make_examples, make_generations

import sbs_data.quality.signals as signals
from sbs_data.quality.signals import _STOP, score
from sbs_data.quality.textfeat import arithmetic_candidates, text_features
from sbs_data.tasks import mathexpr

TEXTS = [
    "",
    "   ",
    "...",
    "Yes.",
    "Two words",
    "So 10 * 45 = 450! Is it? Yes. Yes. 1,000 - 1 = 999.",
    "He sleeps. He sleeps. He sleeps on a couch.\nThe end",
    "a b c a b c a b c",
    "Café déjà-vu: naïve résumé, 3.5 km; x_y 42",
    "-7 apples and 12 - 67 = -55 peaches, (2 + 3) * 4 = 20",
    "The answer is 5 so the apples are 5 apples",
]
INPUT = "Tom has 5 apples and a couch. How many apples? Café!"


def _reference(text: str, inp: str) -> dict:
    """The signal definitions, one row in plain Python (what the old SQL computed)."""
    lr = text.lower()
    toks = re.findall(r"[^\W_]+", lr)
    grams = [tuple(toks[i : i + 3]) for i in range(len(toks) - 2)] or ([tuple(toks)] if toks else [])
    for a, b in (("!", "."), ("?", "."), ("\n", " "), ("\t", " ")):
        lr = lr.replace(a, b)
    sents = lr.rstrip(". ").split(". ") if text.lower().strip(" ") else []
    content = set(toks) - set(_STOP)
    iw = set(re.findall(r"[^\W_]+", inp.lower()))
    nums = re.findall(r"(?:^|[^\d])(-?\d+(?:\.\d+)?)", text.replace(",", ""))
    return {
        "words": len(toks),
        "sentences": len(sents),
        "repeated_sentences": len(sents) - len(set(sents)),
        "ngram_repetition": 1 - len(set(grams)) / len(grams) if grams else 0.0,
        "input_overlap": len(content & iw) / len(content) if content else None,
        "first_num": float(nums[0]) if nums else None,
        "last_num": float(nums[-1]) if nums else None,
        "norm": " ".join(toks) or None,
    }


def test_text_features_match_per_row_definitions():
    rows = pl.DataFrame(
        {"rid": range(len(TEXTS)), "example_id": ["e1", "e2"] * 5 + ["e1"], "rationale": TEXTS}
    )
    inputs = pl.DataFrame({"example_id": ["e2", "e1"], "input_text": ["nothing shared", INPUT]})
    feats, grams, soff = text_features(rows, inputs, _STOP, numbers=True)
    got = feats.to_dicts()
    hashes = {}
    for i, (text, row) in enumerate(zip(TEXTS, got)):
        want = _reference(text, INPUT if i % 2 == 0 else "nothing shared")
        for k in ("words", "sentences", "repeated_sentences", "first_num", "last_num"):
            assert row[k] == want[k], (text, k)
        for k in ("ngram_repetition", "input_overlap"):
            assert row[k] == (None if want[k] is None else pytest.approx(want[k])), (text, k)
        assert (row["rationale_hash"] is None) == (want["norm"] is None), text
        if want["norm"]:
            hashes.setdefault(want["norm"], set()).add(row["rationale_hash"])
        assert soff[i + 1] - soff[i] == max(want["words"] - 2, min(want["words"], 1))
    assert all(len(h) == 1 for h in hashes.values())
    assert len({next(iter(h)) for h in hashes.values()}) == len(hashes)  # distinct texts, distinct hashes
    assert len(grams) == soff[-1] and grams.dtype == np.uint64


def test_arithmetic_candidates_match_mathexpr():
    rows = pl.DataFrame({"rid": range(len(TEXTS)), "rationale": TEXTS})
    found = arithmetic_candidates(rows)
    steps = found.filter(pl.col("kind") == "step")
    for i, text in enumerate(TEXTS):
        want = [(e, c) for e, c, _ in mathexpr.arithmetic_steps(text)]
        got = [(r["expr"].strip(), r["claimed"]) for r in steps.filter(pl.col("rid") == i).to_dicts()]
        assert got == want, text
    last = dict(found.filter(pl.col("kind") == "last").select("rid", "expr").iter_rows())
    assert last[5] == "1000 - 1" and last[9] == "(2 + 3) * 4" and 0 not in last


def _many(ws):
    """Examples whose rationales repeat across examples (exact and near copies), several samples each."""
    ex = make_examples(
        ws, "cqm", "cqa", [{**e, "id": f"{e['id']}-{k}"} for k in range(4) for e in CQA_EXAMPLES]
    )
    rows = []
    for k in range(4):
        for i, g in enumerate(CQA_GENS):
            # a long opening per generation; odd copies change one word of it (3-gram Jaccard ~0.87)
            opening = " ".join(f"w{i}x{j}" for j in range(40)) + ". "
            if k % 2:
                opening = opening.replace(f"w{i}x20 ", "changed ")
            rows.append({**g, "example_id": f"{g['example_id']}-{k}", "raw": opening + g["raw"]})
    return make_generations(ws, ex, rows, name="cqm-gen")


def test_chunked_scoring_equals_one_chunk(ws, monkeypatch):
    gen = _many(ws)
    whole = scores_by_key(ws, score(ws, gen.ref))
    monkeypatch.setattr(signals, "CHUNK_ROWS", 3)  # whole examples per chunk: 2-3 rows each
    chunked = scores_by_key(ws, score(ws, gen.ref))
    assert len(whole) == len(chunked) == 20
    for key, row in whole.items():
        other = chunked[key]
        for col, value in row.items():
            if col != "version_id":
                assert other[col] == value, (key, col)
    # duplicates are found across examples (and so across chunks)
    assert sum(r["exact_dup"] for r in whole.values()) >= 10
    assert {r["exact_dup_count"] for r in whole.values() if r["exact_dup"]} == {2}
    near_only = [r for r in whole.values() if r["near_dup"] and not r["exact_dup"]]
    assert near_only and all(r["near_dup_size"] >= 4 for r in near_only)


def test_scoring_restores_settings_and_drops_temp_tables(ws):
    before = ws.all("SELECT current_setting('memory_limit'), current_setting('preserve_insertion_order')")
    score(ws, _many(ws).ref)
    after = ws.all("SELECT current_setting('memory_limit'), current_setting('preserve_insertion_order')")
    assert after == before
    assert ws.all("SELECT table_name FROM duckdb_tables() WHERE temporary AND table_name LIKE '_sq%'") == []


def test_scoring_a_version_with_no_visible_rows(ws):
    from quality_helpers import svamp_scored

    from sbs_data.quality.filter import filter_version
    from sbs_data.quality.recipes import parse_recipe

    gen, _ = svamp_scored(ws)
    none = filter_version(ws, gen.ref, parse_recipe("steps:\n  - {name: none, signal: words, max: -1}\n"))
    assert none.version.row_count == 0
    assert score(ws, none.version.ref).row_count == 0
