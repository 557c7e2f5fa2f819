"""``lm2 eval rescore``: BABILong harness CSV folders and lm2 predictions.jsonl, scored by either metric."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from lm2.cli import build_parser, main
from lm2.data.rows import load_rows
from lm2.eval.babilong import Candidate, evaluate
from lm2.eval.rescore import read_answers, read_harness_csv, rescore
from tests.test_eval_babilong import FakeLM, _row, _write_jsonl
from tests.test_eval_fixtures import make_checkpoint, make_tokenizer

CFG = "instruction_yes_examples_yes_post_prompt_yes"
OTHER = "instruction_no_examples_no_post_prompt_no"
WHERE = "Where is Mary? "
COUNT = "How many objects is Daniel carrying?"

# (target, output, question, correct by words, correct by babilong)
QA1_0K = [
    ("kitchen", "### Response\n\nMary is in the kitchen.", WHERE, True, True),
    ("garden", "A) The garden\nB) The office", WHERE, False, False),
    ("office", "Answer: office\n\nContext: The garden is north of the office.", WHERE, True, False),
    ("hallway", "bathroom", WHERE, False, False),
]
QA7_0K = [
    ("none", "None.", COUNT, True, False),
    ("two", "two", COUNT, True, True),
]
QA1_1M = [("garden", "garden", WHERE, True, True)]


def _write_csv(path: Path, rows: list[tuple]) -> None:
    """A CSV as the harness writes it (pandas' to_csv: an unnamed index column first)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["", "target", "output", "question"])
        for i, (target, output, question, *_) in enumerate(rows):
            writer.writerow([i, target, output, question])


@pytest.fixture()
def harness(tmp_path: Path) -> Path:
    folder = tmp_path / "evals" / "Some-Model-7B"
    folder.mkdir(parents=True)
    _write_csv(folder / f"qa1_0k_{CFG}.csv", QA1_0K)
    _write_csv(folder / f"qa7_0k_{CFG}.csv", QA7_0K)
    _write_csv(folder / f"qa1_1M_{CFG}.csv", QA1_1M)
    # Another set-up of the same model: every answer right, so picking it by mistake shows.
    _write_csv(folder / f"qa1_0k_{OTHER}.csv", [(t, t, q) for t, _, q, *_ in QA1_0K])
    (folder / f"qa1_0k_{CFG}.json").write_text("{}")  # the harness's prompt files are not answers
    return folder


def _percent(rows: list[tuple], column: int) -> float:
    return 100.0 * sum(r[column] for r in rows) / len(rows)


@pytest.mark.parametrize("metric, column", [("words", 3), ("babilong", 4)])
def test_rescoring_a_harness_folder_writes_the_tables(tmp_path, harness, metric, column) -> None:
    out = tmp_path / "out"
    args = ["eval", "rescore", "--predictions", str(harness), "--metric", metric, "--out", str(out)]
    assert main([*args, "--prompt-config", CFG]) == 0

    qa1, qa7 = _percent(QA1_0K, column), _percent(QA7_0K, column)
    assert (qa1, qa7) == ((50.0, 100.0) if metric == "words" else (25.0, 50.0))  # the cases differ
    with open(out / "results.csv") as f:
        table = list(csv.reader(f))
    assert table == [
        ["length", "model", "qa1", "qa7", "avg"],
        ["0k", "Some-Model-7B", f"{qa1:.1f}", f"{qa7:.1f}", f"{(qa1 + qa7) / 2:.1f}"],
        ["1m", "Some-Model-7B", "100.0", "–", "–"],  # the 1M set has no qa7 answers
    ]
    results = json.loads((out / "results.json").read_text())
    assert results["metric"] == metric and results["models"] == ["Some-Model-7B"]
    assert results["count"] == {
        "0k": {"Some-Model-7B": {"qa1": 4, "qa7": 2}},
        "1m": {"Some-Model-7B": {"qa1": 1, "qa7": 0}},
    }
    assert results["accuracy"]["1m"]["Some-Model-7B"]["qa7"] is None
    md = (out / "results.md").read_text()
    assert f"Scored by the `{metric}` metric." in md
    assert f"| Some-Model-7B | {qa1:.1f} | {qa7:.1f} |" in md and md.index("## 0k") < md.index("## 1m")


def test_prompt_config_choice_is_checked(tmp_path, harness, capsys) -> None:
    args = [
        "eval",
        "rescore",
        "--predictions",
        str(harness),
        "--metric",
        "words",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds 2 prompt configs" in err and CFG in err and OTHER in err
    assert main([*args, "--prompt-config", "instruction_maybe"]) == 2
    assert "has no prompt config 'instruction_maybe'" in capsys.readouterr().err
    assert main([*args, "--prompt-config", OTHER]) == 0
    assert json.loads((tmp_path / "o" / "results.json").read_text())["accuracy"]["0k"]["Some-Model-7B"] == {
        "qa1": 100.0,
        "avg": 100.0,
    }


def test_bad_inputs_are_one_line_errors(tmp_path, harness, capsys) -> None:
    def run(path: Path, metric: str = "words") -> str:
        code = main(
            ["eval", "rescore", "--predictions", str(path), "--metric", metric, "--out", str(tmp_path / "o")]
        )
        assert code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("lm2: error:") and "\n" not in err
        return err

    assert "does not exist" in run(tmp_path / "missing")
    (tmp_path / "o").write_text("a file")
    assert "is a file; give a folder" in run(harness)
    (tmp_path / "o").unlink()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no BABILong harness CSVs" in run(empty)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "qa1_0k_x.csv").write_text("target,answer,question\nkitchen,kitchen,Where?\n")
    assert "no column output" in run(bad)
    (bad / "qa1_0k_x.csv").write_bytes(b"target,output,question\nkitchen,\xff\xfe,Where?\n")
    assert "not a readable UTF-8 CSV" in run(bad)
    (bad / "qa1_0k_x.csv").write_text("target,output,question\n,kitchen,Where?\n")
    assert "row 1 has an empty target" in run(bad)
    (bad / "qa1_0k_x.csv").write_text("target,output,question\nkitchen,kitchen,Where?\n")
    (bad / "qa21_0k_x.csv").write_text("target,output,question\nkitchen,kitchen,Where?\n")
    assert "qa21_0k_x.csv: unknown bAbI task" in run(bad)
    (bad / "qa21_0k_x.csv").unlink()
    (bad / "qa1_0K_x.csv").write_text("target,output,question\nkitchen,kitchen,Where?\n")
    assert "hold the same set (qa1, 0k)" in run(bad)
    with pytest.raises(SystemExit):  # argparse: the metric must be one of the two
        main(["eval", "rescore", "--predictions", str(harness), "--metric", "exact", "--out", str(tmp_path)])


def test_a_missing_output_cell_is_an_empty_answer_under_the_official_metric(tmp_path) -> None:
    # The authors' results script reads CSVs with pandas, which turns the cell "None" into a missing value
    # and scores it as "": so an answer "None" (holding "no") to a yes/no question is wrong on the leaderboard.
    folder = tmp_path / "m"
    folder.mkdir()
    path = folder / "qa6_0k_cfg.csv"
    _write_csv(path, [("no", "None", "Is John in the kitchen?"), ("no", "no", "Is John in the kitchen?")])
    assert [r["prediction"] for r in read_harness_csv(path, "m", "qa6", "0k", missing_as_empty=True)] == [
        "",
        "no",
    ]
    assert read_harness_csv(path, "m", "qa6", "0k", missing_as_empty=False)[0]["prediction"] == "None"
    official = rescore([read_answers(folder, missing_as_empty=True)], "babilong")
    assert official["accuracy"]["0k"]["m"]["qa6"] == 50.0
    # Read as written, the substring rule would find "no" in "None".
    raw = rescore([read_answers(folder, missing_as_empty=False)], "babilong")
    assert raw["accuracy"]["0k"]["m"]["qa6"] == 100.0


def test_lm2_predictions_and_harness_folders_in_one_table(tmp_path, harness) -> None:
    tokenizer = make_tokenizer()
    rows = [_row("qa1", "0k", i, t) for i, t in enumerate(["kitchen", "garden"])]
    rows += [_row("qa7", "0k", i, t, COUNT) for i, t in enumerate(["none", "one"])]
    groups = load_rows([_write_jsonl(tmp_path / "rows.jsonl", rows)])
    candidates = [
        Candidate("lm2-small", lambda: (FakeLM(tokenizer, lambda p: " None, the kitchen."), tokenizer)),
        Candidate("vanilla", lambda: (FakeLM(tokenizer, lambda p: " kitchen"), tokenizer)),
    ]
    run = tmp_path / "run"
    by_words = evaluate(candidates, groups, run, batch_size=2)
    by_babilong = evaluate(candidates, groups, tmp_path / "run-official", batch_size=2, metric="babilong")

    # Rescoring lm2's own predictions gives the tables `lm2 eval babilong` wrote, for either metric.
    for metric, expected in (("words", by_words), ("babilong", by_babilong)):
        out = tmp_path / f"rescored-{metric}"
        assert (
            main(["eval", "rescore", "--predictions", str(run), "--metric", metric, "--out", str(out)]) == 0
        )
        assert json.loads((out / "results.json").read_text())["accuracy"] == expected["accuracy"]
    # "None, the kitchen." on qa7: words reads "none"; the substring rule also finds "one".
    assert by_words["accuracy"]["0k"]["lm2-small"]["qa7"] == 50.0
    assert by_babilong["accuracy"]["0k"]["lm2-small"]["qa7"] == 0.0

    # The harness folder joins them as one more row, named after its folder.
    out = tmp_path / "all"
    sources = f"{run / 'predictions.jsonl'},{harness}"
    args = ["eval", "rescore", "--predictions", sources, "--metric", "words", "--out", str(out)]
    assert main([*args, "--prompt-config", CFG]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["models"] == ["lm2-small", "vanilla", "Some-Model-7B"]
    assert results["accuracy"]["0k"]["vanilla"] == {"qa1": 50.0, "qa7": 0.0, "avg": 25.0}
    assert results["accuracy"]["0k"]["Some-Model-7B"] == {"qa1": 50.0, "qa7": 100.0, "avg": 75.0}
    assert results["count"]["0k"]["vanilla"] == {"qa1": 2, "qa7": 2}


def test_folders_of_the_same_name_are_named_by_path(tmp_path) -> None:
    for parent in ("a", "b"):
        folder = tmp_path / parent / "model"
        folder.mkdir(parents=True)
        _write_csv(folder / "qa1_0k_cfg.csv", [("kitchen", "kitchen", WHERE)])
    sources = [read_answers(tmp_path / p / "model") for p in ("a", "b")]
    assert rescore(sources, "words")["models"] == [
        str(tmp_path / "a" / "model"),
        str(tmp_path / "b" / "model"),
    ]


def test_metric_option_of_eval_babilong(capsys) -> None:
    base = ["eval", "babilong", "--model", "m", "--data", "d", "--out", "o"]
    assert vars(build_parser().parse_args(base))["metric"] == "words"
    assert vars(build_parser().parse_args([*base, "--metric", "babilong"]))["metric"] == "babilong"
    with pytest.raises(SystemExit):
        build_parser().parse_args([*base, "--metric", "substring"])
    assert "invalid choice: 'substring'" in capsys.readouterr().err


def test_eval_babilong_cli_with_the_official_metric_then_rescored(tmp_path) -> None:
    rows = [_row("qa1", "0k", i, t) for i, t in enumerate(["kitchen", "garden"])]
    rows += [_row("qa7", "0k", i, t, COUNT) for i, t in enumerate(["none", "two"])]
    data = _write_jsonl(tmp_path / "rows.jsonl", rows)
    model = make_checkpoint(tmp_path / "tiny")
    out = tmp_path / "out"
    args = [
        "eval",
        "babilong",
        "--model",
        str(model),
        "--data",
        str(data),
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    assert main([*args, "--metric", "babilong"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["metric"] == "babilong" and results["count"]["0k"]["tiny"] == {"qa1": 2, "qa7": 2}
    for metric in ("babilong", "words"):
        rescored = tmp_path / metric
        assert (
            main(["eval", "rescore", "--predictions", str(out), "--metric", metric, "--out", str(rescored)])
            == 0
        )
        again = json.loads((rescored / "results.json").read_text())
        assert again["metric"] == metric and again["count"] == results["count"]
        if metric == "babilong":
            assert again["accuracy"] == results["accuracy"]
