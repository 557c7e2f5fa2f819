import json
import subprocess
import sys

import numpy as np
import pytest

from lm2.data.babi.format import find_task_file, read_stories
from lm2.data.babi.types import Sample
from lm2.data.background import Background, file_background, synthetic_background
from lm2.data.builder import (
    FactsTooLong,
    TokenCounter,
    build_babilong,
    build_row,
    plan_samples,
    prepare_background,
)
from lm2.data.lengths import input_budget, length_name, parse_length, parse_lengths
from lm2.data.tokenizer import load_tokenizer
from lm2.utils.io import read_jsonl
from tests.conftest import shared_path
from tests.test_tokenizer import train_small


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return train_small(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def tok(tok_dir):
    return load_tokenizer(tok_dir)


@pytest.fixture(scope="module")
def counter(tok):
    return TokenCounter(tok)


@pytest.fixture(scope="module")
def books(counter):
    # One real Gutenberg book (raw: header, licence, CRLF) is enough haystack for 32k and keeps this fast.
    return prepare_background(
        file_background(shared_path("background", "pg3261-news-from-nowhere.txt")), counter
    )


@pytest.fixture(scope="module")
def qa2_samples():
    path = find_task_file(shared_path("babi", "en-train"), "qa2")
    return [s for story in read_stories(path) for s in story.samples()]


def true_tokens(tok, text):
    return len(tok(text, add_special_tokens=False)["input_ids"])


def check_facts_in_order(row):
    text = row["input"]
    end = 0
    assert len(row["fact_positions"]) == len(row["facts"])
    for fact, pos in zip(row["facts"], row["fact_positions"], strict=True):
        assert text[pos["char_start"] : pos["char_end"]] == fact
        assert pos["char_start"] >= end  # in order, none overlapping
        end = pos["char_end"]
    sentences = [p["sentence"] for p in row["fact_positions"]]
    assert sentences == sorted(sentences) and len(set(sentences)) == len(sentences)


@pytest.mark.parametrize(
    "spec, tokens",
    [
        ("0k", 0),
        ("1k", 1000),
        ("4K", 4000),
        ("128k", 128_000),
        ("1m", 1_000_000),
        ("1500", 1500),
        (2048, 2048),
        ("0.5k", 500),
    ],
)
def test_parse_length(spec, tokens):
    assert parse_length(spec) == tokens


@pytest.mark.parametrize(
    "spec, message",
    [
        ("-1k", "bad length"),
        (-5, "negative"),
        ("11m", "over the limit"),
        ("big", "bad length"),
        ("4kb", "bad length"),
        ("1.5", "whole number"),
        ("1.0005k", "whole number"),
    ],
)
def test_bad_lengths(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_length(spec)


def test_length_names_and_lists():
    assert [length_name(x) for x in (0, 1000, 128_000, 1_000_000, 1500)] == ["0k", "1k", "128k", "1m", "1500"]
    assert parse_lengths("all") == [0, 1000, 2000, 4000, 8000, 16_000, 32_000, 64_000, 128_000]
    assert parse_lengths("1k, 2k,1k") == [1000, 2000]
    with pytest.raises(ValueError, match="no lengths"):
        parse_lengths(" , ")
    # a length is the input's tokens; the authors' convention keeps 300 of them for the prompt
    assert input_budget(0) is None and input_budget(1000) == 1000 and input_budget(1000, 300) == 700
    with pytest.raises(ValueError, match="no room for the input after the 300-token prompt reserve"):
        input_budget(250, 300)


@pytest.mark.parametrize("length", [0, 1000, 2000, 8000, 32_000])
def test_facts_all_present_in_order_and_length_on_target(tok, counter, books, qa2_samples, length):
    for i in (0, 7, 99):
        row = build_row(qa2_samples[i], length, books, counter, seed=3, sample_id=i)
        check_facts_in_order(row)
        actual = true_tokens(tok, row["input"])
        if length == 0:
            assert row["input"] == " ".join(qa2_samples[i].facts)
            assert actual == row["input_tokens"]
        else:
            # Counts are summed per sentence; only the first sentence (no space before it) and the cut
            # last one can differ from a tokenisation of the whole input, by a token or so.
            assert abs(row["input_tokens"] - length) <= 2
            assert abs(actual - length) <= 3, (actual, length)
        assert row["question"] == qa2_samples[i].question and row["question"] not in row["input"]
        assert row["target"] == qa2_samples[i].answer and row["task"] == "qa2" and row["length"] == length
        assert row["background"].startswith("files:")


def test_token_positions_match_a_real_tokenisation(tok, counter, books, qa2_samples):
    row = build_row(qa2_samples[3], 4000, books, counter, seed=0, sample_id=3)
    for pos in row["fact_positions"]:
        before = row["input"][: pos["char_start"]]
        assert abs(true_tokens(tok, before) - pos["token_start"]) <= 2


def test_deterministic_by_seed_and_seeds_differ(counter, books, qa2_samples):
    a = build_row(qa2_samples[5], 2000, books, counter, seed=1, sample_id=5)
    b = build_row(qa2_samples[5], 2000, books, counter, seed=1, sample_id=5)
    c = build_row(qa2_samples[5], 2000, books, counter, seed=2, sample_id=5)
    assert a == b
    assert a["input"] != c["input"] and a["fact_positions"] != c["fact_positions"]


def test_background_wraps_around_its_end(counter):
    sentences = [
        f"Sentence number {i} is a rather long and plain sentence about nothing much at all."
        for i in range(60)
    ]
    bg = prepare_background(Background("tiny", sentences), counter)
    sample = Sample("qa1", ["Mary went to the kitchen."], "Where is Mary?", "kitchen", (0,))
    rows = [build_row(sample, bg.total_tokens - 20, bg, counter, seed=s, sample_id=0) for s in range(5)]
    for row in rows:
        check_facts_in_order(row)
        assert abs(row["input_tokens"] - (bg.total_tokens - 20)) <= 2
    assert any(row["background_start"] > 0 for row in rows)


def test_a_background_shorter_than_the_row_repeats_in_it(counter, qa2_samples):
    """Three sentences for an 8k row: the row reads them over and over, in order from its start, and still
    lands on the budget with the facts in order."""
    sentences = [f"Sentence {w} of this lonely background is long enough to be counted." for w in ("one", "two", "three")]
    bg = prepare_background(Background("tiny", sentences), counter)
    row = build_row(qa2_samples[0], 8000, bg, counter, seed=0, sample_id=0)
    assert abs(row["input_tokens"] - 8000) <= 2 and 8000 > 20 * bg.total_tokens
    check_facts_in_order(row)
    start, n = row["background_start"], row["background_sentences"]
    background = [p for p in row["input"].split(". ") if p.startswith("Sentence")]
    assert len(background) >= n - 1  # the last one may be cut
    assert [p.split()[1] for p in background[:7]] == [sentences[(start + i) % 3].split()[1] for i in range(7)]


def test_facts_over_budget(counter, books):
    sample = Sample(
        "qa1",
        ["Mary went to the kitchen and then to the garden and the hallway."] * 40,
        "Where is Mary?",
        "kitchen",
        (0,),
    )
    with pytest.raises(FactsTooLong, match="over the 200-token input budget"):
        build_row(sample, 500, books, counter, seed=0, sample_id=0, prompt_reserve=300)
    with pytest.raises(
        ValueError, match=r"only 0 of 1 samples have facts that fit the 200-token input budget of length 500"
    ):
        plan_samples([sample], [500], 1, counter, seed=0, prompt_reserve=300)


def test_plan_uses_the_same_samples_where_they_fit(counter, qa2_samples):
    plan, fact_tokens = plan_samples(qa2_samples[:300], [0, 1000, 4000], 30, counter, seed=0)
    assert plan[0] == plan[4000]  # nothing is too long for 4k
    assert all(int(fact_tokens[i].sum()) <= 1000 for i in plan[1000])
    other, _ = plan_samples(qa2_samples[:300], [0], 30, counter, seed=1)
    assert other[0] != plan[0]


def test_build_writes_the_published_layout(tmp_path, tok, qa2_samples):
    out = tmp_path / "set"
    bg = synthetic_background(3000, seed=0)
    files = build_babilong(
        {"qa2": qa2_samples[:200]}, [0, 1000, 2000], 5, bg, tok, seed=0, out=out, progress=False
    )
    assert [str(f.relative_to(out)) for f in files] == ["0k/qa2.jsonl", "1k/qa2.jsonl", "2k/qa2.jsonl"]
    rows = list(read_jsonl(out / "2k" / "qa2.jsonl"))
    assert len(rows) == 5 and all(r["background"] == "synthetic" for r in rows)
    for r in rows:
        check_facts_in_order(r)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["background"] == "synthetic" and manifest["lengths"] == ["0k", "1k", "2k"]
    again = tmp_path / "again"
    build_babilong({"qa2": qa2_samples[:200]}, [0, 1000, 2000], 5, bg, tok, seed=0, out=again, progress=False)
    assert (again / "2k" / "qa2.jsonl").read_bytes() == (out / "2k" / "qa2.jsonl").read_bytes()


def test_a_short_background_is_repeated_with_a_warning_and_in_the_manifest(tmp_path, tok, qa2_samples):
    short = Background("short", ["This background sentence is long enough to count as one."] * 50)
    out = tmp_path / "set"
    with pytest.warns(UserWarning, match=r"background 'short' holds [\d,]+ tokens .* rows of length 8k need more"):
        build_babilong({"qa2": qa2_samples[:200]}, [0, 1000, 8000], 5, short, tok, seed=0, out=out, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["background_repeats"]) == ["8k"]  # 1k fits in the background: no repeat
    assert manifest["background_repeats"]["8k"] * manifest["background_tokens"] > 7000
    rows = list(read_jsonl(out / "8k" / "qa2.jsonl"))
    assert len(rows) == 5 and all(abs(r["input_tokens"] - 8000) <= 2 for r in rows)


def test_build_checks_everything_before_writing(tmp_path, tok, qa2_samples):
    short = Background("short", ["This background sentence is long enough to count as one."] * 50)
    with pytest.raises(ValueError, match="another task"):
        build_babilong(
            {"qa1": qa2_samples[:200]}, [0], 5, short, tok, seed=0, out=tmp_path / "x", progress=False
        )
    assert not (tmp_path / "x").exists()


def test_generated_facts(tok, counter, books):
    from lm2.data.babi.generator import generate_samples

    samples = generate_samples("qa1", 20, seed=0)
    for i, s in enumerate(samples):
        row = build_row(s, 1000, books, counter, seed=0, sample_id=i)
        check_facts_in_order(row)
        assert abs(row["input_tokens"] - 1000) <= 2


def test_gaps_spread_over_the_whole_input(counter, books, qa2_samples):
    # Facts land anywhere: over many rows the first fact's relative depth covers most of [0, 1].
    depths = []
    for i in range(40):
        row = build_row(qa2_samples[i], 8000, books, counter, seed=0, sample_id=i)
        depths.append(row["fact_positions"][0]["token_start"] / row["input_tokens"])
    assert min(depths) < 0.2 and np.median(depths) < 0.5


def llama2_style_tokenizer():
    """A tokenizer laid out like Llama-2's: '▁' prepended to the text and spaces turned into '▁'."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    texts = synthetic_background(3000, seed=0).sentences + ["Mary went to the kitchen. Where is Mary?"] * 50
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=800, special_tokens=["<unk>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def test_lengths_hold_for_sentencepiece_style_tokenizers(tok, counter, qa2_samples):
    sp = llama2_style_tokenizer()
    sp_counter = TokenCounter(sp)
    assert counter.prefix == " " and sp_counter.prefix == ""  # byte-level vs word-start markers
    bg = prepare_background(synthetic_background(3000, seed=1), sp_counter)
    for i in range(3):
        row = build_row(qa2_samples[i], 8000, bg, sp_counter, seed=0, sample_id=i)
        check_facts_in_order(row)
        actual = len(sp(row["input"], add_special_tokens=False)["input_ids"])
        assert abs(actual - 8000) <= 3, actual


def test_min_fact_distance_keeps_supporting_facts_far_from_the_question(tok, counter, books, qa2_samples):
    for i in range(30):
        sample = qa2_samples[i]
        row = build_row(sample, 4000, books, counter, seed=0, sample_id=i, min_fact_distance=2500)
        check_facts_in_order(row)
        assert row["min_fact_distance"] == 2500 and row["fact_placement"] == "scattered"
        last_supporting = max(sample.supporting)
        for f, pos in enumerate(row["fact_positions"]):
            # the recorded distance is what a real tokenisation of the rest of the input says
            assert abs(true_tokens(tok, row["input"][pos["char_end"] :]) - pos["distance"]) <= 3
            if f <= last_supporting:
                assert pos["distance"] >= 2500
    # without the constraint, facts land anywhere, also close to the question
    near = [
        min(p["distance"] for p in build_row(qa2_samples[i], 4000, books, counter, 0, i)["fact_positions"])
        for i in range(30)
    ]
    assert min(near) < 2500


def test_facts_first_placement(counter, books, qa2_samples):
    row = build_row(qa2_samples[4], 4000, books, counter, seed=0, sample_id=4, placement="first")
    check_facts_in_order(row)
    facts_text = " ".join(qa2_samples[4].facts)
    assert row["input"].startswith(facts_text + " ")
    assert [p["sentence"] for p in row["fact_positions"]] == list(range(len(qa2_samples[4].facts)))
    last = row["fact_positions"][-1]
    assert (
        last["distance"]
        == row["input_tokens"] - last["token_start"] - counter.count([qa2_samples[4].facts[-1]])[0]
    )


def test_fact_distance_errors(counter, books, qa2_samples):
    with pytest.raises(ValueError, match="length 0k holds no background"):
        build_row(qa2_samples[0], 0, books, counter, seed=0, sample_id=0, min_fact_distance=10)
    with pytest.raises(FactsTooLong, match=r"\+ 990 tokens of distance, over the 1000-token input budget"):
        build_row(qa2_samples[0], 1000, books, counter, seed=0, sample_id=0, min_fact_distance=990)
    with pytest.raises(ValueError, match="fact placement must be one of scattered, first"):
        build_row(qa2_samples[0], 1000, books, counter, seed=0, sample_id=0, placement="last")
    with pytest.raises(ValueError, match="minimum fact distance must be a whole number"):
        build_row(qa2_samples[0], 1000, books, counter, seed=0, sample_id=0, min_fact_distance=-1)
    plan, fact_tokens = plan_samples(qa2_samples[:300], [1000], 20, counter, seed=0, min_fact_distance=800)
    assert all(int(fact_tokens[i].sum()) <= 200 for i in plan[1000])


BUILD_MEMORY = """
import json, sys, tempfile
from pathlib import Path
from lm2.data.babi.generator import generate_samples
from lm2.data.background import synthetic_background
from lm2.data.builder import build_babilong
from lm2.data.tokenizer import load_tokenizer

def status(field):  # KiB. VmHWM, not getrusage: ru_maxrss keeps the forking parent's size (pytest's)
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(field + ":"))

tok, samples = load_tokenizer(sys.argv[1]), generate_samples("qa1", 10, 0)
background = synthetic_background(20_000, seed=0)  # ~600K tokens of this tokenizer
rss = status("VmRSS")
with tempfile.TemporaryDirectory() as tmp:
    build_babilong({"qa1": samples}, [16_000], 2, background, tok, 0, Path(tmp) / "set", progress=False)
print(json.dumps({"growth_mib": (status("VmHWM") - rss) / 1024}))
"""


def test_the_build_does_not_hold_the_backgrounds_encodings(tok_dir):
    """A build keeps one token count per background sentence, not the tokenizer's encodings of all of it:
    in a fresh process, building two 16k rows from a ~600K-token background raises the peak resident set by
    about 5 MiB; tokenising that background in one batch (as the builder did) raised it by 64 MiB."""
    out = subprocess.run(
        [sys.executable, "-c", BUILD_MEMORY, str(tok_dir)], capture_output=True, text=True, check=True
    )
    growth = json.loads(out.stdout.strip().splitlines()[-1])["growth_mib"]
    assert growth < 25, f"the build's peak grew by {growth:.0f} MiB"


def test_the_synthetic_haystack_stops_growing_with_the_length():
    from lm2.data.make import SYNTHETIC_MAX_SENTENCES, _synthetic_size

    assert _synthetic_size(16_000) == 3000 and _synthetic_size(1_000_000) == 126_000  # rows built so far
    assert _synthetic_size(10_000_000) == SYNTHETIC_MAX_SENTENCES  # beyond ~1.6M tokens rows repeat it
