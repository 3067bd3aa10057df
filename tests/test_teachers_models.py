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


#: USD per 1M tokens read from Anthropic's prompt cache, as the pricing page and release notes publish them
#: (https://platform.claude.com/docs/en/about-claude/pricing): not 0.1x input for every model.
CACHE_READ_ANTHROPIC = {
    "claude-fable-5-2": 0.20,
    "claude-fable-5-1": 0.25,  # 0.025x
    "claude-fable-5": 1.00,
    "claude-opus-5-5": 0.20,  # 0.05x
    "claude-opus-5": 0.50,
    "claude-opus-4-8": 0.50,
    "claude-opus-4-7": 0.50,
    "claude-opus-4-6": 0.50,
    "claude-opus-4-5": 0.50,
    "claude-opus-4-1": 1.50,
    "claude-opus-4": 1.50,
    "claude-sonnet-5-5": 0.10,  # 0.05x since 2026-10-07
    "claude-sonnet-5": 0.20,
    "claude-sonnet-4-6": 0.30,
    "claude-sonnet-4-5": 0.30,
    "claude-sonnet-4": 0.30,
    "claude-3-7-sonnet": 0.30,
    "claude-3-5-sonnet": 0.30,
    "claude-haiku-5-5": 0.01,
    "claude-haiku-4-5": 0.10,
    "claude-3-5-haiku": 0.08,
    "claude-3-haiku": 0.03,  # 0.12x
}


def test_anthropic_cache_prices_per_model_and_ttl():
    table = load_table()["providers"]["anthropic"]["models"]
    assert set(table) == set(CACHE_READ_ANTHROPIC)
    for name, m in table.items():
        assert m["cached_input"] == CACHE_READ_ANTHROPIC[name], name
        assert math.isclose(m["cache_write_1h"], 2 * m["input"]), name  # 1-hour writes: 2x input
        if name == "claude-3-haiku":  # published as rounded figures
            assert m["cache_write"] == 0.30
            continue
        assert math.isclose(m["cache_write"], 1.25 * m["input"]), name  # 5-minute writes: 1.25x input
    assert facts_for("anthropic", "claude-sonnet-4-5").min_cache_tokens == 1024
    assert facts_for("anthropic", "claude-3-5-haiku-latest").min_cache_tokens == 2048
    assert facts_for("anthropic", "claude-3-haiku-20240307").min_cache_tokens == 2048
    assert facts_for("anthropic", "claude-haiku-4-5").min_cache_tokens == 4096
    assert facts_for("anthropic", "claude-opus-5").min_cache_tokens == 512
    # a snapshot of a newer Opus no longer falls back to claude-opus-4's $15 price
    assert facts_for("anthropic", "claude-opus-4-5-20251101").input == 5.00


def test_anthropic_native_json_and_sampling_per_model():
    native = {m for m in CACHE_READ_ANTHROPIC if facts_for("anthropic", m).native_json}
    assert native == {
        "claude-fable-5-2",
        "claude-fable-5-1",
        "claude-fable-5",
        "claude-opus-5-5",
        "claude-opus-5",
        "claude-opus-4-8",
        "claude-opus-4-7",
        "claude-opus-4-6",
        "claude-opus-4-5",
        "claude-sonnet-5-5",
        "claude-sonnet-5",
        "claude-sonnet-4-6",
        "claude-sonnet-4-5",
        "claude-haiku-5-5",
        "claude-haiku-4-5",
    }
    assert not facts_for("openai", "gpt-4o-mini").native_json  # OpenAI's schema goes in response_format
    for m in ("claude-opus-4-7", "claude-sonnet-5-5", "claude-haiku-5-5", "claude-fable-5-1"):
        f = facts_for("anthropic", m)  # Opus 4.7+ and the Claude 5 models take no sampling params
        assert f.params == frozenset({"max_tokens", "stop"}), m
    thinking = facts_for("anthropic", "claude-opus-5-5")  # adaptive thinking on: a thinking-sized budget
    assert thinking.reasoning and thinking.default_max_tokens >= 16000
    assert not facts_for("anthropic", "claude-opus-4-8").reasoning


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
    # 1-hour writes at their own price (6.00 = 2x input): 1,000 of the 1,500 written
    want_1h = (100 * 3.0 + 3000 * 0.30 + 500 * 3.75 + 1000 * 6.00 + 200 * 15.0) / 1e6
    assert math.isclose(a.cost(4600, 200, 3000, 1500, cache_write_1h_tokens=1000), want_1h)
    assert math.isclose(a.cost(4600, 200, 3000, 1500, cache_write_1h_tokens=1000, batch=True), want_1h / 2)
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


def test_prices_file_validates_with_its_new_fields(tmp_path):
    from sbs_data.schemas import validate

    validate(load_table(), "prices", where="recipes/prices.yaml")  # the shipped table, as loaded
    assert load_table()["as_of"] >= "2026-12"
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "providers:\n  anthropic:\n    models:\n"
        "      claude-x: {input: 1, output: 2, cache_write_1h: -1, native_json: yes-please}\n"
    )
    with pytest.raises(SbsError, match=r"providers.anthropic.models.claude-x"):
        facts_for("anthropic", "claude-x", bad)


def test_list_models_mirrors_the_table():
    from sbs_data.teachers.base import PARAMS
    from sbs_data.teachers.models import MODEL_COLUMNS, PARAM_ORDER, list_models

    # the models table's copy of the request params, in the same order; `reasoning_summary` is no table
    # param (the planner asks for a reasoning model, the teacher for the Responses API)
    assert PARAM_ORDER == tuple(p for p in PARAMS if p != "reasoning_summary")
    rows = list_models()
    assert rows and all(tuple(r) == MODEL_COLUMNS for r in rows)
    # providers without listed models (openai-compat, hf, replay): none
    assert {r["provider"] for r in rows} == {"openai", "anthropic", "gemini"}
    by = {(r["provider"], r["model"]): r for r in rows}
    opus = by[("anthropic", "claude-opus-5-5")]
    prices = ("input", "cached_input", "cache_write_5m", "cache_write_1h", "output")
    assert [opus[k] for k in prices] == [4, 0.2, 5, 8, 20]
    assert opus["batch_discount"] == 0.5 and opus["native_json"] and opus["reasoning"]
    assert opus["params"] == ["max_tokens", "stop"] and opus["max_output_tokens"] == 128000
    mini = by[("openai", "gpt-4o-mini")]
    assert mini["cache_write_5m"] is None and not mini["native_json"]
    assert mini["params"] == ["temperature", "top_p", "max_tokens", "seed", "stop", "n"]  # PARAMS order
    flash = by[("gemini", "gemini-2.5-flash")]
    assert [flash[k] for k in ("input", "cached_input", "output")] == [0.3, 0.03, 2.5]
    assert flash["reasoning"] and "thinking_budget" in flash["params"] and flash["batch_discount"] == 0.5
    assert {r["provider"] for r in list_models("anthropic")} == {"anthropic"}
    with pytest.raises(SbsError, match="no provider 'mistral'.*openai, anthropic, gemini"):
        list_models("mistral")


def test_models_command_lists_and_filters(tmp_path):
    import json

    from typer.testing import CliRunner

    from sbs_data.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["models", "--provider", "anthropic", "--format", "json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert rows and {x["provider"] for x in rows} == {"anthropic"}
    sonnet = next(x for x in rows if x["model"] == "claude-sonnet-5-5")
    assert sonnet["cached_input"] == 0.10 and sonnet["cache_write_1h"] == 4.0
    assert sonnet["native_json"] is True
    r = runner.invoke(app, ["models", "-f", "csv"])
    header, *lines = r.stdout.strip().splitlines()
    assert header.split(",")[:4] == ["provider", "model", "input", "cached_input"]
    assert "cache_write_1h" in header
    assert any(line.startswith("openai,gpt-5.5,5.0,0.5,") for line in lines)
    assert any(line.startswith("anthropic,claude-haiku-4-5,") for line in lines)
    r = runner.invoke(app, ["models", "--provider", "openai"], env={"COLUMNS": "250"})
    assert r.exit_code == 0 and "gpt-5.4-nano" in r.stdout and "claude" not in r.stdout
    r = runner.invoke(app, ["models"], env={"COLUMNS": "250"})
    assert "openai: USD per 1M tokens" in r.stdout and "anthropic: USD per 1M tokens" in r.stdout
    assert "write 1h" in r.stdout and "native" in r.stdout and "prompt" in r.stdout
    own = tmp_path / "own.yaml"
    own.write_text("providers:\n  openai-compat:\n    models:\n      my-llama: {input: 0, output: 0}\n")
    r = runner.invoke(app, ["models", "--prices", str(own), "-f", "jsonl"])
    assert [json.loads(x)["model"] for x in r.stdout.splitlines()] == ["my-llama"]
    r = runner.invoke(app, ["models", "--provider", "nope"])
    assert r.exit_code == 1 and "no provider 'nope'" in r.output
