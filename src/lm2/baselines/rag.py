"""Retrieval-augmented baseline: shorten a long context to the BM25 top-k chunks for the question.

This is the "Llama + RAG" baseline of the paper (PAPER.md §3) in the form the BABILong authors evaluate
retrieval: the context is split into sentences (or fixed-size chunks), the chunks most relevant to the
question are retrieved, and they are handed to the model *in their original order* together with the
question. Retrieval uses BM25 (``bm25s``) over lower-cased word tokens with English stop words removed.

Any model of the project can then answer from the shortened context; ``lm2 eval babilong --rag SPEC``
applies it row by row through :func:`make_rag`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import bm25s
import numpy as np

from lm2.utils.text import comma_list

Row = Mapping[str, Any]
Span = tuple[int, int]  # [start, end) character offsets into the context

# "Mr. Smith" must not end a sentence; these are the abbreviations common in English fiction (PG19).
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr st jr sr mt messrs mme mlle prof rev capt col gen lt sgt hon esq".split()
)
# A sentence ends with . ! or ? (possibly repeated, possibly followed by closing quotes or brackets) and
# whitespace, or at a blank line. Hard-wrapped single newlines inside a sentence do not end it.
_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s)|\n[ \t]*\n")
_WORD = re.compile(r"\S+")


def split_sentences(text: str) -> list[Span]:
    """Character spans of the sentences of ``text``, in order, without surrounding whitespace."""
    spans: list[Span] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        if m.group()[0] == "\n":  # a blank line
            end = m.start()
        else:
            word = re.search(r"(\w+)\W*$", text[start : m.start()])
            if m.group() == "." and word and word.group(1).lower() in _ABBREVIATIONS:
                continue
            if m.group() == "." and word and len(word.group(1)) == 1 and word.group(1).isupper():
                continue  # an initial: "J. Smith"
            end = m.end()
        _append_stripped(text, start, end, spans)
        start = m.end()
    _append_stripped(text, start, len(text), spans)
    return spans


def split_words(text: str, size: int) -> list[Span]:
    """Spans of consecutive runs of ``size`` whitespace-separated words (the last run may be shorter)."""
    if size < 1:
        raise ValueError(f"chunk size must be a positive number of words, got {size}")
    words = [m.span() for m in _WORD.finditer(text)]
    return [(words[i][0], words[min(i + size, len(words)) - 1][1]) for i in range(0, len(words), size)]


def _append_stripped(text: str, start: int, end: int, spans: list[Span]) -> None:
    piece = text[start:end]
    lead = len(piece) - len(piece.lstrip())
    trail = len(piece) - len(piece.rstrip())
    if start + lead < end - trail:
        spans.append((start + lead, end - trail))


def _tokenize(texts: list[str], stopwords: str | None) -> list[list[str]]:
    return bm25s.tokenize(texts, stopwords=stopwords, return_ids=False, show_progress=False)


@dataclass(frozen=True)
class RAGConfig:
    """How the context is cut and how much of it is kept.

    Args:
        k: number of chunks kept (the whole context is kept when it has at most ``k`` chunks).
        chunking: "sentence" (one chunk per sentence, the BABILong authors' better setting) or "words"
            (fixed runs of ``chunk_size`` words).
        chunk_size: words per chunk when ``chunking == "words"``.
        k1: BM25 term-frequency saturation.
        b: BM25 length normalisation.
    """

    k: int = 5
    chunking: Literal["sentence", "words"] = "sentence"
    chunk_size: int = 64
    k1: float = 1.5
    b: float = 0.75

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"RAG k must be >= 1, got {self.k}")
        if self.chunking not in ("sentence", "words"):
            raise ValueError(f"RAG chunking must be 'sentence' or 'words', got {self.chunking!r}")
        if self.chunk_size < 1:
            raise ValueError(f"RAG chunk_size must be >= 1 word, got {self.chunk_size}")
        if self.k1 < 0 or not 0 <= self.b <= 1:
            raise ValueError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={self.k1}, b={self.b}")

    @classmethod
    def from_spec(cls, spec: str) -> RAGConfig:
        """Parse ``"k=5"``, ``"k=3,chunk=sentence"`` or ``"k=2,chunk=128"`` (128-word chunks).

        Keys: ``k``, ``chunk`` (``sentence`` or a number of words), ``k1``, ``b``. A bare number is ``k``.
        """
        fields: dict[str, Any] = {}
        for part in comma_list(spec):
            key, sep, value = part.partition("=")
            key, value = key.strip().lower(), value.strip()
            if not sep:
                key, value = "k", key
            try:
                if key == "k":
                    fields["k"] = int(value)
                elif key == "chunk":
                    if value.lower() in ("sentence", "sentences"):
                        fields["chunking"] = "sentence"
                    else:
                        fields["chunking"], fields["chunk_size"] = "words", int(value)
                elif key in ("k1", "b"):
                    fields[key] = float(value)
                else:
                    raise KeyError(key)
            except ValueError:
                raise ValueError(
                    f"RAG spec {spec!r}: bad value {value!r} for {key!r} "
                    "(k: integer; chunk: 'sentence' or a number of words; k1, b: numbers)"
                ) from None
            except KeyError:
                raise ValueError(
                    f"RAG spec {spec!r}: unknown key {key!r}; valid keys are k, chunk, k1, b "
                    "(e.g. 'k=5,chunk=sentence' or 'k=3,chunk=128')"
                ) from None
        return cls(**fields)


@dataclass(frozen=True)
class Retrieval:
    """The result of shortening one context."""

    context: str  # the kept chunks in their original order, joined by single spaces
    kept: list[int]  # indices (into ``spans``) of the kept chunks, ascending
    spans: list[Span]  # every chunk of the original context, as character spans
    scores: list[float]  # the BM25 score of every chunk


class BM25Retriever:
    """Shortens contexts with BM25 as configured by a :class:`RAGConfig`."""

    def __init__(self, config: RAGConfig | None = None) -> None:
        self.config = config or RAGConfig()

    def chunk(self, context: str) -> list[Span]:
        if self.config.chunking == "sentence":
            return split_sentences(context)
        return split_words(context, self.config.chunk_size)

    def retrieve(self, context: str, question: str) -> Retrieval:
        """The top-k chunks of ``context`` for ``question``, in their original order."""
        if not question.strip():
            raise ValueError("RAG needs a non-empty question to retrieve with")
        spans = self.chunk(context)
        texts = [context[s:e] for s, e in spans]
        if len(spans) <= self.config.k:
            return Retrieval(" ".join(texts), list(range(len(spans))), spans, [0.0] * len(spans))
        query = _tokenize([question], "english")[0]
        stopwords: str | None = "english"
        if not query:  # a question made only of stop words still has words to match
            query, stopwords = _tokenize([question], None)[0], None
        bm25 = bm25s.BM25(k1=self.config.k1, b=self.config.b)
        bm25.index(_tokenize(texts, stopwords), show_progress=False)
        scores = np.asarray(bm25.get_scores(query), dtype=np.float64)  # (num_chunks,)
        # Highest score first; among equal scores the later chunk wins, since later text in a narrative
        # supersedes earlier text (and the choice must be deterministic).
        order = np.lexsort((-np.arange(len(spans)), -scores))
        kept = sorted(int(i) for i in order[: self.config.k])
        return Retrieval(" ".join(texts[i] for i in kept), kept, spans, scores.tolist())

    def __call__(self, row: Row) -> dict[str, Any]:
        """A copy of a BABILong row whose ``input`` is the shortened context, with a ``rag`` record."""
        for key in ("input", "question"):
            if key not in row:
                raise ValueError(f"RAG needs rows with 'input' and 'question'; this row has {sorted(row)}")
        result = self.retrieve(row["input"], row["question"])
        out = dict(row)
        out["input"] = result.context
        out["rag"] = {
            **asdict(self.config),
            "kept": result.kept,
            "num_chunks": len(result.spans),
            "kept_spans": [list(result.spans[i]) for i in result.kept],
        }
        return out


def make_rag(spec: str) -> Callable[[Row], dict[str, Any]]:
    """The row -> shortened-row callable for ``lm2 eval babilong --rag SPEC`` (see RAGConfig.from_spec)."""
    return BM25Retriever(RAGConfig.from_spec(spec))
