"""Peak memory of ``lm2 data babilong`` at long lengths: one fresh process per (background, length).

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.babilong_memory \
        --backgrounds synthetic,../shared/data/background/pg3261-news-from-nowhere.txt,../shared/data/background \
        --lengths 16k,128k,1m --samples 5 --out benchmarks/results/babilong-memory.md

Each child builds ``--samples`` qa1 rows at one length through ``lm2.data.make.make_babilong`` (the
command's library function: background, tokenizer, facts from the generator, rows written as JSON lines)
into a temporary folder. The parent reads the child's peak resident set with
``resource.getrusage(RUSAGE_CHILDREN)`` through a wrapper process per measurement (the counter keeps the
largest child's peak, so each measurement gets a wrapper of its own); the child also reports its resident
set just before the build (interpreter, libraries and tokenizer loaded), so the build's own growth is
peak - before. Without ``--tokenizer`` an 8k byte-level BPE is trained first (on synthetic text and qa1
stories, as ``lm2 data tokenizer`` does by default).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_model import machine

ROOT = Path(__file__).resolve().parents[1]


def child(background: str, length: str, samples: int, tokenizer: Path) -> dict:
    """In this process: build the rows and report the resident set before and the build's wall time."""
    from lm2.data.make import BabilongSpec, make_babilong

    before = _rss_mib()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        spec = BabilongSpec(tasks="qa1", lengths=length, samples=samples, background=background)
        files = make_babilong(spec, tokenizer, Path(tmp) / "set")
        seconds = time.perf_counter() - t0
        manifest = json.loads((Path(tmp) / "set" / "manifest.json").read_text())
        size = sum(f.stat().st_size for f in files)
    return {
        "before_mib": before,
        "seconds": seconds,
        "file_mib": size / 2**20,
        "background_tokens": manifest["background_tokens"],
        "repeats": manifest.get("background_repeats", {}).get(length),
    }


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not in /proc/self/status")


WRAPPER = (
    "import json, resource, subprocess, sys\n"
    "out = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"  # KiB on Linux
    "last = out.stderr.strip().splitlines()[-1] if out.returncode else None\n"
    "row = json.loads(out.stdout.strip().splitlines()[-1]) if not out.returncode else {'error': last}\n"
    "print(json.dumps({**row, 'peak_mib': peak}))\n"
)


def measure(background: str, length: str, samples: int, tokenizer: Path) -> dict:
    argv = [sys.executable, "-m", "benchmarks.babilong_memory", "--child", background, length, str(samples)]
    argv += ["--tokenizer", str(tokenizer)]
    out = subprocess.run(
        [sys.executable, "-c", WRAPPER, *argv], capture_output=True, text=True, check=True, cwd=ROOT, env=os.environ
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backgrounds", default="synthetic", help="comma-separated --background values")
    p.add_argument("--lengths", default="16k,128k,1m")
    p.add_argument("--samples", type=int, default=5)
    p.add_argument("--tokenizer", type=Path, help="tokenizer folder (default: train an 8k BPE first)")
    p.add_argument("--out", type=Path, help="markdown file to write")
    p.add_argument("--child", nargs=3, metavar=("BACKGROUND", "LENGTH", "SAMPLES"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        background, length, samples = args.child
        print(json.dumps(child(background, length, int(samples), args.tokenizer)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = args.tokenizer
        if tokenizer is None:
            from lm2.data.make import TokenizerSpec, make_tokenizer

            tokenizer = Path(tmp) / "tokenizer"
            print(make_tokenizer(TokenizerSpec(tasks="qa1"), tokenizer), file=sys.stderr)
        lines = [
            f"Machine: {machine()}",
            "",
            f"`lm2 data babilong --tasks qa1 --samples {args.samples}` at each length, one fresh process each; "
            "peak = the process's peak resident set (getrusage), before = its resident set just before the "
            "build (libraries and tokenizer loaded); background repeats: the manifest's `background_repeats` for "
            "the length (how many times over its longest row reads a background shorter than it).",
            "",
            "| background | length | rows | peak MiB | before MiB | peak - before MiB | output MiB | background tokens | background repeats | seconds |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for background in [b for b in args.backgrounds.split(",") if b]:
            for length in [x for x in args.lengths.split(",") if x]:
                print(f"[{time.strftime('%H:%M:%S')}] {background} {length}", file=sys.stderr, flush=True)
                r = measure(background, length, args.samples, tokenizer)
                name = background if background == "synthetic" else Path(background).name
                if "error" in r:  # the build refused: say why, with the peak it reached
                    lines.append(f"| {name} | {length} | {args.samples} | {r['peak_mib']:.0f} | "
                                 f"failed: {r['error']} |||||||")  # fmt: skip
                    continue
                lines.append(
                    f"| {name} | {length} | {args.samples} | {r['peak_mib']:.0f} | {r['before_mib']:.0f} | "
                    f"{r['peak_mib'] - r['before_mib']:.0f} | {r['file_mib']:.1f} | {r['background_tokens']:,} | "
                    f"{r['repeats'] if r['repeats'] is not None else '-'} | {r['seconds']:.0f} |"
                )
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.write_text("# BABILong builder: peak memory at long lengths\n\n" + table)


if __name__ == "__main__":
    main()
