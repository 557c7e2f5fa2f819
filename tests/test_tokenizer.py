import json

import pytest
from transformers import AutoTokenizer

from lm2.data.background import synthetic_background
from lm2.data.tokenizer import (
    EOS_TOKEN,
    PAD_TOKEN,
    UNK_TOKEN,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
    train_word_tokenizer,
)

BABI_LINES = [
    "Mary moved to the bathroom.",
    "John went to the hallway.",
    "Where is Mary? bathroom",
    "Daniel picked up the football there.",
    "Sandra journeyed to the garden.",
    "Is John in the kitchen? no",
]


def train_small(directory, vocab_size=600):
    """A small BPE folder for tests: bAbI-like lines plus the synthetic haystack."""
    texts = BABI_LINES * 50 + synthetic_background(3000, seed=0).sentences
    return save_tokenizer(train_tokenizer(texts, vocab_size=vocab_size), directory)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return train_small(tmp_path_factory.mktemp("tok"))


def test_round_trip_through_autotokenizer(tok_dir):
    tok = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    for text in [
        "Mary moved to the bathroom.",
        "Ünïcödé — never seen in training 🙂\n\ttabs",
        "  two  spaces ",
    ]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    assert tok.eos_token == EOS_TOKEN and tok.pad_token == PAD_TOKEN
    assert tok.eos_token_id != tok.pad_token_id
    assert len(tok) == 600
    # Learned merges: a frequent word is one token, not its bytes.
    assert len(tok(" the", add_special_tokens=False)["input_ids"]) == 1


def test_load_tokenizer_is_the_same_tokenizer(tok_dir):
    a = load_tokenizer(tok_dir)
    b = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    text = " ".join(BABI_LINES)
    assert a(text)["input_ids"] == b(text)["input_ids"]
    config = json.loads((tok_dir / "tokenizer_config.json").read_text())
    assert config["eos_token"] == EOS_TOKEN


def test_invalid_utf8_does_not_abort_training():
    tok = train_tokenizer([b"caf\xe9 au lait \xff\xfe", "fine text", "lone \udcff surrogate"], vocab_size=300)
    assert tok.decode(tok("fine text")["input_ids"]) == "fine text"


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="vocab_size must be at least 258"):
        train_tokenizer(["x"], vocab_size=100)
    with pytest.raises(ValueError, match="no training text"):
        train_tokenizer([], vocab_size=300)
    with pytest.raises(FileNotFoundError, match="lm2 data tokenizer"):
        load_tokenizer(tmp_path / "missing")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a usable Hugging Face tokenizer folder"):
        load_tokenizer(tmp_path / "junk")


def test_save_replaces_an_existing_folder_in_place(tmp_path):
    first = train_small(tmp_path / "tok", vocab_size=400)
    train_small(first, vocab_size=500)
    assert len(load_tokenizer(first)) == 500
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]  # no staging folder left behind


def test_word_tokenizer_one_token_per_word_and_mark(tmp_path):
    texts = BABI_LINES * 3 + synthetic_background(500, seed=0).sentences
    folder = save_tokenizer(train_word_tokenizer(texts), tmp_path / "word")
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    assert load_tokenizer(folder)("Where is Mary?")["input_ids"] == tok("Where is Mary?")["input_ids"]
    ids = tok("Mary moved to the bathroom. Where is Mary?", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["Mary", "moved", "to", "the", "bathroom", ".", "Where", "is",
                                              "Mary", "?"]  # fmt: skip
    assert tok.decode(ids) == "Mary moved to the bathroom. Where is Mary?"
    # an answer after the prompt is one token, whatever the space before it
    assert (
        tok(" bathroom", add_special_tokens=False)["input_ids"]
        == tok("bathroom", add_special_tokens=False)["input_ids"]
    )
    unseen = tok("Zebedee moved", add_special_tokens=False)["input_ids"]
    assert unseen[0] == tok.unk_token_id and tok.unk_token == UNK_TOKEN and unseen[1] != tok.unk_token_id
    assert len({tok.eos_token_id, tok.pad_token_id, tok.unk_token_id}) == 3 and tok.eos_token == EOS_TOKEN


def test_word_tokenizer_size_and_frequency_limits():
    texts = ["a a a a b b b c c d"]
    assert len(train_word_tokenizer(texts)) == 3 + 4
    capped = train_word_tokenizer(texts, vocab_size=5)  # the two most frequent words survive
    assert (
        len(capped) == 5 and capped("a b c", add_special_tokens=False)["input_ids"][2] == capped.unk_token_id
    )
    frequent = train_word_tokenizer(texts, min_frequency=3)
    assert set(frequent.get_vocab()) == {EOS_TOKEN, PAD_TOKEN, UNK_TOKEN, "a", "b"}
    with pytest.raises(ValueError, match="vocab_size must be at least 4"):
        train_word_tokenizer(texts, vocab_size=3)
    with pytest.raises(ValueError, match="no training text"):
        train_word_tokenizer([])
