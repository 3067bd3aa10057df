"""Benchmark: `sbs-data browse` page times over HTTP on big versions (issue 22).

    .venv/bin/python benchmarks/browse_pages.py [--rows 200000,1000000] [--repeat 7] [--keep DIR]

For each size, a fresh workspace is built in bulk with SQL (no teacher, no scoring code): examples (2 samples
each, 10% test), a generations version, a scores version (random signal values) and a selection version (about
20% of the train rows dropped, under 4 rules). One row holds a unique word in its rationale, for `?q=`.
Then `sbs-data browse SEL --port 0` runs as a subprocess; the time until it prints its URL (opening the
workspace and building the page table) is its startup. Each page type is then fetched over HTTP with urllib:
the first fetch, and the median of --repeat more. Peak RSS is the server's VmHWM from /proc; the machine's
load average is recorded because the dev box is shared.

Targets (issue 22): on 1M rows, first page < 300 ms, a filter / sort / text search < 1 s, a row page < 200 ms;
on 200k rows, `/v/NAME@1` <= 0.5 s and `?q=` <= 1.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NEEDLE = "zebracorn"


def build(db: Path, rows: int) -> str:
    """The workspace: bench@1 examples, bench-gen@1 generations, bench-gen@2 scores, bench-sel@1 selection."""
    from sbs_data.workspace import Workspace

    n_ex = rows // 2
    needle_row = rows // 2 + 1
    with Workspace.open(db) as ws:
        with ws.new_version("bench", "examples", {"synth": rows}, task="svamp", streamed=True) as ev:
            ws.execute(
                """INSERT INTO sbs_examples (version_id, example_id, split, row_idx, task, input_text, label, fields)
                SELECT ?, 'ex-' || lpad(i::VARCHAR, 7, '0'), CASE WHEN i % 10 = 0 THEN 'test' ELSE 'train' END,
                       i, 'svamp',
                       'Person ' || (i % 97) || ' has ' || (i % 89) || ' apples and buys ' || (i % 13) ||
                       ' bags of ' || (i % 7) || ' apples each. How many apples now?',
                       '( ' || (i % 89) || ' + ( ' || (i % 13) || ' * ' || (i % 7) || ' ) )', '{}'
                FROM range(?) t(i)""",
                [ev.version_id, n_ex],
            )
        ex = ws.by_id(ev.version_id)
        with ws.new_version("bench-gen", "generations", {"synth": rows}, parents=[ex], streamed=True) as gv:
            ws.execute(
                """INSERT INTO sbs_generations (version_id, example_id, sample_idx, split, teacher, raw, rationale,
                       pred_label, parse_status, finish_reason, prompt_tokens, completion_tokens, cost_usd, hinted)
                SELECT ?, e.example_id, s.k, e.split, CASE WHEN s.k = 0 THEN 'synth:a' ELSE 'synth:b' END,
                       r.rat || ' So the answer is ' || r.lab || '.', r.rat, r.lab,
                       CASE WHEN hash(e.row_idx, s.k) % 50 = 0 THEN 'no_answer' ELSE 'ok' END, 'stop', 300, 60,
                       0.0002, s.k = 1 AND e.row_idx % 20 = 0
                FROM sbs_examples e CROSS JOIN range(2) s(k),
                LATERAL (SELECT
                    'They start with ' || (e.row_idx % 89) || ' apples. ' || (e.row_idx % 13) || ' * ' ||
                    (e.row_idx % 7) || ' = ' || ((e.row_idx % 13) * (e.row_idx % 7)) || ' more, note w' ||
                    (hash(e.row_idx, s.k) % 5000) || ' and w' || (hash(s.k, e.row_idx) % 5000) ||
                    CASE WHEN e.row_idx * 2 + s.k = ? THEN ' ' || ? ELSE '' END ||
                    '. In total ' || ((e.row_idx % 89) + (e.row_idx % 13) * (e.row_idx % 7)) || ' apples.' AS rat,
                    CASE WHEN hash(e.row_idx, s.k) % 4 = 0 THEN '999' ELSE e.label END AS lab) r
                WHERE e.version_id = ?""",
                [gv.version_id, needle_row, NEEDLE, ex.version_id],
            )
        gen = ws.by_id(gv.version_id)
        with ws.new_version("bench-gen", "scores", {"synth": rows}, parents=[gen], streamed=True) as sv:
            ws.execute(
                """INSERT INTO sbs_scores (version_id, example_id, sample_idx, split, teacher, hinted, parse_ok,
                       truncated, refusal, label_in_space, gold_match, conclusion_match, answer_first_pos,
                       starts_with_answer, n_samples, majority_label, majority_agree, vote_share, vote_entropy,
                       words, sentences, repeated_sentences, ngram_repetition, input_overlap, exact_dup,
                       exact_dup_count, near_dup, near_dup_size)
                SELECT ?, g.example_id, g.sample_idx, g.split, g.teacher, g.hinted, g.parse_status = 'ok', false,
                       false, true, g.pred_label <> '999', true, (hash(g.example_id) % 100) / 100.0, false, 2,
                       g.pred_label, true, CASE WHEN hash(g.example_id) % 4 = 0 THEN 0.5 ELSE 1.0 END, 0.0,
                       18 + hash(g.example_id, g.sample_idx) % 40, 3, 0, (hash(g.sample_idx, g.example_id) % 30) / 100.0,
                       (hash(g.example_id, 7) % 100) / 100.0, false, 1, false, 1
                FROM sbs_generations g WHERE g.version_id = ?""",
                [sv.version_id, gen.version_id],
            )
        scored = ws.by_id(sv.version_id)
        with ws.new_version("bench-sel", "selection", {"synth": rows}, parents=[scored], streamed=True) as lv:
            ws.execute(
                """INSERT INTO sbs_selections (version_id, example_id, sample_idx, keep, reason)
                SELECT ?, s.example_id, s.sample_idx, d.rule IS NULL, d.rule
                FROM sbs_scores s, LATERAL (SELECT CASE
                    WHEN s.split <> 'train' THEN NULL
                    WHEN NOT s.parse_ok THEN 'parsable'
                    WHEN NOT s.gold_match THEN 'gold'
                    WHEN s.words > 55 THEN 'too_long'
                    WHEN s.ngram_repetition > 0.27 THEN 'repetitive' END AS rule) d
                WHERE s.version_id = ?""",
                [lv.version_id, scored.version_id],
            )
        return ws.by_id(lv.version_id).ref


class Server:
    def __init__(self, db: Path, ref: str):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "sbs_data.cli", "browse", ref, "--port", "0", "--db", str(db)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            m = re.search(r"at (http://127\.0\.0\.1:\d+)/", line)
            if m:
                self.url = m.group(1)
                break
        else:
            raise SystemExit(f"browse did not start (exit {self.proc.wait()})")
        self.startup_s = time.perf_counter() - t0

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.send_signal(2)
        self.proc.wait(60)


def fetch(url: str, body: dict | None = None) -> float:
    req = urllib.request.Request(url)
    if body is not None:
        req = urllib.request.Request(
            url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=120) as r:
        r.read()
        assert r.status == 200, (url, r.status)
    return time.perf_counter() - t0


def pages(ref: str, rows: int) -> list[tuple[str, str, dict | None]]:
    mid = f"ex-{rows // 4:07d}"
    q = urllib.parse.quote
    return [
        ("versions `/`", "/", None),
        ("version, first page", f"/v/{ref}", None),
        ("version, page 2,000 (n=50)", f"/v/{ref}?page=2000", None),
        ("filter split+kept+teacher", f"/v/{ref}?split=train&kept=false&teacher=synth:b", None),
        ("filter signal ranges", f"/v/{ref}?min.words=30&max.vote_share=0.5&is.gold_match=true", None),
        ("sort by a signal (-words)", f"/v/{ref}?sort=-words", None),
        ("filter + sort (rule, input_overlap)", f"/v/{ref}?rule=gold&sort=input_overlap", None),
        ("text search ?q= (one row)", f"/v/{ref}?q={NEEDLE}", None),
        ("text search + filter + sort", f"/v/{ref}?q={q('apples now')}&split=test&sort=-vote_share", None),
        ("row page", f"/v/{ref}/row/{mid}", None),
        ("POST /api/verdicts", "/api/verdicts", {"ref": ref, "example_id": mid, "verdict": "drop"}),
        ("GET /api/verdicts", f"/api/verdicts?ref={q(ref)}", None),
        ("SQL console count(*)", "/sql?q=" + q("SELECT count(*) FROM generations_at('bench-gen@1')"), None),
    ]


def bench(rows: int, repeat: int, work: Path) -> dict:
    db = work / f"browse-{rows}.duckdb"
    if db.exists():
        db.unlink()
    t0 = time.perf_counter()
    ref = build(db, rows)
    build_s = time.perf_counter() - t0
    srv = Server(db, ref)
    out: dict = {
        "rows": rows,
        "build_s": round(build_s, 1),
        "startup_s": round(srv.startup_s, 2),
        "pages": [],
    }
    try:
        for name, path, body in pages(ref, rows):
            first = fetch(srv.url + path, body)
            times = [fetch(srv.url + path, body) for _ in range(repeat)]
            out["pages"].append(
                {
                    "page": name,
                    "first_ms": round(first * 1000, 1),
                    "median_ms": round(statistics.median(times) * 1000, 1),
                }
            )
            print(
                f"  {rows:>9,} {name:<38} first {first * 1000:7.1f} ms  median {statistics.median(times) * 1000:7.1f} ms",
                flush=True,
            )
        out["peak_rss_mb"] = round(srv.peak_rss_mb())
    finally:
        srv.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="200000,1000000")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--keep", type=Path, default=None, help="build the workspaces here (default: a temp dir)")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="browse-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()[0]
    results = []
    for n in (int(x) for x in args.rows.split(",")):
        print(f"{n:,} rows: building...", flush=True)
        results.append(bench(n, args.repeat, work))
        print(
            f"  built in {results[-1]['build_s']} s; server up in {results[-1]['startup_s']} s; "
            f"peak RSS {results[-1]['peak_rss_mb']} MB",
            flush=True,
        )
    print(f"load average {load0:.2f} -> {os.getloadavg()[0]:.2f}")
    sizes = [r["rows"] for r in results]
    print("\n| page | " + " | ".join(f"{n:,} rows: first / median ms" for n in sizes) + " |")
    print("|---|" + "---:|" * len(sizes))
    for i, p in enumerate(results[0]["pages"]):
        cells = [f"{r['pages'][i]['first_ms']} / {r['pages'][i]['median_ms']}" for r in results]
        print(f"| {p['page']} | " + " | ".join(cells) + " |")
    print(
        "| server startup (open + page table), s | " + " | ".join(str(r["startup_s"]) for r in results) + " |"
    )
    print("| server peak RSS, MB | " + " | ".join(str(r["peak_rss_mb"]) for r in results) + " |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
