"""Running text for language-model training and perplexity: text files, folders and globs of them, or the
labelled synthetic haystack (``synthetic`` or ``synthetic:SEED``), a zero-setup stand-in for books."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from lm2.data.background import SYNTHETIC, synthetic_background
from lm2.utils.io import expand_files

SYNTHETIC_SENTENCES = 20_000  # about 400,000 words: the synthetic text a ``synthetic`` source stands for


def text_sources(specs: Sequence[str | os.PathLike], pattern: str = "*.txt") -> list[str | Path]:
    """The sources ``specs`` name, in order: files as given, folders searched for ``pattern``, globs expanded,
    and ``synthetic[:SEED]`` kept as it is."""
    out: list[str | Path] = []
    for spec in specs:
        if _synthetic_seed(spec) is not None:
            out.append(str(spec))
        else:
            out.extend(expand_files([str(spec)], pattern))
    return out


def read_text_source(source: str | os.PathLike) -> str:
    """The text of one source (a UTF-8 file, line ends normalised; or the synthetic haystack of a seed).

    A file holding binary data (NUL bytes) is refused by name: tokenising an image or an archive as text
    would train or score on noise without a word.
    """
    seed = _synthetic_seed(source)
    if seed is not None:
        return " ".join(synthetic_background(SYNTHETIC_SENTENCES, seed).sentences)
    path = Path(source)
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise FileNotFoundError(f"text file not found: {path}") from err
    if b"\x00" in data[:65536]:
        raise ValueError(f"{path}: not a text file (it holds binary data); give UTF-8 text files")
    return data.decode("utf-8", errors="replace").replace("\r\n", "\n")


def _synthetic_seed(spec: str | os.PathLike) -> int | None:
    """The seed of a ``synthetic`` / ``synthetic:SEED`` source, None for anything else."""
    text = str(spec)
    if text == SYNTHETIC:
        return 0
    name, sep, seed = text.partition(":")
    if name == SYNTHETIC and sep:
        if not seed.isdigit():
            raise ValueError(f"bad text source {text!r}: give synthetic or synthetic:SEED (an integer seed)")
        return int(seed)
    return None
