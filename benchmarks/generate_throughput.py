"""Generation throughput: the engine end to end vs the bare SDK ceiling, against a loopback server.

8,000 distinct CQA-style prompts, a stand-in server (separate process) answering after 100 ms, concurrency
256. Measures, in one run:
  1. the bare openai SDK (aiohttp transport, retries off) through `chat.completions.create`: the ceiling;
     and the same SDK through `client.post`, the documented low-level call the adapter makes
  2. (optional, --httpx N) the bare SDK with its default httpx transport, on N prompts, for reference
  3. `generate()` end to end: planning, cache lookup, calls, parsing, DuckDB cache writes, the final version
  4. the same with 10% injected faults (429 with Retry-After 1 s, 500, 503, dropped connections,
     malformed bodies): every row must complete, in at most 1.5x the fault-free time

    .venv/bin/python benchmarks/generate_throughput.py [--n 8000] [--concurrency 256] [--latency 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sbs_data.generate.engine import fewer_gc_passes  # noqa: E402
from sbs_data.generate.options import PlanSpec, RunOptions  # noqa: E402
from sbs_data.generate.run import Settings, generate, plan  # noqa: E402
from sbs_data.tasks import get_task  # noqa: E402
from sbs_data.teachers.openai import OpenAITeacher  # noqa: E402
from sbs_data.workspace import Workspace  # noqa: E402

WORDS = (
    "river stone lamp garden market violin harbor pencil winter forest bridge candle mirror ladder".split()
)


def start_server(latency: float, *flags: str) -> tuple[subprocess.Popen, str]:
    """The stand-in server as its own process (extra CLI `flags`, e.g. "--rpm", "6000"); returns its URL."""
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests" / "fake_llm_server.py"),
            "--latency",
            str(latency),
            "--no-record",
            *flags,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline().strip()
    if not line.startswith("READY "):
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, line.split()[1]


def control(url: str, path: str, payload: dict | None = None) -> dict:
    req = urllib.request.Request(
        f"{url}/_control/{path}",
        data=json.dumps(payload).encode() if payload is not None else None,
        headers={"content-type": "application/json"},
        method="POST" if payload is not None else "GET",
    )
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())


def make_workspace(path: Path, n: int) -> Workspace:
    ws = Workspace.open(path)
    t = get_task("cqa")
    rows = []
    for i in range(n):
        choices = [f"{WORDS[(i + k) % len(WORDS)]} {k}" for k in range(5)]
        q = f"Where would you most likely find the {WORDS[i % len(WORDS)]} numbered {i}?"
        rows.append(
            {
                "example_id": f"b{i}",
                "split": "train",
                "row_idx": i,
                "task": "cqa",
                "input_text": t.render({"question": q}, choices),
                "label": choices[0],
                "choices": choices,
                "fields": json.dumps({"question": q}),
            }
        )
    with ws.new_version("bench", "examples", {"benchmark": n}, task="cqa") as v:
        ws.append("sbs_examples", v, pl.DataFrame(rows, schema_overrides={"choices": pl.List(pl.Utf8)}))
    return ws


async def bare_sdk(
    url: str, kwargs_list: list[dict], concurrency: int, transport: str, call: str = "create"
) -> float:
    """`call="create"`: the typed `chat.completions.create` (the issue's ceiling); `call="post"`: the SDK's
    low-level `client.post`, the call the adapter makes, to show the engine's own overhead on the same path."""
    import openai

    kw = {"api_key": "sk-bench", "base_url": url + "/v1", "max_retries": 0, "timeout": 60}
    if transport == "aiohttp":
        kw["http_client"] = openai.DefaultAioHttpClient(timeout=60)
    client = openai.AsyncOpenAI(**kw)
    todo = iter(kwargs_list)

    async def worker() -> None:  # a pool of `concurrency` workers: the leanest way to drive the SDK
        for k in todo:
            if call == "create":
                r = await client.chat.completions.create(**k)
                assert r.choices[0].message.content
            else:
                r = await client.post("/chat/completions", cast_to=object, body=k)
                assert r["choices"][0]["message"]["content"]

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    el = time.perf_counter() - t0
    await client.close()
    return el


def _engine(ws: Workspace, url: str, settings: Settings, n: int) -> tuple[float, dict]:
    t0 = time.perf_counter()
    res = generate(
        ws, "bench", PlanSpec("openai:gpt-4o-mini", base_urls=[url + "/v1"]), RunOptions(settings=settings)
    )
    el = time.perf_counter() - t0
    assert res.summary["ok"] == n and res.summary["rows"] == n, res.summary  # every row complete
    return el, {**res.summary, "timings": res.timings}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8000)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--fault-rate", type=float, default=0.1)
    ap.add_argument("--httpx", type=int, default=0, help="also time the httpx transport on this many prompts")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of ceiling / engine / engine+faults")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()

    proc, url = start_server(args.latency)
    tmp = Path(tempfile.mkdtemp(prefix="sbs-bench-"))
    os.environ["OPENAI_API_KEY"] = "sk-bench-key"
    results: dict = {
        "n": args.n,
        "concurrency": args.concurrency,
        "latency_s": args.latency,
        "cpus": os.cpu_count(),
    }
    faults = {"rate": args.fault_rate, "kinds": ["429:1", "500", "503", "drop", "malformed"]}
    settings = Settings(concurrency=args.concurrency, progress=False)
    rounds = []
    try:
        # The machine is shared and its load drifts: each round measures the ceiling, the engine and the
        # engine under faults back to back (fresh workspaces, so every request is a cache miss), and the
        # ratios are taken within a round.
        for r in range(args.rounds):
            ws = make_workspace(tmp / f"a{r}.duckdb", args.n)
            teacher = OpenAITeacher("gpt-4o-mini", base_url=url + "/v1")
            kwargs_list = [teacher.build_kwargs(it.req) for it in plan(ws, "bench", teacher).misses(ws)]
            control(url, "faults", {})
            # rotated order (round r starts at the r-th), and the bare loops under the engine's own GC setting
            # (`fewer_gc_passes`), so neither side gets a warmer box or a cheaper collector
            timed: dict[str, float] = {}
            for what in (["bare", "post", "engine"] * 2)[r % 3 : r % 3 + 3]:
                if what == "engine":
                    timed["engine"], s_clean = _engine(ws, url, settings, args.n)
                    continue
                with fewer_gc_passes():
                    timed[what] = asyncio.run(
                        bare_sdk(
                            url,
                            kwargs_list,
                            args.concurrency,
                            "aiohttp",
                            *(["post"] if what == "post" else []),
                        )
                    )
            el_bare, el_post, el = timed["bare"], timed["post"], timed["engine"]
            ws.close()
            ws = make_workspace(tmp / f"b{r}.duckdb", args.n)
            control(url, "faults", faults)
            before = control(url, "stats")
            el_f, s_f = _engine(ws, url, settings, args.n)
            after = control(url, "stats")
            ws.close()
            injected = {
                k: after["outcomes"].get(k, 0) - before["outcomes"].get(k, 0)
                for k in after["outcomes"]
                if k != "ok"
            }
            row = {
                "bare_rows_s": round(args.n / el_bare, 1),
                "bare_post_rows_s": round(args.n / el_post, 1),
                "engine_vs_bare_post": round(el_post / el, 3),
                "engine_rows_s": round(args.n / el, 1),
                "engine_vs_ceiling": round(el_bare / el, 3),
                "engine_timings": s_clean["timings"],
                "faults_rows_s": round(args.n / el_f, 1),
                "faults_vs_clean": round(el_f / el, 3),
                "faults_retries": s_f["retries"],
                "faults_injected": injected,
            }
            rounds.append(row)
            print(
                f"[{r}] bare SDK {row['bare_rows_s']:6.1f} rows/s (client.post {row['bare_post_rows_s']:6.1f}) | "
                f"engine {row['engine_rows_s']:6.1f} rows/s = {row['engine_vs_ceiling']:.0%} of the ceiling, "
                f"{row['engine_vs_bare_post']:.0%} of client.post | {args.fault_rate:.0%} faults: "
                f"{row['faults_rows_s']:6.1f} rows/s, all rows ok, {row['faults_vs_clean']:.2f}x the clean time "
                f"({row['faults_retries']} retries) | timings {row['engine_timings']}",
                flush=True,
            )
        if args.httpx:
            el = asyncio.run(bare_sdk(url, kwargs_list[: args.httpx], args.concurrency, "httpx"))
            results["bare_sdk_httpx_rows_s"] = round(args.httpx / el, 1)
            print(
                f"bare SDK (httpx transport): {args.httpx / el:6.1f} rows/s ({args.httpx} prompts)",
                flush=True,
            )
    finally:
        proc.terminate()
        proc.wait()

    def median(key: str) -> float:
        xs = sorted(x[key] for x in rounds)
        return xs[len(xs) // 2]

    results["rounds"] = rounds
    for k in (
        "bare_rows_s",
        "bare_post_rows_s",
        "engine_rows_s",
        "engine_vs_ceiling",
        "engine_vs_bare_post",
        "faults_rows_s",
        "faults_vs_clean",
    ):
        results[f"median_{k}"] = median(k)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
