"""Evidence that a refactor changed no number: GFLOP per training step and the loss of each model of
`bench_model.py` at its quick shape (seeded weights and batch), one line each, to diff between commits.

    .venv/bin/python benchmarks/same_results.py                  # this checkout
    OTHER/.venv/bin/python benchmarks/same_results.py            # run from another checkout, then diff
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model import KINDS, QUICK, batch_for, build, step_flops  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    ids = batch_for(QUICK)
    for kind in KINDS:
        model = build(kind, QUICK)
        with torch.no_grad():
            loss = float(model(input_ids=ids, labels=ids).loss)
        print(f"{kind:9s} GFLOP/step {step_flops(model, ids) / 1e9:.4f}  loss {loss:.10f}")


if __name__ == "__main__":
    main()
