"""Builders for the review/browse tests: a scored, filtered svamp-like version with a few hostile rows."""

from __future__ import annotations

from export_helpers import question
from workspace_helpers import make_examples, make_generations

from sbs_data.quality.filter import filter_version
from sbs_data.quality.recipes import parse_recipe
from sbs_data.quality.signals import score
from sbs_data.workspace import Version, Workspace

#: Teacher text that would run script if a page ever put it in as markup.
HOSTILE_RATIONALE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned=2">'
HOSTILE_INPUT = "<b onmouseover=alert(1)>bold?</b> <svg onload=window.__pwned=3>"


#: Drops the train rows whose label disagrees with gold (rule `gold`).
RECIPE = parse_recipe(
    '{"name": "gold-only", "steps": [{"name": "gold", "signal": "gold_match", "equals": true}]}', where="test"
)


def build_reviewable(ws: Workspace, n: int = 10, name: str = "rv") -> tuple[Version, Version, Version]:
    """(generations, scores, selection): n train + 2 test examples, 2 samples each (sample 1 of every third
    example answers wrong), example h000 with hostile input and rationale; filtered with RECIPE (drops the wrong train rows, rule `gold`)."""
    rows = [
        {"id": f"tr{i:03d}", "input": question(i), "label": f"{i + 3} + {2 * i + 1}", "split": "train"}
        for i in range(n)
    ]
    rows += [
        {"id": f"te{i:03d}", "input": question(50 + i), "label": f"{53 + i} + {101 + 2 * i}", "split": "test"}
        for i in range(2)
    ]
    rows.append(
        {"id": "h000", "input": HOSTILE_INPUT + " How many is 2 + 2?", "label": "2 + 2", "split": "train"}
    )
    ex = make_examples(ws, name, "svamp", rows)
    gens = []
    for i, r in enumerate(rows):
        for s in range(2):
            wrong = s == 1 and i % 3 == 0
            answer = "999" if wrong else r["label"]
            text = (
                HOSTILE_RATIONALE if r["id"] == "h000" else f"We add the amounts for {r['id']} (sample {s})"
            )
            gens.append(
                {"example_id": r["id"], "sample_idx": s, "raw": f"{text}. So the answer is {answer}."}
            )
    gen = make_generations(ws, ex, gens, name=f"{name}-gen", teacher="fake:teacher-1")
    scored = score(ws, gen.ref)
    sel = filter_version(ws, scored.ref, RECIPE, name=f"{name}-sel").version
    return gen, scored, sel
