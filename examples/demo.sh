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
step "Generate with the replay teacher (offline: the recorded completions, through the engine and its cache)" \
  sbs-data generate demo-svamp --teacher replay:demo-svamp-palm@1 --offline --name demo-svamp-replay
step "What a real teacher would cost: renders the prompts, calls nothing" \
  sbs-data generate demo-svamp --teacher openai:gpt-4o-mini --dry-run --limit 3
# Rationalization asks a teacher again, with the gold answer as a hint, for the rows it got wrong. Offline
# there is no teacher that can follow a hint (replay: only has the recorded, unhinted completions), so the
# demo shows the dry run: how many train rows would be asked again, the hinted prompt, the cost. With a key:
#   sbs-data rationalize demo-svamp-replay --teacher openai:gpt-4o-mini  -> demo-svamp-replay-rationalized
step "Rationalize: which wrong/failed train rows would be asked again with the gold answer as a hint" \
  sbs-data rationalize demo-svamp-replay --teacher openai:gpt-4o-mini --dry-run
step "Look at a few rows, readably (any version; --where takes SQL, --format json for scripts)" \
  sbs-data show demo-svamp-replay --limit 2 --where "split = 'train'"
step "The request cache" sbs-data cache stats
step "Score the teacher's rationales (rationale-aware quality signals)" sbs-data score demo-svamp-replay
step "Filter with the strict recipe (keeps keep/drop + the first rule that dropped each row)" \
  sbs-data filter demo-svamp-replay --recipe strict
step "Report: funnel, signal distributions, per-teacher quality and cost (+ an offline HTML report)" \
  sbs-data report demo-svamp-replay --html "$OUT/report.html"
step "Export parquet shards + manifest + Hugging Face dataset card" \
  sbs-data export demo-svamp-replay --out "$OUT/export"
step "Read the export back with Hugging Face datasets" \
  python -c "import datasets; print(datasets.load_dataset('$OUT/export'))"
step "Train a tiny student the step-by-step way (predict: + explain:)" \
  sbs-train --data "$OUT/export" --model tiny-t5 --mode sbs --output "$OUT/student" \
  --max-steps 30 --batch-size 8 --lr 1e-3 --max-target-len 64
step "Student metrics (a random-weight tiny T5 after 30 steps: accuracy near 0 is expected)" \
  python -c "import json; from sbs_trainer.metrics import sig4; m = json.load(open('$OUT/student/metrics.json')); print(json.dumps(sig4({k: m[k] for k in ('mode', 'train', 'validation', 'test')}), indent=2))"
step "Write a tiny decoder-only student offline (Qwen2-style: chat template, no pad token)" \
  python -m sbs_trainer.tiny "$OUT/tiny-qwen2" --arch qwen2
step "Train it the step-by-step way, with LoRA adapters (prompts in its chat template)" \
  sbs-train --data "$OUT/export" --model "$OUT/tiny-qwen2" --mode sbs --output "$OUT/causal-student" \
  --max-steps 30 --batch-size 8 --lr 1e-2 --max-target-len 64 --lora-r 8
step "Causal student: metrics, and final/ (merged, loads without peft) answering with plain transformers" \
  python -c "
import json, torch, transformers
from transformers import AutoModelForCausalLM, AutoTokenizer
transformers.utils.logging.disable_progress_bar()
m = json.load(open('$OUT/causal-student/metrics.json'))
from sbs_trainer.metrics import sig4
print(json.dumps(sig4({k: m[k] for k in ('student', 'validation', 'test')}), indent=2))
tok = AutoTokenizer.from_pretrained('$OUT/causal-student/final')
model = AutoModelForCausalLM.from_pretrained('$OUT/causal-student/final')
prompt = tok.apply_chat_template([{'role': 'user', 'content': 'predict: Tom has 3 apples and gets 2 more.'}],
                                 tokenize=False, add_generation_prompt=True)
ids = tok(prompt, add_special_tokens=False, return_tensors='pt')
out = model.generate(**ids, max_new_tokens=16, do_sample=False)
print('student says:', repr(tok.decode(out[0, ids.input_ids.shape[1]:], skip_special_tokens=True)))
"

printf '\n\033[1mDemo finished: every step succeeded.\033[0m Workspace %s, report %s, export %s, students %s and %s.\n(try: sbs-data tables --db %s)\n' \
  "$SBS_DB" "$OUT/report.html" "$OUT/export" "$OUT/student" "$OUT/causal-student" "$SBS_DB"
printf 'The two students are tiny random-weight models trained for 30 steps on a few dozen rows, so test accuracy\n'
printf 'near 0 is expected: the demo shows that the pipeline runs end to end, not what a real student learns.\n'
printf 'For that, see "Does step-by-step pay off on my task?" in README.md (sbs-train sweep).\n'
printf 'Review the rows in your browser: sbs-data browse demo-svamp-replay --db %s\n' "$SBS_DB"
