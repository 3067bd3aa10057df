"""Contamination guard: train rows whose input or rationale overlaps the validation/test inputs.

A train text is flagged when, after normalisation (lower case, punctuation folded to spaces), it equals an
eval input, or it contains at least `threshold` of that eval input's distinct word n-grams (containment, not
Jaccard, so a rationale that quotes a test question inside a longer explanation is still caught). Eval
inputs shorter than `ngram` words are only matched exactly. N-grams shared by more than `max_df` eval inputs are
template text, not evidence, and are ignored (which also bounds the join). The n-gram join runs in DuckDB.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

EVAL_SPLITS = ("validation", "test")
_WORDS = r"regexp_extract_all(lower({col}), '[\p{{L}}\p{{N}}]+')"


@dataclass
class Contamination:
    """Which train rows overlap eval inputs, and the evidence (best match per flagged row)."""

    ngram: int
    threshold: float
    eval_examples: int = 0
    flagged: list[dict[str, Any]] = field(default_factory=list)  # one per flagged row, sorted

    def keys(self) -> set[tuple[str, int]]:
        return {(f["example_id"], f["sample_idx"]) for f in self.flagged}

    def report(self, dropped: int, samples: int = 20) -> dict[str, Any]:
        by_field: dict[str, int] = {}
        for f in self.flagged:
            by_field[f["field"]] = by_field.get(f["field"], 0) + 1
        return {
            "checked": True,
            "method": f"normalised exact match or >= {self.threshold:g} containment of the eval input's word {self.ngram}-grams",
            "against": list(EVAL_SPLITS),
            "ngram": self.ngram,
            "threshold": self.threshold,
            "eval_examples": self.eval_examples,
            "flagged_rows": len(self.flagged),
            "flagged_examples": len({f["example_id"] for f in self.flagged}),
            "by_field": dict(sorted(by_field.items())),
            "dropped_rows": dropped,
            "samples": self.flagged[:samples],
        }


def find_contamination(
    table: pa.Table, ngram: int = 8, threshold: float = 0.8, max_df: int = 5
) -> Contamination:
    """Flag train rows of `table` (columns example_id, sample_idx, split, input, rationale) against its eval inputs."""
    result = Contamination(ngram=ngram, threshold=threshold)
    con = duckdb.connect()
    try:
        con.register("rows_t", table.select(["example_id", "sample_idx", "split", "input", "rationale"]))
        words_in, words_rat = _WORDS.format(col="input"), _WORDS.format(col="rationale")
        con.execute(
            f"""CREATE TEMP TABLE ev AS
                SELECT eid, esplit, w, array_to_string(w, ' ') AS t
                FROM (SELECT example_id AS eid, min(split) AS esplit, {words_in} AS w
                      FROM rows_t WHERE split IN ('validation', 'test') GROUP BY example_id, input)"""
        )
        result.eval_examples = con.execute("SELECT count(DISTINCT eid) FROM ev").fetchall()[0][0]
        if not result.eval_examples:
            return result
        con.execute(
            f"""CREATE TEMP TABLE tr AS
                SELECT field, example_id, sample_idx, w, array_to_string(w, ' ') AS t FROM (
                    SELECT 'input' AS field, example_id, NULL::BIGINT AS sample_idx, {words_in} AS w
                    FROM (SELECT DISTINCT example_id, input FROM rows_t WHERE split = 'train')
                    UNION ALL
                    SELECT 'rationale', example_id, sample_idx, {words_rat}
                    FROM rows_t WHERE split = 'train' AND rationale IS NOT NULL)"""
        )
        # Hashing the joined string is ~2x faster in DuckDB than hashing the list slice.
        grams = """
            SELECT {keys}, hash(array_to_string(list_slice(w, i, i + $n - 1), ' ')) AS g
            FROM (SELECT {keys}, w, unnest(generate_series(1, len(w) - $n + 1)) AS i
                  FROM {src} WHERE len(w) >= $n)
        """
        # Eval n-grams shared by many eval inputs are template text ("how many apples does"), not evidence;
        # they are left out of both the join and the denominator, which also bounds the join's size.
        con.execute(
            f"""CREATE TEMP TABLE eg AS
                WITH d AS (SELECT DISTINCT * FROM ({grams.format(keys="eid", src="ev")}))
                SELECT eid, g FROM d WHERE g IN (SELECT g FROM d GROUP BY g HAVING count(*) <= $maxdf)""",
            {"n": ngram, "maxdf": max_df},
        )
        con.execute("CREATE TEMP TABLE esize AS SELECT eid, count(*) AS n FROM eg GROUP BY eid")
        rows = con.execute(
            f"""
            WITH tg AS ({grams.format(keys="field, example_id, sample_idx", src="tr")}),
            hits AS (
                SELECT tg.field, tg.example_id, tg.sample_idx, eg.eid, count(DISTINCT g) AS c
                FROM tg JOIN eg USING (g) GROUP BY ALL
            ),
            scored AS (
                SELECT h.field, h.example_id, h.sample_idx, h.eid, h.c::DOUBLE / s.n AS overlap
                FROM hits h JOIN esize s USING (eid) WHERE h.c::DOUBLE / s.n >= $thr
                UNION ALL
                SELECT 'input', tr.example_id, NULL, ev.eid, 1.0 FROM tr JOIN ev ON tr.t = ev.t
                WHERE tr.field = 'input' AND tr.t <> ''
            ),
            best AS (
                SELECT * FROM scored
                QUALIFY row_number() OVER (PARTITION BY field, example_id, sample_idx ORDER BY overlap DESC, eid) = 1
            )
            SELECT r.example_id, r.sample_idx, b.field, b.eid, ev_s.esplit, b.overlap
            FROM (SELECT DISTINCT example_id, sample_idx FROM rows_t WHERE split = 'train') r
            JOIN best b ON b.example_id = r.example_id AND (b.sample_idx IS NULL OR b.sample_idx = r.sample_idx)
            JOIN (SELECT eid, min(esplit) AS esplit FROM ev GROUP BY eid) ev_s ON ev_s.eid = b.eid
            ORDER BY r.example_id, r.sample_idx, b.field
            """,
            {"thr": threshold, "n": ngram},
        ).fetchall()
    finally:
        con.close()
    seen: set[tuple[str, int]] = set()
    for example_id, sample_idx, fld, eid, esplit, overlap in rows:
        if (example_id, sample_idx) in seen:  # keep the first field (input before rationale) per row
            continue
        seen.add((example_id, sample_idx))
        result.flagged.append(
            {
                "example_id": example_id,
                "sample_idx": int(sample_idx),
                "field": fld,
                "matched_example_id": eid,
                "matched_split": esplit,
                "overlap": round(float(overlap), 4),
            }
        )
    return result
