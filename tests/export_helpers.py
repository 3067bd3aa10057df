"""Builders for export/push tests: a small svamp-like dataset with train/test, samples, scores, selections."""

from __future__ import annotations

import polars as pl
from workspace_helpers import make_examples, make_generations

from sbs_data.workspace import Version, Workspace

QUESTIONS = [
    "Mary had {a} apples in her basket and then she bought {b} more apples at the farmers market. How many apples does she have",
    "A train carries {a} passengers to the city and at the next station {b} more passengers get on board. How many passengers are on the train",
    "Tom collected {a} seashells on the beach on Monday and found {b} additional seashells on Tuesday morning. How many seashells did he collect",
    "The library lent {a} books during the spring term and another {b} books over the long summer holidays. How many books were lent",
]


def question(i: int) -> str:
    return QUESTIONS[i % len(QUESTIONS)].format(a=i + 3, b=2 * i + 1) + f" in week {i}?"


def build(
    ws: Workspace, n_train: int = 12, n_test: int = 4, samples: int = 2, name: str = "sv"
) -> tuple[Version, Version]:
    """examples (train + test split) and a generations version with `samples` samples per example."""
    rows = [
        {"id": f"tr{i:03d}", "input": question(i), "label": f"{i + 3} + {2 * i + 1}", "split": "train"}
        for i in range(n_train)
    ]
    rows += [
        {
            "id": f"te{i:03d}",
            "input": question(100 + i),
            "label": f"{103 + i} + {201 + 2 * i}",
            "split": "test",
        }
        for i in range(n_test)
    ]
    ex = make_examples(ws, name, "svamp", rows)
    gens = []
    for r in rows:
        for s in range(samples):
            gens.append(
                {
                    "example_id": r["id"],
                    "sample_idx": s,
                    "raw": f"We add the two amounts (sample {s}) for {r['id']}. So the answer is {r['label']}.",
                    "cost_usd": 0.001,
                }
            )
    gen = make_generations(ws, ex, gens, name=f"{name}-gen", teacher="fake:teacher-1")
    return ex, gen


def add_scores(ws: Workspace, gen: Version, values: dict[tuple[str, int], dict]) -> Version:
    """A scores version over `gen` with a few signal columns (others stay NULL)."""
    rows = []
    for (eid, s), vals in sorted(values.items()):
        rows.append({"example_id": eid, "sample_idx": s, "split": "train", **vals})
    df = pl.DataFrame(rows)
    with ws.new_version(gen.dataset, "scores", {"signals": sorted(df.columns)}, parents=[gen]) as v:
        ws.append("sbs_scores", v, df)
    return ws.by_id(v.version_id)


def add_selection(
    ws: Workspace, parent: Version, drop: dict[tuple[str, int], str], recipe: dict | None = None
) -> Version:
    """A selection version over `parent` keeping everything except `drop` (key -> reason)."""
    sql, params = ws.rows_query(parent, columns="example_id, sample_idx")
    keys = ws.all(sql, params)
    rows = [
        {"example_id": e, "sample_idx": s, "keep": (e, s) not in drop, "reason": drop.get((e, s))}
        for e, s in sorted(keys)
    ]
    df = pl.DataFrame(
        rows, schema={"example_id": pl.Utf8, "sample_idx": pl.Int32, "keep": pl.Boolean, "reason": pl.Utf8}
    )
    with ws.new_version(
        parent.dataset,
        "selection",
        {"recipe": recipe or {"steps": sorted(set(drop.values()))}},
        parents=[parent],
    ) as v:
        ws.append("sbs_selections", v, df)
    return ws.by_id(v.version_id)
