-- 005: batch generation (OpenAI Batch API, Anthropic Message Batches), resumable across process exits.
-- A batch run is one `generate --mode batch` command: its plan arguments are kept so `batches collect` can
-- re-render exactly the same requests (same cache keys) and build the generation version online mode would.
-- A job is one provider batch. Its row is written (state 'submitting', with a deterministic client-side
-- job_id) and committed BEFORE the provider is called, so a crash between create and record is found again
-- by reconciling with the provider's batch list instead of submitting twice. Never holds API keys.

CREATE TABLE sbs_batch_runs (
    run_id       VARCHAR PRIMARY KEY,   -- the sbs_runs id of the submitting command
    provider     VARCHAR NOT NULL,
    model        VARCHAR NOT NULL,
    teacher      VARCHAR NOT NULL,      -- PROVIDER:MODEL
    source       VARCHAR NOT NULL,      -- the examples version answered (NAME@N)
    out_name     VARCHAR NOT NULL,      -- the generation dataset to create
    args         JSON NOT NULL,         -- plan arguments (split, limit, samples, prompt, json, params, base_url)
    config_hash  VARCHAR NOT NULL,      -- of the plan config: collect refuses when a re-render differs
    requests     INTEGER,               -- (example, sample) rows of the plan
    max_rounds   INTEGER NOT NULL,      -- first submission + follow-ups for failed / expired requests
    status       VARCHAR NOT NULL DEFAULT 'open',  -- open | done | cancelled
    version_id   INTEGER,               -- the generation version built when the run completed
    created_at   TIMESTAMP NOT NULL DEFAULT current_timestamp,
    finished_at  TIMESTAMP
);

CREATE TABLE sbs_batches (
    job_id            VARCHAR PRIMARY KEY,  -- deterministic: sbs-<run>-r<round>-p<part> (OpenAI metadata sbs_job)
    run_id            VARCHAR NOT NULL,
    provider          VARCHAR NOT NULL,
    model             VARCHAR NOT NULL,
    round             INTEGER NOT NULL,     -- 0 = first submission, 1.. = follow-ups (attempt - 1)
    part              INTEGER NOT NULL,     -- split index within the round (provider limits)
    state             VARCHAR NOT NULL,     -- submitting | submitted | ended | collected | failed
    provider_status   VARCHAR,              -- the provider's own word (validating, in_progress, ended, ...)
    provider_batch_id VARCHAR,
    input_file_id     VARCHAR,              -- OpenAI: the uploaded JSONL
    output_file_id    VARCHAR,
    error_file_id     VARCHAR,
    n_requests        INTEGER NOT NULL,
    bytes             BIGINT,
    n_succeeded       INTEGER,
    n_errored         INTEGER,
    n_expired         INTEGER,
    n_canceled        INTEGER,
    error             VARCHAR,              -- submission or batch-level error (redacted)
    created_at        TIMESTAMP NOT NULL DEFAULT current_timestamp,  -- the intent, before any provider call
    submitted_at      TIMESTAMP,
    ended_at          TIMESTAMP,
    collected_at      TIMESTAMP,
    updated_at        TIMESTAMP
);

-- The request keys of each job (custom_id = cache key).
CREATE TABLE sbs_batch_requests (
    job_id      VARCHAR NOT NULL,
    cache_key   VARCHAR NOT NULL,
    example_id  VARCHAR,
    sample_idx  INTEGER
);

CREATE VIEW batches AS
SELECT b.run_id, r.out_name, b.job_id, b.provider, b.model, b.round, b.part, b.state, b.provider_status,
       b.provider_batch_id, b.n_requests, b.n_succeeded, b.n_errored, b.n_expired, b.n_canceled, b.bytes,
       b.input_file_id, b.output_file_id, b.error_file_id, b.error, b.created_at, b.submitted_at,
       b.ended_at, b.collected_at, r.status AS run_status
FROM sbs_batches b LEFT JOIN sbs_batch_runs r USING (run_id)
ORDER BY b.created_at, b.job_id;

CREATE VIEW batch_runs AS
SELECT r.run_id, r.teacher, r.source, r.out_name, r.requests, r.status, r.max_rounds,
       (SELECT count(*) FROM sbs_batches b WHERE b.run_id = r.run_id) AS jobs,
       (SELECT count(*) FROM sbs_batches b WHERE b.run_id = r.run_id AND b.state NOT IN ('collected', 'failed')) AS open_jobs,
       v.dataset || '@' || v.num AS version, r.created_at, r.finished_at
FROM sbs_batch_runs r LEFT JOIN sbs_versions v ON v.version_id = r.version_id
ORDER BY r.created_at;
