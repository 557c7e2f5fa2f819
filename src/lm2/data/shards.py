"""Running text as memory-mapped token shards, for language-model training (``data.kind: text``): the
builder behind ``lm2 prepare`` and the reader that samples windows from the shards.

``OUT/shard-NNNNN.bin`` (uint16 or uint32 token ids, documents separated by the end-of-text token) and
``OUT/meta.json``, written last, so a folder without it is an interrupted preparation and is refused.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lm2.data.batch import Batch
from lm2.data.texts import read_text_source, text_sources
from lm2.utils.io import atomic_write, atomic_write_text, remove_temporaries


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
    files = text_sources(inputs)
    remove_temporaries(out)  # a shard half-written by a killed run is never read, but would stay forever
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
        text = read_text_source(path)
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


