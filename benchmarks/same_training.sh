#!/usr/bin/env bash
# Evidence that a refactor changed no number: a short training run of each data kind (babilong rows, bAbI
# files, generated samples, running text) and the smoke study, in checkout REPO, written to OUT; run it for
# two checkouts and compare the logs with benchmarks/same_training_compare.py.
#   bash benchmarks/same_training.sh REPO OUT
set -euo pipefail
REPO=$(cd "$1" && pwd); OUT=$2
L="$REPO/.venv/bin/lm2"
export OMP_NUM_THREADS=1
rm -rf "$OUT"; mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
cd "$REPO"
$L reproduce --scale smoke --out "$OUT/smoke" > "$OUT/smoke.log" 2>&1
$L data tokenizer --out "$OUT/tok" --kind word --tasks qa1 --num-stories 50 > /dev/null
$L data babilong --tokenizer "$OUT/tok" --tasks qa1 --lengths 0k,200 --samples 40 --seed 1 --out "$OUT/train" > /dev/null 2>&1
$L data babilong --tokenizer "$OUT/tok" --tasks qa1 --lengths 0k,200 --samples 8 --seed 2 --out "$OUT/valid" > /dev/null 2>&1
$L prepare --inputs ../shared/data/background/tinyshakespeare.txt --tokenizer "$OUT/tok" --out "$OUT/text" > /dev/null
TRAIN='train: {seed: 0, batch_size: 8, log_every: 2, eval_every: 4, save_every: 4, keep_last: 2, progress: false}'
OPTIM='optim: {lr: 3.0e-3, warmup_steps: 2}'
MODEL='model: {family: lm2, preset: tiny, overrides: {hidden_size: 64, intermediate_size: 128, segment_length: 16}}'
cat > "$OUT/babilong.yaml" <<YAML
$MODEL
data: {kind: babilong, train: [$OUT/train], valid: [$OUT/valid], tokenizer: $OUT/tok, valid_samples: 8}
curriculum: [{steps: 8, lengths: [0k]}, {steps: 4}]
$OPTIM
$TRAIN
YAML
cat > "$OUT/babi.yaml" <<YAML
$MODEL
data: {kind: babi, train: [../shared/data/babi/en-train], tasks: qa1, tokenizer: $OUT/tok, valid_split: 0.1, valid_samples: 16}
curriculum: [{steps: 8}]
$OPTIM
$TRAIN
YAML
cat > "$OUT/generate.yaml" <<YAML
model: {family: lm2, preset: tiny, overrides: {hidden_size: 64, intermediate_size: 128, num_attention_heads: 4, num_key_value_heads: 4, attention_window: 64, segment_length: 32, memory_slots: 16}}
data: {kind: generate, tokenizer: $OUT/tok, valid_samples: 8, generate: {tasks: qa1, filler: [0, 32, 64], valid_filler: [0, 100]}}
curriculum: [{steps: 6}, {steps: 4, generate: {filler: [0, 128]}}]
$OPTIM
$TRAIN
YAML
cat > "$OUT/text.yaml" <<YAML
$MODEL
data: {kind: text, train: [$OUT/text], valid: [$OUT/text], tokenizer: $OUT/tok, valid_samples: 4}
curriculum: [{steps: 8, seq_len: 64}]
$OPTIM
$TRAIN
YAML
for k in babilong babi generate text; do $L train --config "$OUT/$k.yaml" --out "$OUT/run-$k" > "$OUT/train-$k.log" 2>&1; done
$L demo > "$OUT/demo.txt" 2>&1
echo "wrote $OUT"
