"""``lm2 reproduce``: the paper's study at a scale, resumable (the study itself: lm2.reproduce.study)."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

from lm2.utils.io import atomic_write_text
from lm2.utils.lock import FolderLock
from lm2.utils.text import comma_list


def parse_parts(only: str | None) -> tuple[str, ...]:
    from lm2.reproduce.scale import PARTS

    if not only:
        return PARTS
    parts = tuple(comma_list(only))
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"--only: unknown part {unknown[0]!r}; valid: {', '.join(PARTS)}")
    return parts


def reproduce(
    out: Path,
    scale: str = "laptop",
    only: str | None = None,
    seeds: int | None = None,
    replot: bool = False,
    dry_run: bool = False,
    jobs: int = 1,
) -> None:
    """Run the paper's study at a scale: Table 1 and 2 analogs, Figures 3, 5, 6 and slot roles, with a report.

    Trains every arm through the project's trainer, scores them with the lm2 eval functions, analyses the
    memory, and writes OUT/report.md, OUT/report.html (figures embedded), OUT/results.json and
    OUT/figures/*.png. Resumable: run it again with the same --out and finished parts are kept.

    Args:
        out: the study folder.
        scale: smoke (every stage on tiny shapes: under a minute on 2 cores), laptop (the default: hours
            on 2 cores, see docs/reproduce.md for the measured time; use --jobs 2) or gpu (for a GPU), the
            shipped scales in lm2/configs/reproduce; or a YAML file of the same form.
        only: comma-separated parts: table1, table2, fig3, fig5, fig6, slots (default: all).
        seeds: training seeds per arm (default: the scale's).
        replot: redraw the figures and the report from OUT/results.json; compute nothing.
        dry_run: build and check every arm's config and model (meta device, no weights); train nothing.
        jobs: units run at once, each in its own process (training runs of different arms and seeds, and
            their evaluations, are independent); 2 on 2 cores nearly halves a laptop study.
    """
    from lm2.reproduce.report import SCALE_COPY, assemble, replot_report
    from lm2.reproduce.scale import load_scale, scale_path
    from lm2.reproduce.study import Study

    if seeds is not None and seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}")
    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    out = Path(out)
    if not dry_run and importlib.util.find_spec("matplotlib") is None:  # before any unit, not at the last
        raise ValueError(
            "lm2 reproduce draws its figures with matplotlib, which is not installed: pip install 'lm2[plots]' "
            "(or use --dry-run)"
        )
    if replot:
        if not (out / "results.json").is_file():
            raise FileNotFoundError(f"{out}/results.json not found: run the study before --replot")
        with FolderLock(out):
            replot_report(out)
        print(f"redrew the figures and {out}/report.md, {out}/report.html from {out}/results.json")
        return
    path = scale_path(scale)
    cfg = load_scale(path)
    parts = parse_parts(only)
    study = Study(cfg, out, path, seeds)
    if dry_run:
        study.dry_run(parts)
        return
    cfg.check_inputs()
    with FolderLock(out):  # one study writes a folder at a time
        atomic_write_text(out / SCALE_COPY, path.read_text(encoding="utf-8"))
        start = time.perf_counter()
        study.run(parts, jobs)
        command = "lm2 reproduce " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["reproduce"] else None
        assemble(study, parts, time.perf_counter() - start, command)
    print(
        f"kept {len(study.kept)} finished units, ran {len(study.ran)}; report: {out}/report.md, {out}/report.html"
    )
