"""Recipe validation: clear errors with file, YAML path and line, before any data is touched."""

from __future__ import annotations

import json

import pytest

from sbs_data import RECIPES_DIR, SCHEMAS_DIR, SbsError
from sbs_data.quality.recipes import load_recipe, parse_recipe
from sbs_data.quality.signals import THRESHOLD_SIGNALS


def _err(text: str) -> str:
    with pytest.raises(SbsError) as e:
        parse_recipe(text, where="recipes/x.yaml")
    return str(e.value)


@pytest.mark.parametrize("name", ["default", "strict"])
def test_shipped_recipes_are_valid(name):
    r = load_recipe(name)
    assert r.name == name and r.steps and len(r.hash) == 16
    assert load_recipe(RECIPES_DIR / f"{name}.yaml").hash == r.hash
    assert all(step.describe() for step in r.steps)


def test_schema_signal_enum_matches_registry():
    schema = json.loads((SCHEMAS_DIR / "recipe.schema.json").read_text())
    assert tuple(schema["$defs"]["signal"]["enum"]) == THRESHOLD_SIGNALS


def test_unknown_signal_names_path_line_and_suggestion():
    msg = _err(
        "steps:\n  - name: a\n    signal: parse_ok\n    equals: true\n  - name: b\n    signal: wordz\n    max: 3\n"
    )
    assert "recipes/x.yaml: steps[1].signal: unknown signal 'wordz'" in msg
    assert "did you mean 'words'" in msg and "(line 6)" in msg


def test_typod_key():
    msg = _err(
        "steps:\n  - {name: a, signal: parse_ok, equals: true}\n  - {name: b, signal: words, min: 1}\n  - name: c\n    signal: words\n    max_words: 300\n"
    )
    assert "recipes/x.yaml: steps[2].max_words: unknown key (did you mean 'max'?)" in msg
    assert "(line 6)" in msg
    assert "at least one of" not in msg  # the typo is the error, not its consequence


@pytest.mark.parametrize(
    "recipe, message",
    [
        # threshold types
        ("steps:\n  - {name: a, signal: words, max: lots}\n", "steps[0].max: 'lots' is not of type 'number'"),
        ("steps:\n  - {name: a, signal: parse_ok, min: 1}\n", "steps[0].min: parse_ok is a boolean signal; use equals:"),
        ("steps:\n  - {name: a, signal: parse_ok, equals: 'yes'}\n", "steps[0].equals: parse_ok is a boolean signal"),
        ("steps:\n  - {name: a, signal: words, min: 5, max: 1}\n", "min 5 is above max 1"),
        ("steps:\n  - {name: a, signal: words}\n", "at least one of min, max, equals"),
        # selection steps
        ("steps:\n  - {name: a, select: majority, by: [words]}\n", "steps[0].by: unknown key"),
        ("steps:\n  - {name: a, select: dedup}\n", "'kind' is a required property"),
        ("steps:\n  - {name: a, select: best}\n", "unknown selection 'best'"),
        ("steps:\n  - {name: a, select: best_per_example, by: [majority_label]}\n", "cannot rank by 'majority_label'"),
        ("steps:\n  - {name: a, signal: words, min: 1}\n  - {name: a, signal: words, max: 9}\n", "duplicate step name 'a'"),
        # the YAML and the top level
        ("steps: [\n", "not valid YAML"),
        ("- a\n", "a recipe is a mapping"),
        ("name: x\n", "'steps' is a required property"),
        ("stepz: []\nsteps: [{name: a, signal: words, min: 1}]\n", "recipes/x.yaml: stepz: unknown key (did you mean 'steps'?)"),
    ],
)  # fmt: skip
def test_bad_recipes_are_refused_by_name(recipe, message):
    assert message in _err(recipe)


def test_an_unknown_split_is_refused_by_name_with_the_close_match():
    msg = _err("splits: [validation, trian]\nsteps:\n  - {name: a, signal: words, min: 1}\n")
    assert "recipes/x.yaml: splits[1]: unknown split 'trian' (did you mean 'train'?)" in msg
    assert "known: train, validation, test, all (line 1)" in msg
    assert "unknown split 'Test'" in _err("splits: [Test]\nsteps:\n  - {name: a, signal: words, min: 1}\n")
    ok = parse_recipe("splits: [dev, test]\nsteps:\n  - {name: a, signal: words, min: 1}\n")
    assert ok.splits == ("validation", "test")
    assert parse_recipe("splits: [all]\nsteps:\n  - {name: a, signal: words, min: 1}\n").splits == ("all",)


def test_selection_step_ranks_by_signals_in_order():
    r = parse_recipe(
        "steps:\n  - {name: best, select: best_per_example, by: [gold_match, words asc], n: 2}\n"
    )
    assert r.steps[0].by == (("gold_match", True), ("words", False)) and r.steps[0].n == 2


def test_missing_recipe_file_lists_shipped():
    with pytest.raises(SbsError, match="shipped recipes: default, strict"):
        load_recipe("nope")
