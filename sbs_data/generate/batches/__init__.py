"""Batch generation: submit a plan's cache misses as provider batch jobs, then collect them later.

Why batches: half the price, and the way large rationale sets are made. Why this much bookkeeping: a batch
lives for hours while the process that submitted it may exit any number of times. So:

* `submit` renders exactly the requests online mode would (same `plan`, same cache keys, same adapter
  `build_kwargs`), skips what is cached or already pending in an open job, splits the rest within the
  provider's limits, and for each job commits an intent row ('submitting', deterministic job id) BEFORE
  calling the provider, then records the provider's batch id. A crash between create and record is healed
  by `reconcile`: the provider's batch list is searched for the job (OpenAI: metadata sbs_job; Anthropic:
  an unclaimed batch of the same size created after the intent) before anything is sent again.
* `collect` polls, downloads ended jobs into the cache / failures tables (one transaction per job, then the
  job is 'collected': never downloaded again), re-submits failed and expired requests in a follow-up round
  (bounded by max_rounds), and once every request is answered or permanently failed builds the generation
  version with the same `build.build_version` as online mode.

Memory does not grow with the run: nothing keeps a per-run map of requests. A round is staged first (each
request's part and size in a DuckDB temp table, rendered once, in chunks), its jobs recorded in one
transaction, then each job's request lines are rendered again from its recorded (example, sample) rows, one
job at a time; collecting a job renders only that job's rows. Which keys are still unanswered is asked of
the plan (SQL for plans with SQL keys), not of a list held in Python.

The modules, top to bottom: `watch` (status, wait and its display, cancel) -> `collection` (poll, collect,
follow-up rounds, finishing a run) -> `submission` (a run's context, staging, submitting, resuming) -> `store`
(the job store: the only module naming the batch tables; typed `BatchRun`, `Job`, `JobRequest` rows).
"""

from sbs_data.generate.batches.collection import collect
from sbs_data.generate.batches.store import OPEN_STATES, select_runs
from sbs_data.generate.batches.submission import BatchSettings, submit
from sbs_data.generate.batches.watch import cancel, status, wait

__all__ = ["OPEN_STATES", "BatchSettings", "cancel", "collect", "select_runs", "status", "submit", "wait"]
