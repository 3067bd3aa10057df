-- 001: the versions catalog, runs, and the content tables for examples, generations, selections.
-- Content tables are append-only and keyed by version_id; nothing is ever updated in place
-- except a version's status (pending -> committed) inside its own transaction.

CREATE SEQUENCE IF NOT EXISTS sbs_version_seq START 1;

CREATE TABLE sbs_runs (
    run_id      VARCHAR PRIMARY KEY,
    command     VARCHAR NOT NULL,
    started_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,
    finished_at TIMESTAMP,
    status      VARCHAR NOT NULL DEFAULT 'running',  -- running | ok | failed | interrupted
    stats       JSON
);

CREATE TABLE sbs_versions (
    version_id  INTEGER PRIMARY KEY DEFAULT nextval('sbs_version_seq'),
    dataset     VARCHAR NOT NULL,
    num         INTEGER NOT NULL,
    kind        VARCHAR NOT NULL,   -- examples | generations | scores | selection | merge
    task        VARCHAR,
    parents     INTEGER[] NOT NULL DEFAULT [],
    -- Pointers that make any version readable without walking lineage: the examples version the rows
    -- answer, the content version holding the rows (itself for examples/generations), and the nearest
    -- scores / selection version in the chain (NULL when none).
    examples_id  INTEGER,
    base_id      INTEGER,
    scores_id    INTEGER,
    selection_id INTEGER,
    config_hash VARCHAR NOT NULL,
    config      JSON,
    run_id      VARCHAR,
    row_count   BIGINT,
    stats       JSON,               -- per-split counts etc.
    status      VARCHAR NOT NULL DEFAULT 'pending',  -- pending | committed
    created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,
    note        VARCHAR,
    UNIQUE (dataset, num)
);

CREATE TABLE sbs_examples (
    version_id  INTEGER NOT NULL,
    example_id  VARCHAR NOT NULL,
    split       VARCHAR NOT NULL,
    row_idx     INTEGER NOT NULL,    -- position in the source split, kept for aligned imports
    task        VARCHAR NOT NULL,
    input_text  VARCHAR NOT NULL,    -- the rendered input
    label       VARCHAR,             -- normalised gold label (NULL when unlabelled)
    choices     VARCHAR[],
    fields      JSON NOT NULL,       -- the task's canonical input fields
    source      JSON                 -- the original row, for provenance
);

CREATE TABLE sbs_generations (
    version_id        INTEGER NOT NULL,
    example_id        VARCHAR NOT NULL,
    sample_idx        INTEGER NOT NULL,
    split             VARCHAR NOT NULL,
    teacher           VARCHAR NOT NULL,
    raw               VARCHAR,         -- the completion exactly as returned
    rationale         VARCHAR,
    pred_label        VARCHAR,
    parse_status      VARCHAR NOT NULL, -- ok | no_answer | empty | invalid_json | failed
    finish_reason     VARCHAR,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    cost_usd          DOUBLE,
    latency_ms        DOUBLE,
    cache_key         VARCHAR,
    error             VARCHAR
);

CREATE TABLE sbs_selections (
    version_id  INTEGER NOT NULL,
    example_id  VARCHAR NOT NULL,
    sample_idx  INTEGER NOT NULL,
    keep        BOOLEAN NOT NULL,
    reason      VARCHAR              -- the first recipe step that dropped the row (NULL when kept)
);

-- ---------------------------------------------------------------------------------------------
-- User-facing views: plain SQL over the latest committed version of every dataset.

CREATE MACRO sbs_version_id(ref) AS (
    SELECT version_id FROM sbs_versions
    WHERE status = 'committed'
      AND dataset = split_part(ref, '@', 1)
      AND (NOT contains(ref, '@') OR num = TRY_CAST(split_part(ref, '@', 2) AS INTEGER))
    ORDER BY num DESC LIMIT 1
);

CREATE VIEW versions AS
SELECT dataset || '@' || num AS ref, dataset, num, kind, task,
       (SELECT list(w.dataset || '@' || w.num ORDER BY w.version_id) FROM sbs_versions w
         WHERE list_contains(v.parents, w.version_id)) AS parents,
       config_hash, run_id, row_count, created_at, note, version_id
FROM sbs_versions v WHERE status = 'committed';

CREATE VIEW sbs_latest AS
SELECT v.* FROM sbs_versions v
WHERE v.status = 'committed'
  AND v.num = (SELECT max(w.num) FROM sbs_versions w WHERE w.dataset = v.dataset AND w.status = 'committed');

CREATE VIEW examples AS
SELECT l.dataset, e.* EXCLUDE (source)
FROM sbs_latest l JOIN sbs_examples e ON e.version_id = l.base_id
WHERE l.kind = 'examples';

CREATE VIEW generations AS
SELECT l.dataset, g.*, e.label AS gold_label, e.input_text
FROM sbs_latest l
JOIN sbs_generations g ON g.version_id = l.base_id
LEFT JOIN sbs_examples e ON e.version_id = l.examples_id AND e.example_id = g.example_id
LEFT JOIN sbs_selections s
  ON s.version_id = l.selection_id AND s.example_id = g.example_id AND s.sample_idx = g.sample_idx
WHERE l.kind <> 'examples' AND (l.selection_id IS NULL OR s.keep);

CREATE VIEW selections AS
SELECT l.dataset, s.* FROM sbs_latest l JOIN sbs_selections s ON s.version_id = l.selection_id;

CREATE MACRO examples_at(ref) AS TABLE
SELECT e.* EXCLUDE (source) FROM sbs_examples e
WHERE e.version_id = (SELECT examples_id FROM sbs_versions WHERE version_id = sbs_version_id(ref));

CREATE MACRO generations_at(ref) AS TABLE
SELECT g.*, e.label AS gold_label, e.input_text FROM sbs_generations g
JOIN (SELECT * FROM sbs_versions WHERE version_id = sbs_version_id(ref)) v ON g.version_id = v.base_id
LEFT JOIN sbs_examples e ON e.version_id = v.examples_id AND e.example_id = g.example_id
LEFT JOIN sbs_selections s
  ON s.version_id = v.selection_id AND s.example_id = g.example_id AND s.sample_idx = g.sample_idx
WHERE v.kind <> 'examples' AND (v.selection_id IS NULL OR s.keep);

CREATE MACRO selections_at(ref) AS TABLE
SELECT s.* FROM sbs_selections s
WHERE s.version_id = (SELECT selection_id FROM sbs_versions WHERE version_id = sbs_version_id(ref));
