"""Real provider rules: advertised rate limits, and spend against the bill with cached prompt prefixes.

Two measurements against the loopback stand-in (`tests/fake_llm_server.py`, a separate process, which
enforces limits per second and bills cached tokens the way OpenAI and Anthropic document):

  1. limits: N prompts (default 3,000) with default `generate` flags against an account limited to RPM
     requests a minute (default 6,000, enforced as RPM/60 per second, advertised in `x-ratelimit-*`
     headers) answering in 100 ms. Targets: no row lost, at most 3% of requests answered 429, wall time at
     most 1.25x the limit's floor (N / RPM minutes).
  2. bill: M prompts (default 400) sharing a long few-shot prefix, for openai:gpt-4o-mini (automatic prefix
     caching) and anthropic:claude-sonnet-4-5 (cache_control, on by default). Target: the spend sbs-data
     reports equals the bill computed from the server's own token counts within 2%.

    .venv/bin/python benchmarks/provider_limits.py [--n 3000] [--rpm 6000] [--latency 0.1] [--bill-n 400]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from generate_throughput import control, make_workspace, start_server  # noqa: E402

from sbs_data.generate.options import PlanSpec, RunOptions  # noqa: E402
from sbs_data.generate.run import Settings, generate  # noqa: E402
from sbs_data.teachers.models import facts_for  # noqa: E402


def long_prompt(path: Path) -> str:
    filler = " ".join(f"note{i}" for i in range(600))
    exemplars = [
        {
            "input": f"Q: Where is item {i} kept? {filler}",
            "rationale": "It is kept where it is used.",
            "answer": "x",
        }
        for i in range(4)
    ]
    path.write_text(yaml.safe_dump({"template": "Q: {input}\nA:", "exemplars": exemplars}))
    return str(path)


def limits(args: argparse.Namespace, tmp: Path) -> dict:
    proc, url = start_server(args.latency, "--rpm", str(args.rpm))
    try:
        ws = make_workspace(tmp / "limits.duckdb", args.n)
        t0 = time.perf_counter()
        res = generate(
            ws,
            "bench",
            PlanSpec("openai:gpt-4o-mini", base_urls=[url + "/v1"]),
            RunOptions(settings=Settings()),
        )
        wall = time.perf_counter() - t0
        st = control(url, "stats")
        ws.close()
    finally:
        proc.kill()
    b = st["bill"][0]
    floor = args.n / args.rpm * 60
    total = b["requests"] + b["rate_limited"]
    out = {
        "prompts": args.n,
        "rpm": args.rpm,
        "ok": res.summary["ok"],
        "lost": args.n - res.summary["ok"],
        "requests": total,
        "answered_429": b["rate_limited"],
        "share_429": round(b["rate_limited"] / total, 4),
        "wall_s": round(wall, 2),
        "floor_s": round(floor, 2),
        "wall_over_floor": round(wall / floor, 3),
    }
    out["met"] = out["lost"] == 0 and out["share_429"] <= 0.03 and out["wall_over_floor"] <= 1.25
    return out


def bill(args: argparse.Namespace, tmp: Path) -> list[dict]:
    proc, url = start_server(0.02)
    rows = []
    try:
        prompt = long_prompt(tmp / "long.yaml")
        for spec, base in (
            ("openai:gpt-4o-mini", url + "/v1"),
            ("anthropic:claude-sonnet-4-5", url),
        ):
            control(url, "reset", {})
            ws = make_workspace(tmp / f"bill-{spec.split(':')[0]}.duckdb", args.bill_n)
            res = generate(
                ws,
                "bench",
                PlanSpec(spec, base_urls=[base], prompt_path=prompt),
                RunOptions(settings=Settings()),
            )
            ws.close()
            b = control(url, "stats")["bill"][0]
            f = facts_for(*spec.split(":", 1))
            billed = f.cost(
                b["input_tokens"], b["output_tokens"], b["cached_input_tokens"], b["cache_write_tokens"]
            )
            uncached = f.cost(b["input_tokens"], b["output_tokens"])
            spent = res.summary["spent_usd"]
            rows.append(
                {
                    "teacher": spec,
                    "prompts": args.bill_n,
                    "input_tokens": b["input_tokens"],
                    "cached_input_tokens": b["cached_input_tokens"],
                    "cache_write_tokens": b["cache_write_tokens"],
                    "output_tokens": b["output_tokens"],
                    "spent_usd": round(spent, 6),
                    "bill_usd": round(billed, 6),
                    "if_uncached_usd": round(uncached, 6),
                    "spend_over_bill": round(spent / billed, 4),
                    "met": abs(spent / billed - 1) <= 0.02,
                }
            )
    finally:
        proc.kill()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--rpm", type=int, default=6000)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--bill-n", type=int, default=400)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    os.environ.setdefault("OPENAI_API_KEY", "sk-bench-key")
    os.environ.setdefault("ANTHROPIC_API_KEY", "sk-ant-bench-key")
    tmp = Path(tempfile.mkdtemp(prefix="sbs-limits-"))
    out = {"limits": limits(args, tmp), "bill": bill(args, tmp)}
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
