"""The tokenizer: a byte-level BPE or a word-level vocabulary trained here, or any local HF tokenizer folder.

``train_tokenizer`` learns a GPT-2-style byte-level BPE (every byte is in the vocabulary, so no text is
ever out of vocabulary); ``train_word_tokenizer`` a word-level vocabulary (one token per word or
punctuation mark, ``<|unk|>`` for the rest: bAbI-scale work, where a 150-word vocabulary makes every
fact a handful of tokens). Both use Hugging Face ``tokenizers``, are wrapped as a
``transformers.PreTrainedTokenizerFast``, and ``save_pretrained`` then writes a folder that
``AutoTokenizer.from_pretrained(folder)`` — and so every model checkpoint that includes it — loads.
``load_tokenizer`` opens such a folder, or any other local one (a Llama-3 tokenizer, say). Nothing is
ever fetched from the hub.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
UNK_TOKEN = "<|unk|>"
SPECIAL_TOKENS = [EOS_TOKEN, PAD_TOKEN]
WORD_SPECIAL_TOKENS = [EOS_TOKEN, PAD_TOKEN, UNK_TOKEN]
TOKENIZER_KINDS = ("bpe", "word")


def clean_text(text: str | bytes) -> str:
    """Text safe to feed the trainer: bytes decoded with invalid UTF-8 replaced, lone surrogates dropped.

    ``tokenizers`` aborts the whole training run on one invalid UTF-8 sequence, so everything passes here.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return text.encode("utf-8", errors="ignore").decode("utf-8")


def train_tokenizer(
    texts: Iterable[str | bytes], vocab_size: int = 8192, min_frequency: int = 2
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` (an iterable of documents or sentences).

    The vocabulary holds the 256 byte symbols, the special tokens ``<|endoftext|>`` (end of text; also
    bos/unk) and ``<|pad|>``, and up to ``vocab_size`` tokens in all.
    """
    min_size = 256 + len(SPECIAL_TOKENS)
    if vocab_size < min_size:
        raise ValueError(
            f"vocab_size must be at least {min_size} (256 bytes + special tokens), got {vocab_size}"
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )

    return _train(tok, trainer, texts, unk_token=EOS_TOKEN)


def _train(
    tok: Tokenizer, trainer: trainers.Trainer, texts: Iterable[str | bytes], unk_token: str
) -> PreTrainedTokenizerFast:
    """Train ``tok`` on the cleaned ``texts`` and wrap it for transformers (eos doubles as bos)."""
    seen = 0

    def cleaned() -> Iterator[str]:
        nonlocal seen
        for text in texts:
            seen += 1
            yield clean_text(text)

    tok.train_from_iterator(cleaned(), trainer=trainer)
    if seen == 0:
        raise ValueError("no training text given to the tokenizer")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        unk_token=unk_token,
        pad_token=PAD_TOKEN,
        model_max_length=10**9,  # the models here read inputs of any length; don't warn at 1024
    )


def train_word_tokenizer(
    texts: Iterable[str | bytes], vocab_size: int = 8192, min_frequency: int = 1
) -> PreTrainedTokenizerFast:
    """Train a word-level tokenizer on ``texts``: every word and every punctuation mark is one token.

    Text is split at whitespace, and each punctuation character is its own token (``bathroom.`` ->
    ``bathroom`` ``.``); case is kept. The vocabulary holds the special tokens ``<|endoftext|>`` (end of
    text; also bos), ``<|pad|>`` and ``<|unk|>`` (every word not in it), then the words seen at least
    ``min_frequency`` times, most frequent first, up to ``vocab_size`` tokens in all. Decoding joins
    tokens with spaces and removes the space before punctuation, so text round-trips up to whitespace.
    """
    if vocab_size < len(WORD_SPECIAL_TOKENS) + 1:
        raise ValueError(f"vocab_size must be at least {len(WORD_SPECIAL_TOKENS) + 1}, got {vocab_size}")
    if min_frequency < 1:
        raise ValueError(f"min_frequency must be at least 1, got {min_frequency}")
    tok = Tokenizer(models.WordLevel(unk_token=UNK_TOKEN))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated")]
    )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # join with spaces, no space before "."
    trainer = trainers.WordLevelTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=WORD_SPECIAL_TOKENS,
        show_progress=False,
    )  # fmt: skip
    return _train(tok, trainer, texts, unk_token=UNK_TOKEN)


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, directory: str | os.PathLike) -> Path:
    """Write ``tokenizer`` as a Hugging Face folder. Files are written to a staging folder, then moved."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        tokenizer.save_pretrained(staging)
        directory.mkdir(exist_ok=True)
        for f in staging.iterdir():
            os.replace(f, directory / f.name)
    finally:
        for f in staging.iterdir():
            f.unlink()
        staging.rmdir()
    return directory


def load_tokenizer(path: str | os.PathLike) -> PreTrainedTokenizerBase:
    """Load a tokenizer from a local Hugging Face tokenizer folder (never from the hub)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"tokenizer folder not found: {path} (train one with `lm2 data tokenizer --out DIR`)"
        )
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a usable Hugging Face tokenizer folder ({err})") from None
