"""Quality scoring and filtering: rationale-aware signals, YAML recipes, funnel reports.

- `signals.score(ws, ref)` stores one row of signals per generation row (`sbs_scores`);
- `filter.filter_version(ws, ref, recipe)` applies a recipe and stores keep/drop + reason per row
  (`sbs_selections`), never text copies;
- `report.report(ws, ref)` summarises both (funnel, signal distributions, per-teacher quality and cost).
"""
