#!/usr/bin/env bash
# A/B of the benchmarks between a base revision and this working tree, interleaved in one session
# (base, new, base, new, ...), so both sides meet the same machine load. Each side runs its own copy of
# each benchmark script against its own code (PYTHONPATH points at the side's tree; the same venv).
# Logs go to $OUT/<benchmark>-<side>-<round>.log; compare the figures each script prints.
#
#   benchmarks/ab.sh BASE_REV [ROUNDS]          # e.g. benchmarks/ab.sh 2882078 2
#   BENCHES="generate scale" benchmarks/ab.sh HEAD~3
#
# The sizes are the quick ones (minutes, not hours): generate_throughput --n 4000, scale_chain at 100k
# requests, score_filter at 200k rows, provider_limits --n 1500, train_throughput (one epoch, 700 rows).
set -euo pipefail
cd "$(dirname "$0")/.."
BASE_REV="${1:?usage: benchmarks/ab.sh BASE_REV [ROUNDS]}"
ROUNDS="${2:-2}"
PY="${PYTHON:-$PWD/.venv/bin/python}"
OUT="${OUT:-$(mktemp -d)}"
BENCHES="${BENCHES:-generate scale score limits train}"
BASE_DIR="$OUT/base-tree"
git worktree add -q --detach "$BASE_DIR" "$BASE_REV"
trap 'git worktree remove --force "$BASE_DIR"' EXIT
export OMP_NUM_THREADS=1

run() {  # run SIDE_DIR BENCH LOG
    local dir="$1" bench="$2" log="$3"
    case "$bench" in
        generate) args=(benchmarks/generate_throughput.py --n 4000) ;;
        scale) args=(benchmarks/scale_chain.py --sizes 100000) ;;
        score) args=(benchmarks/score_filter.py --rows 200000 --baseline-rows 2000) ;;
        limits) args=(benchmarks/provider_limits.py --n 1500 --bill-n 200) ;;
        train) args=(benchmarks/train_throughput.py --rows 700) ;;
        *) echo "ab.sh: unknown benchmark $bench" >&2; exit 2 ;;
    esac
    (cd "$dir" && PYTHONPATH="$dir:$dir/trainer" PATH="$(dirname "$PY"):$PATH" "$PY" "${args[@]}") > "$log" 2>&1 \
        || echo "   ($bench failed on $dir; see $log)"
}

echo "ab.sh: base $BASE_REV ($(git rev-parse --short "$BASE_REV")) vs working tree; $ROUNDS rounds; logs in $OUT"
for r in $(seq 1 "$ROUNDS"); do
    for bench in $BENCHES; do
        for side in base new; do
            dir="$PWD"; [[ "$side" == base ]] && dir="$BASE_DIR"
            echo "== round $r: $bench ($side)"
            run "$dir" "$bench" "$OUT/$bench-$side-$r.log"
            tail -4 "$OUT/$bench-$side-$r.log" | sed 's/^/   /'
        done
    done
done
echo "ab.sh: done; logs in $OUT"
