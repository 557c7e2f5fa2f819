import json
import re

import pytest

from lm2.cli import main
from lm2.data.babi.format import read_stories
from lm2.data.tokenizer import load_tokenizer
from lm2.utils.io import read_jsonl
from tests.conftest import shared_path
from tests.test_tokenizer import train_small


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return train_small(tmp_path_factory.mktemp("tok"))


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("command", ["babi", "babilong", "tokenizer"])
def test_help(capsys, command):
    with pytest.raises(SystemExit) as exit_:
        main(["data", command, "--help"])
    assert exit_.value.code == 0
    assert f"usage: lm2 data {command}" in capsys.readouterr().out


def test_babi_writes_original_format_files(tmp_path, capsys):
    code, out, _ = run(
        capsys, "data", "babi", "--tasks", "qa1,qa6", "--num-stories", 7, "--seed", 3, "--out", tmp_path
    )
    assert code == 0
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["qa1_single-supporting-fact_train.txt", "qa6_yes-no-questions_train.txt"]
    stories = list(read_stories(tmp_path / files[0]))
    assert len(stories) == 7 and all(s.task == "qa1" for s in stories)
    before = (tmp_path / files[0]).read_bytes()
    run(capsys, "data", "babi", "--tasks", "qa1", "--num-stories", 7, "--seed", 3, "--out", tmp_path)
    assert (tmp_path / files[0]).read_bytes() == before


def test_babilong_from_babi_files_and_generator(tmp_path, capsys, tok_dir):
    babi = shared_path("babi", "en-train")
    out = tmp_path / "set"
    book = tmp_path / "shakespeare.txt"  # a slice of a real book keeps the test fast
    book.write_text(shared_path("background", "tinyshakespeare.txt").read_text()[:60_000])
    code, _, err = run(capsys, "data", "babilong", "--tasks", "qa1,qa4", "--lengths", "0k,1k", "--samples", 3,
                       "--background", book, "--tokenizer", tok_dir,
                       "--seed", 1, "--out", out, "--babi", babi)  # fmt: skip
    assert code == 0, err
    rows = list(read_jsonl(out / "1k" / "qa4.jsonl"))
    assert len(rows) == 3 and rows[0]["background"] == "files:shakespeare.txt"
    assert rows[0]["facts_source"] == f"babi:{babi}"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"] == ["0k/qa1.jsonl", "0k/qa4.jsonl", "1k/qa1.jsonl", "1k/qa4.jsonl"]

    gen = tmp_path / "gen"
    code, _, err = run(capsys, "data", "babilong", "--tasks", "qa2", "--lengths", "2k", "--samples", 2,
                       "--tokenizer", tok_dir, "--out", gen)  # fmt: skip
    assert code == 0, err
    rows = list(read_jsonl(gen / "2k" / "qa2.jsonl"))
    assert [r["background"] for r in rows] == ["synthetic", "synthetic"]
    assert rows[0]["facts_source"].startswith("generator")


def test_a_book_shorter_than_the_length_is_repeated_and_the_command_says_so(tmp_path, capsys, tok_dir):
    short = tmp_path / "short.txt"
    short.write_text("Only this one sentence is here to serve as the background for everything.")
    out = tmp_path / "set"
    with pytest.warns(UserWarning, match="rows of length 1k need more, so their background repeats it"):
        code, _, err = run(capsys, "data", "babilong", "--tasks", "qa1", "--lengths", "1k", "--samples", 2,
                           "--tokenizer", tok_dir, "--background", short, "--out", out)  # fmt: skip
    assert code == 0, err
    assert json.loads((out / "manifest.json").read_text())["background_repeats"]["1k"] > 10
    assert all(abs(r["input_tokens"] - 1000) <= 2 for r in read_jsonl(out / "1k" / "qa1.jsonl"))


def test_tokenizer_command(tmp_path, capsys):
    out = tmp_path / "tok"
    books = tmp_path / "book.txt"
    books.write_bytes(b"A short book about caf\xe9s.\r\nIt has three sentences. The end.\r\n" * 20)
    code, stdout, err = run(capsys, "data", "tokenizer", "--out", out, "--vocab-size", 400, "--tasks", "qa1,qa2",
                            "--num-stories", 50, "--background", books)  # fmt: skip
    assert code == 0, err
    tok = load_tokenizer(out)
    assert len(tok) == 400 and "files:book.txt" in stdout
    assert tok.decode(tok("cafés")["input_ids"]) == "cafés"
    text = "<context>\nMary went to the kitchen.\n</context>\nQuestion: Where is Mary?\nAnswer: kitchen"
    assert tok.decode(tok(text)["input_ids"]) == text


def bad_inputs(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    binary = tmp_path / "blob.txt"
    binary.write_bytes(bytes(range(256)) * 4)
    babi = tmp_path / "babi"
    babi.mkdir()
    (babi / "qa1_single-supporting-fact_train.txt").write_text("1 Mary went home.\n2 Where is Mary?\thome\n")
    return [
        (["--tasks", "qa1,qa99"], "unknown bAbI task 'qa99'"),
        (["--lengths", "1k,-2k"], "bad length '-2k'"),
        (["--lengths", "1k,999999k"], "over the limit"),
        (["--lengths", "200", "--prompt-reserve", "300"], "no room for the input"),
        (["--samples", 0], "--samples must be between 1"),
        (["--background", empty], "empty.txt: background file is empty"),
        (["--background", binary], "blob.txt: looks like a binary file"),
        (["--background", tmp_path / "missing.txt"], "not found"),
        (["--babi", babi], r"qa1_single-supporting-fact_train.txt:2: a question line needs"),
    ]


def test_bad_input_gives_one_clear_message_and_writes_nothing(tmp_path, capsys, tok_dir):
    for extra, message in bad_inputs(tmp_path):
        out = tmp_path / "out"
        argv = ["data", "babilong", "--tasks", "qa1", "--lengths", "1k", "--samples", 2, "--tokenizer", tok_dir,
                "--out", out, *extra]  # fmt: skip
        code, _, err = run(capsys, *argv)
        assert code == 2, (extra, err)
        assert err.count("lm2: error: ") == 1 and err.strip().splitlines()[-1].startswith("lm2: error: "), err
        assert re.search(message, err), (message, err)
        assert not out.exists(), extra


def test_missing_tokenizer_and_bad_babi_arguments(tmp_path, capsys):
    code, _, err = run(capsys, "data", "babilong", "--tokenizer", tmp_path / "none", "--out", tmp_path / "o")
    assert code == 2 and "tokenizer folder not found" in err
    code, _, err = run(capsys, "data", "babi", "--tasks", "qa1", "--num-stories", -3, "--out", tmp_path / "o")
    assert code == 2 and "--num-stories must be between 1" in err
    assert not (tmp_path / "o").exists()


def test_word_tokenizer_command(tmp_path, capsys):
    out = tmp_path / "word"
    code, stdout, err = run(capsys, "data", "tokenizer", "--kind", "word", "--out", out, "--tasks", "qa1",
                            "--num-stories", 50)  # fmt: skip
    assert code == 0, err
    tok = load_tokenizer(out)
    assert "word-level vocabulary" in stdout and f"a {len(tok)}-token" in stdout and len(tok) < 400
    text = "<context>\nMary went to the kitchen.\n</context>\nQuestion: Where is Mary?\nAnswer: kitchen"
    assert tok.unk_token_id not in tok(text)["input_ids"]
    code, _, err = run(capsys, "data", "tokenizer", "--kind", "word", "--out", out, "--min-frequency", 0)
    assert code == 2 and "--min-frequency must be at least 1" in err


def test_babilong_fact_placement_options(tmp_path, capsys, tok_dir):
    out = tmp_path / "far"
    code, _, err = run(capsys, "data", "babilong", "--tasks", "qa1", "--lengths", "1k", "--samples", 3,
                       "--tokenizer", tok_dir, "--fact-distance", 600, "--out", out)  # fmt: skip
    assert code == 0, err
    rows = list(read_jsonl(out / "1k" / "qa1.jsonl"))
    assert all(p["distance"] >= 600 for r in rows for p in r["fact_positions"][: max(r["supporting"]) + 1])
    assert all(abs(r["input_tokens"] - 1000) <= 2 for r in rows)  # 1k = an input of 1000 tokens
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["min_fact_distance"] == 600 and manifest["fact_placement"] == "scattered"
    code, _, err = run(capsys, "data", "babilong", "--tasks", "qa1", "--lengths", "0k,1k", "--samples", 3,
                       "--tokenizer", tok_dir, "--fact-distance", 600, "--out", tmp_path / "bad")  # fmt: skip
    assert code == 2 and "length 0k holds no background" in err and not (tmp_path / "bad").exists()
    code, _, err = run(capsys, "data", "babilong", "--tasks", "qa1", "--lengths", "1k", "--samples", 3,
                       "--tokenizer", tok_dir, "--fact-placement", "first", "--out", tmp_path / "first")  # fmt: skip
    assert code == 0, err
    row = next(read_jsonl(tmp_path / "first" / "1k" / "qa1.jsonl"))
    assert row["input"].startswith(" ".join(row["facts"]))
