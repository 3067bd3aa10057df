"""How a version becomes shards: the typed options `export` and `push` take (the CLI maps its flags 1:1)."""

from __future__ import annotations

from dataclasses import dataclass

#: Rows per shard file by default.
DEFAULT_MAX_ROWS = 50_000


@dataclass
class ExportOptions:
    file_format: str = "parquet"  # parquet | jsonl
    max_rows_per_shard: int = DEFAULT_MAX_ROWS
    splits: list[str] | None = None  # default: every split
    validation_fraction: float | None = None  # carve this fraction of train examples into validation
    seed: int = 0  # seed of the validation carve
    label_source: str = "gold"  # the training label: gold | teacher
    rationale_source: str = "output"  # the training rationale: output | reasoning_summary (teacher_reasoning)
    drop_contaminated: bool = False  # drop train rows whose input overlaps validation/test inputs
    ngram: int = 8  # contamination: word n-gram size
    threshold: float = 0.8  # contamination: share of a row's n-grams seen in validation/test
    license: str | None = None  # card licence id (default: the task's source licence)
