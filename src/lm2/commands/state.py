"""``lm2 read`` and ``lm2 ask``: read a document once into a saved state, then answer questions from it."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Literal

from lm2.utils.io import check_out_folder

Layout = Literal["plain", "raw"]


def read(
    model: str,
    input: str,
    out: str,
    chunk_tokens: int = 4096,
    prompt: Layout = "plain",
    device: str = "auto",
    dtype: Literal["float32", "bfloat16", "float16"] = "float32",
) -> None:
    """Read a document once and save the model's state after it, to ask questions from with `lm2 ask`.

    The document is fed in chunks with the model's state carried between them (the same result as one
    pass; with an attention window or RMT, memory flat in the document's length). A progress line goes to
    stderr; at the end the tokens read and the state's size on disk are printed. LM2's and RMT's states
    have the same size whatever the document's length; a vanilla model's state is its attention cache
    (window-sized with a window, the whole document's keys and values without one).

    Args:
        model: a run folder of `lm2 train --out` (its newest checkpoint) or a model folder (save_pretrained).
        input: the document: a text file, a folder of .txt files (read in sorted order, joined by blank
            lines), or - for stdin.
        out: folder for the state (state.safetensors and manifest.json).
        chunk_tokens: tokens fed per forward pass.
        prompt: plain (the document as the context of the plain BABILong layout; `lm2 ask` then appends
            "Question: Q\\nAnswer:") or raw (the text as it is; questions are appended as given).
        device: auto, cpu, cuda or cuda:N.
        dtype: float32, bfloat16 or float16 (`lm2 ask` must load the model in the same).
    """
    from lm2.data.prompts import plain_context
    from lm2.eval.model_folder import load_model_and_tokenizer, resolve_device, weights_sha256
    from lm2.run_folder import resolve_model_dir
    from lm2.state import read_text

    resolve_device(device)  # a wrong --device is one line before any work
    if chunk_tokens < 1:
        raise ValueError(f"--chunk-tokens must be at least 1, got {chunk_tokens}")
    target = check_out_folder(out, "state.safetensors and manifest.json")
    text = _read_document(input)
    if not text.strip():
        raise ValueError(f"--input {input}: the document is empty; give a text to read")
    model_dir = resolve_model_dir(model)
    lm, tokenizer = load_model_and_tokenizer(model_dir, device, dtype)
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        rate = done / max(time.perf_counter() - start, 1e-9)
        end = "\n" if done == total else ""
        print(
            f"\rlm2 read: {done:,} / {total:,} tokens, {rate:,.0f} tokens/s",
            end=end,
            file=sys.stderr,
            flush=True,
        )

    state = read_text(
        lm, tokenizer, plain_context(text) if prompt == "plain" else text, chunk_tokens, progress
    )
    state.info.update(prompt=prompt, model=str(model_dir), weights_sha256=weights_sha256(model_dir))
    state.save(target)
    size = sum(f.stat().st_size for f in target.iterdir() if f.is_file())
    print(
        f"read {state.tokens:,} tokens into {target}: {size / 2**20:,.2f} MiB on disk ({state.family} state)"
    )


def ask(
    model: str,
    state: str,
    question: str | None = None,
    questions: str | None = None,
    max_new_tokens: int = 20,
    json: bool = False,
    device: str = "auto",
    dtype: Literal["float32", "bfloat16", "float16"] = "float32",
) -> None:
    """Answer questions about a document read by `lm2 read`, from its saved state (greedy decoding).

    The state is loaded once; each question is answered from a fresh copy of it, so answers never depend
    on the questions before them. A state read by another model (family, config or weights), in another
    dtype, or whose files changed after the save is refused.

    Args:
        model: the model that read the document: its run folder or model folder.
        state: the folder `lm2 read --out` wrote.
        question: one question.
        questions: a file of questions, one per line (blank lines skipped), or - for stdin.
        max_new_tokens: the longest answer, in tokens.
        json: print one JSON object per line, {"question": ..., "answer": ...}, instead of the answers alone.
        device: auto, cpu, cuda or cuda:N.
        dtype: float32, bfloat16 or float16: the one the state was read in.
    """
    from json import dumps

    from lm2.data.prompts import plain_question
    from lm2.eval.model_folder import load_model_and_tokenizer, resolve_device, weights_sha256
    from lm2.run_folder import resolve_model_dir
    from lm2.state import ModelState, ask_text, check_question, read_manifest

    resolve_device(device)
    if (question is None) == (questions is None):
        raise ValueError("give exactly one of --question Q or --questions FILE")
    if max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    asked = [question] if question is not None else _read_questions(questions)
    if not asked or not all(q.strip() for q in asked):
        raise ValueError("empty question: give a question to answer")
    read_manifest(state)  # a missing or foreign state folder is one line before the model loads
    model_dir = resolve_model_dir(model)
    lm, tokenizer = load_model_and_tokenizer(model_dir, device, dtype)
    loaded = ModelState.load(state, lm)  # refuses another family, config or dtype, and a changed file
    recorded = loaded.info.get("weights_sha256")
    if recorded is not None and recorded != weights_sha256(model_dir):
        raise ValueError(
            f"{state} was read by a model with other weights than {model_dir} (the same config, e.g. another "
            "checkpoint of the run): give the model that read it, or read the document again with this one"
        )
    layout = loaded.info.get("prompt", "raw")
    prompts = [plain_question(q) if layout == "plain" else q for q in asked]
    for q, text in zip(asked, prompts, strict=True):  # every question checked before any is answered
        try:
            check_question(lm, len(tokenizer(text, add_special_tokens=False)["input_ids"]))
        except ValueError as err:
            raise ValueError(f"question {q!r}: {err}") from None
    for q, text in zip(asked, prompts, strict=True):
        answer = ask_text(lm, tokenizer, loaded, text, max_new_tokens)
        print(
            dumps({"question": q, "answer": answer}, ensure_ascii=False) if json else answer.strip(),
            flush=True,
        )


def _read_document(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == ".txt" and p.is_file())
        if not files:
            raise FileNotFoundError(f"--input {path}: the folder holds no .txt files")
        return "\n\n".join(f.read_text(encoding="utf-8") for f in files)
    if not path.is_file():
        raise FileNotFoundError(
            f"--input {path}: no such file or folder (give a text file, a folder of .txt, or -)"
        )
    return path.read_text(encoding="utf-8")


def _read_questions(source: str) -> list[str]:
    if source == "-":
        text = sys.stdin.read()
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(
                f"--questions {path}: no such file (one question per line, or - for stdin)"
            )
        text = path.read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]
