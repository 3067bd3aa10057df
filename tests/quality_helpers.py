"""Builders shared by the quality tests: tiny scored workspaces with known answers."""

from __future__ import annotations

from workspace_helpers import make_examples, make_generations

from sbs_data.quality.signals import score
from sbs_data.workspace import Version, Workspace


def scores_by_key(ws: Workspace, v: Version) -> dict[tuple[str, int], dict]:
    """{(example_id, sample_idx): {signal: value}} for a scores version."""
    cur = ws.con.execute("SELECT * FROM sbs_scores WHERE version_id = ?", [v.scores_id])
    cols = [d[0] for d in cur.description]
    return {(r[1], r[2]): dict(zip(cols, r)) for r in cur.fetchall()}


SVAMP_EXAMPLES = [
    {
        "input": "Paige put 10 seeds in each of 45 flower beds. How many seeds did they plant?",
        "label": "( 10.0 * 45.0 )",
    },
    {
        "input": "Jack got 3 emails in the morning and 6 in the evening. How many emails in all?",
        "label": "3 + 6",
    },
]
SVAMP_GENS = [
    # right answer, right arithmetic, concludes on the label's value
    {
        "example_id": "train-0",
        "sample_idx": 0,
        "raw": "There are 45 flower beds with 10 seeds each. 10 * 45 is 450. The answer is (10 * 45).\n\nQ: x",
    },
    # wrong arithmetic and wrong answer
    {
        "example_id": "train-0",
        "sample_idx": 1,
        "raw": "There are 45 flower beds with 10 seeds each. 10 * 45 = 460. The answer is 460.",
    },
    # right answer stated first (leakage); concludes on another number
    {
        "example_id": "train-0",
        "sample_idx": 2,
        "raw": "450. There are 45 flower beds with 10 seeds each. The answer is 450.",
    },
    # no answer sentence at all
    {
        "example_id": "train-1",
        "sample_idx": 0,
        "raw": "Jack got 3 emails and then 6 more emails in the evening.",
    },
]


def svamp_scored(ws: Workspace) -> tuple[Version, Version]:
    ex = make_examples(ws, "sv", "svamp", SVAMP_EXAMPLES, split="train")
    gen = make_generations(ws, ex, SVAMP_GENS, name="sv-gen")
    return gen, score(ws, gen.ref)


CQA_EXAMPLES = [
    {
        "id": "q1",
        "question": "Where do you find many trees?",
        "choices": ["wooded area", "desert", "park", "amusement park", "ocean"],
        "answer": "wooded area",
    },
    {
        "id": "q2",
        "question": "What do people ride at a fair?",
        "choices": ["car", "roller coaster", "park", "amusement park", "horse"],
        "answer": "roller coaster",
    },
]
CQA_GENS = [
    {
        "example_id": "q1",
        "sample_idx": 0,
        "raw": "The answer must be a place with many trees. Of the above choices, only wooded area has many trees. So the answer is (a) wooded area.",
    },
    {
        "example_id": "q1",
        "sample_idx": 1,
        "raw": "The answer must be a place with many trees. Of the above choices, only wooded area has many trees. So the answer is (a) wooded area.",
    },
    {
        "example_id": "q1",
        "sample_idx": 2,
        "raw": "Deserts have no trees at all. Of the above choices, the desert is dry. So the answer is (c) park.",
    },
    {
        "example_id": "q2",
        "sample_idx": 0,
        "raw": "Roller coaster. People ride things at a fair. So the answer is roller coaster.",
    },
    {
        "example_id": "q2",
        "sample_idx": 1,
        "raw": "I'm sorry, I cannot help with that. So the answer is (f) nothing.",
    },
]


def cqa_scored(ws: Workspace) -> tuple[Version, Version]:
    ex = make_examples(ws, "cq", "cqa", CQA_EXAMPLES, split="train")
    gen = make_generations(ws, ex, CQA_GENS, name="cq-gen")
    return gen, score(ws, gen.ref)
