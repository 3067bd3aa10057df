"""`--help` reads cleanly: no typer type tags, the options of `generate` grouped, with one example."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from sbs_data.cli import app

runner = CliRunner()


def _help(*cmd: str) -> str:
    r = runner.invoke(app, [*cmd, "--help"], env={"COLUMNS": "160", "TERMINAL_WIDTH": "160"})
    assert r.exit_code == 0, r.output
    return r.output


@pytest.mark.parametrize("cmd", [("generate",), ("ingest",), ("export",), ("sql",), ("batches", "status")])
def test_no_type_tags(cmd):
    text = _help(*cmd)
    assert not re.search(r"<(bool|str|int|float|path|list\[[a-z]+\])>", text), text
    assert "{ref}" not in text and "{source}" not in text


def test_generate_options_are_grouped_with_an_example():
    text = _help("generate")
    panels = re.findall(r"╭─ ([^─]+?) ─", text)
    assert panels[:2] == ["Arguments", "Options"]
    assert {
        "Teacher, prompt and sampling",
        "Which rows",
        "Limits and retries",
        "Run: budget, mode, dry run",
    } <= set(panels)
    assert "Example: sbs-data generate cqa --teacher openai:gpt-4o-mini" in text
    assert "Usage: sbs-data generate [OPTIONS] REF" in text
    # a flag shows no type; a valued option its click word
    assert re.search(r"--dry-run\s+Render prompts", text) and re.search(r"--max-usd\s+FLOAT", text)


@pytest.mark.parametrize("group", [(), ("prompt",), ("cache",), ("batches",), ("review",)])
def test_each_command_is_one_line_in_the_listing(group):
    """A docstring whose first paragraph spanned two source lines broke `sbs-data --help`'s listing mid-sentence
    ("...wrapped (--format table, the" / "default), or csv...") even on a wide terminal."""
    text = _help(*group)
    listing = text.split("Commands", 1)[1]
    continued = [line for line in listing.splitlines() if re.match(r"^│ {10,}\S", line)]
    assert not continued, continued


def test_rationalize_help_says_which_prompt_it_asks_with_by_default():
    """`rationalize` reuses GEN's prompt unless --prompt says otherwise; its --help did not say so."""
    text = " ".join(_help("rationalize").replace("│", " ").split())
    assert "the prompt GEN was generated with" in text
