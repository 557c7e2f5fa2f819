"""Compare two folders of benchmarks/same_training.sh: the training logs (timings dropped), the smoke
study's results.json (dates, paths and timings dropped) and the demo's table; prints what differs.

    python benchmarks/same_training_compare.py BEFORE AFTER
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

NOISE = {"seconds", "wall_seconds_this_call", "unit_seconds_total", "date", "scale_file", "tokens_per_s", "command",
         "config", "output", "resumed_from", "folder"}  # fmt: skip


def strip(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: strip(v) for k, v in x.items() if k not in NOISE}
    if isinstance(x, list):
        return [strip(v) for v in x]
    return x


def main() -> None:
    before, after = Path(sys.argv[1]), Path(sys.argv[2])
    same = True
    for kind in ("babilong", "babi", "generate", "text"):
        logs = [[strip(json.loads(line)) for line in (d / f"run-{kind}" / "log.jsonl").read_text().splitlines()]
                for d in (before, after)]  # fmt: skip
        ok = logs[0] == logs[1]
        same &= ok
        print(f"training log, data.kind {kind}: {len(logs[0])} records, {'identical' if ok else 'DIFFERENT'}")
    results = [strip(json.loads((d / "smoke" / "results.json").read_text())) for d in (before, after)]
    ok = results[0] == results[1]
    same &= ok
    print(f"smoke study results.json: {'identical' if ok else 'DIFFERENT'} (dates, paths and timings left out)")
    tables = [re.sub(r"\(\d+s\)", "", (d / "demo.txt").read_text().split("accuracy on")[-1]) for d in (before, after)]
    ok = tables[0] == tables[1]
    same &= ok
    print(f"lm2 demo's table: {'identical' if ok else 'DIFFERENT'}")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
