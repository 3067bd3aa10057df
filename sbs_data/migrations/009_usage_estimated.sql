-- 009: usage a server reported that cannot be true (absent, not a whole number, negative, beyond any model's
-- context, or fewer tokens than the text could hold) is replaced by an estimate from the text before the
-- call is priced, and the answer says so: `usage_estimated`. A lying server cannot push spend past --max-usd.

ALTER TABLE sbs_cache ADD COLUMN usage_estimated BOOLEAN;
ALTER TABLE sbs_generations ADD COLUMN usage_estimated BOOLEAN;

CREATE OR REPLACE VIEW cache AS
SELECT cache_key, provider, endpoint, model, finish_reason, prompt_tokens, cached_tokens, cache_write_tokens,
       completion_tokens, reasoning_tokens, cost_usd, latency_ms, attempts, request_id, run_id, created_at,
       repaired, usage_estimated, text, request
FROM sbs_cache;
