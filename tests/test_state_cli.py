"""``lm2 read`` and ``lm2 ask`` through the command line on tiny saved models with a word tokenizer: the
answers equal those of one pass over the whole prompt (what ``lm2 eval babilong`` generates), and every
bad input is one line and exit code 2."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from lm2 import LM2Config, LM2ForCausalLM
from lm2.cli import main
from lm2.data.prompts import format_plain, plain_context
from lm2.data.tokenizer import save_tokenizer, train_word_tokenizer
from lm2.eval.babilong import generate_answers
from lm2.eval.model_folder import load_model_and_tokenizer
from tests.conftest import TINY_BACKBONE
from tests.test_eval_fixtures import make_checkpoint

STORY = (
    "Mary moved to the bathroom. John went to the hallway. Daniel travelled to the office. "
    "Sandra journeyed to the garden. Mary went back to the kitchen. John moved to the bedroom."
)
QUESTIONS = ["Where is Mary?", "Where is John?", "Where is Sandra?"]
WINDOW = 16


def make_model(path: Path, seed: int = 0, **overrides) -> Path:
    """A random tiny LM2 (window 16, segments of 8) and a word tokenizer of the story's words, saved."""
    tokenizer = train_word_tokenizer([STORY, " ".join(QUESTIONS), "<context> </context> Question: Answer:"])
    torch.manual_seed(seed)
    fields = dict(memory_slots=4, memory_heads=2, segment_length=8, attention_window=WINDOW)
    config = LM2Config(
        **TINY_BACKBONE, **{**fields, **overrides}, vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    model = LM2ForCausalLM(config)
    with torch.no_grad():  # well-separated greedy choices
        model.lm_head.weight.mul_(20.0)
    model.save_pretrained(path)
    save_tokenizer(tokenizer, path)
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("state-cli")
    (root / "story.txt").write_text(STORY * 3, encoding="utf-8")
    return {
        "root": root,
        "model": make_model(root / "model"),
        "reseeded": make_model(root / "reseeded", seed=1),  # same config, other weights
        "slots": make_model(root / "slots", memory_slots=6),
        "vanilla": make_model(root / "vanilla", use_memory=False),
        "story": root / "story.txt",
    }


def run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main([*args, "--device", "cpu"])
    out, err = capsys.readouterr()
    return code, out, err


def read_state(capsys, folders, out: Path, *extra: str) -> Path:
    code, stdout, _ = run(capsys, "read", "--model", str(folders["model"]), "--input", str(folders["story"]),
                          "--out", str(out), *extra)  # fmt: skip
    assert code == 0
    assert stdout.startswith("read ") and "MiB on disk (lm2 state)" in stdout
    return out


def test_read_then_ask_equals_one_pass_over_the_prompt(capsys, folders, tmp_path: Path) -> None:
    state = read_state(capsys, folders, tmp_path / "state", "--chunk-tokens", "7")
    questions = tmp_path / "questions.txt"
    questions.write_text("\n".join(QUESTIONS) + "\n\n", encoding="utf-8")
    code, out, _ = run(capsys, "ask", "--model", str(folders["model"]), "--state", str(state),
                       "--questions", str(questions), "--json")  # fmt: skip
    assert code == 0
    answers = [json.loads(line) for line in out.splitlines()]
    assert [a["question"] for a in answers] == QUESTIONS

    model, tokenizer = load_model_and_tokenizer(folders["model"], "cpu")
    story = folders["story"].read_text(encoding="utf-8")
    want = generate_answers(
        model, tokenizer, [format_plain({"input": story, "question": q}) for q in QUESTIONS]
    )
    assert [a["answer"] for a in answers] == want
    assert len(set(want)) > 1  # the questions get different answers: each was asked of a fresh copy

    # One question as text: the same answer as in the batch of questions.
    code, out, _ = run(capsys, "ask", "--model", str(folders["model"]), "--state", str(state),
                       "--question", QUESTIONS[1])  # fmt: skip
    assert code == 0 and out == want[1].strip() + "\n"


def test_reading_stdin_or_a_folder_gives_the_same_state(capsys, folders, tmp_path: Path, monkeypatch) -> None:
    from_file = read_state(capsys, folders, tmp_path / "file")
    story = folders["story"].read_text(encoding="utf-8")
    monkeypatch.setattr("sys.stdin", io.StringIO(story))
    code, _, _ = run(
        capsys, "read", "--model", str(folders["model"]), "--input", "-", "--out", str(tmp_path / "stdin")
    )
    assert code == 0
    parts = tmp_path / "parts"
    parts.mkdir()
    (parts / "b.txt").write_text(STORY, encoding="utf-8")
    (parts / "a.txt").write_text(STORY, encoding="utf-8")
    (parts / "notes.md").write_text("not read", encoding="utf-8")
    code, _, err = run(
        capsys,
        "read",
        "--model",
        str(folders["model"]),
        "--input",
        str(parts),
        "--out",
        str(tmp_path / "dir"),
    )
    assert code == 0 and "tokens/s" in err

    def sha(folder: Path) -> str:
        return json.loads((folder / "manifest.json").read_text())["sha256"]

    assert sha(tmp_path / "stdin") == sha(from_file)
    _, tokenizer = load_model_and_tokenizer(folders["model"], "cpu")
    want = len(tokenizer(plain_context(STORY + "\n\n" + STORY))["input_ids"])  # a.txt, b.txt; not notes.md
    assert json.loads((tmp_path / "dir" / "manifest.json").read_text())["tokens"] == want


def one_line_error(capsys, *args: str) -> str:
    code, out, err = run(capsys, *args)
    assert code == 2, (out, err)
    # One error line, the last (transformers may draw its weight-loading progress bar before it); no traceback.
    last = err.strip().splitlines()[-1]
    assert err.count("lm2: error: ") == 1 and last.startswith("lm2: error: ") and "Traceback" not in err, err
    return last


def test_bad_inputs_are_one_line_and_exit_2(capsys, folders, tmp_path: Path) -> None:
    state = read_state(capsys, folders, tmp_path / "state")
    model = str(folders["model"])
    ask = ["ask", "--model", model, "--state", str(state), "--question", "Where is Mary?"]

    assert "memory_slots: state 4, this model 6" in one_line_error(
        capsys, *ask, "--model", str(folders["slots"])
    )
    assert "other weights" in one_line_error(capsys, *ask, "--model", str(folders["reseeded"]))
    assert "family lm2; this model's family is vanilla" in one_line_error(
        capsys, *ask, "--model", str(folders["vanilla"])
    )
    assert "read in float32; this model runs in bfloat16" in one_line_error(
        capsys, *ask, "--dtype", "bfloat16"
    )
    long = " ".join(["Where is Mary?"] * 5)
    assert "longer than the model's attention window of 16 tokens" in one_line_error(capsys, *ask[:-1], long)
    assert "exactly one of --question" in one_line_error(
        capsys, "ask", "--model", model, "--state", str(state)
    )
    assert "no such file" in one_line_error(capsys, *ask[:-2], "--questions", str(tmp_path / "none.txt"))
    assert "state folder not found" in one_line_error(capsys, *ask[:4], str(tmp_path / "none"), *ask[5:])
    assert "model folder not found" in one_line_error(capsys, *ask[:2], str(tmp_path / "none"), *ask[3:])

    data = (state / "state.safetensors").read_bytes()
    flipped = bytearray(data)
    flipped[-3] ^= 0x10
    (state / "state.safetensors").write_bytes(bytes(flipped))
    assert "SHA-256 differs" in one_line_error(capsys, *ask)
    (state / "state.safetensors").write_bytes(data[: len(data) // 2])
    assert "cut short" in one_line_error(capsys, *ask)
    (state / "manifest.json").unlink()
    assert "manifest.json: missing" in one_line_error(capsys, *ask)

    read = ["read", "--model", model, "--out", str(tmp_path / "new")]
    empty = tmp_path / "empty.txt"
    empty.write_text(" \n", encoding="utf-8")
    assert "the document is empty" in one_line_error(capsys, *read, "--input", str(empty))
    assert "no such file or folder" in one_line_error(capsys, *read, "--input", str(tmp_path / "none.txt"))
    assert "holds no .txt files" in one_line_error(capsys, *read, "--input", str(tmp_path / "state"))
    story = str(folders["story"])
    assert "--chunk-tokens must be at least 1" in one_line_error(
        capsys, *read, "--input", story, "--chunk-tokens", "0"
    )
    llama = make_checkpoint(tmp_path / "llama")  # transformers' Llama: no state of the kinds lm2 saves
    assert "needs an LM2, vanilla LM2 or RMT model; this one has model_type 'llama'" in one_line_error(
        capsys, "read", "--model", str(llama), "--input", story, "--out", str(tmp_path / "new")
    )
