#!/usr/bin/env bash
# Set up, lint, and run the whole test suite (CPU, about 10 minutes on 2 cores at most).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks scripts
.venv/bin/python -m pytest "$@"
