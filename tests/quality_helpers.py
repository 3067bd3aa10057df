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


def samples(example_id: str, *raws: str) -> list[dict]:
    """Generation rows of one example: a row per completion, sample_idx 0, 1, ... in order."""
    return [{"example_id": example_id, "sample_idx": i, "raw": raw} for i, raw in enumerate(raws)]


SVAMP_GENS = [
    *samples(
        "train-0",
        # right answer, right arithmetic, concludes on the label's value
        "There are 45 flower beds with 10 seeds each. 10 * 45 is 450. The answer is (10 * 45).\n\nQ: x",
        # wrong arithmetic and wrong answer
        "There are 45 flower beds with 10 seeds each. 10 * 45 = 460. The answer is 460.",
        # right answer stated first (leakage); concludes on another number
        "450. There are 45 flower beds with 10 seeds each. The answer is 450.",
    ),
    # no answer sentence at all
    *samples("train-1", "Jack got 3 emails and then 6 more emails in the evening."),
]


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
    *samples(
        "q1",
        "The answer must be a place with many trees. Of the above choices, only wooded area has many trees. So the answer is (a) wooded area.",
        "The answer must be a place with many trees. Of the above choices, only wooded area has many trees. So the answer is (a) wooded area.",
        "Deserts have no trees at all. Of the above choices, the desert is dry. So the answer is (c) park.",
    ),
    *samples(
        "q2",
        "Roller coaster. People ride things at a fair. So the answer is roller coaster.",
        "I'm sorry, I cannot help with that. So the answer is (f) nothing.",
    ),
]


def _scored(
    ws: Workspace, name: str, task: str, examples: list[dict], gens: list[dict]
) -> tuple[Version, Version]:
    """Train examples NAME, generations NAME-gen answering them, and those generations scored."""
    ex = make_examples(ws, name, task, examples, split="train")
    gen = make_generations(ws, ex, gens, name=f"{name}-gen")
    return gen, score(ws, gen.ref)


def svamp_scored(ws: Workspace) -> tuple[Version, Version]:
    return _scored(ws, "sv", "svamp", SVAMP_EXAMPLES, SVAMP_GENS)


def cqa_scored(ws: Workspace) -> tuple[Version, Version]:
    return _scored(ws, "cq", "cqa", CQA_EXAMPLES, CQA_GENS)
