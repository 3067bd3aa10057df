"""A user's own task through the CLI (issue 24): never silently degraded at ingest, several splits in one
version, a warning for a task without a prompt, `prompt init`, the prompt kept for `rationalize`, the summary's
label-space and gold counts, calls counted, and "did you mean" for model names."""

from __future__ import annotations

import json

import pytest
from cli_helpers import run as cli
from custom_task_helpers import TOPICS, topic_rows, topic_task, write_rows

from sbs_data.workspace import Workspace


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "ws.duckdb"
    cli("init", "--db", path)
    return path


def versions(db) -> list[str]:
    return [r["ref"] for r in json.loads(cli("versions", "--db", db, "-f", "json").stdout)]


# -- 1. ingest ----------------------------------------------------------------------------------------
def test_a_task_whose_label_field_no_row_has_is_refused_with_the_columns_and_the_fix(db, tmp_path):
    task = topic_task(tmp_path)
    src = write_rows(tmp_path / "news.jsonl", topic_rows(300))
    r = cli("ingest", src, "--task", task, "--split", "train", "--db", db, ok=False)
    assert r.exit_code == 1
    msg = " ".join(r.output.split())
    assert "no row has the label field 'label' of task 'topics'" in msg
    assert "columns present: headline, topic, site" in msg
    assert "label_field: topic" in msg and "--map topic=label" in msg and "--no-labels" in msg
    assert versions(db) == []  # nothing stored
    # the fixes work: --map, label_field in the YAML, or --no-labels when there really are none
    cli("ingest", src, "--task", task, "--split", "train", "--map", "topic=label", "--db", db)
    with Workspace.open(db) as ws:
        labels = ws.all("SELECT label, count(*) FROM examples GROUP BY 1 ORDER BY 1")
        assert labels == [(t, 100) for t in sorted(TOPICS)]
    cli("ingest", src, "--task", topic_task(tmp_path, "topic"), "--split", "train", "-n", "b", "--db", db)
    cli("ingest", src, "--task", task, "--split", "train", "-n", "c", "--no-labels", "--db", db)
    with Workspace.open(db) as ws:
        assert ws.one("SELECT count(*) FROM examples_at('b') WHERE label IS NOT NULL") == 300
        assert ws.one("SELECT count(*) FROM examples_at('c') WHERE label IS NULL") == 300


def test_the_suggested_label_column_is_the_one_holding_labels_not_the_first_unread_one(db, tmp_path):
    """A CSV whose first column is a date: the refusal told the user `--map date=label`, a fix that fails."""
    src = tmp_path / "news.csv"
    src.write_text("date,headline,kind\n2024-01-01,Goal!,sports\n2024-01-02,Vote,politics\n")
    r = cli("ingest", src, "--task", topic_task(tmp_path), "--split", "train", "--db", db, ok=False)
    msg = " ".join(r.output.split())
    assert "--map kind=label" in msg and "`label_field: kind`" in msg and "date=label" not in msg
    # no value in the label space: a column named like a label is next
    src.write_text("date,headline,category\n2024-01-01,Goal!,Sport\n")
    r = cli("ingest", src, "--task", topic_task(tmp_path), "--split", "train", "--db", db, ok=False)
    assert "--map category=label" in " ".join(r.output.split())


def test_columns_the_task_does_not_read_are_kept_in_fields(db, tmp_path):
    src = write_rows(tmp_path / "news.jsonl", topic_rows(4))
    cli("ingest", src, "--task", topic_task(tmp_path, "topic"), "--split", "train", "--db", db)
    with Workspace.open(db) as ws:
        fields = [json.loads(f) for (f,) in ws.all("SELECT fields FROM examples ORDER BY row_idx")]
    assert fields[1] == {"headline": "Headline number 1 of the day", "site": "s1"}


def test_partly_unlabelled_rows_are_stored_with_a_warning(db, tmp_path):
    rows = topic_rows(5)
    rows[2].pop("topic")
    src = write_rows(tmp_path / "news.jsonl", rows)
    r = cli("ingest", src, "--task", topic_task(tmp_path, "topic"), "--split", "train", "--db", db)
    assert "1 of 5 rows have no label" in r.output


def test_several_splits_in_one_command_make_one_version(db, tmp_path):
    task = topic_task(tmp_path, "topic")
    a = write_rows(tmp_path / "a.jsonl", topic_rows(6))
    b = write_rows(tmp_path / "b.jsonl", topic_rows(3, start=6))
    cli("ingest", "--split", f"train={a}", "--split", f"test={b}", "--task", task, "-n", "news", "--db", db)
    assert versions(db) == ["news@1"]
    with Workspace.open(db) as ws:
        assert ws.get("news").stats["rows_by_split"] == {"test": 3, "train": 6}
    # a split column: one version too; "valid" is the validation split
    mixed = [dict(r, part="train" if i < 4 else "valid") for i, r in enumerate(topic_rows(6, start=20))]
    c = write_rows(tmp_path / "c.jsonl", mixed)
    cli("ingest", c, "--split-field", "part", "--task", task, "-n", "mixed", "--db", db)
    with Workspace.open(db) as ws:
        assert ws.get("mixed").stats["rows_by_split"] == {"train": 4, "validation": 2}
        assert "part" not in ws.one("SELECT fields FROM examples_at('mixed') LIMIT 1")
    # errors name the file, line and field; nothing is stored
    mixed[3].pop("part")
    write_rows(c, mixed)
    r = cli("ingest", c, "--split-field", "part", "--task", task, "-n", "mixed", "--db", db, ok=False)
    assert f"{c}:4: field 'part': missing split name" in r.output
    leak = write_rows(tmp_path / "leak.jsonl", topic_rows(2, start=5))  # row 5 is in a.jsonl too
    r = cli("ingest", "--split", f"train={a}", "--split", f"test={leak}", "--task", task, "-n", "x", "--db", db,
            ok=False)  # fmt: skip
    assert f"{leak}:1: duplicate example id" in r.output and f"also in split 'train' at {a}:6" in r.output
    r = cli("ingest", a, "--split", "train", "--split", "test", "--task", task, "--db", db, ok=False)
    assert "--split NAME=FILE" in r.output
    r = cli("ingest", a, "--task", task, "--db", db, ok=False)
    assert "--split NAME, or --split-field COLUMN" in r.output
    # both given: said so (it asked to "say which split" the user had just said twice)
    r = cli("ingest", c, "--split", "train", "--split-field", "part", "--task", task, "--db", db, ok=False)
    assert "not both" in r.output
    # a split column no row has (a typo): the row's columns are named
    r = cli("ingest", c, "--split-field", "prat", "--task", task, "-n", "m2", "--db", db, ok=False)
    assert (
        "missing split name (--split-field prat), got None; the row's columns: headline, topic, site, part"
        in (" ".join(r.output.split()))
    )
    assert sorted(versions(db)) == ["mixed@1", "news@1"]


# -- 7. counting and names ------------------------------------------------------------------------------
def shared_prompt_rows(n: int, shared: int) -> list[dict]:
    """`n` rows with ids, of which the last `shared` repeat an earlier row's headline (same prompt)."""
    rows = [dict(r, id=f"r{i}") for i, r in enumerate(topic_rows(n - shared))]
    rows += [dict(rows[i], id=f"dup{i}") for i in range(shared)]
    return rows


def test_the_plan_line_and_the_progress_bar_count_calls(db, tmp_path, server):
    src = write_rows(tmp_path / "news.jsonl", shared_prompt_rows(30, 7))
    cli("ingest", src, "--task", topic_task(tmp_path, "topic"), "--split", "train", "-n", "news", "--db", db)
    r = cli("generate", "news", "--teacher", "openai:gpt-4o-mini", "--dry-run", "--db", db)
    # 7 rows need no call of their own ("one call each" read as 7 more calls)
    assert "30 rows, 23 calls: 7 rows repeat another row's prompt and share its call" in r.output
    r = cli("generate", "news", "--teacher", "openai:gpt-4o-mini", "--progress", "--db", db, "-f", "json")
    assert "23/23" in r.output and "/30" not in r.output  # the bar ends at the calls made
    assert json.loads(r.stdout)[0]["shared_prompt"] == 7 and server.count == 23


def test_an_unknown_model_name_gets_did_you_mean_from_the_table(db, tmp_path, server):
    src = write_rows(tmp_path / "news.jsonl", topic_rows(3))
    cli("ingest", src, "--task", topic_task(tmp_path, "topic"), "--split", "train", "-n", "news", "--db", db)
    r = cli("generate", "news", "--teacher", "openai:gpt4o-mini", "--dry-run", "--db", db)
    assert "openai:gpt4o-mini is not in the price table (did you mean openai:gpt-4o-mini?)" in r.output
    r = cli("generate", "news", "--teacher", "openai:gpt4o-mini", "--max-usd", "1", "--db", db, ok=False)
    assert "--max-usd needs a price for openai:gpt4o-mini (did you mean openai:gpt-4o-mini?)" in r.output
    # a typo that a shorter listed name prefixes is priced as that name, and says so
    r = cli("generate", "news", "--teacher", "openai:gpt-4o-mni", "--dry-run", "--db", db)
    assert "priced as gpt-4o" in r.output and "did you mean openai:gpt-4o-mini?" in r.output
    r = cli("generate", "news", "--teacher", "openai:gpt-4o-mini-2024-07-18", "--dry-run", "--db", db)
    assert "did you mean" not in r.output and "price table" not in r.output
    # OpenAI-compatible servers serve models the table does not list: no guess, and no error
    r = cli("generate", "news", "--teacher", "openai-compat:my-local-model", "--base-url", server.openai_url,
            "--dry-run", "--db", db)  # fmt: skip
    assert "did you mean" not in r.output


# -- 3. the summary tells the truth about usefulness -----------------------------------------------------
def test_the_summary_counts_labels_in_the_label_space_and_agreeing_with_gold_per_split(db, tmp_path, server):
    task = topic_task(tmp_path, "topic")
    a = write_rows(tmp_path / "a.jsonl", topic_rows(6))
    b = write_rows(tmp_path / "b.jsonl", topic_rows(3, start=6))
    cli("ingest", "--split", f"train={a}", "--split", f"test={b}", "--task", task, "-n", "news", "--db", db)
    # rows 0-2 get "sports" (right for row 0 only); the rest the stand-in's "(40 + 2)", in no label space
    server.set_faults(
        {"answers": {f"Headline number {i} of": "Sport. So the answer is sports." for i in range(3)}}
    )
    r = cli("generate", "news", "--teacher", "openai:gpt-4o-mini", "--db", db, "-f", "json")
    s = json.loads(r.stdout)[0]
    assert (s["ok"], s["in_label_space"], s["agree_gold"]) == (9, 3, 1)
    assert s["by_split"] == {
        "test": {"rows": 3, "ok": 3, "in_label_space": 0, "gold": 3, "agree_gold": 0},
        "train": {"rows": 6, "ok": 6, "in_label_space": 3, "gold": 6, "agree_gold": 1},
    }
    assert "6 of 9 answers are outside the label space of task 'topics'" in r.output
    assert "the usual sign of a wrong prompt" in r.output
    table = cli("generate", "news", "--teacher", "openai:gpt-4o-mini", "--db", db).stdout
    assert "6 rows: 6 ok, 3 in the label space, 1 agree with gold" in " ".join(table.split())


# -- 2. prompts for custom tasks ------------------------------------------------------------------------
def raw_db(db, tmp_path, n: int) -> None:
    """`raw@1`: n train rows of the topics task ingested with --no-labels (no gold labels)."""
    src = write_rows(tmp_path / "raw.jsonl", topic_rows(n))
    cli(
        "ingest",
        src,
        "--task",
        topic_task(tmp_path),
        "--split",
        "train",
        "-n",
        "raw",
        "--no-labels",
        "--db",
        db,
    )


def news_db(db, tmp_path, n: int = 30):
    """`news@1`: n labelled train rows of the topics task (label field `topic`)."""
    task = topic_task(tmp_path, "topic")
    cli(
        "ingest",
        write_rows(tmp_path / "news.jsonl", topic_rows(n)),
        "--task",
        task,
        "-s",
        "train",
        "--db",
        db,
    )
    return task


def test_answers_marked_up_by_a_chat_model_are_in_the_label_space(db, tmp_path, server):
    """ "So the answer is **sports**." (markdown bold, as chat models write) was the label '**sports**': outside
    the label space, so `filter` dropped right answers."""
    news_db(db, tmp_path, n=6)  # topics cycle sports, politics, tech
    server.set_faults(
        {"answers": {
            "number 0 of": "Sport. So the answer is **sports**.",
            "number 1 of": "Votes. So the answer is *Politics*!",
            "number 2 of": "Chips. So the answer is `tech`.",
        }}
    )  # fmt: skip
    r = cli("generate", "news", "--teacher", "openai:gpt-4o-mini", "--limit", "3", "--db", db, "-f", "json")
    s = json.loads(r.stdout)[0]
    assert (s["ok"], s["in_label_space"], s["agree_gold"]) == (3, 3, 3)
    with Workspace.open(db) as ws:
        assert sorted(ws.all("SELECT pred_label FROM generations")) == [("politics",), ("sports",), ("tech",)]


def test_shipped_prompts_validate_and_a_typo_is_named_with_file_and_field(tmp_path):
    from sbs_data import SbsError
    from sbs_data.configfile import load_yaml
    from sbs_data.generate.prompts import PROMPTS_DIR, read_prompt
    from sbs_data.schemas import validate

    shipped = sorted(PROMPTS_DIR.glob("*.yaml"))
    assert len(shipped) == 4
    for f in shipped:
        validate(load_yaml(f, what="prompt file"), "prompt", where=str(f))
    bad = tmp_path / "bad.yaml"
    bad.write_text("template: '{input}'\nexemplar:\n  - input: x\n")  # `exemplar`: silently zero-shot before
    with pytest.raises(SbsError, match=r"bad.yaml: \(top level\): Additional properties .*'exemplar'"):
        read_prompt(bad)
    bad.write_text("template: '{input}'\nexemplars:\n  - input: x\n    answer: y\n")
    with pytest.raises(SbsError, match=r"bad.yaml: exemplars.0: 'rationale' is a required property"):
        read_prompt(bad)


def test_a_custom_task_without_a_prompt_is_warned_about_at_generate_and_dry_run(db, tmp_path, server):
    news_db(db, tmp_path, 3)
    for more in (["--dry-run"], []):
        r = cli("generate", "news", "--teacher", "openai:gpt-4o-mini", "--db", db, *more)
        out = " ".join(r.output.split())
        assert "no few-shot prompt for task 'topics': using a zero-shot generic prompt" in out
        assert "sbs-data prompt init topics --from news --shots 6 --out topics.prompt.yaml" in out
    # ...and that command, as printed, works: the task's name resolves to the definition the version stores
    cli("prompt", "init", "topics", "--from", "news", "--shots", "6", "--out", tmp_path / "topics.prompt.yaml",
        "--db", db)  # fmt: skip
    own = tmp_path / "own.txt"
    own.write_text("Which topic?\n{input}\nA:")
    r = cli("generate", "news", "--teacher", "openai:gpt-4o-mini", "--prompt", own, "--dry-run", "--db", db)
    assert "no few-shot prompt" not in r.output and "Which topic?" in r.output
    # data ingested with --no-labels: the printed command would fail (no labelled rows), so it names another
    task = topic_task(tmp_path)
    src = write_rows(tmp_path / "unlabelled.jsonl", topic_rows(3))
    cli("ingest", src, "--task", task, "--split", "train", "-n", "raw", "--no-labels", "--db", db)
    r = cli("generate", "raw", "--teacher", "openai:gpt-4o-mini", "--dry-run", "--db", db)
    out = " ".join(r.output.split())
    assert "(raw has none: ingest a few)" in out and "prompt init topics --from LABELLED_DATASET" in out
    r = cli("prompt", "init", "topics", "--from", "raw", "--out", tmp_path / "x.yaml", "--db", db, ok=False)
    assert "no labelled rows" in r.output


def test_prompt_init_writes_balanced_exemplars_with_placeholders_that_generate_refuses(db, tmp_path):
    task = news_db(db, tmp_path)
    out = tmp_path / "topics.prompt.yaml"
    r = cli("prompt", "init", task, "--from", "news", "--shots", "6", "--out", out, "--db", db, "-f", "json")
    s = json.loads(r.stdout)[0]
    assert (s["shots"], s["labels"], s["placeholders"]) == (6, 3, 6) and "placeholders" in r.output
    from sbs_data.generate.prompts import read_prompt

    p = read_prompt(out)
    assert sorted(ex["answer"] for ex in p.exemplars) == sorted(TOPICS * 2)  # two of each label
    assert all(ex["input"].startswith("Headline: Headline number") for ex in p.exemplars)
    assert p.placeholders == list(range(6))
    first = out.read_text()
    r = cli("prompt", "init", task, "--from", "news", "--out", out, "--db", db, ok=False)
    assert "exists; pass --force" in r.output
    cli("prompt", "init", task, "--from", "news@1", "--shots", "6", "--out", out, "--force", "--db", db)
    assert out.read_text() == first  # deterministic
    cli(
        "prompt",
        "init",
        task,
        "--from",
        "news",
        "--shots",
        "6",
        "--seed",
        "7",
        "--out",
        out,
        "--force",
        "--db",
        db,
    )
    assert out.read_text() != first
    r = cli("generate", "news", "--teacher", "openai:gpt-4o-mini", "--prompt", out, "--dry-run", "--db", db,
            ok=False)  # fmt: skip
    assert f"{out}: exemplars[0].rationale: still the placeholder" in r.output
    r = cli("prompt", "init", "cqa", "--from", "news", "--out", tmp_path / "x.yaml", "--db", db, ok=False)
    assert "news@1 is task 'topics', not 'cqa'" in r.output


def test_prompt_init_with_a_teacher_makes_a_prompt_that_generate_and_rationalize_use(db, tmp_path, server):
    task = news_db(db, tmp_path)
    out = tmp_path / "topics.prompt.yaml"
    r = cli("prompt", "init", task, "--from", "news", "--shots", "3", "--out", out, "--teacher",
            "openai:gpt-4o-mini", "--db", db, "-f", "json")  # fmt: skip
    s = json.loads(r.stdout)[0]
    assert (s["rationales_written"], s["placeholders"], s["called"]) == (3, 0, 3) and server.count == 3
    assert s["spent_usd"] > 0
    from sbs_data.generate.prompts import read_prompt

    p = read_prompt(out)
    assert all("fake teacher reasons" in ex["rationale"] for ex in p.exemplars) and p.sha == s["prompt_sha"]
    assert len(p.exemplars) == 3 and p.template == "{input}\nA:"
    # cached like any call: writing it again calls nothing
    cli("prompt", "init", task, "--from", "news", "--shots", "3", "--out", out, "--force", "--teacher",
        "openai:gpt-4o-mini", "--db", db)  # fmt: skip
    assert server.count == 3
    # generate uses it: every request carries its system text and exemplars
    server.keep_bodies = True
    r = cli("generate", "news", "--teacher", "openai:gpt-4o-mini", "--prompt", out, "--db", db, "-f", "json")
    assert "no few-shot prompt" not in r.output
    sent = [b["body"]["messages"] for b in server.bodies]
    assert len(sent) == 30
    assert all(m[0]["content"] == p.system and p.exemplars[0]["rationale"] in m[1]["content"] for m in sent)
    # rationalize (no --prompt) asks with the generating prompt, hinted; the file may be gone by then
    out.unlink()
    server.bodies.clear()
    r = cli("rationalize", "news-gpt-4o-mini", "--teacher", "openai:gpt-4o-mini", "--db", db, "-f", "json")
    hinted = [b["body"]["messages"] for b in server.bodies]
    assert len(hinted) == 30  # every answer was "(40 + 2)": wrong
    for m in hinted:
        assert m[0]["content"] == p.system and p.exemplars[0]["rationale"] in m[1]["content"]
        assert "The correct answer is" in m[1]["content"]
    with Workspace.open(db) as ws:
        gen, hint = ws.get("news-gpt-4o-mini"), ws.get("news-gpt-4o-mini-hinted")
        assert hint.config["prompt"]["sha"] == gen.config["prompt"]["sha"] == p.sha
    # --prompt still says otherwise
    other = tmp_path / "other.txt"
    other.write_text("Other prompt.\n{input}\nA:")
    server.bodies.clear()
    cli("rationalize", "news-gpt-4o-mini", "--teacher", "openai:gpt-4o-mini", "--prompt", other, "-n", "h2",
        "--combined-name", "r2", "--db", db)  # fmt: skip
    assert server.bodies and all(
        "Other prompt." in b["body"]["messages"][-1]["content"] for b in server.bodies
    )


# -- 5/8. the report and the card print statistics at 4 significant digits ------------------------------
def _sig_digits(num: str) -> int:
    return len(num.replace(".", "").replace("-", "").lstrip("0"))


def test_the_report_and_the_card_print_signal_statistics_at_4_significant_digits(db, tmp_path, server):
    """A new user's scored run: the histogram captions and the card's quality table printed Python's full
    float repr (mean 0.725641, min 0.7096774193548387), unlike every other number of the report."""
    import re

    news_db(db, tmp_path)
    # two answer lengths: the answer's position in the rationale is 1/3 or 2/3 of the way, never round
    server.set_faults(
        {"answers": {"Headline number 1": "Sport. So the answer is sports.", "of the day": "A headline about a "
                     "game that was played in the day. So the answer is sports."}}
    )  # fmt: skip
    cli("generate", "news", "--teacher", "openai:gpt-4o-mini", "--db", db)
    cli("score", "news-gpt-4o-mini", "--db", db)
    page = tmp_path / "report.html"
    cli("report", "news-gpt-4o-mini", "--html", page, "--db", db)
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", page.read_text())
    nums = [n for c in captions for n in re.findall(r"(?:mean|median) (-?[\d.]+)", c)]
    assert any("." in n for n in nums) and all(_sig_digits(n) <= 4 for n in nums), captions
    cli("export", "news-gpt-4o-mini", "--out", tmp_path / "out", "--db", db)
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| `words` |" in card
    stats = re.findall(r"\| mean (\S+), min (\S+), max (\S+) \|", card)
    assert stats and all(_sig_digits(n) <= 4 for row in stats for n in row), stats


# -- 6. export --------------------------------------------------------------------------------------------
def test_exporting_unlabelled_data_with_gold_labels_is_refused_with_the_fix(db, tmp_path, server):
    """Data ingested with --no-labels, generated and exported with the default --label-source gold: every
    shard row had a null label (and the card said the labels came from gold)."""
    import pyarrow.parquet as pq

    raw_db(db, tmp_path, 6)
    server.set_faults({"answers": {"of the day": "A game. So the answer is sports."}})
    cli("generate", "raw", "--teacher", "openai:gpt-4o-mini", "--db", db)
    out = tmp_path / "out"
    r = cli("export", "raw-gpt-4o-mini", "--out", out, "--db", db, ok=False)
    assert r.exit_code == 1 and "no exported row has a gold label" in r.output
    assert "--label-source teacher" in r.output and not out.exists()
    cli("export", "raw-gpt-4o-mini", "--out", out, "--label-source", "teacher", "--db", db)
    labels = pq.read_table(next((out / "train").glob("*.parquet"))).column("label").to_pylist()
    assert labels == ["sports"] * 6


def test_the_report_table_gives_a_text_signal_no_mean_per_split(db, tmp_path, server, monkeypatch):
    """`report`'s signal table printed majority_label's distinct count under "mean:test" / "mean:train"
    (4 and 3 in a user's run), a number no mean of a label can be."""
    monkeypatch.setenv("COLUMNS", "200")  # one line per table row
    task = topic_task(tmp_path, "topic")
    a = write_rows(tmp_path / "a.jsonl", topic_rows(6))
    b = write_rows(tmp_path / "b.jsonl", topic_rows(3, start=6))
    cli("ingest", "--split", f"train={a}", "--split", f"test={b}", "--task", task, "-n", "news", "--db", db)
    server.set_faults(
        {"answers": {"number 1 of": "So the answer is tech.", "of the day": "So the answer is sports."}}
    )
    cli("generate", "news", "--teacher", "openai:gpt-4o-mini", "--db", db)
    cli("score", "news-gpt-4o-mini", "--db", db)
    out = cli("report", "news-gpt-4o-mini", "--db", db).stdout
    header = next(line for line in out.splitlines() if "mean:test" in line)
    cells = [c.strip() for c in header.strip("┃ ").split("┃")]
    row = next(line for line in out.splitlines() if "│ majority_label" in line)
    values = dict(zip(cells, (c.strip() for c in row.strip("│ ").split("│"))))
    assert values["mean/rate"] == values["mean:test"] == values["mean:train"] == "∅", values


def test_a_prompt_written_for_another_task_is_warned_about(db, tmp_path, server):
    """`prompt init` records `task:` in the file, but `generate --prompt` used a file written for another task
    without a word: every answer fell outside the label space, found only after the run."""
    news_db(db, tmp_path, 3)
    body = "template: '{input} A:'\nexemplars:\n  - {input: 'Q', rationale: 'R.', answer: 'x'}\n"
    other, own = tmp_path / "nli.prompt.yaml", tmp_path / "topics.prompt.yaml"
    other.write_text("task: anli\n" + body)
    own.write_text("task: topics\n" + body)
    r = cli("generate", "news", "--teacher", "openai:gpt-4o-mini", "--prompt", other, "--dry-run", "--db", db)
    out = " ".join(r.output.split())
    assert f"warning: {other} was written for task 'anli', but the rows are task 'topics'" in out
    r = cli("generate", "news", "--teacher", "openai:gpt-4o-mini", "--prompt", own, "--dry-run", "--db", db)
    assert "was written for task" not in r.output
    # ...and so is an exemplar answer outside the task's labels (the teacher would copy it), before any call
    assert "exemplars[0].answer 'x' is not in the label space of task 'topics' (sports, politics, tech" in (
        " ".join(r.output.split())
    )
    own.write_text("task: topics\n" + body.replace("answer: 'x'", "answer: 'Sports'"))
    r = cli("generate", "news", "--teacher", "openai:gpt-4o-mini", "--prompt", own, "--dry-run", "--db", db)
    assert "not in the label space" not in r.output


def test_rationalizing_unlabelled_data_is_refused(db, tmp_path, server):
    """Generations of rows ingested with --no-labels: `rationalize` asked nothing and built two empty-handed
    versions (GEN-hinted with 0 rows, GEN-rationalized) without a word about why."""
    raw_db(db, tmp_path, 4)
    cli("generate", "raw", "--teacher", "openai:gpt-4o-mini", "--db", db)
    before = versions(db)
    r = cli("rationalize", "raw-gpt-4o-mini", "--teacher", "openai:gpt-4o-mini", "--db", db, ok=False)
    assert r.exit_code == 1 and "have no gold labels in split train" in " ".join(r.output.split())
    assert versions(db) == before


def test_prompt_init_with_a_teacher_that_misses_points_at_other_rows_not_the_same_rerun(db, tmp_path, server):
    """When the teacher's rationale for an exemplar disagreed with gold, the file and the warning said "rerun
    with --teacher SPEC --force": the rerun read the same answers from the cache and left the same holes."""
    task = news_db(db, tmp_path, 9)
    server.set_faults({"answers": {"Headline number": "Clearly about chips. So the answer is tech."}})
    out = tmp_path / "p.yaml"
    args = (
        "prompt",
        "init",
        task,
        "--from",
        "news",
        "--shots",
        "3",
        "--out",
        out,
        "--teacher",
        "openai:gpt-4o-mini",
    )
    r = cli(*args, "--db", db)
    msg = " ".join(r.output.split())
    assert "2 of 3 exemplar rationales" in msg and "rerun with another --seed --force" in msg
    assert "--teacher SPEC --force" not in msg and "--teacher SPEC --force" not in out.read_text()
    assert "another --seed (other rows) --force" in out.read_text()


def test_rationalizing_a_merge_of_two_prompts_says_which_it_asks_with(db, tmp_path, server):
    """A merge of generations made with different prompts: rationalize took the first prompt in the lineage
    for every row, and did not say the other rows were asked differently."""
    news_db(db, tmp_path, 6)
    own = tmp_path / "own.txt"
    own.write_text("Which topic?\n{input}\nA:")
    cli("generate", "news", "--teacher", "openai:gpt-4o-mini", "-n", "zero", "--db", db)
    cli(
        "generate",
        "news",
        "--teacher",
        "anthropic:claude-3-5-haiku-latest",
        "--prompt",
        own,
        "-n",
        "own",
        "--db",
        db,
    )
    cli("merge", "zero", "own", "--name", "both", "--db", db)
    r = cli("rationalize", "both", "--teacher", "openai:gpt-4o-mini", "--dry-run", "--db", db)
    out = " ".join(r.output.split())
    assert "warning: both@1 holds rows generated with different prompts" in out
    assert "pass --prompt FILE to choose" in out
    r = cli("rationalize", "own", "--teacher", "openai:gpt-4o-mini", "--dry-run", "--db", db)
    assert "different prompts" not in r.output
