#!/usr/bin/env bash
# Run lint and the suite against the newest, or the oldest, versions pyproject's ranges allow, in a throwaway venv.
#   bash scripts/test-deps.sh newest|oldest [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
case "$mode" in
  newest|oldest) shift ;;
  *) echo "usage: bash scripts/test-deps.sh newest|oldest [pytest args]" >&2; exit 2 ;;
esac
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
LM2_DEPS=$mode VENV="$tmp/venv" bash scripts/setup.sh
echo "== $mode: $("$tmp/venv/bin/python" -m pip freeze | grep -iE '^(torch|transformers|tokenizers|safetensors|numpy|huggingface.hub|pyyaml|tqdm|tensorboardx|bm25s|pytest|ruff|pyarrow|matplotlib)==' | tr '\n' ' ')"
"$tmp/venv/bin/ruff" check src tests benchmarks scripts
"$tmp/venv/bin/python" -m pytest "$@"
