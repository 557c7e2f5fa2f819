"""Training data: BABILong / bAbI question-answer rows and language-model text shards.

Both sources are *stateless* samplers: the sequences of optimizer step ``t`` are a pure function of
(seed, curriculum stage, step within the stage), so the data position of a checkpoint is just its step
number, a resumed run draws exactly the batches an uninterrupted run would, and the global batch does
not depend on how many processes share it.

Each example becomes ``input_ids`` and ``targets`` of the same length, already shifted:
``targets[t]`` is the token that should follow ``input_ids[t]``, or -100 where no loss is taken.
"""

from __future__ import annotations

import glob
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lm2.data.prompts import answer_text, get_prompt_format
from lm2.train.config import normalize_length
from lm2.utils.io import atomic_write, atomic_write_text, iter_jsonl

IGNORE = -100


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) right-padded
    targets: torch.Tensor  # (B, T) next token, or -100 (prompt, padding)

    @property
    def num_targets(self) -> int:
        return int((self.targets != IGNORE).sum())


# ----------------------------------------------------------------------------------------------------
# BABILong rows


def _expand(sources: Sequence[str], pattern: str) -> list[Path]:
    """Files named by ``sources``: files as given, folders searched for ``pattern``, globs expanded."""
    files: list[Path] = []
    for src in sources:
        path = Path(src)
        if path.is_dir():
            found = sorted(path.rglob(pattern))
            if not found:
                raise FileNotFoundError(f"no {pattern} files in folder {path}")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            matches = sorted(Path(m) for m in glob.glob(src, recursive=True))
            if not matches:
                raise FileNotFoundError(f"data source not found: {src} (no such file, folder or glob match)")
            files.extend(matches)
    return files


def read_babilong_rows(sources: Sequence[str]) -> list[dict[str, Any]]:
    """Rows ``{input, question, target, task, length, ...}`` from JSONL files, folders or globs."""
    rows: list[dict[str, Any]] = []
    for path in _expand(sources, "*.jsonl"):
        for lineno, row in iter_jsonl(path):
            missing = [k for k in ("input", "question", "target") if k not in row]
            if missing:
                raise ValueError(f"{path}:{lineno}: row lacks {', '.join(missing)} (has {', '.join(row)})")
            rows.append(row)
    if not rows:
        raise ValueError(f"no rows in {', '.join(sources)}")
    return rows


def read_babi_rows(sources: Sequence[str], tasks: Iterable[str] | None) -> list[list[dict[str, Any]]]:
    """Rows from original bAbI files (facts only: BABILong's 0k), grouped by story so splits keep stories whole."""
    from lm2.data.babi.format import find_task_file, read_stories, task_from_filename

    stories: list[list[dict[str, Any]]] = []
    for src in sources:
        folder = Path(src)
        if not folder.is_dir():
            raise FileNotFoundError(f"bAbI folder not found: {folder}")
        if tasks:
            files = [find_task_file(folder, t, "train") for t in tasks]
        else:
            files = sorted(folder.glob("qa*_*_train.txt"))
            if not files:
                raise FileNotFoundError(f"no bAbI training files (qa<N>_<name>_train.txt) in {folder}")
        for path in files:
            task = task_from_filename(path)
            for story in read_stories(path, task):
                stories.append(
                    [
                        {
                            "input": " ".join(s.facts),
                            "question": s.question,
                            "target": s.answer,
                            "task": task,
                            "length": "0k",
                        }
                        for s in story.samples()
                    ]
                )
    return stories


class QADataset:
    """Tokenised question-answer rows; loss on the answer tokens only."""

    def __init__(
        self,
        rows: Sequence[dict[str, Any]],
        tokenizer: Any,
        prompt_format: str = "plain",
        answer_eos: bool = True,
        max_tokens: int | None = None,
    ) -> None:
        fmt = get_prompt_format(prompt_format)
        if answer_eos and tokenizer.eos_token_id is None:
            raise ValueError("data.answer_eos is true but the tokenizer has no eos_token; set it or disable")
        prompts = tokenizer([fmt(r) for r in rows], add_special_tokens=True)["input_ids"]
        answers = tokenizer([answer_text(r) for r in rows], add_special_tokens=False)["input_ids"]
        self.rows = list(rows)
        self.answer_eos = answer_eos
        self.examples: list[tuple[np.ndarray, int]] = []  # (token ids, length of the prompt)
        for i, (p, a) in enumerate(zip(prompts, answers, strict=True)):
            ids = list(p) + list(a) + ([tokenizer.eos_token_id] if answer_eos else [])
            if not a:
                raise ValueError(
                    f"row {i} ({rows[i].get('task', '?')}): the answer {rows[i]['target']!r} has no tokens"
                )
            if max_tokens is not None and len(ids) > max_tokens:
                raise ValueError(
                    f"row {i} ({rows[i].get('task', '?')}, length {rows[i].get('length', '?')}) has {len(ids)} "
                    f"tokens, more than data.max_tokens = {max_tokens}"
                )
            self.examples.append((np.asarray(ids, dtype=np.int64), len(p)))
        self.lengths = [normalize_length(r.get("length", "0k")) for r in self.rows]
        self.pad_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        )

    def __len__(self) -> int:
        return len(self.examples)

    def pool(self, lengths: Sequence[str] | None) -> np.ndarray:
        """Indices of the rows whose length label is in ``lengths`` (all rows when None)."""
        if lengths is None:
            return np.arange(len(self.examples))
        idx = np.array([i for i, length in enumerate(self.lengths) if length in lengths], dtype=np.int64)
        if len(idx) == 0:
            have = ", ".join(sorted(set(self.lengths)))
            raise ValueError(f"no training rows of length {', '.join(lengths)}; the data has lengths {have}")
        return idx

    def collate(self, indices: Sequence[int]) -> Batch:
        """Right-pad the examples; targets are the next tokens of the answer, -100 elsewhere."""
        seqs = [self.examples[int(i)] for i in indices]
        width = max(len(ids) for ids, _ in seqs) - 1
        input_ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        targets = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
        for b, (ids, n_prompt) in enumerate(seqs):
            n = len(ids) - 1
            input_ids[b, :n] = torch.from_numpy(ids[:-1])
            # position t predicts ids[t + 1]; only answer tokens (t + 1 >= n_prompt) count
            targets[b, n_prompt - 1 : n] = torch.from_numpy(ids[n_prompt:])
        return Batch(input_ids, targets)

    def answer_spans(self, batch: Batch) -> torch.Tensor:
        """(B, T) bool: the target positions that are answer text (the end-of-text token excluded)."""
        mask = batch.targets != IGNORE
        eos_positions = mask & ~torch.roll(mask, -1, dims=1)  # the last target of each row
        return mask & ~eos_positions if self.answer_eos else mask


def sample_indices(pool: np.ndarray, seed: int, stage: int, step: int, batch_size: int) -> np.ndarray:
    """The ``batch_size`` rows of step ``step`` of a stage: consecutive draws from per-epoch permutations."""
    n = len(pool)
    start = step * batch_size
    out = np.empty(batch_size, dtype=np.int64)
    for k in range(batch_size):
        epoch, pos = divmod(start + k, n)
        if k == 0 or pos == 0:
            perm = np.random.default_rng([seed, stage, epoch]).permutation(n)
        out[k] = pool[perm[pos]]
    return out


# ----------------------------------------------------------------------------------------------------
# Text shards for language-model pretraining


def _read_text(path: Path) -> str:
    text = path.read_bytes().decode("utf-8", errors="replace")
    return text.replace("\r\n", "\n")


def prepare_text(
    inputs: Sequence[str],
    tokenizer: Any,
    out: str | Path,
    shard_tokens: int = 50_000_000,
    chunk_chars: int = 1_000_000,
) -> dict[str, Any]:
    """Tokenise text files once into ``out/shard-NNNNN.bin`` (uint16/uint32) + ``out/meta.json``.

    Documents (files) are separated by the end-of-text token. ``meta.json`` is written last, so a folder
    without it is an interrupted preparation and is refused by the reader.
    """
    out = Path(out)
    if shard_tokens < 1:
        raise ValueError(f"shard_tokens must be >= 1, got {shard_tokens}")
    files = _expand(inputs, "*.txt")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos_token: documents could not be separated")
    vocab = len(tokenizer)
    dtype = np.uint16 if vocab <= 65536 else np.uint32
    shards: list[dict[str, Any]] = []
    buffer: list[np.ndarray] = []
    buffered = 0

    def flush(final: bool) -> None:
        nonlocal buffer, buffered
        data = np.concatenate(buffer) if buffer else np.empty(0, dtype=dtype)
        while len(data) >= shard_tokens or (final and len(data)):
            piece, data = data[:shard_tokens], data[shard_tokens:]
            name = f"shard-{len(shards):05d}.bin"
            atomic_write(out / name, lambda p, piece=piece: piece.tofile(p))
            shards.append({"file": name, "tokens": int(len(piece))})
        buffer, buffered = ([data] if len(data) else []), len(data)

    for path in files:
        text = _read_text(path)
        if not text.strip():
            raise ValueError(f"{path}: the text file is empty")
        for start in range(0, len(text), chunk_chars):
            ids = tokenizer(text[start : start + chunk_chars], add_special_tokens=False)["input_ids"]
            buffer.append(np.asarray(ids, dtype=dtype))
            buffered += len(ids)
        buffer.append(np.asarray([eos], dtype=dtype))
        buffered += 1
        if buffered >= shard_tokens:
            flush(final=False)
    flush(final=True)
    meta = {
        "format": "lm2-text-shards-v1",
        "dtype": np.dtype(dtype).name,
        "vocab_size": vocab,
        "eos_token_id": eos,
        "tokens": sum(s["tokens"] for s in shards),
        "shards": shards,
        "sources": [str(f) for f in files],
    }
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=2))
    return meta


class TextShards:
    """Memory-mapped token shards; random windows for training, fixed windows for validation."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{meta_path} not found: {folder} is not a prepared text folder (run `lm2 prepare` first, "
                "and let it finish)"
            )
        try:
            self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{meta_path}: corrupt ({err})") from err
        self.shards: list[np.memmap] = []
        for s in self.meta["shards"]:
            path = folder / s["file"]
            if not path.is_file():
                raise FileNotFoundError(f"text shard missing: {path}")
            mm = np.memmap(path, dtype=self.meta["dtype"], mode="r")
            if len(mm) != s["tokens"]:
                raise ValueError(
                    f"{path}: holds {len(mm)} tokens, meta.json says {s['tokens']} (corrupt shard)"
                )
            self.shards.append(mm)
        self.vocab_size = int(self.meta["vocab_size"])

    def _window(self, rng: np.random.Generator, length: int) -> np.ndarray:
        sizes = np.array([max(len(s) - length, 0) for s in self.shards], dtype=np.float64)
        if sizes.sum() == 0:
            raise ValueError(
                f"no shard holds {length} tokens; the longest has {max(len(s) for s in self.shards)}: "
                "use a shorter curriculum seq_len"
            )
        shard = rng.choice(len(self.shards), p=sizes / sizes.sum())
        start = int(rng.integers(0, int(sizes[shard])))
        return np.asarray(self.shards[shard][start : start + length], dtype=np.int64)

    def training_batch(self, seed: int, stage: int, step: int, rows: Sequence[int], seq_len: int) -> Batch:
        """Rows ``rows`` of the global batch of ``step``: each a random window of ``seq_len + 1`` tokens."""
        windows = [self._window(np.random.default_rng([seed, stage, step, r]), seq_len + 1) for r in rows]
        data = torch.from_numpy(np.stack(windows))
        return Batch(data[:, :-1].contiguous(), data[:, 1:].contiguous())

    def validation_batches(self, seq_len: int, count: int, batch_size: int) -> list[Batch]:
        """The first ``count`` non-overlapping windows of the shards, in order."""
        windows: list[np.ndarray] = []
        for shard in self.shards:
            for start in range(0, len(shard) - seq_len, seq_len + 1):
                if len(windows) == count:
                    break
                windows.append(np.asarray(shard[start : start + seq_len + 1], dtype=np.int64))
        if not windows:
            raise ValueError(f"the validation text holds no window of {seq_len + 1} tokens")
        out = []
        for i in range(0, len(windows), batch_size):
            data = torch.from_numpy(np.stack(windows[i : i + batch_size]))
            out.append(Batch(data[:, :-1].contiguous(), data[:, 1:].contiguous()))
        return out


def split_stories(stories: list[list[dict[str, Any]]], fraction: float) -> tuple[list[dict], list[dict]]:
    """(train rows, valid rows): the last ``fraction`` of the stories are held out."""
    n_valid = math.floor(len(stories) * fraction)
    train = [r for s in stories[: len(stories) - n_valid] for r in s]
    valid = [r for s in stories[len(stories) - n_valid :] for r in s]
    return train, valid
