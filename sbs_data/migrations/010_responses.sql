-- 010: the OpenAI Responses API and service tiers. `teacher_reasoning` holds the provider's summary of the
-- model's reasoning when one was asked for (`--reasoning-summary`, the Responses API's `reasoning.summary`);
-- `service_tier` the tier that served the call as the provider reported it (OpenAI: default, flex, priority),
-- which set its price. Both are stored in the cache and on every generation row; older rows read NULL.

ALTER TABLE sbs_cache ADD COLUMN teacher_reasoning VARCHAR;
ALTER TABLE sbs_cache ADD COLUMN service_tier VARCHAR;

ALTER TABLE sbs_generations ADD COLUMN teacher_reasoning VARCHAR;
ALTER TABLE sbs_generations ADD COLUMN service_tier VARCHAR;

CREATE OR REPLACE VIEW cache AS
SELECT cache_key, provider, endpoint, model, finish_reason, prompt_tokens, cached_tokens, cache_write_tokens,
       completion_tokens, reasoning_tokens, cost_usd, service_tier, latency_ms, attempts, request_id, run_id,
       created_at, repaired, usage_estimated, text, teacher_reasoning, request
FROM sbs_cache;
