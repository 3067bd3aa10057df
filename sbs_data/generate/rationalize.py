"""`rationalize`: ask the teacher again, with the gold answer as a hint, for the rows of a generations version
it got wrong or failed to answer (STaR's rationalization), then build the version a user trains on.

The plan is `hints.HintPlan`; everything else is generate's (`run.run_plan`): cache, limits, retries, cost,
--max-usd, --dry-run, --offline and --mode batch. Two versions come out: `OUT` (default `GEN-hinted`) holds
the hinted answers, one per chosen row, `hinted = true`, parent GEN; `COMBINED` (default
`GEN-rationalized`, parents GEN and OUT) holds every row of GEN, a chosen row replaced by its hinted answer
when that agrees with gold and does not mention the hint. Its config says how many rows were recovered.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sbs_data.generate.build import GenerateResult
from sbs_data.generate.hints import default_names, hint_plan
from sbs_data.generate.run import Settings, plan_args, resolve_teacher, run_plan
from sbs_data.teachers.base import Teacher
from sbs_data.workspace import Workspace, check_name


def rationalize(
    ws: Workspace,
    ref: str,
    teacher: str | Teacher,
    *,
    rows: str = "wrong+failed",
    splits: list[str] | tuple[str, ...] | None = None,
    allow_eval: bool = False,
    name: str | None = None,
    combine: bool = True,
    combined_name: str | None = None,
    prompt_path: str | Path | None = None,
    json_mode: bool = False,
    params: dict[str, Any] | None = None,
    base_urls: list[str] | tuple[str, ...] = (),
    settings: Settings | None = None,
    dry_run: bool = False,
    offline: bool = False,
    max_usd: float | None = None,
    prices_path: str | Path | None = None,
    prompt_cache: bool = True,
    warn: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
    command: str = "rationalize",
    mode: str = "online",
    batch_settings: Any = None,
) -> GenerateResult:
    """Hinted answers for GEN's wrong/failed rows of `splits` (train by default; validation and test only with
    `allow_eval`), and with `combine` the combined version. Returns the hinted version and a summary (with
    `combined`, `recovered`, ...); batch mode returns after submitting, and collecting builds both."""
    s = (settings or Settings()).check()
    teacher, batch = resolve_teacher(
        ws, teacher, s, mode, base_urls=base_urls, prompt_cache=prompt_cache, prices_path=prices_path
    )
    gen = ws.get(ref)
    hinted_default, combined_default = default_names(gen)
    out_name = check_name(name or hinted_default)
    combined = check_name(combined_name or combined_default) if combine else None
    p = hint_plan(
        ws,
        gen.ref,
        teacher,
        rows=rows,
        splits=splits,
        allow_eval=allow_eval,
        prompt_path=prompt_path,
        json_mode=json_mode,
        params=params,
        combine=combined,
    )
    res = run_plan(
        ws,
        p,
        teacher,
        out_name,
        settings=s,
        dry_run=dry_run,
        offline=offline,
        max_usd=max_usd,
        warn=warn,
        command=command,
        batch=batch,
        batch_settings=batch_settings,
        batch_args={
            "rationalize": {
                "rows": rows,
                "splits": list(p.splits),
                "allow_eval": allow_eval,
                "combine": combined,
            },
            **plan_args(p, prompt_path, json_mode, prices_path, prompt_cache),
        },
        explain="sbs-data rationalize ... --dry-run (hinted prompts are not explained by `cache explain`)",
    )
    res.summary = {"select": p.select, "splits": ",".join(p.splits), **res.summary}
    if res.dry_run:
        res.summary["hint_sha"] = p.prompt.hint_sha
    return res
