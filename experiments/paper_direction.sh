#!/usr/bin/env bash
# The paper's experiment on one task, with a real student, when a GPU is available: standard fine-tuning
# against distilling step-by-step at 12.5/25/50/100% of the training data, three seeds, test accuracy
# (Hsieh et al. 2023, Figures 1 and 4). The data is the paper's own: the released PaLM-540B rationales
# (../shared/data/sbs_original, see its README), imported and exported with sbs-data.
#
#   experiments/paper_direction.sh                                  # svamp, google/t5-v1_1-base, every GPU
#   TASK=anli MODEL=/models/flan-t5-large STEPS=5000 experiments/paper_direction.sh
#   MODEL=Qwen/Qwen3-0.6B LR=2e-5 experiments/paper_direction.sh   # a decoder-only student
#
# Settings (environment): TASK svamp|cqa|anli (default svamp), MODEL (hub name or local folder; a machine
# without network needs a folder), STEPS (optimizer steps per run, the same for every run as in the paper;
# default 2000), BATCH (default 64 rows per step in all), LR (default 5e-5), SEEDS (default 0,1,2),
# FRACTIONS (default 0.125,0.25,0.5,1.0), OUT (default runs/paper-direction-$TASK), DATA (the
# sbs_original/datasets folder). Re-running the same command resumes an interrupted sweep.
set -euo pipefail
cd "$(dirname "$0")/.."

TASK="${TASK:-svamp}"
MODEL="${MODEL:-google/t5-v1_1-base}"
STEPS="${STEPS:-2000}"
BATCH="${BATCH:-64}"
LR="${LR:-5e-5}"
SEEDS="${SEEDS:-0,1,2}"
FRACTIONS="${FRACTIONS:-0.125,0.25,0.5,1.0}"
OUT="${OUT:-runs/paper-direction-$TASK}"
DATA="${DATA:-../shared/data/sbs_original/datasets}"
BIN="${BIN:-.venv/bin}"
case "$TASK" in
    svamp) folder=svamp ;;
    cqa) folder=cqa ;;
    anli) folder=anli1 ;;
    *) echo "paper_direction: TASK must be svamp, cqa or anli, not '$TASK'" >&2; exit 2 ;;
esac
[[ -d "$DATA/$folder" ]] || { echo "paper_direction: no $DATA/$folder (set DATA to the sbs_original/datasets folder)" >&2; exit 2; }
if command -v nvidia-smi > /dev/null && nvidia-smi -L > /dev/null 2>&1; then
    NGPU="$(nvidia-smi -L | wc -l)"
else
    echo "paper_direction: no GPU found; this sweep trains $(( $(tr ',' '\n' <<< "$FRACTIONS" | wc -l) * 2 * $(tr ',' '\n' <<< "$SEEDS" | wc -l) )) real students and is meant for one" >&2
    NGPU=1
fi
mkdir -p "$OUT"

# 1. the export: gold examples and PaLM rationales, with a validation split carved from train
if [[ ! -f "$OUT/export/manifest.json" ]]; then
    db="$OUT/workspace.duckdb"
    "$BIN/sbs-data" import-original "$DATA/$folder" --task "$TASK" --name "$TASK" --db "$db"
    "$BIN/sbs-data" export "$TASK-palm" --out "$OUT/export" --validation-fraction 0.1 --seed 0 --db "$db"
fi

# 2. the sweep: one ordinary sbs-train run per mode x fraction x seed, on every GPU
per_gpu=$(( BATCH / NGPU ))
(( per_gpu >= 1 )) || per_gpu=1
"$BIN/python" -m torch.distributed.run --standalone --nproc-per-node "$NGPU" -m sbs_trainer sweep \
    --data "$OUT/export" --model "$MODEL" --modes standard,sbs --fractions "$FRACTIONS" --seeds "$SEEDS" \
    --output "$OUT/sweep" --max-steps "$STEPS" --batch-size "$per_gpu" --lr "$LR" --eval-every $(( STEPS / 4 )) \
    --save-every $(( STEPS / 4 )) --max-input-len 512 --max-target-len 256 --max-new-tokens 64

# 3. where the answer is
echo
cat "$OUT/sweep/summary.md"
echo
echo "paper_direction: table $OUT/sweep/summary.md, curve $OUT/sweep/curves.png, every run $OUT/sweep/results.csv"
