"""Benchmark: score + the strict recipe on 1M synthetic SVAMP-like generation rows (K=3 samples/example).

    .venv/bin/python benchmarks/score_filter.py [--rows 1000000] [--baseline-rows 100000] [--threads 2]

Phases, each in its own process so peak memory (ru_maxrss) is that phase's own:
  1. synth    build examples + generations in a fresh workspace (numpy/polars, not timed as scoring)
  2. run      `score` (all signals incl. MinHash-LSH near-dups) + `filter --recipe strict`; time + peak RSS
  3. baseline the same signals by a straightforward per-row Python loop (task methods, mathexpr,
              compiled regexes, sets/dicts, datasketch MinHash/LSH) over the first --baseline-rows rows,
              extrapolated per row.
Peak memory is ru_maxrss of the score+filter process (resource.getrusage). Load averages are recorded
because the dev box is shared.
Synthetic rows: templated arithmetic rationales of ~25-45 words with a random filler clause, 25% wrong
answers, 5% wrong arithmetic, 2% leaked answers, 2% unparsable, 1% truncated, 3% copied rationales and
2% near-copies (one word changed).
"""

from __future__ import annotations

import argparse
import json
import math
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


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run(db: str, threads: int) -> dict:
    from sbs_data.quality.filter import filter_version
    from sbs_data.quality.signals import score
    from sbs_data.workspace import Workspace

    with Workspace.open(db) as ws:
        ws.con.execute(f"SET threads = {threads}")
        load = os.getloadavg()[0]
        c0, t0 = _cpu_s(), time.perf_counter()
        sv = score(ws, "bench-gen@1")
        t1 = time.perf_counter()
        res = filter_version(ws, sv.ref, "strict")
        t2 = time.perf_counter()
        return {
            "rows": sv.row_count,
            "score_s": round(t1 - t0, 2),
            "filter_strict_s": round(t2 - t1, 2),
            "total_s": round(t2 - t0, 2),
            "cpu_s": round(_cpu_s() - c0, 1),
            "kept": res.version.row_count,
            "funnel": [(f["step"], f["dropped"]) for f in res.funnel],
            "peak_rss_mb": round(_rss_mb(), 1),
            "load_1m_before": round(load, 2),
            "load_1m_after": round(os.getloadavg()[0], 2),
        }


_NUMRE = re.compile(r"(?:^|[^\d])(-?\d+(?:\.\d+)?)")
_EXPRE = re.compile(r"(?:\(?\s*-?\d+(?:\.\d+)?\s*\)?\s*[-+*/x×÷]\s*)+\(?\s*-?\d+(?:\.\d+)?\s*\)?")
_WORD = re.compile(r"[^\W_]+")  # runs of letters/digits
_STARTS = re.compile(r"^\W*(so |therefore |thus )?(the )?(final )?answer\s*(is|:)")
_LEAD_NUM = re.compile(r"^\W*-?\d")
_PAD = str.maketrans("()=$", "    ")
_SENT = str.maketrans("!?\n\t", "..  ")


def baseline(db: str, limit: int) -> dict:
    """The same signals, one row at a time in plain Python: the straightforward way, written with care.

    Compiled regexes, each label evaluated once per row (task.label_value: the safe AST evaluator), sets
    and dicts for duplicates and votes, datasketch MinHash (permutations drawn once, not per row) and
    MinHashLSH for near-duplicates. Not timed: reading the rows.
    """
    from datasketch import MinHash, MinHashLSH

    from sbs_data.quality.signals import _REFUSAL, _STOP
    from sbs_data.tasks import get_task, mathexpr
    from sbs_data.workspace import Workspace

    task = get_task("svamp")
    refusal_re = re.compile(_REFUSAL)
    stop = set(_STOP)
    close = mathexpr.numbers_equal
    with Workspace.open(db, read_only=True) as ws:
        rows = ws.all(
            "SELECT g.example_id, g.sample_idx, g.rationale, g.pred_label, g.parse_status, g.finish_reason, "
            "left(g.raw, 400), e.label, e.input_text FROM sbs_generations g JOIN sbs_examples e USING (example_id) "
            "WHERE g.version_id = 2 AND e.version_id = 1 ORDER BY g.example_id, g.sample_idx LIMIT ?",
            [limit],
        )
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    out, votes, seen, inputs = [], defaultdict(Counter), {}, {}
    proto = MinHash(num_perm=32)
    perms, scheme = proto.permutations, proto.scheme
    lsh = MinHashLSH(threshold=0.8, num_perm=32)
    for i, (ex_id, _, rat, pred, status, finish, raw_head, gold, inp) in enumerate(rows):
        rat = rat or ""
        lr = rat.lower()
        rc = rat.replace(",", "")
        pv = task.label_value(pred) if pred is not None else None
        gv = task.label_value(gold) if gold is not None else None
        nums = _NUMRE.findall(rc)
        first_num = float(nums[0]) if nums else None
        last_num = float(nums[-1]) if nums else None
        exprs = _EXPRE.findall(rc)
        last_expr = mathexpr.try_evaluate(exprs[-1].replace("x", "*")) if exprs else None
        steps = mathexpr.arithmetic_steps(rat)
        toks = _WORD.findall(lr)
        sents = lr.translate(_SENT).rstrip(". ").split(". ") if lr.strip(" ") else []
        grams = [(toks[j], toks[j + 1], toks[j + 2]) for j in range(len(toks) - 2)] or (
            [tuple(toks)] if toks else []
        )
        if ex_id not in inputs:
            inputs[ex_id] = set(_WORD.findall((inp or "").lower()))
        content = set(toks) - stop
        first = None
        if pv is not None and rc:
            vt = f"{pv:.0f}" if pv == int(pv) and abs(pv) < 1e15 else f"{round(pv, 6)}"
            v = vt.lstrip("-")
            pad = " " + rc.translate(_PAD) + " "
            hits = [h for h in (pad.find(f" {v} "), pad.find(f" {v}.")) if h >= 0]
            first = min(hits) / len(rc) if hits else None
        norm = " ".join(toks)
        key = round(pv, 6) if pv is not None else None
        if key is not None:
            votes[ex_id][key] += 1
        if norm:
            seen.setdefault(norm, []).append(i)
        near = False
        if grams:
            mh = MinHash(num_perm=32, permutations=perms, scheme=scheme)
            mh.update_batch([" ".join(g).encode() for g in grams])
            near = bool(lsh.query(mh))
            lsh.insert(i, mh)
        out.append(
            {
                "parse_ok": status == "ok",
                "truncated": None if finish is None else finish in ("length", "max_tokens"),
                "refusal": bool(refusal_re.search((raw_head or rat).lower())),
                "label_in_space": pv is not None,
                "gold_match": None if gold is None else close(pv, gv),
                "conclusion_match": None
                if pv is None or (last_num is None and last_expr is None)
                else close(last_num, pv) or close(last_expr, pv),
                "answer_first_pos": first,
                "starts_with_answer": bool(_STARTS.match(lr))
                or (bool(_LEAD_NUM.match(rc)) and pv is not None and close(first_num, pv)),
                "words": len(toks),
                "sentences": len(sents),
                "repeated_sentences": len(sents) - len(set(sents)),
                "ngram_repetition": 1 - len(set(grams)) / len(grams) if grams else 0.0,
                "input_overlap": len(content & inputs[ex_id]) / len(content) if content else None,
                "arith_steps": len(steps),
                "arith_correct_frac": sum(ok for *_, ok in steps) / len(steps) if steps else None,
                "final_number_match": None if gv is None or last_num is None else close(last_num, gv),
                "exact_dup": False,
                "near_dup": near,
                "key": (ex_id, key, norm),
            }
        )
    for r in out:  # self-consistency and exact duplicates need every row first
        ex_id, key, norm = r.pop("key")
        c = votes[ex_id]
        total = sum(c.values())
        r["vote_share"] = c[key] / total if key is not None and total else 0.0
        r["majority_agree"] = key is not None and c.most_common(1)[0][0] == key
        r["vote_entropy"] = -sum(n / total * math.log2(n / total) for n in c.values()) if total else 0.0
        r["exact_dup_count"] = len(seen[norm]) if norm else None
    for group in seen.values():
        for j in group[1:]:
            out[j]["exact_dup"] = True
    dt = time.perf_counter() - t0
    return {
        "rows": len(rows),
        "seconds": round(dt, 2),
        "per_1m_rows_s": round(dt / max(len(rows), 1) * 1_000_000, 1),
        "load_1m_before": round(load, 2),
        "load_1m_after": round(os.getloadavg()[0], 2),
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
        per_1m = 1_000_000 / r["rows"]
        speed = b["per_1m_rows_s"] / (r["score_s"] * per_1m)
        speed_total = b["per_1m_rows_s"] / (r["total_s"] * per_1m)
        print(
            f"RESULT rows={r['rows']:,} score={r['score_s']}s filter={r['filter_strict_s']}s total={r['total_s']}s "
            f"(cpu {r['cpu_s']}s) peak_rss={r['peak_rss_mb']}MB (ru_maxrss of the score+filter process) "
            f"load={r['load_1m_before']}->{r['load_1m_after']} | python loop ~{b['per_1m_rows_s']}s per 1M rows "
            f"(measured on {b['rows']:,}, load={b['load_1m_before']}->{b['load_1m_after']}) -> score is "
            f"{speed:.1f}x faster, score+filter {speed_total:.1f}x"
        )


if __name__ == "__main__":
    main()
