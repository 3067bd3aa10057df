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


def test_wrong_threshold_types():
    assert "steps[0].max: 'lots' is not of type 'number'" in _err(
        "steps:\n  - {name: a, signal: words, max: lots}\n"
    )
    msg = _err("steps:\n  - {name: a, signal: parse_ok, min: 1}\n")
    assert "steps[0].min: parse_ok is a boolean signal; use equals:" in msg
    msg = _err("steps:\n  - {name: a, signal: parse_ok, equals: 'yes'}\n")
    assert "steps[0].equals: parse_ok is a boolean signal" in msg
    assert "min 5 is above max 1" in _err("steps:\n  - {name: a, signal: words, min: 5, max: 1}\n")
    assert "at least one of min, max, equals" in _err("steps:\n  - {name: a, signal: words}\n")


def test_selection_steps_validated():
    assert "steps[0].by: unknown key" in _err("steps:\n  - {name: a, select: majority, by: [words]}\n")
    assert "'kind' is a required property" in _err("steps:\n  - {name: a, select: dedup}\n")
    assert "unknown selection 'best'" in _err("steps:\n  - {name: a, select: best}\n")
    assert "cannot rank by 'majority_label'" in _err(
        "steps:\n  - {name: a, select: best_per_example, by: [majority_label]}\n"
    )
    assert "duplicate step name 'a'" in _err(
        "steps:\n  - {name: a, signal: words, min: 1}\n  - {name: a, signal: words, max: 9}\n"
    )
    r = parse_recipe(
        "steps:\n  - {name: best, select: best_per_example, by: [gold_match, words asc], n: 2}\n"
    )
    assert r.steps[0].by == (("gold_match", True), ("words", False)) and r.steps[0].n == 2


def test_bad_yaml_and_top_level():
    assert "not valid YAML" in _err("steps: [\n")
    assert "a recipe is a mapping" in _err("- a\n")
    assert "'steps' is a required property" in _err("name: x\n")
    assert "recipes/x.yaml: stepz: unknown key (did you mean 'steps'?)" in _err(
        "stepz: []\nsteps: [{name: a, signal: words, min: 1}]\n"
    )


def test_missing_recipe_file_lists_shipped():
    with pytest.raises(SbsError, match="shipped recipes: default, strict"):
        load_recipe("nope")
