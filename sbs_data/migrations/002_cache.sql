-- 002: the request cache (content-addressed answers) and the failures log.
-- A cache row is one answered request, keyed by sha256 of the canonical request (provider, endpoint, model,
-- rendered messages incl. system prompt, every generation param, output schema, sample index). Failures live
-- in their own table and never count as answers. Rows are only ever inserted (INSERT OR IGNORE on the key).

CREATE TABLE sbs_cache (
    cache_key         VARCHAR PRIMARY KEY,
    provider          VARCHAR NOT NULL,
    endpoint          VARCHAR NOT NULL,
    model             VARCHAR NOT NULL,
    subject           VARCHAR,          -- sha of the example's input text: finds near-misses for `cache explain`
    request           JSON,             -- the key's ingredients, long text replaced by hashes (never keys)
    text              VARCHAR,          -- the completion exactly as returned
    finish_reason     VARCHAR,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    request_id        VARCHAR,          -- the provider's id for the call
    latency_ms        DOUBLE,
    cost_usd          DOUBLE,
    attempts          INTEGER,
    run_id            VARCHAR,
    created_at        TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE sbs_failures (
    cache_key   VARCHAR NOT NULL,
    provider    VARCHAR NOT NULL,
    model       VARCHAR NOT NULL,
    example_id  VARCHAR,
    sample_idx  INTEGER,
    kind        VARCHAR NOT NULL,       -- permanent | context_length | auth | transient | rate_limited | invalid_output
    status      INTEGER,                -- HTTP status when there was one
    error       VARCHAR,                -- redacted message
    attempts    INTEGER,
    run_id      VARCHAR,
    created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE VIEW cache AS
SELECT cache_key, provider, endpoint, model, finish_reason, prompt_tokens, completion_tokens, cost_usd,
       latency_ms, attempts, request_id, run_id, created_at, text, request
FROM sbs_cache;

CREATE VIEW cache_failures AS
SELECT f.*, EXISTS (SELECT 1 FROM sbs_cache c WHERE c.cache_key = f.cache_key) AS answered_later
FROM sbs_failures f;
