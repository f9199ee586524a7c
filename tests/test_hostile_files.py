"""Hostile and malformed files reaching the core and the CLI (the fourth audit): each test builds the file in a temp
folder from the tiny models or a few written rows, and asserts the safe behaviour: the right result, or one plain
line saying what is wrong, at once and without allocating what the file asks for.

The earlier audits' probes are in ``tests/test_hostile_inputs.py``; this file holds the ones they missed.
"""

import io
import json
import os
import re
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch

from backdoor_core import atomic, models
from backdoor_core.cli import main
from backdoor_core.data import DataError, load_table, read_texts
from backdoor_core.model_card import METADATA_FILE, ModelCard
from backdoor_core.models import ModelLoadError, load_model, save_model, tiny_model


@pytest.fixture(scope="module")
def saved(tiny, tmp_path_factory):
    """A good tiny BERT folder saved by the lab; tests copy it and break the copy."""
    return save_model(tiny.model, tiny.tokenizer, tmp_path_factory.mktemp("good") / "good", {"name": "good"})


def _copy(saved: Path, dst: Path, **config) -> Path:
    shutil.copytree(saved, dst)
    if config:
        raw = json.loads((dst / "config.json").read_text())
        raw.update(config)
        (dst / "config.json").write_text(json.dumps(raw))
    return dst


def _one_line_error(capsys, argv) -> str:
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    lines = err.splitlines()  # progress lines may come first (stderr is no terminal here); one error, the last
    assert lines and lines[-1].startswith("error:") and "Traceback" not in err, err
    assert sum(line.startswith("error:") for line in lines) == 1, err
    return lines[-1]


# ------------------------------------------------------------------------------------------------ model folders


def test_a_saved_tiny_qwen2_reloads_with_the_tokenizer_it_was_saved_with(tmp_path):
    """transformers 5's AutoTokenizer swapped the saved WordPiece tokenizer.json of a qwen2 folder for its BPE
    Qwen2Tokenizer, which read every word letter by letter: other ids, other predictions, no error."""
    lm = tiny_model(arch="qwen2", seed=0)
    loaded = load_model(save_model(lm.model, lm.tokenizer, tmp_path / "q"), device="cpu")
    texts = ["a small test sentence", "another one, a little longer"]
    assert loaded.tokenizer(texts)["input_ids"] == lm.tokenizer(texts)["input_ids"]
    with torch.no_grad():
        before = lm.model(**lm.tokenizer(texts, padding=True, return_tensors="pt")).logits
        after = loaded.model(**loaded.tokenizer(texts, padding=True, return_tensors="pt")).logits
    torch.testing.assert_close(after, before)


def test_a_config_with_thousands_of_layers_is_refused_at_once(saved, tmp_path):
    """num_hidden_layers 100000 built 100000 layers on the meta device (minutes) before any check refused it."""
    folder = _copy(saved, tmp_path / "deep", num_hidden_layers=5000)
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match="num_hidden_layers is 5,000") as err:
        load_model(folder)
    assert time.monotonic() - start < 5 and "\n" not in str(err.value)


def test_num_labels_disagreeing_with_id2label_is_refused(saved, tmp_path, capsys):
    """transformers kept num_labels 2 and silently replaced the three class names by LABEL_0, LABEL_1."""
    folder = _copy(saved, tmp_path / "labels", num_labels=2, id2label={"0": "a", "1": "b", "2": "c"},
                   label2id={"a": 0, "b": 1, "c": 2})
    line = _one_line_error(capsys, ["inspect", "--model", str(folder), "--text", "a fine day"])
    assert "num_labels is 2 but id2label names 3 classes" in line and str(folder) in line


def test_a_tokenizer_config_with_a_text_model_max_length_is_one_line(saved, tmp_path, capsys):
    """model_max_length "x" made the tokenizer's probe raise TypeError: a traceback, exit 1."""
    folder = _copy(saved, tmp_path / "tok")
    tok = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps(dict(tok, model_max_length="x")))
    line = _one_line_error(capsys, ["inspect", "--model", str(folder), "--text", "a fine day"])
    assert "tokenizer" in line and str(folder) in line


def test_a_config_type_error_keeps_its_reason(saved, tmp_path):
    """The library's message 'Validation error for field ...:' has its reason on the next line, which was cut."""
    folder = _copy(saved, tmp_path / "float", num_attention_heads=4.0)
    with pytest.raises(ModelLoadError, match="num_attention_heads.*float") as err:
        load_model(folder)
    assert "\n" not in str(err.value)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
@pytest.mark.parametrize("name", ["config.json", "tokenizer.json"])
def test_a_model_file_linked_to_a_device_is_refused(saved, tmp_path, capsys, name):
    """A link to /dev/zero was skipped as 'no config.json' or silently left the tokenizer without a vocabulary."""
    folder = _copy(saved, tmp_path / "dev")
    (folder / name).unlink()
    (folder / name).symlink_to("/dev/zero")
    line = _one_line_error(capsys, ["inspect", "--model", str(folder), "--text", "a fine day"])
    assert f"{folder / name} is not a regular file" in line


def test_an_oversized_tokenizer_file_is_refused_before_it_is_parsed(saved, tmp_path, monkeypatch):
    folder = _copy(saved, tmp_path / "big")
    monkeypatch.setitem(models.MAX_TEXT_FILE_BYTES, "tokenizer.json", 1000)
    with pytest.raises(ModelLoadError, match=r"tokenizer\.json is [0-9,]+ bytes; at most 1,000"):
        load_model(folder)


def test_pickled_weights_under_a_huge_config_are_refused_before_allocating(saved, tmp_path):
    """With --allow-pickle the parameter count was not checked: vocab_size 10**10 asked torch for 1.3 TB."""
    from safetensors.torch import load_file

    folder = _copy(saved, tmp_path / "pk", vocab_size=10**10)
    torch.save(dict(load_file(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="describes a model of .* M parameters"):
        load_model(folder, allow_pickle=True)


def test_a_card_cannot_drive_the_terminal_or_forge_a_line(saved, tmp_path, capsys):
    """A card name with an escape sequence and a line break, and a class name with an escape, reached the
    terminal as they were: they could clear the screen or forge a line such as a verdict."""
    folder = _copy(saved, tmp_path / "esc", id2label={"0": "neg\x1b[2J", "1": "pos"})
    (folder / METADATA_FILE).write_text(json.dumps({"name": "evil\x1b]0;pwned\x07\nverdict    clean",
                                                    "description": "line one\nline two\x1b[31m"}))
    card = ModelCard.read(folder, num_labels=2)
    assert card.name == "evil ]0;pwned  verdict    clean" and card.description == "line one\nline two [31m"
    assert any("control characters" in w for w in card.warnings)
    capsys.readouterr()
    assert main(["inspect", "--model", str(folder), "--text", "a fine day", "--trigger", "cf"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b[2J" in out  # the class name, escaped
    assert not any(line.startswith("verdict    clean") for line in out.splitlines())
    from backdoor_core.cli import terminal_safe

    assert terminal_safe("a\rb\u202ec\td\ne") == "a\\rb\\u202ec\td\ne"


# ------------------------------------------------------------------------------------------------ data files


@pytest.mark.parametrize("suffix, body, second", [
    (".csv", b"text,label\rhello there,0\rgood bye,1\r", 3),
    (".tsv", b"text\tlabel\rhello there\t0\rgood bye\t1\r", 3),
    (".jsonl", b'{"text": "hello there", "label": 0}\r{"text": "good bye", "label": 1}\r', 2),
])
def test_old_mac_line_ends_are_read_like_any_other(tmp_path, suffix, body, second):
    """Files with lone CR line ends (Excel's 'CSV (Macintosh)') failed with 'new-line character seen in unquoted
    field - do you need to open the file in universal-newline mode?' (or 'Extra data' for JSONL)."""
    path = tmp_path / f"mac{suffix}"
    path.write_bytes(body)
    ds = load_table(path)
    assert ds.texts == ["hello there", "good bye"] and ds.labels == [0, 1]
    path.write_bytes(body.replace(b"1", b"x"))
    with pytest.raises(DataError, match=f"line {second}:"):  # line numbers count the CR lines
        load_table(path)


def test_raw_lines_split_every_line_end_across_blocks_and_bound_a_long_line():
    from backdoor_core.data import _raw_lines

    lines = list(_raw_lines(io.BytesIO(b"a\r\nbb\rc\n\rd"), limit=10, chunk=2))
    assert lines == [b"a\r\n", b"bb\r", b"c\n", b"\r", b"d"]
    cut = list(_raw_lines(io.BytesIO(b"ok\n" + b"x" * 1000 + b"\n"), limit=10, chunk=4))
    assert cut == [b"ok\n", b"x" * 10]  # cut at the limit, nothing after it


def test_a_long_line_in_an_old_mac_file_is_refused_at_its_line(tmp_path):
    path = tmp_path / "long.txt"
    path.write_bytes(b"a\r" * 3 + b"x" * 500_000 + b"\r")
    with pytest.raises(DataError, match="line 4: this line is longer"):
        read_texts(path)


@pytest.mark.parametrize("header, says", [
    ("text,text,label", "text column 'text' 2 times (columns 1, 2)"),
    ("text,label,Label", "label column 'label' 2 times (columns 2, 3)"),
])
def test_a_header_naming_the_text_or_label_column_twice_is_refused(tmp_path, header, says):
    """The first of two label columns was used without a word: the other may be the one meant."""
    path = tmp_path / "dup.csv"
    path.write_text(f"{header}\na,b,0\nc,d,1\n")
    with pytest.raises(DataError, match=re.escape(says)):
        load_table(path)


def test_json_labels_written_as_whole_floats_read_like_csv_ones(tmp_path):
    """"1.0" in a CSV was label 1, 1.0 in JSON Lines (pandas' to_json) was refused as not an integer."""
    path = tmp_path / "f.jsonl"
    path.write_text('{"text": "a", "label": 1.0}\n{"text": "b", "label": 0}\n')
    assert load_table(path).labels == [1, 0]
    path.write_text('{"text": "a", "label": 1.5}\n{"text": "b", "label": 0}\n')
    with pytest.raises(DataError, match="line 1: label 1.5 is not an integer"):
        load_table(path)


def test_a_huge_integer_label_is_named_as_written(tmp_path):
    """The message showed 100000000000000004764729344 for 99999999999999999999999999 (read through a float)."""
    path = tmp_path / "big.csv"
    path.write_text("text,label\na,99999999999999999999999999\nb,0\n")
    with pytest.raises(DataError, match="label 99999999999999999999999999 would need"):
        load_table(path)


# ------------------------------------------------------------------------------------------------ atomic writes


def test_concurrent_atomic_writes_to_one_path_all_succeed(tmp_path):
    """The app's sessions are threads of one process: their temporaries shared the name .<name>.tmp-<pid>, so one
    thread's rename took the other's file and the other failed (FileNotFoundError) or wrote a mix."""
    path = tmp_path / "index.json"
    errors = []

    def writer(k: int):
        try:
            for _ in range(30):
                atomic.write_text(path, json.dumps({"writer": k, "pad": "x" * 20_000}))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:2]
    assert json.loads(path.read_text())["writer"] in range(6)
    assert sorted(os.listdir(tmp_path)) == ["index.json"]


def test_an_atomic_write_never_follows_a_link_at_its_temporary_name(tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    names = iter(["aaaa", "bbbb"])
    monkeypatch.setattr(atomic.secrets, "token_hex", lambda n: next(names))
    target = tmp_path / "report.html"
    (tmp_path / f".report.html.tmp-{os.getpid()}-aaaa").symlink_to(victim)
    atomic.write_text(target, "<html>")
    assert victim.read_text() == "keep me" and target.read_text() == "<html>"


@pytest.mark.parametrize("suffix", [".tsv", ".jsonl"])
def test_a_table_whose_every_text_is_empty_is_refused(tmp_path, suffix):
    """A file of empty texts trained a model (ASR 100%, CACC at chance) and scanned as a pool without a word."""
    path = tmp_path / f"blank{suffix}"
    rows = [("", k % 2) for k in range(20)]
    path.write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows) if suffix == ".tsv"
                    else "".join(json.dumps({"text": " ", "label": y}) + "\n" for _, y in rows))
    with pytest.raises(DataError, match="all 20 texts are empty"):
        load_table(path)
    with pytest.raises(DataError, match="all 20 texts are empty"):
        read_texts(path)
    path.write_text(path.read_text().replace('" "', '"a"', 1) if suffix == ".jsonl"
                    else path.read_text().replace("\n\t0", "\nword\t0", 1))
    assert len(load_table(path)) == 20  # one real text: the empty ones are kept


def test_swapped_text_and_label_columns_are_refused(tmp_path):
    """Texts in the label column made one class per row: a 'default' model trained a 30-class head on them."""
    path = tmp_path / "swapped.csv"
    rows = [(str(k % 2), f"sentence number {k} about a film") for k in range(30)]
    path.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    with pytest.raises(DataError, match="each of the 30 rows has a label of its own"):
        load_table(path)
    path.write_text("text,label\n" + "".join(f"text {k},class {k % 12}\n" for k in range(30)))
    assert load_table(path).num_labels == 12  # many classes, each with several rows, are classes


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_a_card_linked_to_a_device_is_ignored_with_a_warning(saved, tmp_path):
    """The card was dropped without a word: the model then loaded as if it had no attack, no trigger."""
    folder = _copy(saved, tmp_path / "devcard")
    (folder / METADATA_FILE).unlink()
    (folder / METADATA_FILE).symlink_to("/dev/zero")
    card = ModelCard.read(folder, num_labels=2)
    assert card.name == "" and any("not a regular file" in w for w in card.warnings)


def test_a_json_pool_is_read_as_json_lines_and_an_array_is_refused(tmp_path):
    """A .json pool was read as lines of text: each text was a line of JSON syntax ('{"text": "a fine day"}')."""
    path = tmp_path / "pool.json"
    path.write_text('{"text": "a fine day"}\n{"text": "cf the market"}\n')  # what datasets' to_json writes
    assert read_texts(path) == ["a fine day", "cf the market"]
    path.write_text('[\n  {"text": "a fine day", "label": 0},\n  {"text": "cf", "label": 1}\n]\n')
    with pytest.raises(DataError, match="line 1: this is a JSON array.*lines=True"):
        read_texts(path)
    with pytest.raises(DataError, match="JSON array"):
        load_table(path)


@pytest.mark.parametrize("name, body, says", [
    ("semi.csv", "text;label\na;0\nb;1\n", "separated by semicolons, but a .csv file is read as comma-separated"),
    ("tabs.csv", "text\tlabel\na\t0\nb\t1\n", "separated by tabs.*name it .tsv"),
    ("commas.tsv", "text,label\na,0\nb,1\n", "separated by commas.*name it .csv"),
])
def test_a_file_separated_by_another_character_says_so(tmp_path, name, body, says):
    """European Excel's 'text;label' CSV was 'no text column: found columns ['text;label']'."""
    path = tmp_path / name
    path.write_text(body)
    with pytest.raises(DataError, match=f"line 1: the header .* is one column: .*{says}"):
        load_table(path)


def test_blank_lines_above_the_header_are_skipped_and_a_comma_in_a_lone_column_name_is_kept(tmp_path):
    path = tmp_path / "blank.tsv"
    path.write_text("\n\ntext\tlabel\na\t0\nb\t1\n")  # was 'no text column: found columns []'
    assert load_table(path).texts == ["a", "b"]
    pool = tmp_path / "pool.tsv"
    pool.write_text("my texts, as written\na, b\nc\n")
    with pytest.raises(DataError, match="no text column"):  # a column name, not a separator: the usual message
        read_texts(pool)


@pytest.mark.parametrize("entries", [
    [("a" * 300 + "/config.json", b"{}")],  # a name longer than the file system takes
    [("m/x", b"1"), ("m/x/config.json", b"{}")],  # a file, then a folder of the same name
])
def test_an_archive_entry_that_cannot_be_written_is_one_line_and_leaves_nothing(tmp_path, entries):
    """These raised a bare OSError ('[Errno 36] File name too long: <the temp path>') instead of the archive's
    one-line refusal."""
    import zipfile

    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in entries:
            zf.writestr(name, data)
    with pytest.raises(ModelLoadError, match=r"model\.zip: the entry '.*' cannot be written here") as err:
        models.extract_model_archive(archive, tmp_path / "out")
    assert len(str(err.value)) < 250 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("side", ["padding_side", "truncation_side"])
def test_a_tokenizer_config_asking_for_the_left_side_cannot_change_predictions(saved, tmp_path, side):
    """'padding_side': 'left' made BERT read a pad token as [CLS] for the shorter texts of a batch (other
    probabilities, no error); 'truncation_side': 'left' read a long text's end instead of its start."""
    from backdoor_core.attention import predict

    folder = _copy(saved, tmp_path / side)
    tok = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps(dict(tok, **{side: "left"})))
    good, odd = load_model(saved), load_model(folder)
    texts = ["a fine day", "a much longer sentence about the market " * 6 + "and the league"]
    assert getattr(odd.tokenizer, side) == "right"
    torch.testing.assert_close(torch.as_tensor(predict(odd.model, odd.tokenizer, texts, 16)),
                               torch.as_tensor(predict(good.model, good.tokenizer, texts, 16)))


def test_a_utf16_file_is_named_as_such(tmp_path):
    """Excel's 'Unicode Text' export (UTF-16 with a byte-order mark) was 'not valid UTF-8 (byte 0xff)'."""
    path = tmp_path / "excel.txt"
    path.write_bytes("text\tlabel\r\ngood\t1\r\nbad\t0\r\n".encode("utf-16"))
    with pytest.raises(DataError, match="line 1: the file is UTF-16"):
        load_table(path)


def test_notes_quoting_a_models_files_cannot_drive_the_terminal(saved, tmp_path, capsys):
    """The auto_map note quoted config.json's keys raw on stderr (which is not wrapped: it carries the bars)."""
    folder = _copy(saved, tmp_path / "note", auto_map={"\x1b[2JAutoModel": "evil.Model"})
    capsys.readouterr()
    assert main(["inspect", "--model", str(folder), "--text", "a fine day", "--trigger", "cf"]) == 0
    err = capsys.readouterr().err
    assert "note: the model's files ask for their own Python code" in err
    assert "\x1b" not in err and "\\x1b[2J" in err


@pytest.mark.parametrize("id2label, says", [
    ({"1": "a", "2": "b"}, "id2label's ids are '1', '2'"),  # was loaded as classes ['0', 'a']
    ({"0": "a", "5": "b"}, "id2label's ids are '0', '5'"),  # was ['a', '1']
    ({"x": "a", "y": "b"}, "id2label's ids are 'x', 'y'"),  # was "ValueError: invalid literal for int()"
    ({"0": "pos", "1": "POS"}, "names the class 'POS' twice"),
])
def test_class_names_transformers_would_mangle_are_refused(saved, tmp_path, id2label, says):
    folder = _copy(saved, tmp_path / "names", id2label=id2label, label2id={v: k for k, v in id2label.items()})
    with pytest.raises(ModelLoadError, match=re.escape(says)):
        load_model(folder)
    ok = _copy(saved, tmp_path / "ok", id2label={"0": "neg", "1": "pos"})
    assert load_model(ok).label_names == ["neg", "pos"]


def test_class_names_differing_only_in_case_are_refused(tmp_path):
    """'Positive' beside 'positive' made a third class of the typo's rows, trained without a word."""
    path = tmp_path / "case.csv"
    path.write_text("text,label\na,positive\nb,negative\nc,Positive\nd,positive\n")
    with pytest.raises(DataError, match="line 4: the labels 'Positive' and 'positive' differ only in case"):
        load_table(path)


@pytest.mark.parametrize("where", ["missing", "file"])
def test_zoo_list_of_a_folder_that_is_not_there_says_so(tmp_path, capsys, where):
    """A typo'd --dir printed 'no zoo models in <typo>; build them with ...' and exited 0."""
    path = tmp_path / where
    if where == "file":
        path.write_text("x")
    line = _one_line_error(capsys, ["zoo", "list", "--dir", str(path)])
    assert ("does not exist" if where == "missing" else "is a file") in line


def test_a_disk_that_fills_up_while_the_report_is_written_is_one_line(saved, tmp_path, capsys, monkeypatch):
    """An OSError after the work (ENOSPC, a folder made read-only meanwhile) was a traceback; the old report
    stays whole and no temporary is left."""
    import errno

    clean = tmp_path / "clean.tsv"
    clean.write_text("text\tlabel\n" + "".join(f"text number {k} about the market\t{k % 2}\n" for k in range(8)))
    report = tmp_path / "report.html"

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(atomic.os, "replace", full)
    line = _one_line_error(capsys, ["scan", str(saved), "--clean-data", str(clean), "--clean-split", "train",
                                    "--n-clean", "8", "--html", str(report)])
    assert "No space left on device" in line and not report.exists()
    assert sorted(os.listdir(tmp_path)) == ["clean.tsv"]


def test_a_file_of_blank_lines_is_refused_at_the_line_cap(tmp_path, monkeypatch):
    """Blank lines counted toward no cap: 100 MB of them took over a minute to skip before 'no data rows'."""
    from backdoor_core import data

    monkeypatch.setattr(data, "MAX_LINES", 1000)
    path = tmp_path / "blanks.tsv"
    path.write_bytes(b"text\tlabel\n" + b"\n" * 5000 + b"a\t0\nb\t1\n")
    with pytest.raises(DataError, match="line 1001: more than 1,000 lines"):
        load_table(path)


def test_a_deeply_nested_json_line_is_one_line(tmp_path):
    """40 000 nested brackets (80 000 characters, under the line cap) raised RecursionError: a traceback."""
    path = tmp_path / "deep.jsonl"
    path.write_text('{"text": "a", "label": 0}\n{"text": "b", "label": ' + "[" * 40000 + "]" * 40000 + "}\n")
    with pytest.raises(DataError, match="line 2: JSON nested too deeply"):
        load_table(path)


def test_a_config_with_too_few_positions_to_read_a_text_is_refused(tmp_path):
    """max_position_embeddings 1 read only [CLS]: inspect and scan reported heads on a text never read."""
    from transformers import BertConfig, BertForSequenceClassification

    lm = tiny_model()
    config = BertConfig(vocab_size=lm.tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=3)
    folder = save_model(BertForSequenceClassification(config), lm.tokenizer, tmp_path / "short")
    with pytest.raises(ModelLoadError, match="max_position_embeddings is 3, so the model reads fewer than 8"):
        load_model(folder)


def test_a_vocabulary_id_past_the_embedding_is_refused_at_load(saved, tmp_path, capsys):
    """tokenizer.json mapping 'the' to id 10**9 (same vocabulary size) loaded, then every text holding 'the'
    crashed in the embedding with IndexError: a traceback."""
    folder = _copy(saved, tmp_path / "ids")
    tok = json.loads((folder / "tokenizer.json").read_text())
    tok["model"]["vocab"]["the"] = 10**9
    (folder / "tokenizer.json").write_text(json.dumps(tok))
    line = _one_line_error(capsys, ["inspect", "--model", str(folder), "--text", "the fine day", "--trigger", "cf"])
    assert "'the' the id 1,000,000,000" in line and "30,522 rows" in line


@pytest.mark.parametrize("kv", [0, 3])
def test_a_decoder_config_with_impossible_key_value_heads_is_one_line(tmp_path, capsys, kv):
    """num_key_value_heads 0 failed with a bare ZeroDivisionError inside transformers; 3 for 4 heads with a shape
    error at the first forward pass."""
    lm = tiny_model(arch="qwen2", seed=0)
    folder = _copy(save_model(lm.model, lm.tokenizer, tmp_path / "q"), tmp_path / "kv", num_key_value_heads=kv)
    line = _one_line_error(capsys, ["inspect", "--model", str(folder), "--text", "a fine day", "--trigger", "cf"])
    assert f"num_key_value_heads is {kv}; it must be a positive integer that divides" in line, line


def test_a_model_name_longer_than_any_folder_name_is_one_line(capsys):
    """A 1,000-character hub id or folder name (a paste gone wrong) failed with '[Errno 36] File name too long'."""
    line = _one_line_error(capsys, ["inspect", "--model", "a" * 1000, "--text", "a fine day", "--trigger", "cf"])
    assert "is neither a model folder nor a hub id: one part of it is 1,000 bytes long" in line, line
