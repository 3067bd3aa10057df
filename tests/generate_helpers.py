"""Shared bits for the generation tests: the fake API key, toy examples, fast engine settings (the loopback
server fixture, `server`, is in conftest.py)."""

from __future__ import annotations

import yaml
from workspace_helpers import make_examples

from sbs_data.generate.run import Settings

FAKE_KEY = "sk-fake-SUPERSECRET-0123456789abcdef"
CHOICES = ["alpha", "beta", "gamma", "delta", "epsilon"]


def fast(**kw) -> Settings:
    """Engine settings with test-sized backoffs and timeouts."""
    base = {
        "concurrency": 16,
        "backoff_base": 0.02,
        "backoff_max": 0.2,
        "timeout": 2.0,
        "flush_interval": 0.05,
        "progress": False,
    }
    base.update(kw)
    return Settings(**base)


def generate_argv(db, *more: str, teacher: str = "openai:gpt-4o-mini") -> list[str]:
    """The command line `generate toy --teacher TEACHER --db DB MORE...` (after `sbs-data`)."""
    return ["generate", "toy", "--teacher", teacher, "--db", str(db), *more]


def cqa_examples(ws, name: str = "toy", n: int = 20, split: str = "train"):
    rows = [
        {"id": f"q{i}", "question": f"Which word is number {i}?", "choices": CHOICES, "answer": "alpha"}
        for i in range(n)
    ]
    return make_examples(ws, name, "cqa", rows, split)


def question(i: int) -> str:
    """A substring that identifies example q{i}'s prompt (for per-row fault plans)."""
    return f"Which word is number {i}?"


def gen_rows(ws, ref: str) -> list[tuple]:
    return ws.all(
        "SELECT example_id, sample_idx, parse_status, pred_label, error, raw, cache_key FROM generations_at(?) "
        "ORDER BY example_id, sample_idx",
        [ref],
    )


def long_prompt(tmp_path, words: int = 2200) -> str:
    """A few-shot prompt file whose shared prefix is past every provider's prompt-cache minimum (1,024
    tokens for OpenAI and most Anthropic models, 2,048 for Gemini 2.5's implicit cache)."""
    filler = " ".join(f"fact{i}" for i in range(words // 4))
    exemplars = [
        {
            "input": f"Q: Which word is example {i}? {filler}",
            "rationale": "The first word is alpha.",
            "answer": "alpha",
        }
        for i in range(4)
    ]
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump({"template": "Q: {input}\nA:", "exemplars": exemplars}))
    return str(path)


def bill(srv, provider: str) -> dict:
    """The loopback server's bill for one provider, summed over its models and modes."""
    rows = [b for b in srv.stats()["bill"] if b["provider"] == provider]
    out: dict = {}
    for b in rows:
        for k, v in b.items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                out[k] = out.get(k, 0) + v
    return out
