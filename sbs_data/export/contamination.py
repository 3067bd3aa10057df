"""Contamination guard: train rows whose input or rationale overlaps the validation/test inputs.

A train text is flagged when, after normalisation (lower case, punctuation folded to spaces), it equals an
eval input, or it contains at least `threshold` of that eval input's distinct word n-grams (containment, not
Jaccard, so a rationale that quotes a test question inside a longer explanation is still caught). Eval
inputs shorter than `ngram` words are only matched exactly. N-grams shared by more than `max_df` eval inputs are
template text, not evidence, and are ignored (which also bounds the join). The n-gram join runs in the
workspace's DuckDB, under its memory cap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sbs_data.workspace import Workspace

EVAL_SPLITS = ("validation", "test")
_WORDS = r"regexp_extract_all(lower({col}), '[\p{{L}}\p{{N}}]+')"


@dataclass
class Contamination:
    """How many train rows overlap eval inputs, and the evidence for the first few (best match per row).
    The flagged rows themselves stay in DuckDB (`FLAGGED`), so a heavily contaminated million-row export holds
    none of them in Python."""

    ngram: int
    threshold: float
    eval_examples: int = 0
    flagged_rows: int = 0
    flagged_examples: int = 0
    by_field: dict[str, int] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)  # the first flagged rows, by key

    def report(self, dropped: int, samples: int = 20) -> dict[str, Any]:
        return {
            "checked": True,
            "method": f"normalised exact match or >= {self.threshold:g} containment of the eval input's word {self.ngram}-grams",
            "against": list(EVAL_SPLITS),
            "ngram": self.ngram,
            "threshold": self.threshold,
            "eval_examples": self.eval_examples,
            "flagged_rows": self.flagged_rows,
            "flagged_examples": self.flagged_examples,
            "by_field": dict(sorted(self.by_field.items())),
            "dropped_rows": dropped,
            "samples": self.samples[:samples],
        }


#: The temp table `find_contamination` leaves behind: one row per flagged train row (the caller drops it).
FLAGGED = "_sbs_flagged"
_TEMP = ("_sbs_cont_ev", "_sbs_cont_tr", "_sbs_cont_eg", "_sbs_cont_esize")
_SAMPLES = 20


def find_contamination(
    ws: Workspace, rows: str, ngram: int = 8, threshold: float = 0.8, max_df: int = 5
) -> Contamination:
    """Flag the train rows of table `rows` (columns example_id, sample_idx, split, input, rationale) against
    its eval inputs, into temp table `FLAGGED` (example_id, sample_idx, field, matched_example_id,
    matched_split, overlap). Runs in the workspace's DuckDB, so it spills under its memory cap."""
    result = Contamination(ngram=ngram, threshold=threshold)
    ev, tr, eg, esize = _TEMP
    ws.execute(
        f"CREATE OR REPLACE TEMP TABLE {FLAGGED} (example_id VARCHAR, sample_idx BIGINT, field VARCHAR, "
        "matched_example_id VARCHAR, matched_split VARCHAR, overlap DOUBLE)"
    )
    with ws.scratch(*_TEMP):
        words_in, words_rat = _WORDS.format(col="input"), _WORDS.format(col="rationale")
        ws.execute(
            f"""CREATE OR REPLACE TEMP TABLE {ev} AS
                SELECT eid, esplit, w, array_to_string(w, ' ') AS t
                FROM (SELECT example_id AS eid, min(split) AS esplit, {words_in} AS w
                      FROM {rows} WHERE split IN ('validation', 'test') GROUP BY example_id, input)"""
        )
        result.eval_examples = ws.one(f"SELECT count(DISTINCT eid) FROM {ev}")
        if not result.eval_examples:
            return result
        ws.execute(
            f"""CREATE OR REPLACE TEMP TABLE {tr} AS
                SELECT field, example_id, sample_idx, w, array_to_string(w, ' ') AS t FROM (
                    SELECT 'input' AS field, example_id, NULL::BIGINT AS sample_idx, {words_in} AS w
                    FROM (SELECT DISTINCT example_id, input FROM {rows} WHERE split = 'train')
                    UNION ALL
                    SELECT 'rationale', example_id, sample_idx, {words_rat}
                    FROM {rows} WHERE split = 'train' AND rationale IS NOT NULL)"""
        )
        # Hashing the joined string is ~2x faster in DuckDB than hashing the list slice. ($1: n)
        grams = """
            SELECT {keys}, hash(array_to_string(list_slice(w, i, i + $1 - 1), ' ')) AS g
            FROM (SELECT {keys}, w, unnest(generate_series(1, len(w) - $1 + 1)) AS i
                  FROM {src} WHERE len(w) >= $1)
        """
        # Eval n-grams shared by many eval inputs are template text ("how many apples does"), not evidence;
        # they are left out of both the join and the denominator, which also bounds the join's size.
        ws.execute(
            f"""CREATE OR REPLACE TEMP TABLE {eg} AS
                WITH d AS (SELECT DISTINCT * FROM ({grams.format(keys="eid", src=ev)}))
                SELECT eid, g FROM d WHERE g IN (SELECT g FROM d GROUP BY g HAVING count(*) <= $2)""",
            [ngram, max_df],
        )
        ws.execute(
            f"CREATE OR REPLACE TEMP TABLE {esize} AS SELECT eid, count(*) AS n FROM {eg} GROUP BY eid"
        )
        # One row per flagged train row: its first field (input before rationale), best match first.
        ws.execute(
            f"""
            INSERT INTO {FLAGGED}
            WITH tg AS ({grams.format(keys="field, example_id, sample_idx", src=tr)}),
            hits AS (
                SELECT tg.field, tg.example_id, tg.sample_idx, {eg}.eid, count(DISTINCT g) AS c
                FROM tg JOIN {eg} USING (g) GROUP BY ALL
            ),
            scored AS (
                SELECT h.field, h.example_id, h.sample_idx, h.eid, h.c::DOUBLE / s.n AS overlap
                FROM hits h JOIN {esize} s USING (eid) WHERE h.c::DOUBLE / s.n >= $2
                UNION ALL
                SELECT 'input', {tr}.example_id, NULL, {ev}.eid, 1.0 FROM {tr} JOIN {ev} ON {tr}.t = {ev}.t
                WHERE {tr}.field = 'input' AND {tr}.t <> ''
            ),
            best AS (
                SELECT * FROM scored
                QUALIFY row_number() OVER (PARTITION BY field, example_id, sample_idx ORDER BY overlap DESC, eid) = 1
            )
            SELECT r.example_id, r.sample_idx, b.field, b.eid, ev_s.esplit, b.overlap
            FROM (SELECT DISTINCT example_id, sample_idx FROM {rows} WHERE split = 'train') r
            JOIN best b ON b.example_id = r.example_id AND (b.sample_idx IS NULL OR b.sample_idx = r.sample_idx)
            JOIN (SELECT eid, min(esplit) AS esplit FROM {ev} GROUP BY eid) ev_s ON ev_s.eid = b.eid
            QUALIFY row_number() OVER (PARTITION BY r.example_id, r.sample_idx ORDER BY b.field) = 1
            """,
            [ngram, threshold],
        )
    result.flagged_rows, result.flagged_examples = ws.all(
        f"SELECT count(*), count(DISTINCT example_id) FROM {FLAGGED}"
    )[0]
    result.by_field = dict(ws.all(f"SELECT field, count(*) FROM {FLAGGED} GROUP BY 1 ORDER BY 1"))
    cols = ("example_id", "sample_idx", "field", "matched_example_id", "matched_split", "overlap")
    result.samples = [
        {**dict(zip(cols, r)), "sample_idx": int(r[1]), "overlap": round(float(r[5]), 4)}
        for r in ws.all(
            f"SELECT {', '.join(cols)} FROM {FLAGGED} ORDER BY example_id, sample_idx LIMIT {_SAMPLES}"
        )
    ]
    return result
