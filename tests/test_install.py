"""lm2 installed the way a user installs it (a wheel into a fresh virtual environment, not the editable
checkout) finds its shipped configs and runs from any folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOP_SKIP = {".git", ".venv", "runs", "data", "build"}  # at the top of the checkout only


def _skip(folder: str, names: list[str]) -> set[str]:
    top = TOP_SKIP if Path(folder) == REPO else set()
    return {n for n in names if n in top or n == "__pycache__" or n.endswith((".egg-info", "cache"))}


@pytest.mark.slow
def test_a_wheel_install_runs_the_smoke_study_outside_the_checkout(tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(REPO, source, symlinks=True, ignore=_skip)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", str(wheels), str(source)],
        check=True, timeout=600,
    )  # fmt: skip
    (wheel,) = wheels.glob("lm2-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=600)
    python = venv / "bin" / "python"
    site = Path(subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())  # fmt: skip
    # This environment's dependencies (torch, transformers, ...) without downloading them again. A .pth line
    # only adds a folder to the path; it does not run that folder's own .pth files, where the checkout's
    # editable install hooks in, so `import lm2` can only find the wheel's copy.
    deps = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site / "lm2-test-deps.pth").write_text("\n".join(deps) + "\n")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed", str(wheel)],
        check=True, timeout=600,
    )  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}

    def lm2(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([venv / "bin" / "lm2", *args], cwd=elsewhere, env=env, capture_output=True,
                              text=True, timeout=900)  # fmt: skip

    where = subprocess.check_output([python, "-c", "import lm2.shipped as s; print(s.__file__); print(s.SCALES)"],
                                    cwd=elsewhere, env=env, text=True).split()  # fmt: skip
    assert all(Path(p).is_relative_to(site) for p in where), where  # the wheel's files, not the checkout's
    help_ = lm2("demo", "--help")
    assert help_.returncode == 0 and "Show the memory at work" in help_.stdout, help_.stderr
    study = lm2("reproduce", "--scale", "smoke", "--out", "study")
    assert study.returncode == 0, study.stderr[-2000:]
    results = json.loads((elsewhere / "study" / "results.json").read_text())
    assert set(results["table1"]["models"]) == {"LM2", "vanilla", "RMT", "vanilla+RAG"}
