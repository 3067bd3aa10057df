#!/usr/bin/env bash
# GPU check, at most ~8 minutes on one GPU, with no downloads (random models, file-less or home-made tokenizers):
#   (a) sbs-train, bf16, a from-scratch T5-small-sized student (d_model 512, 6+6 layers, d_ff 2048,
#       ByT5 byte tokenizer) for $STEPS steps on synthetic SVAMP-like shards made on the spot;
#   (b) the same training under torchrun, --strategy ddp and then --strategy fsdp, on every visible GPU
#       (with one GPU, torchrun --nproc-per-node 1: FSDP then shards over one process, so the figure
#       shows its overhead against plain training, not a memory saving);
#   (c) the sbs-data `hf:` teacher, batched, with a small random causal LM (GPT-2 shaped, 8 layers, d 512);
#   (d) causal students: sbs-train, bf16, a Qwen2-style decoder built offline (d 1024, 8 layers, GQA,
#       sbs_trainer.tiny's BPE tokenizer and ChatML template), full fine-tuning and then --lora-r 16,
#       packed (flat with flash-attention when installed, else rows); then benchmarks/causal_vs_trl.py
#       --device cuda --bf16 (sbs-train vs TRL's SFTTrainer, same model, rows and examples) when trl is installed;
#   (e) a short `sbs-train sweep`: standard,sbs x fractions 0.5,1.0 x seeds 0,1 on the T5 of (a), with its
#       table (summary.md) and wall time.
# Each prints examples/s, tokens/s and peak GPU memory; everything is also kept in $OUT (default: a temp dir).
#
#   bash benchmarks/gpu_check.sh                          # on a GPU machine, after `make install`
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_SCALE=small bash benchmarks/gpu_check.sh   # smoke test of the script on CPU
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE="${GPU_CHECK_DEVICE:-cuda}"
SCALE="${GPU_CHECK_SCALE:-full}"  # small: a tiny model and a few steps, for checking the script itself
PY="${PYTHON:-.venv/bin/python}"
OUT="${OUT:-$(mktemp -d)}"
if [[ "$SCALE" == small ]]; then
    STEPS=6 DIST_STEPS=4 ROWS=64 BATCH=4 D_MODEL=64 LAYERS=2 HEADS=4 D_FF=128 GEN_N=16 GEN_TOKENS=16
else
    STEPS=300 DIST_STEPS=200 ROWS=4000 BATCH=32 D_MODEL=512 LAYERS=6 HEADS=8 D_FF=2048 GEN_N=256 GEN_TOKENS=128
fi
if [[ "$DEVICE" == cuda ]]; then
    NGPU="$(nvidia-smi -L | wc -l)"
    PRECISION=bf16
else
    NGPU=1
    PRECISION=fp32
fi
export OUT DEVICE ROWS D_MODEL LAYERS HEADS D_FF GEN_N GEN_TOKENS
echo "gpu_check: device=$DEVICE gpus=$NGPU scale=$SCALE out=$OUT"
[[ "$DEVICE" == cuda ]] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

# -- data and student: synthetic SVAMP-like rows (benchmarks/train_throughput.py) and a random T5
"$PY" - <<'EOF'
import os, sys
from pathlib import Path

sys.path.insert(0, "benchmarks")
import train_throughput as tt
from sbs_trainer.tiny import write_tiny_t5

out = Path(os.environ["OUT"])
tt.write_export(out / "export", tt.synthetic_rows(int(os.environ["ROWS"])))
e = os.environ
write_tiny_t5(out / "student", seed=0, d_model=int(e["D_MODEL"]), layers=int(e["LAYERS"]),
              heads=int(e["HEADS"]), d_ff=int(e["D_FF"]), dropout=0.1)
EOF

summary() {  # summary LABEL RUN_DIR: the figures of one sbs-train run
    "$PY" - "$1" "$2" <<'EOF'
import json, sys
m = json.load(open(f"{sys.argv[2]}/metrics.json"))
t = m["train"]
mem = f"{t['peak_memory_gb']:.2f} GB" if "peak_memory_gb" in t else "n/a (CPU)"
per_rank = m.get("parameters", {}).get("per_rank")
print(f"{sys.argv[1]:<28} {t['steps']:>5} steps  {t['examples_per_s']:9.1f} ex/s  {t['tokens_per_s']:11.0f} tok/s  "
      f"peak {mem}  params/rank {per_rank}  ({m['world_size']} x {m['device']}, {m['precision']})")
EOF
}

common=(--data "$OUT/export" --model "$OUT/student" --mode sbs --batch-size "$BATCH" --lr 1e-3
        --warmup-steps 10 --max-target-len 256 --log-every 50 --precision "$PRECISION" --device "$DEVICE")

# -- (a) one process
echo "== (a) sbs-train, one process, $STEPS steps"
"$PY" -m sbs_trainer "${common[@]}" --max-steps "$STEPS" --output "$OUT/single" > "$OUT/single.log" 2>&1 \
    || { tail -30 "$OUT/single.log"; exit 1; }
summary "single process" "$OUT/single"

# -- (b) DDP vs FSDP under torchrun
echo "== (b) torchrun --nproc-per-node $NGPU: ddp vs fsdp, $DIST_STEPS steps each"
for strategy in ddp fsdp; do
    "$PY" -m torch.distributed.run --standalone --nproc-per-node "$NGPU" -m sbs_trainer "${common[@]}" \
        --max-steps "$DIST_STEPS" --strategy "$strategy" --output "$OUT/$strategy" > "$OUT/$strategy.log" 2>&1 \
        || { tail -30 "$OUT/$strategy.log"; exit 1; }
    summary "$strategy x $NGPU" "$OUT/$strategy"
done
[[ "$NGPU" == 1 ]] && echo "   (one GPU: 'ddp' is a plain single-process run; FSDP shards over one process)"

# -- (c) the hf: teacher of sbs-data, batched
echo "== (c) hf: teacher, random causal LM, $GEN_N requests x $GEN_TOKENS new tokens"
"$PY" - <<'EOF'
import asyncio, os, time
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers
from sbs_data.teachers.base import Request
from sbs_data.teachers.hf import HFTeacher

out, device = Path(os.environ["OUT"]) / "teacher", os.environ["DEVICE"]
n, new_tokens = int(os.environ["GEN_N"]), int(os.environ["GEN_TOKENS"])
transformers.utils.logging.disable_progress_bar()
words = [f"w{i}" for i in range(4000)]
vocab = {"<unk>": 0, "<pad>": 1, "<eos>": 2, **{w: i + 3 for i, w in enumerate(words)}}
tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
tk.pre_tokenizer = pre_tokenizers.Whitespace()
transformers.PreTrainedTokenizerFast(
    tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>"
).save_pretrained(out)
small = int(os.environ["D_MODEL"]) < 512
cfg = transformers.GPT2Config(vocab_size=len(vocab), n_positions=1024, n_embd=64 if small else 512,
                              n_layer=2 if small else 8, n_head=4 if small else 8,
                              bos_token_id=2, eos_token_id=2, pad_token_id=1)
torch.manual_seed(0)
transformers.GPT2LMHeadModel(cfg).save_pretrained(out)

import random
rng = random.Random(0)
reqs = [Request(messages=({"role": "user", "content": " ".join(rng.choices(words, k=rng.randint(100, 300)))},),
                params={"max_tokens": new_tokens}, example_id=str(i)) for i in range(n)]
teacher = HFTeacher(str(out), batch_size=64, batch_wait=0.05, device=device)
teacher.preflight()

async def main():
    warm = await asyncio.gather(*(teacher.complete(r) for r in reqs[:8]))  # CUDA context, kernels
    if device == "cuda":
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    res = await asyncio.gather(*(teacher.complete(r) for r in reqs))
    if device == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    await teacher.aclose()
    return res, dt

res, dt = asyncio.run(main())
gen = sum(r.completion_tokens for r in res)
prompt = sum(r.prompt_tokens for r in res)
mem = f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GB" if device == "cuda" else "n/a (CPU)"
print(f"{'hf: teacher':<28} {n:>5} reqs   {n / dt:9.1f} ex/s  {gen / dt:11.0f} new tok/s  "
      f"({(gen + prompt) / dt:.0f} tok/s with prompts)  peak {mem}  batches {teacher.batch_sizes[1:]}")
EOF
# -- (d) causal students
if [[ "$SCALE" == small ]]; then C_D=64 C_LAYERS=2 C_HEADS=4; else C_D=1024 C_LAYERS=8 C_HEADS=16; fi
echo "== (d) causal student (Qwen2-style, d $C_D, $C_LAYERS layers): full and LoRA, $STEPS steps each"
"$PY" -m sbs_trainer.tiny "$OUT/causal" --arch qwen2 --d-model "$C_D" --layers "$C_LAYERS" --heads "$C_HEADS" > /dev/null
for variant in full lora; do
    extra=(); [[ "$variant" == lora ]] && extra=(--lora-r 16)  # (the later --model wins over common's)
    "$PY" -m sbs_trainer "${common[@]}" --model "$OUT/causal" --max-steps "$STEPS" \
        "${extra[@]}" --output "$OUT/causal-$variant" > "$OUT/causal-$variant.log" 2>&1 \
        || { tail -30 "$OUT/causal-$variant.log"; exit 1; }
    summary "causal $variant" "$OUT/causal-$variant"
    "$PY" -c "import json,sys; s=json.load(open(sys.argv[1]))['student']; print('   ', {k: s[k] for k in ('packing', 'attention')})" "$OUT/causal-$variant/metrics.json"
done
if "$PY" -c "import trl" 2>/dev/null; then
    echo "== (d) sbs-train vs TRL SFTTrainer on $DEVICE"
    q=(); [[ "$SCALE" == small ]] && q=(--quick)
    bf=(); [[ "$DEVICE" == cuda ]] && bf=(--bf16)
    "$PY" benchmarks/causal_vs_trl.py --device "$DEVICE" "${bf[@]}" "${q[@]}" 2>&1 | tail -15
else
    echo "== (d) trl not installed (pip install -e 'trainer[bench]'): no TRL comparison"
fi
# -- (e) a short sweep
echo "== (e) sbs-train sweep: standard,sbs x 0.5,1.0 x seeds 0,1, $DIST_STEPS steps per run"
"$PY" - <<'EOF2'
import json, os, sys
from pathlib import Path

sys.path.insert(0, "benchmarks")
import train_throughput as tt

out = Path(os.environ["OUT"]) / "export-sweep"  # the synthetic rows of (a), plus a test split
n = int(os.environ["ROWS"])
tt.write_export(out, tt.synthetic_rows(n))
test = [{**r, "split": "test", "example_id": f"test-{i}"} for i, r in enumerate(tt.synthetic_rows(max(16, n // 8), seed=1))]
tt.write_export(out / "t", test)
m = json.loads((out / "manifest.json").read_text())
(out / "t" / "train").rename(out / "test")
shards = json.loads((out / "t" / "manifest.json").read_text())["splits"]["train"]
for s in shards["shards"]:
    s["path"] = s["path"].replace("train/", "test/", 1)
m["splits"]["test"] = shards
(out / "manifest.json").write_text(json.dumps(m))
EOF2
t0=$(date +%s)
"$PY" -m sbs_trainer sweep --data "$OUT/export-sweep" --model "$OUT/student" --batch-size "$BATCH" --lr 1e-3 \
    --warmup-steps 10 --max-target-len 256 --max-new-tokens 32 --log-every 50 --precision "$PRECISION" \
    --device "$DEVICE" --modes standard,sbs --fractions 0.5,1.0 --seeds 0,1 --max-steps "$DIST_STEPS" \
    --output "$OUT/sweep" > "$OUT/sweep.log" 2>&1 || { tail -30 "$OUT/sweep.log"; exit 1; }
grep "^sweep:" "$OUT/sweep.log" | tail -2
cat "$OUT/sweep/summary.md"
echo "   sweep wall time $(( $(date +%s) - t0 )) s for 8 runs"
echo "gpu_check: done; runs, logs and curves.png files in $OUT"
