"""Background ("haystack") text for BABILong: sentences of book text that the facts are hidden between.

Three sources, each a :class:`Background` (a named list of sentences):

* ``files``     — local text files or folders of ``.txt`` files. Project Gutenberg headers and licence
                  footers are stripped, CRLF is normalised, and bytes that are not valid UTF-8 are read as
                  Latin-1 (old Gutenberg files and stray bytes in otherwise UTF-8 files).
* ``pg19``      — the PG19 books (what the BABILong authors use), from a local folder (PG19's own
                  ``*.txt`` layout or one the Hugging Face ``datasets`` library wrote) or the hub. Needs the
                  optional extra ``pip install 'lm2[pg19]'``; imported only when used.
* ``synthetic`` — a built-in, seeded generator of plain descriptive sentences: the zero-setup offline
                  default. Its name ("synthetic") is written into every row built from it, so results on it
                  are never mistaken for results on real book text. It avoids every bAbI name, place and
                  object so it cannot contradict or answer a question.
"""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lm2.utils.text import comma_list

SYNTHETIC = "synthetic"


class MissingDependency(ImportError, ValueError):
    """An optional package a source needs is not installed (a ValueError too, so the CLI reports it)."""


@dataclass
class Background:
    """Sentences in reading order, and a label that says where they came from (written into every row)."""

    name: str
    sentences: list[str]
    documents: list[str] = field(default_factory=list)  # one entry per file / book, for the manifest

    def __post_init__(self) -> None:
        if not self.sentences:
            raise ValueError(f"background {self.name!r} has no sentences")


# --- decoding and cleaning --------------------------------------------------------------------------


def _latin1_fallback(err: UnicodeError) -> tuple[str, int]:
    # A byte that is not valid UTF-8 is almost always Latin-1/cp1252 text (old Gutenberg files).
    assert isinstance(err, UnicodeDecodeError)
    return err.object[err.start : err.end].decode("latin-1"), err.end


codecs.register_error("lm2_latin1_fallback", _latin1_fallback)


def decode_text(data: bytes, source: str = "<bytes>") -> str:
    """UTF-8 text from ``data``: invalid bytes read as Latin-1, CRLF/CR turned into LF, BOM dropped.

    Raises ``ValueError`` for empty or binary input (NUL bytes or many control characters).
    """
    if not data.strip():
        raise ValueError(f"{source}: background file is empty")
    head = data[:65536]
    controls = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13))
    if b"\x00" in head or controls > len(head) // 100:
        raise ValueError(f"{source}: looks like a binary file, not text (found NUL or control bytes)")
    text = data.decode("utf-8", errors="lm2_latin1_fallback")
    return text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


_GUTENBERG_START = re.compile(
    r"^\s*\*{3}\s*START OF (?:THE|THIS) PROJECT GUTENBERG[^\n]*$"
    r"|^\s*\*END\*THE SMALL PRINT![^\n]*$",
    re.IGNORECASE | re.MULTILINE,
)
_GUTENBERG_END = re.compile(
    r"^\s*\*{3}\s*END OF (?:THE|THIS) PROJECT GUTENBERG[^\n]*$"
    r"|^\s*End of (?:the )?Project Gutenberg[^\n]*$",
    re.IGNORECASE | re.MULTILINE,
)
# Credits that follow the start marker: "Produced by ...", "E-text prepared by ...", up to a blank line.
_PRODUCER = re.compile(r"^\s*(?:Produced by|E-?text prepared by|Transcribed (?:from|by))[^\n]*(?:\n[^\n]+)*")


def strip_gutenberg(text: str) -> str:
    """The body of a Project Gutenberg file: without the header, the producer credits and the licence.

    Text without Gutenberg markers is returned unchanged.
    """
    start = _GUTENBERG_START.search(text)
    if start:
        text = text[start.end() :]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    if start:
        text = _PRODUCER.sub("", text.lstrip("\n"), count=1)
    return text.strip()


# --- sentence splitting -----------------------------------------------------------------------------

# Abbreviations after which a full stop does not end a sentence.
_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "st", "sr", "jr", "mt", "prof", "rev", "gen", "col", "capt", "lt", "sgt",
    "vol", "ch", "fig", "vs", "etc", "esq", "hon", "messrs", "mme", "mlle", "ibid", "i.e", "e.g",
}  # fmt: skip
# A sentence ends at . ! or ? (plus closing quotes/brackets) followed by space and an opening capital,
# digit or quote.
_BOUNDARY = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+(?=[\"'“‘(\[]*[A-Z0-9])")
_SPACES = re.compile(r"\s+")


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences: paragraphs at blank lines, then at sentence-final punctuation.

    Line breaks inside a paragraph become spaces; whitespace is collapsed. Abbreviations such as "Mr."
    and single initials ("J. Smith") do not end a sentence.
    """
    sentences: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = _SPACES.sub(" ", paragraph).strip()
        if not paragraph:
            continue
        start = 0
        for m in _BOUNDARY.finditer(paragraph):
            candidate = paragraph[start : m.start()].rstrip("\"'”’)]")
            last_word = candidate.rsplit(" ", 1)[-1].lower().rstrip(".")
            if candidate.endswith(".") and (last_word in _ABBREVIATIONS or len(last_word) == 1):
                continue
            sentences.append(paragraph[start : m.start()] + m.group(0).strip())
            start = m.end()
        tail = paragraph[start:].strip()
        if tail:
            sentences.append(tail)
    return sentences


# --- sources ----------------------------------------------------------------------------------------


def _text_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise ValueError(f"{path}: folder has no .txt files to use as background")
        return files
    if not path.exists():
        raise FileNotFoundError(f"background file or folder not found: {path}")
    return [path]


def read_text_file(path: str | os.PathLike) -> str:
    """The cleaned text of one local file (decoded, CRLF normalised, Gutenberg header/footer stripped)."""
    path = Path(path)
    text = strip_gutenberg(decode_text(path.read_bytes(), str(path)))
    if not text.strip():
        raise ValueError(f"{path}: no text left after removing the Project Gutenberg header and licence")
    return text


def file_background(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> Background:
    """Background from local text files and/or folders of ``.txt`` files (read in sorted order)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = [f for p in paths for f in _text_files(Path(p))]
    sentences: list[str] = []
    for f in files:
        found = split_sentences(read_text_file(f))
        if not found:
            raise ValueError(f"{f}: no sentences found in the text")
        sentences.extend(found)
    return Background(name="files:" + ",".join(f.name for f in files), sentences=sentences,
                      documents=[str(f) for f in files])  # fmt: skip


def _require_datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise MissingDependency(
            "this source needs the Hugging Face 'datasets' package, which is not installed: "
            "pip install 'lm2[pg19]' (or pip install datasets)"
        ) from None
    return datasets


def pg19_background(
    source: str | os.PathLike | None = None, split: str = "test", max_books: int | None = None
) -> Background:
    """Background from PG19 books.

    Args:
        source: a local folder — PG19's own layout (``<split>/*.txt`` or a folder of ``.txt`` books), or
            one written by ``datasets`` (``save_to_disk``, parquet or json files with a ``text`` column) —
            or ``None`` to download ``deepmind/pg19`` from the hub (needs ``datasets`` and network).
        split: which PG19 split to read (``train``, ``validation``, ``test``).
        max_books: read at most this many books (in order), to bound time and memory.
    """
    texts: list[tuple[str, str]] = []  # (book id, text)
    if source is not None and Path(source).is_dir():
        root = Path(source)
        txt_root = root / split if (root / split).is_dir() else root
        txt_files = sorted(txt_root.glob("*.txt"))
        if txt_files:
            for f in txt_files[:max_books]:
                texts.append((f.stem, read_text_file(f)))
        else:
            for book_id, text in _iter_dataset_texts(root, split, max_books):
                texts.append((book_id, strip_gutenberg(text.replace("\r\n", "\n"))))
        label = f"pg19:{root}:{split}"
    elif source is not None:
        raise FileNotFoundError(f"PG19 folder not found: {source}")
    else:
        datasets = _require_datasets()
        try:
            ds = datasets.load_dataset("deepmind/pg19", split=split, streaming=True)
            for i, row in enumerate(ds):
                if max_books is not None and i >= max_books:
                    break
                texts.append((str(row.get("short_book_title", i)), row["text"]))
        except (OSError, ConnectionError, ValueError, RuntimeError) as err:  # offline, gated, renamed ...
            raise ValueError(
                f"could not read deepmind/pg19 from the hub ({type(err).__name__}: {err}); download PG19 and "
                f"pass --background pg19:FOLDER"
            ) from err
        label = f"pg19:hub:{split}"
    if not texts:
        raise ValueError(f"no PG19 books found in {source or 'the hub'} (split {split!r})")
    sentences = [s for _, text in texts for s in split_sentences(text)]
    return Background(name=label, sentences=sentences, documents=[b for b, _ in texts])


def _iter_dataset_texts(root: Path, split: str, max_books: int | None) -> Iterable[tuple[str, str]]:
    """Book texts from a folder that ``datasets`` wrote (save_to_disk, parquet or json)."""
    datasets = _require_datasets()
    if (root / "dataset_dict.json").exists() or (root / "state.json").exists():
        ds = datasets.load_from_disk(str(root))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise ValueError(f"{root}: no split {split!r}; found {', '.join(ds)}")
            ds = ds[split]
    else:
        files = sorted(
            str(p) for p in root.rglob("*") if p.suffix in (".parquet", ".json", ".jsonl") and split in p.name
        ) or sorted(str(p) for p in root.rglob("*") if p.suffix in (".parquet", ".json", ".jsonl"))
        if not files:
            raise ValueError(f"{root}: no .txt, parquet, json or saved-dataset files with PG19 books")
        kind = "parquet" if files[0].endswith(".parquet") else "json"
        ds = datasets.load_dataset(kind, data_files=files, split="train")
    if "text" not in ds.column_names:
        raise ValueError(f"{root}: PG19 rows need a 'text' column; found {ds.column_names}")
    for i, row in enumerate(ds):
        if max_books is not None and i >= max_books:
            break
        yield str(row.get("short_book_title", i)), row["text"]


# --- the synthetic haystack -------------------------------------------------------------------------

# Vocabulary chosen to share no word with bAbI's people, places, objects or answers.
_SUBJECTS = [
    "the old lighthouse", "a silver heron", "the river", "the sea wind", "an oak tree", "the village bell",
    "a fishing boat", "the coastal fog", "the mill wheel", "a russet fox", "the stone bridge", "the orchard",
    "a flock of geese", "the harbour", "the chapel tower", "a shepherd's dog", "the valley road",
    "the autumn rain", "a copper kettle", "the distant hills", "the tide", "a lantern", "the meadow",
    "the forge", "an owl", "the winter sky", "the ferry", "a weathervane", "the cliffs", "the market cross",
]  # fmt: skip
_VERBS = [
    "stood quietly beside", "drifted slowly past", "leaned toward", "glimmered beyond", "rested near",
    "wandered along", "echoed across", "faded behind", "turned away from", "shone upon", "waited by",
    "rolled gently over", "creaked beneath", "hovered over", "settled against", "curved around",
]  # fmt: skip
_OBJECTS = [
    "the reeds", "the shingle beach", "the moss-covered wall", "the empty fields", "the dark water",
    "the chimney smoke", "the hedgerows", "the wooden pier", "the pine woods", "the salt marsh",
    "the narrow lane", "the quarry", "the frozen pond", "the wheat", "the sand dunes", "the old well",
]  # fmt: skip
_CODAS = [
    "", "", "", " as the light changed", " long past dusk", " while the clouds gathered",
    " in the still hours of dawn", " for a long while", " without a sound", " as it had for years",
]  # fmt: skip


def synthetic_background(num_sentences: int = 200_000, seed: int = 0) -> Background:
    """A seeded haystack of ``num_sentences`` descriptive sentences of two clauses (~20 tokens each).

    Labelled ``"synthetic"``: it is a zero-setup stand-in for book text, not PG19.
    """
    if num_sentences < 1:
        raise ValueError(f"num_sentences must be at least 1, got {num_sentences}")
    rng = np.random.default_rng(seed)
    pools = (_SUBJECTS, _VERBS, _OBJECTS, _CODAS) * 2
    picks = [rng.integers(0, len(pool), size=num_sentences).tolist() for pool in pools]
    sentences = []
    for s, v, o, c, s2, v2, o2, c2 in zip(*picks, strict=True):
        first = f"{_SUBJECTS[s]} {_VERBS[v]} {_OBJECTS[o]}{_CODAS[c]}"
        sentences.append(
            f"{first[0].upper()}{first[1:]}, and {_SUBJECTS[s2]} {_VERBS[v2]} {_OBJECTS[o2]}{_CODAS[c2]}."
        )
    return Background(name=SYNTHETIC, sentences=sentences, documents=[f"synthetic(seed={seed})"])


def background_paths(spec: str) -> list[str]:
    """The local files or folders a ``--background`` value names (none for ``synthetic`` and ``pg19``)."""
    spec = spec.strip()
    if spec in (SYNTHETIC, "pg19"):
        return []
    return [spec[len("pg19:") :]] if spec.startswith("pg19:") else comma_list(spec)


def load_background(spec: str, seed: int = 0, min_sentences: int = 200_000) -> Background:
    """Resolve a ``--background`` value: ``synthetic``, ``pg19``, ``pg19:FOLDER``, or file/folder paths.

    Several local paths may be joined with commas. ``min_sentences`` sizes the synthetic haystack.
    """
    spec = spec.strip()
    if spec == SYNTHETIC:
        return synthetic_background(min_sentences, seed)
    if spec == "pg19":
        return pg19_background(None)
    if spec.startswith("pg19:"):
        return pg19_background(spec[len("pg19:") :])
    paths = comma_list(spec)
    if not paths:
        raise ValueError("empty --background; give 'synthetic', 'pg19', 'pg19:FOLDER' or text files/folders")
    return file_background(paths)
