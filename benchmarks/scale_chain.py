"""The whole chain at scale: time and peak memory of every step, each in its own process.

For each size (default 10k, 100k and 1M requests): a CQA-style JSONL file is written, then
  ingest -> generate (against the loopback stand-in server) -> generate again (all cached)
  -> score -> filter --recipe default -> export
run one after the other on one fresh workspace, each as the public `sbs-data` CLI in a fresh subprocess, so
that a step's peak RSS is its own (`os.wait4` returns the rusage of exactly that child). Prints a markdown
table; `--json FILE` also writes the figures.

    .venv/bin/python benchmarks/scale_chain.py [--sizes 10000,100000,1000000] [--concurrency 256]
        [--latency-ms 20] [--json out.json] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from generate_throughput import start_server  # noqa: E402  (the same stand-in launcher)

WORDS = (
    "river stone lamp garden market violin harbor pencil winter forest bridge candle mirror ladder".split()
)
TEACHER = "openai:gpt-4o-mini"


def write_input(path: Path, n: int) -> None:
    """n distinct CQA questions (5 choices, a gold answer), one JSON object per line."""
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            choices = [f"{WORDS[(i + k) % len(WORDS)]} {k}" for k in range(5)]
            q = f"Where would you most likely find the {WORDS[i % len(WORDS)]} numbered {i}?"
            f.write(
                json.dumps({"id": f"q{i:07d}", "question": q, "choices": choices, "answer": choices[i % 5]})
            )
            f.write("\n")


def run_step(name: str, args: list[str], env: dict[str, str], log: Path) -> dict:
    """One CLI call in a fresh process: wall seconds, peak RSS (MB) of that process alone, exit status."""
    cmd = [sys.executable, "-m", "sbs_data.cli", *args]
    t0 = time.perf_counter()
    with log.open("ab") as out:
        out.write(f"\n$ sbs-data {' '.join(args)}\n".encode())
        out.flush()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    # ru_maxrss is KiB on Linux, bytes on macOS
    rss_mb = usage.ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
    return {"step": name, "seconds": round(seconds, 2), "peak_rss_mb": round(rss_mb), "rc": proc.returncode}


def server_calls(url: str) -> int:
    """Requests the stand-in has answered so far (its own counter)."""
    with urllib.request.urlopen(f"{url}/_control/stats", timeout=30) as r:
        return int(json.load(r)["count"])


def chain(n: int, work: Path, url: str, concurrency: int, log: Path) -> list[dict]:
    db, data, out = work / f"w{n}.duckdb", work / f"cqa{n}.jsonl", work / f"export{n}"
    write_input(data, n)
    env = {**os.environ, "OPENAI_API_KEY": "sk-benchmark-dummy", "PYTHONPATH": str(ROOT)}
    env.pop("OPENAI_BASE_URL", None)
    gen = [
        "generate",
        "ex",
        "--teacher",
        TEACHER,
        "--base-url",
        f"{url}/v1",
        "--concurrency",
        str(concurrency),
    ]
    gen += ["--no-progress", "--name", "gen"]
    steps = [
        ("ingest", ["ingest", str(data), "--task", "cqa", "--split", "train", "--name", "ex"]),
        ("generate", gen),
        ("generate (cached)", gen),
        ("score", ["score", "gen"]),
        ("filter", ["filter", "gen", "--recipe", "default"]),
        ("export", ["export", "gen", "--out", str(out)]),
    ]
    results = []
    for name, args in steps:
        before = server_calls(url)
        r = run_step(name, [*args, "--db", str(db)], env, log)
        r.update(size=n, rows_per_s=round(n / r["seconds"]) if r["seconds"] else None)
        r["calls"] = server_calls(url) - before
        if name == "generate (cached)" and r["calls"] and r["rc"] == 0:
            r["rc"] = f"{r['calls']} calls"  # a cached re-run must make none: this is a failure
        results.append(r)
        print(
            f"  {n:>9,} {name:<18} {r['seconds']:>8.1f} s {r['peak_rss_mb']:>6} MB  calls={r['calls']}  rc={r['rc']}",
            flush=True,
        )
        if r["rc"] != 0:
            print(f"  {name} failed; see {log}", flush=True)
            break
    return results


def table(results: list[dict]) -> str:
    lines = [
        "| requests | step | seconds | peak RSS (MB) | rows/s | calls |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        ok = "" if r["rc"] == 0 else f" (failed, rc {r['rc']})"
        lines.append(
            f"| {r['size']:,} | {r['step']}{ok} | {r['seconds']:.1f} | {r['peak_rss_mb']:,} | "
            f"{r['rows_per_s'] or ''} | {r.get('calls', '')} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated request counts")
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--latency-ms", type=float, default=20.0, help="stand-in server latency per answer")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--workdir", type=Path, help="where workspaces and exports go (default: a temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep the workdir afterwards")
    args = ap.parse_args()
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="sbs-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "steps.log"
    server, url = start_server(args.latency_ms / 1000, "--lenient")
    results: list[dict] = []
    try:
        for n in sizes:
            results += chain(n, work, url, args.concurrency, log)
    finally:
        server.terminate()
        server.wait(timeout=10)
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(table(results))
    if args.json:
        meta = {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "concurrency": args.concurrency,
            "latency_ms": args.latency_ms,
        }
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
