"""lm2 reproduce: the scale configs parse, the smoke study runs end to end, resumes, replots; gpu dry-runs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lm2.cli import main
from lm2.commands.reproduce import reproduce
from lm2.reproduce import study as study_module
from lm2.reproduce.scale import load_scale, study_paths
from lm2.reproduce.units import Unit
from lm2.shipped import SCALES as CONFIG_DIR
from tests.conftest import shared_path

SCALES = ("smoke", "laptop", "gpu")


@pytest.mark.parametrize("scale", SCALES)
def test_every_scale_config_parses_and_validates(scale: str) -> None:
    cfg = load_scale(scale)
    assert cfg.name == scale
    assert {"lm2", "vanilla", "rmt"} <= set(cfg.arms)
    for arm in cfg.arms:  # each arm resolves to a training config the trainer accepts
        paths = study_paths("W", cfg)
        data = cfg.training_config(arm, 1, paths)
        assert data["data"]["tokenizer"] in (paths["tokenizer"], paths["text_tokenizer"])
        assert data["train"]["seed"] == 1
    assert (CONFIG_DIR / f"{scale}.yaml").is_file()


def test_laptop_and_gpu_scales_reach_16k_with_three_seeds() -> None:
    from lm2.data.lengths import length_tokens

    for scale in ("laptop", "gpu"):
        cfg = load_scale(scale)
        assert cfg.seeds == 3
        lengths = [x for s in cfg.table1.split.split(",") for x in str(cfg.data[s]["lengths"]).split(",")]
        assert max(length_tokens(x) for x in lengths) >= 16000
        assert min(length_tokens(x) for x in lengths) == 0


@pytest.mark.parametrize("scale", ["gpu", "laptop"])
def test_dry_run_builds_every_arm_without_training(tmp_path: Path, scale: str, capsys, monkeypatch) -> None:
    def no_training(*args, **kwargs):
        raise AssertionError("a dry run must not train")

    monkeypatch.setattr("lm2.train.trainer.Trainer", no_training)
    reproduce(out=tmp_path / "study", scale=scale, dry_run=True)
    text = capsys.readouterr().out
    for arm in load_scale(scale).arms:
        assert f"  {arm} s0:" in text
    assert not (tmp_path / "study").exists()


def test_a_bad_scale_config_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (CONFIG_DIR / "smoke.yaml").read_text().replace("fig5: {arms: [vanilla,", "fig5: {arms: [nope,")
    )
    assert main(["reproduce", "--scale", str(bad), "--out", str(tmp_path / "o"), "--dry-run"]) == 2
    assert "fig5.arms names arm 'nope'" in capsys.readouterr().err
    assert main(["reproduce", "--scale", "huge", "--out", str(tmp_path / "o")]) == 2
    assert main(["reproduce", "--scale", "smoke", "--out", str(tmp_path / "o"), "--only", "table9"]) == 2
    assert main(["reproduce", "--out", str(tmp_path / "none"), "--replot"]) == 2
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text((CONFIG_DIR / "smoke.yaml").read_text().replace("samples: 48,", "sample: 48,"))
    assert main(["reproduce", "--scale", str(wrong), "--out", str(tmp_path / "o"), "--dry-run"]) == 2
    assert "data.train" in capsys.readouterr().err


def _done_times(out: Path) -> dict[str, float]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in (out / "units").rglob("DONE.json")}


@pytest.mark.slow
def test_smoke_study_end_to_end_resume_and_replot(tmp_path: Path, monkeypatch, capsys) -> None:
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)  # the smoke scale reads no file: it runs anywhere
    out = tmp_path / "study"
    start = time.perf_counter()
    reproduce(out=out, scale="smoke")
    assert time.perf_counter() - start < 120
    results = json.loads((out / "results.json").read_text())
    assert set(results["table1"]["models"]) == {"LM2", "vanilla", "RMT", "vanilla+RAG"}
    assert results["table1"]["lengths"] == ["0k", "1k"]
    assert results["chance"] == pytest.approx(100 / 6)  # qa1: one of six rooms, drawn on the accuracy plot
    assert set(results["table2"]["ppl"]) == {"LM2", "vanilla", "RMT", "LM2, text"}
    assert results["table2"]["ppl"]["LM2"]["unknown_share"] == 0.0  # the smoke scale's BPE covers any text
    assert results["table2"]["ppl"]["LM2"]["trained_on"] == "babilong"
    assert results["table2"]["ppl"]["LM2, text"]["trained_on"] == "text"  # on the prepared book (text.inputs)
    assert results["units"]["text:data"]["command"].startswith("lm2 prepare --inputs synthetic:1")
    assert set(results["fig5"]["curves"]) == {"vanilla", "LM2 memory in block 0", "LM2"}
    assert all(
        c["tokens"] == sorted(c["tokens"]) and c["tokens"][0] > 0 for c in results["fig5"]["curves"].values()
    )
    assert results["analysis"]["roles"]["prompts"] == 2
    # every number names its units, and every unit its command, config and output
    for unit, record in results["units"].items():
        assert record["command"].startswith("lm2 ") and record["output"], unit
    assert results["table1"]["models"]["LM2"]["runs"] == ["table1:lm2:s0"]
    figures = ["figures/accuracy_vs_length.png", "figures/fig3_capabilities.png", "figures/fig5_memory_depth.png",
               "units/analysis/fig6_block0.png", "units/analysis/slots_block1.png"]  # fmt: skip
    for fig in figures:
        assert (out / fig).stat().st_size > 5000, fig
    report = (out / "report.md").read_text()
    for fig in figures:
        assert f"]({fig})" in report
    assert "| unknown tokens (%) |" in report and "Only the arms trained on running text (LM2, text: data.kind text" in report and "table1:vanilla+rag:s0" in report
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(list((out / "figures").glob("*.png"))) + 4

    # Re-run: every unit is kept, nothing is trained or evaluated again.
    before = _done_times(out)
    monkeypatch.setattr(
        "lm2.train.trainer.Trainer", lambda *a, **k: pytest.fail("kept units must not retrain")
    )
    capsys.readouterr()
    reproduce(out=out, scale="smoke")
    assert _done_times(out) == before
    assert "ran 0" in capsys.readouterr().out

    # A unit killed before its marker was written is redone; the finished ones around it are kept.
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    (out / "units/table1/rmt/s0/DONE.json").unlink()
    (out / "units/train/vanilla/s0/DONE.json").unlink()
    ran = []
    original = study_module.Study.run_unit

    def spy(self, unit, index, total):
        if self.done(unit) is None:
            ran.append(unit.name)
        return original(self, unit, index, total)

    monkeypatch.setattr(study_module.Study, "run_unit", spy)
    reproduce(out=out, scale="smoke")
    assert sorted(ran) == ["table1:rmt:s0", "train:vanilla:s0"]
    after = _done_times(out)
    changed = {k for k in before if after[k] != before[k]}
    assert changed == {"units/table1/rmt/s0/DONE.json", "units/train/vanilla/s0/DONE.json"}
    # the killed training unit found its finished checkpoint and resumed from it instead of starting over
    vanilla = json.loads((out / "units/train/vanilla/s0/DONE.json").read_text())
    assert vanilla["steps"] == 6 and vanilla["resumed_from"].endswith("step-00000006")

    # --replot redraws every figure and both reports from results.json alone
    for fig in figures:
        (out / fig).unlink()
    (out / "report.html").unlink()
    assert main(["reproduce", "--out", str(out), "--replot"]) == 0
    for fig in figures:
        assert (out / fig).is_file()
    assert (out / "report.html").is_file()


@pytest.mark.slow
def test_a_study_reads_books_and_mmlu_from_files(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("matplotlib")
    shared_path("background", "tinyshakespeare.txt")
    shared_path("mmlu", "dev")
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # the scale below names ../shared/data
    books = (CONFIG_DIR / "smoke.yaml").read_text().replace(
        'text: {inputs: "synthetic:1", valid: "synthetic:2"}',
        "text: {inputs: ../shared/data/background/pg3261-news-from-nowhere.txt,"
        " valid: ../shared/data/background/tinyshakespeare.txt}",
    ).replace(
        'ppl_data: "synthetic:3"',
        "ppl_data: ../shared/data/background/tinyshakespeare.txt\n  mmlu_data: ../shared/data/mmlu/dev\n"
        "  mmlu_subjects: abstract_algebra,anatomy",
    )
    scale = tmp_path / "books.yaml"
    scale.write_text(books)
    out = tmp_path / "study"
    reproduce(out=out, scale=str(scale), only="table2")
    results = json.loads((out / "results.json").read_text())
    assert results["units"]["text:data"]["command"].startswith("lm2 prepare --inputs ../shared/data/background/")
    assert results["table2"]["ppl"]["LM2"]["unknown_share"] == 0.0  # the smoke scale's BPE covers any text
    assert results["table2"]["mmlu"]["LM2"]["average"]["questions"] == 10
    assert "Chance is 25%" in (out / "report.md").read_text()


@pytest.mark.slow
def test_a_parallel_study_equals_the_sequential_one_and_names_a_failed_unit(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    seq, par = tmp_path / "seq", tmp_path / "par"
    reproduce(out=seq, scale="smoke", only="table1")
    reproduce(out=par, scale="smoke", only="table1", jobs=2)
    a, b = (json.loads((d / "results.json").read_text()) for d in (seq, par))
    assert a["table1"] == b["table1"]  # same units, same numbers: the workers run exactly the same code
    assert sorted(a["units"]) == sorted(b["units"])
    study = study_module.Study(load_scale("smoke"), par, CONFIG_DIR / "smoke.yaml")
    def needs(name: str) -> list[str]:
        return [u.name for u in study.needs(Unit.parse(name))]

    assert needs("table1:vanilla+rag:s0") == ["tokenizer", "data:train", "data:valid", "data:test",
                                              "train:vanilla:s0"]  # fmt: skip
    assert needs("data:test") == ["tokenizer"] and needs("tokenizer") == []
    assert needs("text:data") == ["tokenizer"]  # the smoke scale tokenises its text with the study's
    assert needs("ppl:lm2-text:s0") == ["tokenizer", "data:train", "data:valid", "data:test", "text:data",
                                        "train:lm2-text:s0"]  # fmt: skip
    # A unit that fails in a worker is named in one line (exit code 2); the finished units stay.
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (CONFIG_DIR / "smoke.yaml").read_text().replace(
            "ppl_max_tokens: 300", "ppl_max_tokens: 1"
        )
    )
    capsys.readouterr()
    args = ["reproduce", "--scale", str(bad), "--out", str(par), "--only", "table2", "--jobs", "2"]
    assert main(args) == 2
    out = capsys.readouterr()
    assert "ppl:lm2:s0: no tokens were scored" in out.err
    assert "train:lm2:s0: finished earlier, kept" in out.out
    assert (par / "units/train/lm2/s0/DONE.json").is_file() and not (par / "units/ppl").exists()
    assert main(["reproduce", "--scale", "smoke", "--out", str(par), "--jobs", "0"]) == 2


def test_a_finished_unit_made_from_another_config_is_refused(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    out = tmp_path / "study"
    text = (CONFIG_DIR / "smoke.yaml").read_text()
    first = tmp_path / "a.yaml"
    first.write_text(text)
    reproduce(out=out, scale=str(first), only="fig5", seeds=1)
    assert (out / "units/train/lm2/s0/DONE.json").is_file()
    changed = tmp_path / "b.yaml"
    changed.write_text(text.replace("optim: {lr: 3.0e-3,", "optim: {lr: 1.0e-3,"))
    with pytest.raises(ValueError, match="another configuration"):
        reproduce(out=out, scale=str(changed), only="fig5", seeds=1)
    assert main(["reproduce", "--scale", str(changed), "--out", str(out), "--only", "fig5"]) == 2


def test_a_fact_distance_longer_than_a_length_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    text = (CONFIG_DIR / "smoke.yaml").read_text()
    bad.write_text(
        text.replace('lengths: "0k,1k", samples: 3,', 'lengths: "2k,1k", fact_distance: 1000, samples: 3,')
    )
    with pytest.raises(ValueError, match="fact_distance 1000 leaves no room at length 1000"):
        load_scale(bad)
    bad.write_text(
        text.replace('lengths: "0k,1k", samples: 3,', 'lengths: "2k,1k", fact_distance: 999, samples: 3,')
    )
    load_scale(bad)


def test_each_part_trains_only_the_arms_and_seeds_it_needs(tmp_path: Path) -> None:
    cfg = load_scale("laptop")
    study = study_module.Study(cfg, tmp_path, CONFIG_DIR / "laptop.yaml")

    def plan(*parts: str) -> list[str]:
        return [u.name for u in study.plan(parts)]

    trained = [u for u in plan("fig6") if u.startswith("train:")]
    assert trained == ["train:lm2:s0"]
    trained = [u for u in plan("table1") if u.startswith("train:")]
    assert trained == [f"train:{a}:s{s}" for a in ("lm2", "vanilla", "rmt") for s in range(3)]
    planned = plan("fig5")
    arms = ("lm2-text", "lm2-text-first1", "vanilla-text")  # in the order of the config's arms
    assert [u for u in planned if u.startswith("train:")] == [f"train:{a}:s{s}" for a in arms for s in range(3)]
    assert {"text:tokenizer", "text:data"} <= set(planned)  # text arms: their tokenizer and data first
    assert not any(u.startswith("text:") for u in plan("table1"))
    cfg.arms["lm2-text-first1"].seeds = 1
    trained = [u for u in plan("fig5") if u.startswith("train:")]
    assert "train:lm2-text-first1:s0" in trained and "train:lm2-text-first1:s1" not in trained  # arms.seeds


def test_fig5_verdict_claims_a_trend_only_beyond_the_seed_spread() -> None:
    from lm2.reproduce.report import _fig5_verdict

    def f5(values, spread=None, n=1):
        names = ["vanilla", "first1", "all"]
        final = {k: {"mean": v, "spread": spread, "n": n} for k, v in zip(names, values, strict=True)}
        return {"metric": "val_loss", "order": names, "final": final}

    assert "not evidence" in _fig5_verdict(f5([3.0, 2.0, 1.0]))
    assert "every step is larger than the seed spread" in _fig5_verdict(f5([3.0, 2.0, 1.0], 0.1, 3))
    assert "within the seed spread" in _fig5_verdict(f5([3.0, 2.0, 1.9], 0.2, 3))
    assert "does not hold." in _fig5_verdict(f5([1.0, 2.0, 3.0], 0.1, 3))
    assert "no measurable difference" in _fig5_verdict(f5([1.0, 1.2, 1.1], 0.3, 3))


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None once it is gone (it may go between any two reads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1])


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        info = _proc_stat(int(stat.parent.name))
        if info is not None and info[1] == pid:
            found.append(int(stat.parent.name))
    return found


def _is_worker(pid: int) -> bool:
    try:
        return "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False


def _alive(pid: int) -> bool:
    info = _proc_stat(pid)
    return info is not None and info[0] != "Z"  # a zombie has ended; only its exit status is left


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers follow their parent via prctl (Linux)")
@pytest.mark.parametrize("kill", [signal.SIGTERM, signal.SIGKILL], ids=["term", "kill"])
def test_killing_a_parallel_study_leaves_no_worker_behind(tmp_path: Path, kill: signal.Signals) -> None:
    root = Path(__file__).resolve().parents[1]
    study = subprocess.Popen(
        [sys.executable, "-m", "lm2.cli", "reproduce", "--scale", "smoke", "--out", str(tmp_path / "s"),
         "--jobs", "2", "--only", "table1"],
        cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    # Deadlines, not sleeps: on an idle machine each loop ends within seconds; a loaded one may need minutes.
    deadline = time.monotonic() + 300
    workers: list[int] = []
    while time.monotonic() < deadline and len(workers) < 2 and study.poll() is None:
        time.sleep(0.1)  # the two workers, not the resource tracker; killed as soon as both exist
        workers = [p for p in _children(study.pid) if _is_worker(p)]
    assert len(workers) == 2, "the study never started its workers"
    study.send_signal(kill)
    study.wait(timeout=120)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.2)
    alive = [p for p in workers if _alive(p)]
    assert not alive, f"workers {alive} outlived the killed study"


def test_a_worker_whose_study_died_before_it_started_stops() -> None:
    # The study died while the worker was still starting: the worker's parent is now someone else
    # (PID 1, or a subreaper), and the parent-death signal armed from now on would never come.
    code = "import os; from lm2.reproduce.study import _die_with_parent; _die_with_parent(os.getppid() + 1); print('on')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "on" not in result.stdout
