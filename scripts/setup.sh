#!/usr/bin/env bash
# Create a virtual environment and install lm2 with its test tools. Safe to re-run.
#
#   bash scripts/setup.sh                     # .venv, exact versions from requirements-lock.txt (what CI tests)
#   LM2_DEPS=newest VENV=/tmp/v bash scripts/setup.sh   # the newest versions pyproject's ranges allow
#   LM2_DEPS=oldest VENV=/tmp/v bash scripts/setup.sh   # the oldest: every lower bound in pyproject, exactly
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
DEPS=${LM2_DEPS:-lock}
EXTRAS=dev  # what the set-up installs besides lm2 itself; scripts/lock.sh locks the same
pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
case "$DEPS" in
  lock)
    # Every package, transitive ones and torch included, at the version CI tested.
    "${pip[@]}" -r requirements-lock.txt
    "${pip[@]}" --no-deps -e ".[$EXTRAS]"
    "$VENV/bin/python" -m pip check -q >/dev/null || {
      "$VENV/bin/python" -m pip check
      echo "setup: requirements-lock.txt does not satisfy pyproject.toml; refresh it with: bash scripts/lock.sh" >&2
      exit 1
    }
    ;;
  newest)
    # torch held at the CPU wheel (a constraint, as pyproject's range would take a newer, multi-GB CUDA
    # build here); every other package at the newest its range allows.
    echo "torch==2.13.0" > "$VENV/torch-constraint.txt"
    "${pip[@]}" -c "$VENV/torch-constraint.txt" "torch==2.13.0"
    "${pip[@]}" -c "$VENV/torch-constraint.txt" --upgrade --upgrade-strategy eager -e ".[$EXTRAS]"
    ;;
  oldest)
    constraints="$VENV/oldest-constraints.txt"
    "$VENV/bin/python" scripts/lower_bounds.py "$EXTRAS" > "$constraints"
    "${pip[@]}" "torch==2.13.0"
    "${pip[@]}" -c "$constraints" -e ".[$EXTRAS]"
    ;;
  *)
    echo "setup: LM2_DEPS must be lock, newest or oldest, got '$DEPS'" >&2
    exit 2
    ;;
esac
