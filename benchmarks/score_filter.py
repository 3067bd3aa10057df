"""Benchmark: score + the strict recipe on 1M synthetic SVAMP-like generation rows (K=3 samples/example).

    .venv/bin/python benchmarks/score_filter.py [--rows 1000000] [--baseline-rows 100000] [--threads 2]

Phases, each in its own process so peak memory (ru_maxrss) is that phase's own:
  1. synth    build examples + generations in a fresh workspace (numpy/polars, not timed as scoring)
  2. run      `score` (all signals incl. MinHash-LSH near-dups) + `filter --recipe strict`; time + peak RSS
  3. baseline the same signals by a straightforward per-row Python loop (task methods, mathexpr,
              datasketch MinHash/LSH) over the first --baseline-rows rows, extrapolated per row.
Synthetic rows: templated arithmetic rationales of ~25-45 words with a random filler clause, 25% wrong
answers, 5% wrong arithmetic, 2% leaked answers, 2% unparsable, 1% truncated, 3% copied rationales and
2% near-copies (one word changed).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NAMES = ["Tom", "Anna", "Jack", "Paige", "Rita", "Omar", "Lena", "Ivan", "Mia", "Sam"]
THINGS = ["apples", "seeds", "marbles", "books", "stickers", "cookies", "pencils", "cards"]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synth(db: str, rows: int, seed: int = 0) -> None:
    from sbs_data.workspace import Workspace

    rng = np.random.default_rng(seed)
    k = 3
    n_ex = (rows + k - 1) // k
    a, b, c = rng.integers(2, 90, n_ex), rng.integers(2, 12, n_ex), rng.integers(2, 15, n_ex)
    ex = pl.DataFrame(
        {
            "i": np.arange(n_ex),
            "a": a,
            "b": b,
            "c": c,
            "name": rng.choice(NAMES, n_ex),
            "thing": rng.choice(THINGS, n_ex),
        }
    ).with_columns(
        example_id=pl.format("ex-{}", "i"),
        split=pl.when(pl.col("i") % 10 == 0).then(pl.lit("test")).otherwise(pl.lit("train")),
        label=pl.format("( {} + ( {} * {} ) )", "a", "b", "c"),
        input_text=pl.format(
            "{} has {} {}. Then {} buys {} bags with {} {} in each bag. How many {} does {} have now?",
            "name",
            "a",
            "thing",
            "name",
            "b",
            "c",
            "thing",
            "thing",
            "name",
        ),
    )
    examples = ex.select(
        "example_id", "split", pl.col("i").cast(pl.Int32).alias("row_idx"), pl.lit("svamp").alias("task"),
        "input_text", "label", pl.lit(None, dtype=pl.List(pl.Utf8)).alias("choices"),
        pl.lit("{}").alias("fields"),
    )  # fmt: skip
    g = ex.join(pl.DataFrame({"sample_idx": np.arange(k, dtype=np.int32)}), how="cross").head(rows)
    n = g.height
    vocab = np.array([f"w{i}" for i in range(5000)])
    filler_len = rng.integers(6, 20, n)
    words = rng.choice(vocab, int(filler_len.sum()))
    filler = pl.Series(np.split(words, np.cumsum(filler_len)[:-1])).list.join(" ")
    u = rng.random(n)
    g = g.with_columns(
        filler=filler,
        bc=pl.col("b") * pl.col("c"),
        wrong=pl.Series(u < 0.25),
        badmath=pl.Series((u >= 0.25) & (u < 0.30)),
        leak=pl.Series((u >= 0.30) & (u < 0.32)),
        noparse=pl.Series((u >= 0.32) & (u < 0.34)),
        trunc=pl.Series((u >= 0.34) & (u < 0.35)),
        expr=pl.Series(rng.random(n) < 0.5),
    ).with_columns(
        ans=pl.col("a") + pl.col("bc") + pl.when(pl.col("wrong")).then(1).otherwise(0),
        bc_claim=pl.col("bc") + pl.when(pl.col("badmath")).then(3).otherwise(0),
    )
    g = g.with_columns(
        rationale=pl.concat_str(
            pl.when(pl.col("leak")).then(pl.format("{}. ", "ans")).otherwise(pl.lit("")),
            pl.format(
                "{} has {} {} at first. {} buys {} bags and each bag has {} {}, so {} gets {} * {} = {} {}. "
                "Note that {}. Then {} + {} = {} {} in total.",
                "name", "a", "thing", "name", "b", "c", "thing", "name", "b", "c", "bc_claim", "thing",
                "filler", "a", "bc_claim", "ans", "thing",
            ),
        ),
        pred_label=pl.when(pl.col("noparse")).then(pl.lit(None)).when(pl.col("expr") & ~pl.col("wrong"))
        .then(pl.format("({} + {} * {})", "a", "b", "c")).otherwise(pl.col("ans").cast(pl.Utf8)),
    )  # fmt: skip
    # 3% exact copies and 2% near-copies (one filler word changed) of another row's rationale
    rat = g["rationale"].to_list()
    src = rng.integers(0, n, n)
    v = rng.random(n)
    for i in np.nonzero(v < 0.03)[0]:
        rat[i] = rat[src[i]]
    for i in np.nonzero((v >= 0.03) & (v < 0.05))[0]:
        rat[i] = rat[src[i]].replace(" w", " x", 1)
    g = g.with_columns(rationale=pl.Series(rat))
    gens = g.select(
        "example_id", "sample_idx", "split", pl.lit("synth:teacher").alias("teacher"),
        pl.concat_str("rationale", pl.format(" The answer is {}.", "pred_label")).alias("raw"),
        "rationale", "pred_label",
        pl.when(pl.col("noparse")).then(pl.lit("no_answer")).otherwise(pl.lit("ok")).alias("parse_status"),
        pl.when(pl.col("trunc")).then(pl.lit("length")).otherwise(pl.lit("stop")).alias("finish_reason"),
        pl.lit(300, dtype=pl.Int32).alias("prompt_tokens"), pl.lit(60, dtype=pl.Int32).alias("completion_tokens"),
        pl.lit(0.0002).alias("cost_usd"), pl.lit(900.0).alias("latency_ms"),
    )  # fmt: skip
    with Workspace.open(db) as ws:
        with ws.new_version("bench", "examples", {"synth": rows}, task="svamp") as ev:
            ws.append("sbs_examples", ev, examples)
        with ws.new_version(
            "bench-gen", "generations", {"synth": rows}, parents=[ws.by_id(ev.version_id)]
        ) as gv:
            ws.append("sbs_generations", gv, gens)


def run(db: str, threads: int) -> dict:
    from sbs_data.quality.filter import filter_version
    from sbs_data.quality.signals import score
    from sbs_data.workspace import Workspace

    with Workspace.open(db) as ws:
        ws.con.execute(f"SET threads = {threads}")
        t0 = time.perf_counter()
        sv = score(ws, "bench-gen@1")
        t1 = time.perf_counter()
        res = filter_version(ws, sv.ref, "strict")
        t2 = time.perf_counter()
        return {
            "rows": sv.row_count,
            "score_s": round(t1 - t0, 2),
            "filter_strict_s": round(t2 - t1, 2),
            "total_s": round(t2 - t0, 2),
            "kept": res.version.row_count,
            "funnel": [(f["step"], f["dropped"]) for f in res.funnel],
            "peak_rss_mb": round(_rss_mb(), 1),
        }


_REFUSAL = re.compile(r"(i'm sorry|i am sorry|i cannot (help|answer)|i can't (help|answer)|as an ai)")
_NUMRE = re.compile(r"(?:^|[^\d])(-?\d+(?:\.\d+)?)")
_TOK = re.compile(r"\w+")


def baseline(db: str, limit: int) -> dict:
    """The same signals, one row at a time in Python (the straightforward way)."""
    from datasketch import MinHash, MinHashLSH

    from sbs_data.tasks import get_task, mathexpr
    from sbs_data.workspace import Workspace

    task = get_task("svamp")
    with Workspace.open(db, read_only=True) as ws:
        rows = ws.all(
            "SELECT g.example_id, g.sample_idx, g.rationale, g.pred_label, g.parse_status, g.finish_reason, g.raw, "
            "e.label, e.input_text FROM sbs_generations g JOIN sbs_examples e USING (example_id) "
            "WHERE g.version_id = 2 AND e.version_id = 1 ORDER BY g.example_id, g.sample_idx LIMIT ?",
            [limit],
        )
    t0 = time.perf_counter()
    out, votes, seen = [], defaultdict(Counter), Counter()
    lsh = MinHashLSH(threshold=0.8, num_perm=32)
    for i, (ex_id, _, rat, pred, status, finish, raw, gold, inp) in enumerate(rows):
        rat = rat or ""
        lr = rat.lower()
        pv = task.label_value(pred) if pred else None
        nums = [float(x) for x in _NUMRE.findall(rat.replace(",", ""))]
        toks = _TOK.findall(lr)
        sents = [s.strip() for s in re.split(r"[.!?]+(?:\s+|$)", lr) if s.strip()]
        grams = [" ".join(toks[j : j + 3]) for j in range(len(toks) - 2)]
        rw = {w for w in toks if len(w) >= 3}
        iw = {w for w in _TOK.findall(inp.lower()) if len(w) >= 3}
        steps = mathexpr.arithmetic_steps(rat)
        first = None
        if pv is not None:
            m = re.search(rf"(?<![\d.]){re.escape(f'{pv:g}')}(?![\d])", rat)
            first = m.start() / len(rat) if m else None
        key = round(pv, 6) if pv is not None else None
        if key is not None:
            votes[ex_id][key] += 1
        norm = " ".join(lr.split())
        seen[norm] += 1
        mh = MinHash(num_perm=32)
        mh.update_batch([g.encode() for g in grams] or [norm.encode()])
        near = bool(lsh.query(mh))
        lsh.insert(str(i), mh)
        out.append(
            {
                "parse_ok": status == "ok",
                "truncated": finish == "length",
                "refusal": bool(_REFUSAL.search((raw or "")[:400].lower())),
                "label_in_space": task.in_label_space(pred),
                "gold_match": task.same_label(pred, gold),
                "conclusion_match": bool(nums) and pv is not None and mathexpr.numbers_equal(nums[-1], pv),
                "answer_first_pos": first,
                "words": len(rat.split()),
                "sentences": len(sents),
                "repeated_sentences": len(sents) - len(set(sents)),
                "ngram_repetition": 1 - len(set(grams)) / len(grams) if grams else 0.0,
                "input_overlap": len(rw & iw) / len(rw) if rw else None,
                "arith_steps": len(steps),
                "arith_correct_frac": sum(ok for *_, ok in steps) / len(steps) if steps else None,
                "final_number_match": bool(nums) and mathexpr.numbers_equal(nums[-1], task.label_value(gold)),
                "exact_dup": seen[norm] > 1,
                "near_dup": near,
                "key": (ex_id, key),
            }
        )
    for r in out:  # self-consistency needs every sample of the example first
        ex_id, key = r.pop("key")
        c = votes[ex_id]
        total = sum(c.values())
        r["vote_share"] = c[key] / total if key is not None and total else 0.0
        r["majority_agree"] = key is not None and c.most_common(1)[0][0] == key
        p = np.array(list(c.values()), dtype=float) / total if total else np.array([1.0])
        r["vote_entropy"] = float(-(p * np.log2(p)).sum())
    dt = time.perf_counter() - t0
    return {
        "rows": len(rows),
        "seconds": round(dt, 2),
        "per_1m_rows_s": round(dt / max(len(rows), 1) * 1_000_000, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--baseline-rows", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--phase", choices=["all", "synth", "run", "baseline"], default="all")
    ap.add_argument("--db")
    args = ap.parse_args()
    if args.phase == "synth":
        synth(args.db, args.rows)
        return
    if args.phase == "run":
        print(json.dumps(run(args.db, args.threads)))
        return
    if args.phase == "baseline":
        print(json.dumps(baseline(args.db, args.baseline_rows)))
        return
    with tempfile.TemporaryDirectory() as d:
        db = os.path.join(d, "bench.duckdb")

        def phase(name: str, *extra: str) -> str:
            cmd = [sys.executable, __file__, "--phase", name, "--db", db, "--rows", str(args.rows),
                   "--baseline-rows", str(args.baseline_rows), "--threads", str(args.threads), *extra]  # fmt: skip
            return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()

        t = time.perf_counter()
        phase("synth")
        print(f"synthesised {args.rows:,} rows in {time.perf_counter() - t:.1f}s", flush=True)
        r = json.loads(phase("run"))
        print(f"score + strict filter: {json.dumps(r)}", flush=True)
        b = json.loads(phase("baseline"))
        print(f"per-row Python baseline: {json.dumps(b)}", flush=True)
        speed = b["per_1m_rows_s"] / (r["score_s"] / r["rows"] * 1_000_000)
        print(
            f"RESULT rows={r['rows']:,} score={r['score_s']}s filter={r['filter_strict_s']}s total={r['total_s']}s "
            f"peak_rss={r['peak_rss_mb']}MB | python loop ~{b['per_1m_rows_s']}s per 1M rows "
            f"(measured on {b['rows']:,}) -> score is {speed:.1f}x faster"
        )


if __name__ == "__main__":
    main()
