-- 011: the model that served each answer, as the provider's body names it (OpenAI's and Anthropic's `model`):
-- a provider may answer with another model than the one asked for (an alias resolved to a dated snapshot, or
-- a different model altogether). NULL where the body names none (replay, hf, older answers). A run warns once
-- when an answer comes from a model that is not the requested one or a dated snapshot of it.

ALTER TABLE sbs_cache ADD COLUMN served_model VARCHAR;
ALTER TABLE sbs_generations ADD COLUMN served_model VARCHAR;

CREATE OR REPLACE VIEW cache AS
SELECT cache_key, provider, endpoint, model, served_model, finish_reason, prompt_tokens, cached_tokens,
       cache_write_tokens, completion_tokens, reasoning_tokens, cost_usd, service_tier, latency_ms, attempts,
       request_id, run_id, created_at, repaired, usage_estimated, text, teacher_reasoning, request
FROM sbs_cache;
