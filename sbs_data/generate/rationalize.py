"""`rationalize`: ask the teacher again, with the gold answer as a hint, for the rows of a generations version
it got wrong or failed to answer (STaR's rationalization), then build the version a user trains on.

The plan is `hints.HintPlan`; everything else is generate's (`run.run_plan`): cache, limits, retries, cost,
--max-usd, --dry-run, --offline and --mode batch. Two versions come out: `OUT` (default `GEN-hinted`) holds
the hinted answers, one per chosen row, `hinted = true`, parent GEN; `COMBINED` (default
`GEN-rationalized`, parents GEN and OUT) holds every row of GEN, a chosen row replaced by its hinted answer
when that agrees with gold and does not mention the hint. Its config says how many rows were recovered.
"""

from __future__ import annotations

from sbs_data import SbsError, log
from sbs_data.generate.build import GenerateResult
from sbs_data.generate.hints import default_names, hint_plan
from sbs_data.generate.options import RationalizeSelect, RequestSpec, RunOptions
from sbs_data.generate.prompts import generic_warning, is_generic
from sbs_data.generate.run import plan_args, resolve_teacher, run_plan
from sbs_data.workspace import Workspace, check_name


def rationalize(
    ws: Workspace,
    ref: str,
    spec: RequestSpec,
    run: RunOptions | None = None,
    select: RationalizeSelect | None = None,
) -> GenerateResult:
    """Hinted answers for GEN's wrong/failed rows of `select.splits` (train by default; validation and test
    only with `select.allow_eval`), and with `select.combine` the combined version. Returns the hinted
    version and a summary (with `combined`, `recovered`, ...); batch mode returns after submitting, and
    collecting builds both."""
    run = run or RunOptions(command="rationalize")
    select = select or RationalizeSelect()
    run.settings.check()
    teacher, _ = resolve_teacher(ws, spec, run)
    gen = ws.get(ref)
    hinted_default, combined_default = default_names(gen)
    out_name = check_name(select.name or hinted_default)
    combined = check_name(select.combined_name or combined_default) if select.combine else None
    ws.check_target(out_name, "generations", gen.task, source=gen)
    if combined is not None:
        ws.check_target(combined, "generations", gen.task, source=gen, flag="--combined-name")
    if combined == out_name:
        raise SbsError(f"--name and --combined-name are both {out_name!r}: the two versions need two names")
    p = hint_plan(
        ws,
        gen.ref,
        teacher,
        rows=select.rows,
        splits=select.splits,
        allow_eval=select.allow_eval,
        combine=combined,
        **spec.prompt_args(),
    )
    if is_generic(p.prompt):
        log.warning(generic_warning(p.task, p.examples.dataset))
    res = run_plan(
        ws,
        p,
        teacher,
        out_name,
        run,
        batch_args={
            "rationalize": {
                "rows": select.rows,
                "splits": list(p.splits),
                "allow_eval": select.allow_eval,
                "combine": combined,
            },
            **plan_args(p, spec, run),
        },
        explain="sbs-data rationalize ... --dry-run (hinted prompts are not explained by `cache explain`)",
    )
    res.summary = {"select": p.select, "splits": ",".join(p.splits), **res.summary}
    if res.dry_run:
        res.summary["hint_sha"] = p.prompt.hint_sha
    return res
