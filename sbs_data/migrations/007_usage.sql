-- 007: true usage per answer. Cached input tokens (OpenAI prompt_tokens_details.cached_tokens, Anthropic
-- cache_read_input_tokens), Anthropic cache writes (cache_creation_input_tokens) and reasoning tokens
-- (completion_tokens_details.reasoning_tokens) are stored in the cache and on every generation row, so cost
-- and the report's cached share come from what the provider counted. `repaired` flags a completion whose
-- text had to be made storable (lone surrogates replaced by U+FFFD, NULs removed).

ALTER TABLE sbs_cache ADD COLUMN cached_tokens INTEGER;
ALTER TABLE sbs_cache ADD COLUMN cache_write_tokens INTEGER;
ALTER TABLE sbs_cache ADD COLUMN reasoning_tokens INTEGER;
ALTER TABLE sbs_cache ADD COLUMN repaired BOOLEAN;

ALTER TABLE sbs_generations ADD COLUMN cached_tokens INTEGER;
ALTER TABLE sbs_generations ADD COLUMN cache_write_tokens INTEGER;
ALTER TABLE sbs_generations ADD COLUMN reasoning_tokens INTEGER;
ALTER TABLE sbs_generations ADD COLUMN repaired BOOLEAN;

CREATE OR REPLACE VIEW cache AS
SELECT cache_key, provider, endpoint, model, finish_reason, prompt_tokens, cached_tokens, cache_write_tokens,
       completion_tokens, reasoning_tokens, cost_usd, latency_ms, attempts, request_id, run_id, created_at,
       repaired, text, request
FROM sbs_cache;
