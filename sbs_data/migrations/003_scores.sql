-- 003: quality signals. One row per generation row of a `scores` version, one column per signal
-- (see sbs_data/quality/signals.py SIGNALS for definitions). Keyed by (version_id, example_id,
-- sample_idx); the key is unique by construction (no index, so scoring 1M rows stays cheap).
-- split and teacher are copied from the generation row so per-split / per-teacher summaries are one
-- GROUP BY away.

CREATE TABLE sbs_scores (
    version_id          INTEGER NOT NULL,
    example_id          VARCHAR NOT NULL,
    sample_idx          INTEGER NOT NULL,
    split               VARCHAR NOT NULL,
    teacher             VARCHAR,
    parse_ok            BOOLEAN,
    truncated           BOOLEAN,   -- NULL when the finish reason is unknown (e.g. imported completions)
    refusal             BOOLEAN,
    label_in_space      BOOLEAN,
    gold_match          BOOLEAN,   -- NULL when the example has no gold label
    conclusion_match    BOOLEAN,   -- NULL when the rationale names no label / number
    answer_first_pos    DOUBLE,    -- 0..1, NULL when the label is not mentioned
    starts_with_answer  BOOLEAN,
    n_samples           INTEGER,
    majority_label      VARCHAR,
    majority_agree      BOOLEAN,
    vote_share          DOUBLE,
    vote_entropy        DOUBLE,
    words               INTEGER,
    sentences           INTEGER,
    repeated_sentences  INTEGER,
    ngram_repetition    DOUBLE,
    input_overlap       DOUBLE,
    arith_steps         INTEGER,   -- NULL for non-numeric tasks
    arith_correct_frac  DOUBLE,    -- NULL when there are no steps
    final_number_match  BOOLEAN,
    exact_dup           BOOLEAN,
    exact_dup_count     INTEGER,
    near_dup            BOOLEAN,
    near_dup_size       INTEGER,
    rationale_hash      UBIGINT,   -- exact-duplicate group key
    near_dup_cluster    BIGINT     -- near-duplicate cluster key
);

-- Scores of the rows visible in the latest version of every dataset that has scores.
CREATE VIEW scores AS
SELECT l.dataset, s.*
FROM sbs_latest l
JOIN sbs_scores s ON s.version_id = l.scores_id
LEFT JOIN sbs_selections sel
  ON sel.version_id = l.selection_id AND sel.example_id = s.example_id AND sel.sample_idx = s.sample_idx
WHERE l.selection_id IS NULL OR sel.keep;

-- Scores of the rows visible in one version: scores_at('cqa-palm@3').
CREATE MACRO scores_at(ref) AS TABLE
SELECT s.* FROM sbs_scores s
JOIN (SELECT * FROM sbs_versions WHERE version_id = sbs_version_id(ref)) v ON s.version_id = v.scores_id
LEFT JOIN sbs_selections sel
  ON sel.version_id = v.selection_id AND sel.example_id = s.example_id AND sel.sample_idx = s.sample_idx
WHERE v.selection_id IS NULL OR sel.keep;
