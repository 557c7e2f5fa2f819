import re

import pytest

from lm2.data.background import (
    SYNTHETIC,
    MissingDependency,
    decode_text,
    file_background,
    load_background,
    pg19_background,
    read_text_file,
    split_sentences,
    strip_gutenberg,
    synthetic_background,
)
from tests.conftest import shared_path

BOOKS = ["pg16215-jack-sheppard.txt", "pg3261-news-from-nowhere.txt"]


@pytest.mark.parametrize("name", BOOKS)
def test_gutenberg_header_and_licence_stripped_from_real_books(name):
    path = shared_path("background", name)
    raw = path.read_bytes().decode("utf-8")
    assert "PROJECT GUTENBERG" in raw.upper() and "\r\n" in raw  # the fixture really is raw Gutenberg
    text = read_text_file(path)
    assert "gutenberg" not in text.lower()
    assert "START OF" not in text and "END OF THE PROJECT" not in text.upper()
    assert "Produced by" not in text[:500]
    assert "\r" not in text
    # The body survives: the book's last words and most of its length.
    assert len(text) > 0.8 * len(raw) - 25_000
    assert text.rstrip().endswith("THE END.") or "Cirencester and Burford" in text[-200:]


def test_latin1_book_keeps_its_accented_characters():
    text = read_text_file(shared_path("background", BOOKS[0]))
    assert "£" in text and "é" in text and "\ufffd" not in text


def test_crlf_and_stray_non_utf8_bytes(tmp_path):
    path = tmp_path / "book.txt"
    # UTF-8 text with a stray Latin-1 byte, CRLF and a lone CR.
    path.write_bytes("Naïve words here.\r\nThe caf".encode() + b"\xe9 was open.\r\rIt rained.\r\n")
    text = read_text_file(path)
    assert text == "Naïve words here.\nThe café was open.\n\nIt rained."
    assert file_background(path).sentences == ["Naïve words here.", "The café was open.", "It rained."]


def test_whole_latin1_file(tmp_path):
    path = tmp_path / "old.txt"
    path.write_bytes("Señor Muñoz paid £3 for the cañon map.".encode("latin-1"))
    assert read_text_file(path) == "Señor Muñoz paid £3 for the cañon map."


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"  \r\n\n\t ", "is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "binary"),
        (
            b"*** START OF THE PROJECT GUTENBERG EBOOK X ***\n\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\n",
            "no text left",
        ),
    ],
)
def test_bad_files_are_rejected_with_a_clear_message(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        file_background(path)


def test_missing_paths_and_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        file_background(tmp_path / "nope.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .txt files"):
        file_background(tmp_path / "empty")


def test_folder_reads_every_book_in_sorted_order(tmp_path):
    (tmp_path / "b.txt").write_text("Second book sentence. It ends here.")
    (tmp_path / "a.txt").write_text("First book sentence.")
    bg = load_background(str(tmp_path))
    assert bg.sentences == ["First book sentence.", "Second book sentence.", "It ends here."]
    assert bg.name == "files:a.txt,b.txt"


def test_split_sentences():
    text = 'Mr. Smith met Dr. J. Watson at 5 p.m. in town. "Is it you?" he asked.\nThey\nwalked!\n\nNew paragraph'
    assert split_sentences(text) == [
        "Mr. Smith met Dr. J. Watson at 5 p.m. in town.",
        '"Is it you?" he asked.',
        "They walked!",
        "New paragraph",
    ]


def test_strip_gutenberg_leaves_plain_text_alone():
    assert strip_gutenberg("Just a text.\nNothing else.") == "Just a text.\nNothing else."


def test_decode_text_rejects_binary():
    with pytest.raises(ValueError, match="binary"):
        decode_text(b"abc\x00def", "x.bin")


def test_synthetic_background_is_seeded_labelled_and_free_of_babi_words():
    a, b, c = (
        synthetic_background(500, seed=1),
        synthetic_background(500, seed=1),
        synthetic_background(500, seed=2),
    )
    assert a.sentences == b.sentences and a.sentences != c.sentences
    assert a.name == SYNTHETIC and load_background("synthetic", min_sentences=10).name == SYNTHETIC
    words = {w for s in a.sentences for w in re.findall(r"[a-z]+", s.lower())}
    vocab = set()
    for f in shared_path("babi", "en-train").glob("*.txt"):
        vocab |= set(re.findall(r"[a-z]+", f.read_text().lower()))
    function_words = {
        "a",
        "the",
        "of",
        "in",
        "from",
        "and",
        "to",
        "is",
        "was",
        "it",
        "for",
        "as",
        "had",
        "there",
        "s",
    }
    assert words & vocab <= function_words


def test_pg19_local_text_folder(tmp_path):
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "123.txt").write_text("A book of the test split. It has two sentences.")
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "9.txt").write_text("Training book.")
    bg = load_background(f"pg19:{tmp_path}")
    assert bg.sentences == ["A book of the test split.", "It has two sentences."]
    assert bg.name.startswith("pg19:") and bg.name.endswith(":test")
    assert pg19_background(tmp_path, split="train").sentences == ["Training book."]


def test_pg19_without_datasets_says_how_to_install(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("No module named 'datasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(MissingDependency, match=r"pip install 'lm2\[pg19\]'"):
        load_background("pg19")
    (tmp_path / "books.parquet").write_bytes(b"PAR1")
    with pytest.raises(MissingDependency, match="datasets"):
        pg19_background(tmp_path)
