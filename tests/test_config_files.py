"""Careless and hostile config files (recipes, tasks, judge prompts, prices) fail cleanly and quickly.

Each one gets an SbsError naming the file (and line where there is one) before anything else reads it:
no traceback, no DuckDB error, no minutes of CPU.
"""

from __future__ import annotations

import time

import pytest

from sbs_data import SbsError
from sbs_data.configfile import (
    MAX_CONFIG_BYTES,
    MAX_YAML_DEPTH,
    check_template,
    fill_template,
    load_yaml,
    parse_yaml,
    read_text,
    stray_placeholders,
)
from sbs_data.quality.judge import JudgePrompt, load_judge_prompt
from sbs_data.quality.recipes import load_recipe, parse_recipe
from sbs_data.schemas import validate
from sbs_data.tasks import Task, load_task_file, task_from_stored

STEP = "steps:\n  - name: a\n    signal: words\n    min: {v}\n"


def _raises(fn, *args, match: str, **kw) -> str:
    with pytest.raises(SbsError, match=match) as e:
        fn(*args, **kw)
    return str(e.value)


# -- numbers --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("v", [".nan", ".NaN", ".inf", "-.inf", "+.Inf", "1.0e+400", str(2**64)])
def test_recipe_refuses_non_finite_and_huge_numbers_naming_path_and_line(v):
    msg = _raises(parse_recipe, STEP.format(v=v), where="r.yaml", match="steps\\[0\\].min")
    assert "r.yaml" in msg and "(line 4)" in msg and ("finite" in msg or "out of range" in msg)


def test_recipe_refuses_nan_in_every_numeric_field():
    text = "steps:\n  - name: a\n    select: majority\n    min_share: .nan\n"
    assert "steps[0].min_share" in _raises(parse_recipe, text, where="r.yaml", match="finite")
    text = "steps:\n  - name: a\n    signal: words\n    equals: .inf\n"
    assert "steps[0].equals" in _raises(parse_recipe, text, where="r.yaml", match="finite")


def test_prices_with_nan_are_refused_by_schema_validation():
    data = {"providers": {"openai": {"models": {"gpt-x": {"input": float("nan"), "output": 1.0}}}}}
    msg = _raises(validate, data, "prices", where="prices.yaml", match="not a finite number")
    assert "prices.yaml: providers.openai.models.gpt-x.input" in msg


def test_task_file_with_infinite_number_is_refused(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_text("name: t\ninput_fields: [x]\ntemplate: '{x}'\nlabel_space: free\nlabels: [.inf]\n")
    msg = _raises(load_task_file, f, match="t.yaml")
    assert "labels.0: inf is not a finite number" in msg  # the NaN/inf check itself, not only the type


# -- YAML size, aliases, nesting, duplicates -------------------------------------------------------------


def _laughs(levels: int) -> str:
    text = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, levels):
        text += f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n"
    return text


def test_alias_bomb_is_refused_before_it_expands(tmp_path):
    """Refused before expanding: 1000x the expansion costs about the same (it took 113 s of CPU once). A
    growth ratio, not a wall-clock bound."""

    def refuse(levels: int) -> float:
        f = tmp_path / f"bomb{levels}.yaml"
        f.write_text(_laughs(levels) + "steps:\n  - {name: a, signal: words, min: 1}\n")
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            msg = _raises(load_recipe, f, match="expands to more than")
            best = min(best, time.perf_counter() - t0)
        assert f"bomb{levels}.yaml:" in msg
        return best

    small, big = refuse(6), refuse(9)  # 10**6 vs 10**9 nodes if expanded
    assert big / max(small, 1e-3) < 30


def test_aliases_within_the_limit_still_work():
    text = (
        "order: &o [vote_share desc, words asc]\nsteps:\n"
        "  - {name: a, select: best_per_example, by: *o}\n  - {name: b, select: dedup, kind: exact, by: *o}\n"
    )
    data, _ = parse_yaml(text, where="r.yaml", what="recipe")
    assert data["steps"][0]["by"] == data["steps"][1]["by"] == ["vote_share desc", "words asc"]


@pytest.mark.parametrize(
    "text, match",
    [
        ("a: &a [1, *a]\n", "recursive YAML alias"),
        ("x: " + "[" * (MAX_YAML_DEPTH + 5) + "]" * (MAX_YAML_DEPTH + 5) + "\n", "nested too deeply"),
        ("x: " + "[" * 100_000 + "\n", "nested too deeply"),
        ("a: &a [x]\nb: &b [*a]\n" + "".join(f"c{i}: &c{i} [*{'b' if i == 0 else f'c{i - 1}'}]\n" for i in range(70)), "nested too deeply"),
        ("name: a\nsteps: []\nname: b\n", "duplicate key 'name' \\(first at line 1\\)"),
        ("x: [unclosed\n", "not valid YAML"),
        ("x: " + "9" * 5000 + "\n", "cannot be read"),
        ("---\na: 1\n---\nb: 2\n", "not valid YAML"),
        ("x: !!python/object:os.system [ls]\n", "not valid YAML"),
    ],
)  # fmt: skip
def test_hostile_yaml_fails_cleanly(text, match):
    msg = _raises(parse_yaml, text, where="f.yaml", what="recipe", match=match)
    assert msg.startswith("f.yaml")


def test_size_cap(tmp_path):
    f = tmp_path / "big.yaml"
    f.write_bytes(b"# " + b"x" * MAX_CONFIG_BYTES + b"\n")
    _raises(load_yaml, f, what="recipe", match="big.yaml: recipe is larger than")


@pytest.mark.parametrize(
    "load",
    [
        lambda p: load_recipe(p),
        lambda p: load_task_file(p),
        lambda p: load_judge_prompt(p),
        lambda p: load_yaml(p, what="price table"),
    ],
)
def test_non_utf8_files_name_file_line_and_column(tmp_path, load):
    f = tmp_path / "latin1.yaml"
    f.write_bytes("name: x\ndescription: caf\u00e9\n".encode("latin-1"))
    msg = _raises(load, f, match="is not UTF-8 text")
    assert f"{f}:2:17:" in msg and "0xe9" in msg


def test_utf8_with_bom_and_missing_files(tmp_path):
    f = tmp_path / "bom.yaml"
    f.write_bytes(b"\xef\xbb\xbfa: 1\n")
    assert load_yaml(f, what="recipe") == {"a": 1}
    _raises(read_text, tmp_path / "nope.yaml", what="task file", match="nope.yaml: task file not found")
    _raises(read_text, tmp_path, what="task file", match="cannot read task file")


# -- templates ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template, match",
    [
        ("R: {review:>300000000}", "only plain \\{field\\} placeholders"),
        ("{review!r}", "only plain"),
        ("{review.__class__.__mro__}", "attribute or index access"),
        ("{review[0]}", "attribute or index access"),
        ("{revew}", "unknown field; the placeholders are \\{review\\}"),
        ("{0}", "unknown field"),
        ("{}", "positional"),
        ("a } b", "Single '}'"),
        ("{review", "expected '}'"),
    ],
)
def test_task_template_allows_plain_fields_only(tmp_path, template, match):
    f = tmp_path / "task.yaml"
    f.write_text(f"name: s\ninput_fields: [review]\ntemplate: {template!r}\nlabel_space: free\n")
    msg = _raises(load_task_file, f, match=match)
    assert f"{f}:3: template:" in msg


def test_template_error_points_at_the_line_in_a_literal_block(tmp_path):
    f = tmp_path / "task.yaml"
    f.write_text(
        "name: s\ninput_fields: [review]\ntemplate: |\n  Review:\n  {review}\n  {review.x}\nlabel_space: free\n"
    )
    assert f"{f}:6: template: {{review.x}}" in _raises(load_task_file, f, match="attribute")


def test_templates_render_verbatim_without_str_format(tmp_path):
    f = tmp_path / "task.yaml"
    f.write_text("name: s\ninput_fields: [a, b]\ntemplate: '{{literal}} {a} / {b} {a}'\nlabel_space: free\n")
    t = load_task_file(f)
    assert (
        t.render({"a": "{b.__class__}", "b": "{x:>99999999}"})
        == "{literal} {b.__class__} / {x:>99999999} {b.__class__}"
    )


def test_stored_and_hand_built_tasks_are_checked_too():
    stored = {"name": "s", "fields": ["x"], "template": "{x.__globals__}", "label_space": "free"}
    _raises(task_from_stored, stored, match="task 's': template: .*attribute")
    _raises(Task, name="s", fields=("x",), template="{x:>9999999999}", label_space="free", match="only plain")


def test_check_template_for_other_callers():
    parts = check_template("Q: {input}\nA:", ["input"], where="p.txt", line=1, exact_lines=True)
    assert fill_template(parts, {"input": "{input}"}) == "Q: {input}\nA:"
    msg = _raises(
        check_template,
        "line\n\n{input!s}",
        ["input"],
        where="p.txt",
        line=1,
        exact_lines=True,
        match="only plain",
    )
    assert msg.startswith("p.txt:3: template: {input!s}")
    assert stray_placeholders('{"rationale": "{input}"} {inptu} {rationale}', ["input", "rationale"]) == [
        "inptu"
    ]


def test_judge_prompt_refuses_stray_placeholders_and_fills_in_one_pass(tmp_path):
    f = tmp_path / "j.yaml"
    f.write_text("template: |\n  {input} {rationale} {label} {lable}\n")
    assert f"{f}:2: 'template' uses unknown placeholder(s) {{lable}}" in _raises(
        load_judge_prompt, f, match="unknown placeholder"
    )
    p = JudgePrompt(None, "{input} | {rationale} | {label}", "x", "sha")
    # a rationale that spells a placeholder stays as written (chained str.replace expanded it)
    assert p.render("{rationale}", "see {label}", "B") == "{rationale} | see {label} | B"
