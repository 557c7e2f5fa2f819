#!/usr/bin/env bash
# Issue 4 item 7: vanilla vs LM2 on BABILong qa1-qa5 at 0K and 1K, same backbone, data and step budget.
#
#   scripts/train_babilong_experiment.sh [WORK_DIR]        (default: runs/babilong-qa1-5)
#
# Environment: SAMPLES (training rows per task and length, default 2000), VOCAB (tokenizer size, default
# 8192), STEPS0 / STEPS1 (steps of the 0k stage and of the 0k+1k stage, default 300 each), EVAL_SAMPLES
# (validation and test rows per task and length, default 100), BACKGROUND (synthetic | pg19 | text files,
# default: the three books in ../shared/data/background when present, else synthetic), PARALLEL=1 (train
# the two arms at once, e.g. one core each with OMP_NUM_THREADS=1), EXTRA_SET (more `--set` overrides for
# both arms, e.g. "train.batch_size=8"), LM2 (the command, default `lm2`). Every step is skipped when its output already exists, so the script can be re-run after
# an interruption; training resumes from its last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${1:-runs/babilong-qa1-5}
LM2=${LM2:-lm2}
SAMPLES=${SAMPLES:-2000}
STEPS0=${STEPS0:-300}
STEPS1=${STEPS1:-300}
VOCAB=${VOCAB:-8192}
if [[ -z "${BACKGROUND:-}" ]]; then
  if [[ -d ../shared/data/background ]]; then BACKGROUND=../shared/data/background; else BACKGROUND=synthetic; fi
fi
mkdir -p "$WORK"

if [[ ! -f "$WORK/tokenizer/tokenizer.json" ]]; then
  $LM2 data tokenizer --out "$WORK/tokenizer" --vocab-size "$VOCAB" --tasks qa1-qa5 --background "$BACKGROUND"
fi
build() {  # build SPLIT SAMPLES SEED
  [[ -d "$WORK/data/$1" ]] && return
  rm -rf "$WORK/data/$1.partial"
  $LM2 data babilong --tokenizer "$WORK/tokenizer" --out "$WORK/data/$1.partial" --tasks qa1-qa5 \
    --lengths 0k,1k --samples "$2" --background "$BACKGROUND" --seed "$3"
  mv "$WORK/data/$1.partial" "$WORK/data/$1"
}
build train "$SAMPLES" 1
build valid "${EVAL_SAMPLES:-100}" 2
build test "${EVAL_SAMPLES:-100}" 3   # unseen stories, scored only at the end

train_arm() {
  $LM2 train --config "configs/babilong-qa1-5-$1.yaml" --out "$WORK/$1" --resume --set \
    "data.train=[$WORK/data/train] data.valid=[$WORK/data/valid] data.tokenizer=$WORK/tokenizer \
     curriculum.0.steps=$STEPS0 curriculum.1.steps=$STEPS1 ${EXTRA_SET:-}"
}
if [[ "${PARALLEL:-0}" == 1 ]]; then
  train_arm lm2 > "$WORK/lm2.train.log" 2>&1 & lm2_pid=$!
  train_arm vanilla > "$WORK/vanilla.train.log" 2>&1 & vanilla_pid=$!
  wait "$lm2_pid"
  wait "$vanilla_pid"
else
  train_arm lm2
  train_arm vanilla
fi

$LM2 eval babilong --model "$WORK/lm2/last,$WORK/vanilla/last" --data "$WORK/data/test" \
  --tasks qa1-qa5 --lengths 0k,1k --out "$WORK/eval"
cat "$WORK/eval/results.md"
