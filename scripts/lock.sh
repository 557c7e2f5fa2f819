#!/usr/bin/env bash
# Refresh requirements-lock.txt: the newest versions pyproject's ranges allow, resolved in a throwaway venv.
# Then run `bash scripts/test.sh` (it installs from the new lock) and commit the lock only if it passes.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
LM2_DEPS=newest VENV="$tmp/venv" bash scripts/setup.sh
{
  echo "# Exact versions the set-up installs (bash scripts/setup.sh). Made by scripts/lock.sh on $(date -u +%F)"
  echo "# with Python $("$tmp/venv/bin/python" -c 'import platform; print(platform.python_version())'); refresh with that script."
  # The local-version tag (+cpu) is dropped so the pin also matches the CPU wheel's index name elsewhere.
  "$tmp/venv/bin/python" -m pip freeze --exclude-editable | sed -E 's/^(torch==[^+]+)\+.*/\1/' | LC_ALL=C sort -f
} > requirements-lock.txt
echo "wrote requirements-lock.txt ($(grep -vc '^#' requirements-lock.txt) packages)"
