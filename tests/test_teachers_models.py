"""The per-model facts table: longest-prefix lookup, cached/cache-write/batch pricing, defaults, validation."""

from __future__ import annotations

import math

import pytest

from sbs_data import SbsError
from sbs_data.teachers.models import DEFAULT_PRICES, facts_for, load_table

CACHED_OPENAI = {  # USD per 1M cached input tokens, as published
    "gpt-4o-mini": 0.075,
    "gpt-4o": 1.25,
    "gpt-4.1": 0.50,
    "gpt-4.1-mini": 0.10,
    "gpt-4.1-nano": 0.025,
    "gpt-5": 0.125,
    "gpt-5-mini": 0.025,
    "gpt-5-nano": 0.005,
    "o3": 0.50,
    "o4-mini": 0.275,
}


@pytest.mark.parametrize("model, cached", sorted(CACHED_OPENAI.items()))
def test_openai_cached_input_prices(model, cached):
    f = facts_for("openai", model)
    assert f.known and f.matched == model and f.cached_input == cached


def test_longest_prefix_wins_and_snapshots_match():
    assert facts_for("openai", "gpt-4o-mini-2024-07-18").matched == "gpt-4o-mini"
    assert facts_for("openai", "gpt-4o-2024-08-06").matched == "gpt-4o"
    assert facts_for("openai", "gpt-5-mini-2025-08-07").matched == "gpt-5-mini"
    chat = facts_for("openai", "gpt-5-chat-latest")  # the non-reasoning chat model, not gpt-5
    assert chat.matched == "gpt-5-chat" and not chat.reasoning and "temperature" in chat.params
    assert facts_for("anthropic", "claude-3-5-haiku-20241022").matched == "claude-3-5-haiku"
    assert facts_for("anthropic", "claude-sonnet-4-5-20250929").matched == "claude-sonnet-4-5"


@pytest.mark.parametrize("model", ["gpt-5", "gpt-5-mini", "gpt-5-nano", "o3", "o3-mini", "o4-mini"])
def test_reasoning_models(model):
    f = facts_for("openai", model)
    assert f.reasoning
    assert "reasoning_effort" in f.params and not {"temperature", "top_p", "stop"} & f.params
    # room for reasoning at the default effort, within the model's ceiling
    assert 16_000 <= f.default_max_tokens <= f.max_output_tokens


def test_chat_models_take_sampling_params_and_no_effort():
    for model in ("gpt-4o-mini", "gpt-4.1"):
        f = facts_for("openai", model)
        assert not f.reasoning and {"temperature", "top_p", "seed", "stop"} <= f.params
        assert "reasoning_effort" not in f.params
    a = facts_for("anthropic", "claude-sonnet-4")
    assert "seed" not in a.params and "n" not in a.params and a.max_output_tokens == 64000


def test_anthropic_cache_prices_and_minimums():
    table = load_table()["providers"]["anthropic"]["models"]
    for name, m in table.items():
        if name == "claude-3-haiku":  # published as rounded figures
            assert (m["cached_input"], m["cache_write"]) == (0.03, 0.30)
            continue
        assert math.isclose(m["cached_input"], 0.1 * m["input"]), name
        assert math.isclose(m["cache_write"], 1.25 * m["input"]), name
    assert facts_for("anthropic", "claude-sonnet-4-5").min_cache_tokens == 1024
    assert facts_for("anthropic", "claude-3-5-haiku-latest").min_cache_tokens == 2048
    assert facts_for("anthropic", "claude-3-haiku-20240307").min_cache_tokens == 2048
    assert facts_for("anthropic", "claude-haiku-4-5").min_cache_tokens == 4096


def test_cost_prices_cached_and_written_tokens_at_their_own_rates():
    f = facts_for("openai", "gpt-4o-mini")  # 0.15 in, 0.075 cached, 0.60 out
    # 2,000 prompt tokens of which 1,024 cached, 100 completion tokens
    want = (976 * 0.15 + 1024 * 0.075 + 100 * 0.60) / 1e6
    assert math.isclose(f.cost(2000, 100, 1024), want)
    assert math.isclose(f.cost(2000, 100, 1024, batch=True), want * 0.5)
    assert math.isclose(f.cost(2000, 100), (2000 * 0.15 + 100 * 0.60) / 1e6)
    a = facts_for("anthropic", "claude-sonnet-4")  # 3 in, 0.30 read, 3.75 write, 15 out
    want = (100 * 3.0 + 3000 * 0.30 + 1500 * 3.75 + 200 * 15.0) / 1e6
    assert math.isclose(a.cost(4600, 200, cached_tokens=3000, cache_write_tokens=1500), want)
    assert math.isclose(a.cost(4600, 200, 3000, 1500, batch=True), want / 2)
    assert a.cost(None, None) == 0.0
    # a model without a cached price costs cached tokens as plain input
    t = facts_for("openai", "gpt-3.5-turbo")
    assert math.isclose(t.cost(1000, 0, 1000), t.cost(1000, 0))


def test_unknown_model_gets_conservative_defaults_and_a_warning():
    f = facts_for("openai", "gpt-99-turbo")
    assert not f.known and f.matched is None
    assert f.input is None and f.cost(1000, 1000) is None
    assert not f.reasoning and f.default_max_tokens == 1024 and f.max_output_tokens is None
    w = f.warning()
    assert w and "\n" not in w and "openai:gpt-99-turbo" in w and "cost unknown" in w
    assert facts_for("openai", "gpt-4o").warning() is None
    c = facts_for("openai-compat", "llama3")
    assert not c.known and "reasoning_effort" in c.params  # compat servers get whatever the user sends
    assert facts_for("anthropic", "claude-next").params == frozenset(
        {"temperature", "top_p", "max_tokens", "stop"}
    )


def test_free_providers():
    for provider in ("hf", "replay"):
        f = facts_for(provider, "anything")
        assert f.known and f.cost(10_000, 10_000, 5_000) == 0.0 and f.warning() is None


def test_own_table_and_its_errors(tmp_path):
    p = tmp_path / "prices.yaml"
    p.write_text(
        "providers:\n"
        "  openai-compat:\n"
        "    defaults: {default_max_tokens: 333}\n"
        "    models:\n"
        "      my-llama: {input: 0.0, output: 0.0}\n"
        "      my-llama-70b: {input: 0.1, output: 0.2, reasoning: true, params: [max_tokens]}\n"
    )
    f = facts_for("openai-compat", "my-llama-8b", p)
    assert f.known and f.matched == "my-llama" and f.cost(10, 10) == 0.0 and f.default_max_tokens == 333
    g = facts_for("openai-compat", "my-llama-70b-instruct", p)
    assert g.reasoning and g.params == frozenset({"max_tokens"}) and math.isclose(g.cost(1e6, 0), 0.1)
    assert facts_for("openai", "gpt-4o", p).input is None  # not in this table

    bad = tmp_path / "bad.yaml"
    bad.write_text("providers:\n  openai:\n    models:\n      gpt-4o: {input: 1, output: 2, cached: 0.5}\n")
    with pytest.raises(SbsError, match=r"bad.yaml: providers.openai.models.gpt-4o: Additional properties"):
        facts_for("openai", "gpt-4o", bad)
    bad2 = tmp_path / "bad2.yaml"
    bad2.write_text(
        "providers:\n  openai:\n    models:\n      gpt-4o: {input: 1, output: 2, params: [temprature]}\n"
    )
    with pytest.raises(SbsError, match=r"bad2.yaml: providers.openai.models.gpt-4o.params.0"):
        facts_for("openai", "gpt-4o", bad2)
    with pytest.raises(SbsError, match="not found"):
        facts_for("openai", "gpt-4o", tmp_path / "missing.yaml")


def test_default_table_is_the_shipped_one():
    assert DEFAULT_PRICES.name == "prices.yaml" and load_table()["currency"] == "USD"


def test_service_tiers_are_priced_per_model():
    mini = facts_for("openai", "gpt-5-mini")
    assert mini.tiers == {"flex": 0.5, "priority": 1.8}
    base = mini.cost(10_000, 2_000, 4_000)
    assert mini.cost(10_000, 2_000, 4_000, tier="flex") == pytest.approx(base / 2)
    # priority: https://openai.com/api-priority-processing/ lists gpt-5-mini at $0.45 / $0.045 / $3.60
    assert mini.cost(10_000, 2_000, 4_000, tier="priority") == pytest.approx(
        (6_000 * 0.45 + 4_000 * 0.045 + 2_000 * 3.60) / 1e6
    )
    for tier in (None, "default", "auto", "scale"):
        assert mini.cost(10_000, 2_000, 4_000, tier=tier) == base
    assert mini.cost(10_000, 2_000, tier="flex", batch=True) == mini.cost(10_000, 2_000, batch=True)
    assert mini.cost(10_000, 2_000, tier="ultrafast") is None  # a tier the table does not price
    assert "flex" not in facts_for("openai", "gpt-4o-mini").tiers
    assert facts_for("openai", "gpt-4o-mini").cost(0, 1_000_000, tier="priority") == pytest.approx(1.00)
    assert facts_for("anthropic", "claude-sonnet-4").tiers == {}
