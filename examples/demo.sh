#!/usr/bin/env bash
# The end-to-end demo on the project's own small data, fully offline. Run it with `make demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=demo-out
rm -rf "$OUT" && mkdir -p "$OUT"
export SBS_DB="$OUT/demo.duckdb"
step() { printf '\n\033[1m== %s\033[0m\n$ %s\n' "$1" "${*:2}"; "${@:2}"; }

step "Create the workspace" sbs-data init
step "Ingest a CSV (CQA-style, renamed columns)" \
  sbs-data ingest examples/demo/mini_cqa.csv --task cqa --split train --name mini-cqa --map options=choices --id-field qid
step "Import a dataset in the paper's released layout (gold + raw teacher completions)" \
  sbs-data import-original examples/demo/demo-svamp --task svamp
step "...and an NLI one" sbs-data import-original examples/demo/demo-nli --task anli
step "Every version, with lineage hashes" sbs-data versions
step "Lineage of the teacher completions" sbs-data log demo-svamp-palm
step "Parse status of teacher completions per split" \
  sbs-data sql "SELECT dataset, split, parse_status, count(*) AS n FROM generations GROUP BY ALL ORDER BY ALL"
step "How often the NLI teacher's label matches gold (plain SQL over the views)" \
  sbs-data sql "SELECT split, count(*) AS n, round(avg(coalesce(pred_label = gold_label, false)::INT), 3) AS agrees_with_gold
                FROM generations WHERE dataset = 'demo-nli-palm' GROUP BY ALL ORDER BY ALL"
step "Time travel: an old version stays queryable" \
  sbs-data sql "SELECT split, count(*) AS n FROM examples_at('demo-svamp@1') GROUP BY ALL ORDER BY ALL"
# -- generate / score / filter / export / train steps are appended below as they land --

printf '\nDemo workspace: %s  (try: sbs-data tables --db %s)\n' "$SBS_DB" "$SBS_DB"
