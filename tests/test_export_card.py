"""The dataset card through `sbs-data export`: no dead licence link, no meaningless statistics, example rows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from cli_helpers import DEMO_NLI, run


def _card(out: Path) -> tuple[dict, str]:
    text = (out / "README.md").read_text()
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def _section(body: str, title: str) -> str:
    return body.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_card_of_a_custom_task_links_nothing_missing_and_shows_escaped_examples(tmp_path):
    task = tmp_path / "sentiment.yaml"
    task.write_text(
        "name: sentiment\ninput_fields: [review]\ntemplate: 'Review: {review}'\nlabel_space: fixed\n"
        "labels: [positive, negative]\n"
    )
    hostile = "Great! <img src=x onerror=alert(1)> [click](javascript:alert(1)) | **bold** " + "long " * 200
    rows = [{"id": "a1", "review": hostile, "label": "positive"}] + [
        {"id": f"b{i}", "review": f"Review number {i}.\nSecond line.", "label": "negative"} for i in range(4)
    ]
    data = tmp_path / "reviews.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    db = str(tmp_path / "c.duckdb")
    run("ingest", str(data), "--task", str(task), "--split", "train", "--name", "rev", "--db", db)
    out = tmp_path / "export"
    run("export", "rev", "--out", str(out), "--db", db)
    fm, body = _card(out)
    assert fm["license"] == "other" and fm["license_name"]
    link = fm.get("license_link")
    assert link is None or link.startswith("http") or (out / link).is_file()  # no link to a missing file
    ex = _section(body, "Examples")
    lines = [x for x in ex.splitlines() if x.startswith("|")]
    assert len(lines) == 2 + 3  # header, rule, the first three rows
    assert all(len(re.findall(r"(?<!\\)\|", x)) == 6 for x in lines)  # the data's "|" cannot add a column
    first = lines[2]
    assert first.startswith("| a1 | train | Review: Great\\! ")
    assert "<img" not in ex and "&lt;img src=x onerror=alert\\(1\\)&gt;" in first
    assert "](javascript:" not in ex and "\\*\\*bold\\*\\*" in first
    assert first.count("long") < 70 and "…" in first  # capped
    assert "Review number 0. Second line." in ex  # newlines cannot break the table


def test_card_statistics_leave_out_hashes_and_cluster_ids(tmp_path):
    db = str(tmp_path / "n.duckdb")
    run("import-original", str(DEMO_NLI), "--task", "anli", "--db", db)
    run("score", "demo-nli-palm", "--db", db)
    out = tmp_path / "export"
    run("export", "demo-nli-palm", "--out", str(out), "--db", db)
    fm, body = _card(out)
    assert fm["license"] == "cc-by-nc-4.0" and "license_link" not in fm
    stats = _section(body, "Quality statistics")
    signals = re.findall(r"^\| `([a-z_]+)` \|", stats, flags=re.M)
    assert {"parse_ok", "gold_match", "words", "exact_dup"} <= set(signals)
    assert not {"rationale_hash", "near_dup_cluster"} & set(signals)
    # signals no exported row has (imported completions have no finish reason) are named, not tabulated
    assert "truncated" not in signals and "`truncated`" in stats.split("No value on any exported row:")[1]
    ex = _section(body, "Examples")
    assert ex.count("\n| train-") == 3 and "Premise:" in ex and "label (gold)" in ex
