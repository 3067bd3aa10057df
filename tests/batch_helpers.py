"""Shared bits for the batch tests: the providers, fast batch settings, key lookup per example."""

from __future__ import annotations

import os

from generate_helpers import FAKE_KEY

from sbs_data.generate.batches import BatchSettings

TEACHERS = {
    "openai": "openai:gpt-4o-mini",
    "anthropic": "anthropic:claude-3-5-haiku",
    "gemini": "gemini:gemini-2.5-flash",
}
CREATE = {
    "openai": "batches.create",
    "anthropic": "messages.batches.create",
    "gemini": "gemini.batches.create",
}


def bfast(**kw) -> BatchSettings:
    base = {"max_requests": 4, "poll_interval": 0.01, "retry_delay": 0.01, "progress": False}
    base.update(kw)
    return BatchSettings(**base)


def keys_by_example(ws, run_id: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for ex, key in ws.all(
        "SELECT DISTINCT r.example_id, r.cache_key FROM sbs_batch_requests r JOIN sbs_batches b USING (job_id) "
        "WHERE b.run_id = ?",
        [run_id],
    ):
        out.setdefault(ex, []).append(key)
    return out


def sub_env(srv) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "GOOGLE_API_KEY"}  # it would win over GEMINI_API_KEY
    return {
        **env,
        "OPENAI_API_KEY": FAKE_KEY,
        "OPENAI_BASE_URL": srv.openai_url,
        "ANTHROPIC_API_KEY": FAKE_KEY,
        "ANTHROPIC_BASE_URL": srv.anthropic_url,
        "GEMINI_API_KEY": FAKE_KEY,
        "GOOGLE_GEMINI_BASE_URL": srv.gemini_url,
    }
