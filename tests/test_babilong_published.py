import json

import pytest

from lm2.data.babi.generator import generate_samples
from lm2.data.background import synthetic_background
from lm2.data.builder import build_babilong
from lm2.data.published import find_split_files, load_published
from lm2.data.tokenizer import load_tokenizer
from lm2.utils.io import read_jsonl
from tests.test_tokenizer import train_small

ROWS = [
    {"input": "Mary went to the kitchen. Some book text.", "question": "Where is Mary?", "target": "kitchen"},
    {"input": "John took the milk there. More text.", "question": "What is John carrying?", "target": "milk"},
]


def core(rows):
    return [(r["input"], r["question"], r["target"], r["task"], r["length"], r["length_name"]) for r in rows]


EXPECTED = [(r["input"], r["question"], r["target"], "qa1", 1000, "1k") for r in ROWS]


def test_hub_parquet_layout(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    (tmp_path / "data" / "1k").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(ROWS[:1]), tmp_path / "data" / "1k" / "qa1-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(ROWS[1:]), tmp_path / "data" / "1k" / "qa1-00001-of-00002.parquet")
    rows = list(load_published(tmp_path, ["1k"], ["qa1"]))
    assert core(rows) == EXPECTED
    assert rows[0]["source"].startswith("published:")


def test_save_to_disk_layout(tmp_path):
    pa = pytest.importorskip("pyarrow")
    # What DatasetDict.save_to_disk writes: one folder per split holding Arrow *stream* files.
    split = tmp_path / "1k" / "qa1"
    split.mkdir(parents=True)
    (tmp_path / "1k" / "dataset_dict.json").write_text(json.dumps({"splits": ["qa1"]}))
    (split / "state.json").write_text(
        json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]})
    )
    table = pa.Table.from_pylist(ROWS)
    with (
        pa.OSFile(str(split / "data-00000-of-00001.arrow"), "wb") as sink,
        pa.ipc.new_stream(sink, table.schema) as w,
    ):
        w.write_table(table)
    assert core(load_published(tmp_path, [1000], ["1"])) == EXPECTED


def test_authors_json_and_json_lines(tmp_path):
    (tmp_path / "qa1").mkdir()
    (tmp_path / "qa1" / "1k.json").write_text(json.dumps(ROWS))  # create_tasks.py: <task>/<length>.json
    assert core(load_published(tmp_path, ["1k"], ["qa1"])) == EXPECTED
    other = tmp_path / "lines" / "1k"
    other.mkdir(parents=True)
    (other / "qa1.json").write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")  # datasets' to_json
    assert core(load_published(tmp_path / "lines", ["1k"], ["qa1"])) == EXPECTED
    hub = tmp_path / "hub" / "data" / "qa1"  # babilong-train-5k-samples: data/<task>/<length>.json
    hub.mkdir(parents=True)
    (hub / "1k.json").write_text(json.dumps(ROWS, indent=1))
    assert core(load_published(tmp_path / "hub", ["1k"], ["qa1"])) == EXPECTED


def test_builder_output_loads_back_unchanged(tmp_path):
    tok = load_tokenizer(train_small(tmp_path / "tok"))
    samples = {"qa1": generate_samples("qa1", 30, 0), "qa2": generate_samples("qa2", 30, 0)}
    out = tmp_path / "built"
    build_babilong(samples, [0, 1000], 4, synthetic_background(2000), tok, seed=0, out=out, progress=False)
    loaded = list(load_published(out, ["0k", "1k"], ["qa1", "qa2"]))
    written = [r for n in ("0k", "1k") for t in ("qa1", "qa2") for r in read_jsonl(out / n / f"{t}.jsonl")]
    assert [{k: v for k, v in r.items() if k != "source"} for r in loaded] == written


def test_missing_sets_and_bad_rows(tmp_path):
    with pytest.raises(FileNotFoundError, match="no 2k/qa1 set under"):
        list(load_published(tmp_path, ["2k"], ["qa1"]))
    with pytest.raises(FileNotFoundError, match="folder not found"):
        list(load_published(tmp_path / "nowhere", ["2k"], ["qa1"]))
    (tmp_path / "1k").mkdir()
    (tmp_path / "1k" / "qa1.jsonl").write_text(json.dumps({"input": "x", "question": "y"}) + "\n")
    with pytest.raises(ValueError, match=r"row 0: row lacks target"):
        list(load_published(tmp_path, ["1k"], ["qa1"]))
    with pytest.raises(ValueError, match="unknown bAbI task"):
        list(load_published(tmp_path, ["1k"], ["qa21"]))
    assert find_split_files(tmp_path, "1k", "qa1") == [tmp_path / "1k" / "qa1.jsonl"]


def test_folders_written_by_the_datasets_library(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    sets = datasets.DatasetDict(
        {"qa1": datasets.Dataset.from_list(ROWS), "qa2": datasets.Dataset.from_list(ROWS[:1])}
    )
    sets.save_to_disk(str(tmp_path / "disk" / "1k"))
    assert core(load_published(tmp_path / "disk", ["1k"], ["qa1"])) == EXPECTED
    (tmp_path / "files" / "1k").mkdir(parents=True)
    sets["qa1"].to_parquet(str(tmp_path / "files" / "1k" / "qa1-00000-of-00001.parquet"))
    sets["qa1"].to_json(str(tmp_path / "files" / "1k" / "qa2.json"))
    rows = list(load_published(tmp_path / "files", ["1k"], ["qa1", "qa2"]))
    assert [r["input"] for r in rows] == [r["input"] for r in ROWS] * 2
