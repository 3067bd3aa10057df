"""Source files for the ingest tests: JSONL files, and a small copy of the paper's released layout."""

from __future__ import annotations

import json
from pathlib import Path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_original(root: Path, ds: str = "mini") -> Path:
    folder = root / ds
    (folder / "llm").mkdir(parents=True)
    gold = {
        "train": [
            {"input": f"Ann has {i} apples and gets 2 more.\nHow many?", "label": f"( {i}.0 + 2.0 )"}
            for i in range(5)
        ],
        "test": [
            {"input": f"Bo has {i} pens and 3 more.\nHow many?", "label": f"( {i}.0 + 3.0 )"}
            for i in range(3)
        ],
    }
    for split, rows in gold.items():
        write_jsonl(folder / f"{ds}_{split}.json", rows)
    train = [f"{i} + 2 = {i + 2}. The answer is ({i} + 2).\n\nQ: made up\nA: more" for i in range(5)]
    train[3] = "I do not know.\n\nQ: x"
    (folder / "llm" / "train_CoT_0.json").write_text(json.dumps(train[:3]))
    (folder / "llm" / "train_CoT_1.json").write_text(json.dumps(train[3:]))
    (folder / "llm" / "test_CoT_0.json").write_text(
        json.dumps([f"The answer is ({i} + 3)." for i in range(3)])
    )
    (folder / "llm" / "valid_CoT_0.json").write_text(json.dumps(["The answer is 1."]))  # no gold: skipped
    return folder
