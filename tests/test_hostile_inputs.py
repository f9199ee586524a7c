"""Hostile files and faults (issue 11, core side): each probe builds a hostile artifact in a temp dir and asserts
the safe behaviour — one plain line naming the file (CLI exit 2), nothing deleted, no memory blow-up.

The 4-writer x 100-round save stress is ``bench/hostile_save_stress.py``; here it runs with fewer rounds
(``BACKDOOR_STRESS_ROUNDS`` raises it).
"""

import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
import torch

from backdoor_core import data, models
from backdoor_core.attention import NonFiniteOutputError, predict, run_attention
from backdoor_core.cli import main
from backdoor_core.data import DataError, load_table, read_texts
from backdoor_core.models import (
    METADATA_FILE,
    ModelLoadError,
    SaveRefusedError,
    extract_model_archive,
    extract_model_zip,
    load_model,
    save_model,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def saved(tiny, tmp_path_factory):
    """A good tiny model folder saved by the lab; tests copy it and break the copy."""
    return save_model(tiny.model, tiny.tokenizer, tmp_path_factory.mktemp("good") / "good", {"name": "good"})


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _one_line_error(capsys, argv) -> str:
    """Run the CLI; assert exit 2 and exactly one line on stderr (no traceback); return that line."""
    capsys.readouterr()  # drop what the test printed before (e.g. a library progress bar)
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    # a training command on a busy machine first says that it trains on one thread (commands/attack.py)
    err = "\n".join(line for line in err.splitlines() if not line.startswith("note: the machine is busy"))
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


# --------------------------------------------------------------------------------------- 2. --out never deletes


def test_save_refuses_a_user_folder_and_keeps_its_files(tiny, tmp_path):
    user = tmp_path / "thesis"
    user.mkdir()
    (user / "thesis.txt").write_text("four years of work")
    with pytest.raises(SaveRefusedError, match="not a model saved by this lab") as err:
        save_model(tiny.model, tiny.tokenizer, user, {"name": "x"})
    assert "\n" not in str(err.value)
    assert (user / "thesis.txt").read_text() == "four years of work"
    assert _siblings(user) == ["thesis"]  # no temporary folder left either


def test_save_refuses_a_lab_model_folder_holding_user_files(tiny, tmp_path):
    out = save_model(tiny.model, tiny.tokenizer, tmp_path / "m", {"v": 1})
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SaveRefusedError, match="notes.txt"):
        save_model(tiny.model, tiny.tokenizer, out, {"v": 2})
    assert (out / "notes.txt").read_text() == "mine"
    save_model(tiny.model, tiny.tokenizer, out, {"v": 3}, force=True)
    assert not (out / "notes.txt").exists() and json.loads((out / METADATA_FILE).read_text())["v"] == 3


def test_save_replaces_its_own_model_and_empty_folders(tiny, tmp_path):
    out = save_model(tiny.model, tiny.tokenizer, tmp_path / "m", {"v": 1})
    save_model(tiny.model, tiny.tokenizer, out, {"v": 2})
    assert load_model(out).metadata["v"] == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    save_model(tiny.model, tiny.tokenizer, empty, {"v": 1})
    assert (empty / "model.safetensors").is_file()


def test_save_never_replaces_a_file_and_never_follows_a_link(tiny, tmp_path):
    f = tmp_path / "f"
    f.write_text("data")
    with pytest.raises(SaveRefusedError, match="is a file"):
        save_model(tiny.model, tiny.tokenizer, f, force=True)
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep.txt").write_text("keep")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(SaveRefusedError, match="symbolic link"):
        save_model(tiny.model, tiny.tokenizer, link)
    save_model(tiny.model, tiny.tokenizer, link, force=True)
    assert not link.is_symlink() and (link / "model.safetensors").is_file()
    assert (target / "keep.txt").read_text() == "keep"


@pytest.mark.parametrize("verb", ["attack", "sanitize"])
def test_cli_out_refuses_a_user_folder_before_any_work(capsys, tmp_path, verb):
    user = tmp_path / "thesis"
    user.mkdir()
    (user / "thesis.txt").write_text("four years of work")
    argv = {"attack": ["attack", "--model", "nowhere", "--data", "nowhere.tsv", "--out", str(user)],
            "sanitize": ["sanitize", "nowhere", "--clean-data", "nowhere.tsv", "--out", str(user)]}[verb]
    line = _one_line_error(capsys, argv)
    assert "--force" in line and str(user) in line
    assert (user / "thesis.txt").read_text() == "four years of work"


@pytest.mark.parametrize("verb", ["attack", "sanitize"])
@pytest.mark.parametrize("out", ["", " ", ".", "..", "~"])
def test_cli_out_never_replaces_the_current_or_home_folder_even_forced(capsys, tmp_path, monkeypatch, verb, out):
    work = tmp_path / "proj" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "proj"))
    (work / "thesis.txt").write_text("four years of work")
    argv = {"attack": ["attack", "--model", "nowhere", "--data", "nowhere.tsv", "--out", out, "--force"],
            "sanitize": ["sanitize", "nowhere", "--clean-data", "nowhere.tsv", "--out", out, "--force"]}[verb]
    line = _one_line_error(capsys, argv)
    assert any(w in line for w in ("current folder", "home folder", "empty output path")), line
    assert (work / "thesis.txt").read_text() == "four years of work"


def test_cli_out_never_replaces_a_folder_holding_the_model_it_reads(saved, capsys, tmp_path):
    parent = _copy(saved.parent, tmp_path / "models")
    model = parent / saved.name
    line = _one_line_error(capsys, ["sanitize", str(model), "--clean-data", "nowhere.tsv", "--out", str(parent),
                                    "--force"])
    assert "holds" in line and str(model) in line
    assert (model / "model.safetensors").is_file()


def test_cli_out_asks_for_force_before_it_replaces_a_saved_model(saved, capsys, tmp_path):
    other = _copy(saved, tmp_path / "other")
    before = (other / "model.safetensors").read_bytes()
    line = _one_line_error(capsys, ["attack", "--model", "nowhere", "--data", "nowhere.tsv", "--out", str(other)])
    assert "already holds a saved model" in line and "--force" in line
    assert (other / "model.safetensors").read_bytes() == before
    from backdoor_core.models import check_save_target

    check_save_target(other, force=True)  # with --force the check lets it through (the save replaces it)


@pytest.mark.parametrize("where", ["/proc/1/x", "/sys/x", "file"])
def test_cli_out_that_cannot_be_written_is_refused_before_any_work(capsys, tmp_path, where):
    if where == "file":
        (tmp_path / "plain").write_text("a file")
        where = str(tmp_path / "plain" / "model")
    line = _one_line_error(capsys, ["attack", "--model", "nowhere", "--data", "nowhere.tsv", "--out", where])
    assert "cannot write under" in line or "is a file" in line, line


def test_scan_html_refuses_a_folder_and_a_foreign_file_before_the_scan(capsys, tmp_path):
    folder = tmp_path / "reports"
    folder.mkdir()
    line = _one_line_error(capsys, ["scan", "nowhere", "--clean-data", "nowhere.tsv", "--html", str(folder)])
    assert "is a folder" in line
    victim = tmp_path / "victim.html"
    victim.write_text("<p>my notes</p>")
    line = _one_line_error(capsys, ["scan", "nowhere", "--clean-data", "nowhere.tsv", "--html", str(victim)])
    assert "not written by this lab" in line and "--force" in line
    assert victim.read_text() == "<p>my notes</p>"


def test_an_earlier_lab_report_may_be_replaced_and_a_foreign_file_only_forced(tmp_path):
    from backdoor_core.atomic import check_output_file
    from backdoor_core.report import REPORT_MARK, html_report

    ours, theirs = tmp_path / "ours.html", tmp_path / "theirs.html"
    ours.write_text(html_report("Scan", []))
    theirs.write_text("<p>notes</p>")
    assert check_output_file(ours, ours=REPORT_MARK) == ours
    with pytest.raises(ValueError, match="not written by this lab"):
        check_output_file(theirs, ours=REPORT_MARK)
    assert check_output_file(theirs, force=True, ours=REPORT_MARK) == theirs
    with pytest.raises(ValueError, match="empty"):
        check_output_file("  ")


@pytest.mark.parametrize("argv, says", [
    (["attack", "--epochs", "0"], "positive integer"),
    (["attack", "--epochs", "-1"], "positive integer"),
    (["attack", "--max-steps", "0"], "positive integer"),
    (["attack", "--batch-size", "0"], "positive integer"),
    (["attack", "--batch-size", "-1"], "positive integer"),
    (["attack", "--test-size", "0"], "positive integer"),
    (["attack", "--eval-every", "-1"], "integer >= 0"),
    (["attack", "--max-length", "1"], "integer >= 8"),
    (["sanitize", "m", "--clean-data", "d", "--out", "o", "--epochs", "0"], "positive integer"),
    (["sanitize", "m", "--clean-data", "d", "--out", "o", "--max-steps", "-1"], "positive integer"),
    (["sanitize", "m", "--clean-data", "d", "--out", "o", "--n-eval", "0"], "positive integer"),
    (["sanitize", "m", "--clean-data", "d", "--out", "o", "--n-clean", "0"], "positive integer"),
    (["scan", "m", "--clean-data", "d", "--n-clean", "-1"], "positive integer"),
    (["scan", "m", "--clean-data", "d", "--rel-threshold", "nan"], "in [0, 1]"),
    (["inspect", "--text", "a day", "--position", "-1"], "integer >= 0"),
    (["inspect", "--text", "a day", "--top", "-1"], "positive integer"),
])
def test_cli_numbers_out_of_range_are_refused_when_parsed(capsys, argv, says):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and says in err, err


# --------------------------------------------------------------------------------------- 3. crash-safe saves


def _meta_version(path: Path):
    return load_model(path).metadata["v"]


FAULT_POINTS = [("rename", k) for k in range(1, 5)] + [("rmtree", 1), ("write", 1), ("fsync_dir", 1)]


@pytest.mark.parametrize("what,nth", FAULT_POINTS)
def test_save_survives_a_fault_at_every_step(tiny, tmp_path, monkeypatch, what, nth):
    """A fault (exception) at any step leaves a complete model at the destination — the old one or the new
    one — and the next save leaves no .tmp-/.new-/.old- sibling."""
    import shutil

    out = save_model(tiny.model, tiny.tokenizer, tmp_path / "m", {"v": 1})
    calls = {"n": 0}

    def faulty(real):
        def wrapper(*a, **k):
            calls["n"] += 1
            if calls["n"] == nth:
                raise OSError(f"injected fault in {what}")
            return real(*a, **k)
        return wrapper

    target = {"rename": (os, "rename"), "rmtree": (shutil, "rmtree"), "write": (models, "_write_files"),
              "fsync_dir": (models, "_fsync_dir")}[what]
    with monkeypatch.context() as m:
        m.setattr(*target, faulty(getattr(*target)))
        try:
            save_model(tiny.model, tiny.tokenizer, out, {"v": 2})
        except OSError as exc:
            assert "injected" in str(exc)
    assert _meta_version(out) in (1, 2)  # a complete model, whichever
    save_model(tiny.model, tiny.tokenizer, out, {"v": 3})
    assert _meta_version(out) == 3
    assert _siblings(out) == ["m"]


def test_killed_between_the_renames_is_recovered_on_load(tiny, tmp_path):
    """The states a SIGKILL can leave: destination gone with a complete .new- (and .old-) copy."""
    out = save_model(tiny.model, tiny.tokenizer, tmp_path / "m", {"v": 1})
    newer = save_model(tiny.model, tiny.tokenizer, tmp_path / "scratch", {"v": 2})
    os.rename(out, tmp_path / ".m.old-1-100")
    os.rename(newer, tmp_path / ".m.new-1-200")
    (tmp_path / ".m.tmp-9-300").mkdir()  # a killed writer's half-written folder (no live lock)
    assert _meta_version(out) == 2  # load_model recovered the newest complete copy
    assert _siblings(out) == ["m"]
    # only the old copy left (killed after moving the old model aside, before the new one was complete)
    os.rename(out, tmp_path / ".m.old-1-400")
    assert _meta_version(out) == 2
    assert _siblings(out) == ["m"]


def test_a_live_writers_temp_folder_is_not_cleaned(tiny, tmp_path):
    import fcntl

    out = save_model(tiny.model, tiny.tokenizer, tmp_path / "m", {"v": 1})
    live = tmp_path / ".m.tmp-1-1"
    live.mkdir()
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # what a running save_model holds
        # another process's cleaner must leave it alone: probe from a child process
        code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from pathlib import Path; "
                f"from backdoor_core.models import recover_save; recover_save(Path({str(out)!r}))")
        subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
        assert live.is_dir()
    finally:
        os.close(fd)
    save_model(tiny.model, tiny.tokenizer, out, {"v": 2})
    assert _siblings(out) == ["m"]


WRITER = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {root!r})
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    torch.set_num_threads(1)
    from backdoor_core.models import save_model, tiny_model
    t = tiny_model()
    for r in range({rounds}):
        save_model(t.model, t.tokenizer, {out!r}, {{"v": r, "writer": {w}}})
        if r == 0:
            print("started", flush=True)
    print("ok")
""")


def _writers(out: Path, writers: int, rounds: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", WRITER.format(root=str(ROOT), rounds=rounds, out=str(out), w=w)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for w in range(writers)]


def test_four_writers_to_one_destination(tmp_path):
    """4 processes x N saves to one folder (N = $BACKDOOR_STRESS_ROUNDS, default 5; the bench runs 100):
    every save succeeds, a reader always finds a complete model, and nothing is left beside it."""
    rounds = int(os.environ.get("BACKDOOR_STRESS_ROUNDS", "5"))
    out = tmp_path / "shared"
    procs = _writers(out, 4, rounds)
    reads = 0
    while any(p.poll() is None for p in procs):
        if out.exists():
            loaded = load_model(out)  # never a half-written or missing model
            assert loaded.metadata["writer"] in range(4)
            reads += 1
        time.sleep(0.05)
    for p in procs:
        stdout, stderr = p.communicate()
        assert p.returncode == 0 and stdout.split() == ["started", "ok"], stderr[-2000:]
    assert reads > 0
    assert load_model(out).metadata["v"] == rounds - 1
    assert _siblings(out) == ["shared"]


def test_writers_killed_mid_save_leave_a_loadable_model(tiny, tmp_path):
    out = save_model(tiny.model, tiny.tokenizer, tmp_path / "m", {"v": -1, "writer": -1})
    procs = _writers(out, 3, 1000)
    for p in procs:
        assert p.stdout.readline().strip() == "started", p.stderr.read()[-2000:]
    for p, delay in zip(procs, (0.0, 0.13, 0.31)):  # SIGKILL wherever they are: writing, renaming, cleaning up
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        assert load_model(out).metadata["writer"] in (0, 1, 2)  # the others may still be saving
    for p in procs:
        p.wait(timeout=60)
        p.stdout.close()
        p.stderr.close()
    assert load_model(out).metadata["writer"] in (0, 1, 2)
    save_model(tiny.model, tiny.tokenizer, out, {"v": 0})
    assert _siblings(out) == ["m"]


# --------------------------------------------------------------------------------------- 4. one line per load


def _break(saved: Path, tmp_path: Path, how: str) -> Path:
    d = _copy(saved, tmp_path / how)
    st = d / "model.safetensors"
    raw = st.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    config = json.loads((d / "config.json").read_text())
    if how == "truncated":
        st.write_bytes(raw[: len(raw) // 2])
    elif how == "header_length":
        st.write_bytes(struct.pack("<Q", 10**12) + raw[8:])
    elif how == "offsets":
        header = json.loads(raw[8 : 8 + n])
        key = next(k for k in header if k != "__metadata__")
        header[key]["data_offsets"] = [0, 10**9]
        h = json.dumps(header).encode()
        h += b" " * (-len(h) % 8)
        st.write_bytes(struct.pack("<Q", len(h)) + h + raw[8 + n :])
    elif how == "pickle_named_safetensors":
        from safetensors.torch import load_file

        tensors = {k: v.clone() for k, v in load_file(st).items()}  # not mmapped: st is overwritten
        torch.save(tensors, st)
    elif how == "size_mismatch":
        config.update(hidden_size=64, intermediate_size=128)
    elif how == "zero_heads":
        config["num_attention_heads"] = 0
    elif how == "tokenizer_json":
        (d / "tokenizer.json").write_text("{not json")
    elif how == "tokenizer_structure":  # valid JSON, not a tokenizer (KeyError deep inside the library)
        (d / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "WordPiece", "vocab": 5}}')
    elif how == "more_layers":
        config["num_hidden_layers"] += 2
    elif how == "fewer_layers":
        config["num_hidden_layers"] = 1
    elif how == "no_tokenizer":
        for f in d.iterdir():
            if f.name.startswith(("tokenizer", "vocab", "special_tokens")):
                f.unlink()
    elif how == "nan_weights":
        from safetensors.torch import load_file, save_file

        tensors = {k: v.clone() for k, v in load_file(st).items()}
        tensors["classifier.weight"] = torch.full_like(tensors["classifier.weight"], float("nan"))
        save_file(tensors, st, metadata={"format": "pt"})
    elif how == "huge_config":  # a tiny weights file with a config that would allocate gigabytes
        config.update(hidden_size=8192, intermediate_size=32768, num_attention_heads=8)
    (d / "config.json").write_text(json.dumps(config))
    return d


BROKEN = {
    "truncated": "model.safetensors",
    "header_length": "model.safetensors",
    "offsets": "model.safetensors",
    "pickle_named_safetensors": "model.safetensors",
    "size_mismatch": "model.safetensors",
    "zero_heads": "config.json",
    "tokenizer_json": "tokenizer",
    "tokenizer_structure": "tokenizer",
    "more_layers": "missing",
    "fewer_layers": "not used by the config",
    "no_tokenizer": "[UNK]",
    "nan_weights": "NaN",
    "huge_config": "config.json",
}


@pytest.mark.parametrize("how", sorted(BROKEN))
def test_broken_model_folder_is_one_line_naming_the_file(saved, tmp_path, capsys, how):
    d = _break(saved, tmp_path, how)
    with pytest.raises(ModelLoadError) as err:
        load_model(d)
    message = str(err.value)
    assert "\n" not in message and str(d) in message and BROKEN[how] in message, message
    line = _one_line_error(capsys, ["inspect", "--model", str(d), "--text", "a fine day"])
    assert str(d) in line


def test_metadata_that_is_not_an_object_is_ignored(saved, tmp_path):
    d = _copy(saved, tmp_path / "meta")
    (d / METADATA_FILE).write_text("[1, 2, 3]")
    loaded = load_model(d)  # the model card module turns it into a warning (model_card.ModelCard.read)
    assert loaded.card_warnings and loaded.name == "meta"


def test_refused_pickle_with_allow_pickle_is_one_line_and_runs_nothing(saved, tmp_path, capsys):
    d = _copy(saved, tmp_path / "evil")
    (d / "model.safetensors").unlink()
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    torch.save({"bert.embeddings.word_embeddings.weight": Evil()}, d / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="pytorch_model.bin"):
        load_model(d, allow_pickle=True)
    line = _one_line_error(capsys, ["inspect", "--model", str(d), "--text", "hi there", "--allow-pickle"])
    assert "pytorch_model.bin" in line
    assert not marker.exists()


def test_deberta_scan_works_and_an_unsupported_architecture_is_one_line(tiny, tmp_path, capsys):
    """The issue's DeBERTa-v2 scan crashed with AttributeError; DeBERTa is now an adapter, so its scan runs, and
    an architecture without an adapter (SqueezeBERT) is refused in one line naming it."""
    from transformers import (DebertaV2Config, DebertaV2ForSequenceClassification, SqueezeBertConfig,
                              SqueezeBertForSequenceClassification)

    clean = tmp_path / "clean.tsv"
    clean.write_text("sentence\tlabel\n" + "".join(f"text {i} here\t{i % 2}\n" for i in range(40)))
    torch.manual_seed(0)
    config = DebertaV2Config(vocab_size=tiny.tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=4, intermediate_size=64, max_position_embeddings=128, num_labels=2)
    d = save_model(DebertaV2ForSequenceClassification(config), tiny.tokenizer, tmp_path / "deberta")
    capsys.readouterr()
    assert main(["scan", str(d), "--clean-data", str(clean), "--json"]) == 0, capsys.readouterr().err
    config = SqueezeBertConfig(vocab_size=tiny.tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=4, intermediate_size=64, embedding_size=32,
                               max_position_embeddings=128, num_labels=2)
    d = save_model(SqueezeBertForSequenceClassification(config), tiny.tokenizer, tmp_path / "squeeze")
    line = _one_line_error(capsys, ["scan", str(d), "--clean-data", str(clean)])
    assert "squeezebert" in line.lower() or "SqueezeBert" in line


def _zip_of(folder: Path, zpath: Path, prefix: str = "model") -> Path:
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_STORED) as z:
        for f in sorted(folder.iterdir()):
            z.write(f, f"{prefix}/{f.name}")
    return zpath


def _patch_zip(zpath: Path, local_offset: int, central_offset: int, value: int, size: int = 2, bitor=False):
    """Overwrite a field in every local header (PK\\3\\4) and central directory entry (PK\\1\\2)."""
    raw = bytearray(zpath.read_bytes())
    fmt = "<H" if size == 2 else "<I"
    for sig, off in ((b"PK\x03\x04", local_offset), (b"PK\x01\x02", central_offset)):
        i = raw.find(sig)
        while i != -1:
            old = struct.unpack_from(fmt, raw, i + off)[0]
            struct.pack_into(fmt, raw, i + off, (old | value) if bitor else value)
            i = raw.find(sig, i + 4)
    zpath.write_bytes(bytes(raw))


@pytest.mark.parametrize("how", ["bad_crc", "deflate64", "encrypted"])
def test_unreadable_zips_are_one_line_and_leave_nothing(saved, tmp_path, how):
    z = _zip_of(saved, tmp_path / "m.zip")
    if how == "bad_crc":
        raw = bytearray(z.read_bytes())
        i = raw.find(b'"model_type"')  # inside config.json's stored bytes
        raw[i + 1] ^= 0xFF
        z.write_bytes(bytes(raw))
    elif how == "deflate64":
        _patch_zip(z, 8, 10, 9)
    else:
        _patch_zip(z, 6, 8, 0x1, bitor=True)
    dest = tmp_path / "extract"
    dest.mkdir()
    with pytest.raises(ModelLoadError) as err:
        extract_model_zip(z, dest)
    assert "\n" not in str(err.value) and "m.zip" in str(err.value)
    assert not dest.exists()  # the extraction folder is cleaned up


# --------------------------------------------------------------------------------------- 5. silent wrong analysis


def test_nan_outputs_are_an_error_in_the_forward_path(tiny):
    import copy

    broken = copy.deepcopy(tiny.model)
    with torch.no_grad():
        broken.classifier.weight.fill_(float("inf"))
    with pytest.raises(NonFiniteOutputError, match="NaN/Inf"):
        predict(broken, tiny.tokenizer, ["a fine day"])
    with pytest.raises(NonFiniteOutputError):
        run_attention(broken, tiny.tokenizer, ["a fine day"])


# --------------------------------------------------------------------------------------- 6. memory caps


def test_a_huge_label_is_refused_without_building_the_names(tmp_path):
    f = tmp_path / "labels.tsv"
    f.write_text("sentence\tlabel\ngood\t1\nbad\t1000000000000\n")
    t0 = time.perf_counter()
    with pytest.raises(DataError, match="at most 1,000"):
        load_table(f)
    assert time.perf_counter() - t0 < 5


def test_too_many_class_names_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MAX_LABELS", 3)
    f = tmp_path / "names.tsv"
    f.write_text("sentence\tlabel\n" + "".join(f"t\tclass{i}\n" for i in range(5)))
    with pytest.raises(DataError, match="class names"):
        load_table(f)


@pytest.mark.parametrize("suffix", [".txt", ".tsv", ".csv", ".jsonl"])
def test_pool_caps_line_length_rows_and_size(tmp_path, monkeypatch, suffix):
    long = "word " * 30_000  # 150k characters on one line
    header = {".txt": "", ".tsv": "text\n", ".csv": "text\n", ".jsonl": ""}[suffix]
    row = (lambda t: json.dumps({"text": t}) + "\n") if suffix == ".jsonl" else (lambda t: t + "\n")
    f = tmp_path / f"pool{suffix}"
    f.write_text(header + row("short") + row(long))
    with pytest.raises(DataError, match="MAX_LINE_CHARS") as err:
        read_texts(f)
    assert "line 2" in str(err.value) or "line 3" in str(err.value)
    f.write_text(header + "".join(row(f"text {i}") for i in range(12)))
    assert len(read_texts(f)) == 12
    monkeypatch.setattr(data, "MAX_ROWS", 10)
    with pytest.raises(DataError, match="MAX_ROWS"):
        read_texts(f)
    monkeypatch.setattr(data, "MAX_FILE_BYTES", 20)
    with pytest.raises(DataError, match="MAX_FILE_BYTES"):
        read_texts(f)


def test_scan_refuses_a_huge_pool_line_in_one_line(saved, tmp_path, capsys):
    pool = tmp_path / "pool.txt"
    pool.write_text("hello\n" + "x" * 5_000_000 + "\n")
    clean = tmp_path / "clean.tsv"
    clean.write_text("sentence\tlabel\n" + "".join(f"text {i} here\t{i % 2}\n" for i in range(40)))
    line = _one_line_error(capsys, ["scan", str(saved), "--clean-data", str(clean), "--pool", str(pool)])
    assert "pool.txt, line 2" in line


class _SpyTokenizer:
    """Forwards to a real tokenizer and records the longest text it was asked to encode."""

    def __init__(self, inner):
        self.inner, self.longest = inner, 0

    def __call__(self, texts, *a, **k):
        self.longest = max([self.longest, *(len(t) for t in ([texts] if isinstance(texts, str) else texts))])
        return self.inner(texts, *a, **k)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_attention_never_tokenizes_a_whole_huge_text(tiny):
    spy = _SpyTokenizer(tiny.tokenizer)
    text = "lorem ipsum " * 200_000  # 2.4 M characters
    (rec,) = run_attention(tiny.model, spy, [text], max_length=32)
    assert rec.truncated and len(rec.tokens) == 32
    assert spy.longest <= 33 * 128
    predict(tiny.model, spy, [text], max_length=32)
    assert spy.longest <= 33 * 128


# --------------------------------------------------------------------------------------- 7. --max-length


@pytest.mark.parametrize("value", ["0", "-3", "1", "7", "abc"])
def test_max_length_must_leave_room_for_text(saved, capsys, value):
    with pytest.raises(SystemExit) as exit_:
        main(["inspect", "--model", str(saved), "--text", "a fine day", f"--max-length={value}"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and "integer >= 8 (tokens)" in err, err


def test_max_length_is_capped_at_the_position_embeddings(saved, capsys):
    rc = main(["inspect", "--model", str(saved), "--text", "a fine day", "--max-length", "100000", "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "using 128" in captured.err  # tiny_model has 128 positions
    assert models.check_max_length(100000, load_model(saved).model) == (
        128, "--max-length 100000 is more than this model's 128 positions; using 128.")
    with pytest.raises(ValueError, match="positive integer"):
        models.check_max_length(0, load_model(saved).model)


# --------------------------------------------------------------------------------------- 8. uploaded zips


def test_zip_cap_fits_a_bert_base_model_and_no_more():
    assert 500 * 1024**2 <= models.ZIP_MAX_BYTES <= 1024**3


def test_zip_bomb_of_zeros_is_refused_and_cleaned(tmp_path):
    z = tmp_path / "zeros.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("m/config.json", "{}")
        zf.writestr("m/model.safetensors", b"\0" * (20 * 1024**2))
    dest = tmp_path / "x"
    with pytest.raises(ModelLoadError, match="zip bomb"):
        extract_model_zip(z, dest)
    assert not dest.exists()


def test_zip_with_two_models_says_which_it_loaded(saved, tmp_path):
    z = tmp_path / "two.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for prefix in ("b_model", "a_model"):
            for f in sorted(saved.iterdir()):
                zf.write(f, f"{prefix}/{f.name}")
    got = extract_model_archive(z, tmp_path / "x")
    assert got.model_dir.name == "a_model" and len(got.candidates) == 2
    assert "a_model" in got.note and "b_model" in got.note and "\n" not in got.note
    assert load_model(got.model_dir).num_layers == 2


def test_zip_failure_keeps_a_callers_nonempty_folder(saved, tmp_path):
    z = tmp_path / "m.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("readme.txt", "no model here")
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "keep.txt").write_text("keep")
    with pytest.raises(ModelLoadError, match="no config.json"):
        extract_model_zip(z, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["keep.txt"]


def test_pasted_pool_texts_get_the_file_caps(monkeypatch):
    """The Detect page's pasted pool goes through data.split_texts: same caps as a pool file, one line naming it."""
    from backdoor_core import data

    assert data.split_texts("a first text\n\n  second  \n") == ["a first text", "second"]
    monkeypatch.setattr(data, "MAX_LINE_CHARS", 50)
    with pytest.raises(data.DataError, match=r"^Pool texts, line 2: this row has 60 characters"):
        data.split_texts("ok\n" + "x" * 60, "Pool texts")
    monkeypatch.setattr(data, "MAX_ROWS", 2)
    with pytest.raises(data.DataError, match="more than 2 data rows"):
        data.split_texts("a\nb\nc")


# --------------------------------------------------------------------------------------- classes by name


def _named_tiny(tmp_path, names):
    from backdoor_core.models import tiny_model

    lm = tiny_model(num_labels=len(names), seed=0)
    lm.model.config.id2label = dict(enumerate(names))
    lm.model.config.label2id = {n: i for i, n in enumerate(names)}
    return save_model(lm.model, lm.tokenizer, tmp_path / "named", {"name": "named"})


def test_scan_reads_a_name_labelled_file_in_the_models_order_and_refuses_other_classes(tmp_path, capsys):
    from backdoor_core.commands.scan import load_inputs
    from backdoor_core.cli import build_parser

    model = _named_tiny(tmp_path, ["world", "business"])
    perm = tmp_path / "perm.tsv"  # the alphabet would give business id 0, the model's world
    perm.write_text("text\tlabel\n" + "".join(f"story {i}\t{['world', 'business'][i % 2]}\n" for i in range(20)))
    args = build_parser().parse_args(["scan", str(model), "--clean-data", str(perm)])
    _, clean, _ = load_inputs(args)
    assert clean.label_names == ["world", "business"] and clean.labels[:2] == [0, 1]
    other = tmp_path / "other.tsv"
    other.write_text("text\tlabel\n" + "".join(f"story {i}\t{['sport', 'tech'][i % 2]}\n" for i in range(20)))
    line = _one_line_error(capsys, ["scan", str(model), "--clean-data", str(other)])
    assert "label 'sport' is not one of the label names ['world', 'business']" in line


def test_attack_reads_test_data_in_the_training_datas_classes(tmp_path, capsys):
    from backdoor_core.commands.attack import load_train_source

    train, test = tmp_path / "train.tsv", tmp_path / "test.tsv"
    train.write_text("text\tlabel\n" + "".join(f"review {i}\t{['neg', 'pos'][i % 2]}\n" for i in range(20)))
    test.write_text("text\tlabel\nonly good ones\tpos\nanother\tpos\n")  # alone it would read pos as class 0
    _, _, test_set = load_train_source(str(train), str(test), 0)
    assert test_set.label_names == ["neg", "pos"] and test_set.labels == [1, 1]
    stray = tmp_path / "stray.tsv"
    stray.write_text("text\tlabel\n" + "".join(f"t{i}\t{i % 2}\n" for i in range(20)) + "odd\t7\n")
    line = _one_line_error(capsys, ["attack", "--model", "nowhere", "--data", str(stray)])
    assert "5 of its 8 classes have no text (2, 3, 4, 5, 6)" in line


def test_a_model_folder_without_config_json_says_so(saved, tmp_path, capsys):
    folder = _copy(saved, tmp_path / "noconfig")
    (folder / "config.json").unlink()
    line = _one_line_error(capsys, ["inspect", "--model", str(folder), "--text", "a fine day"])
    assert "has no config.json" in line and "model_type" not in line


def test_a_config_asking_for_its_own_code_loads_the_standard_classes_and_says_so(saved, tmp_path, capsys):
    """``auto_map`` in config.json / tokenizer_config.json names Python the author shipped; it never runs (the
    module would write a marker file) and the load says the standard classes were used instead."""
    folder = _copy(saved, tmp_path / "remote")
    marker = tmp_path / "ran"
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.Cfg", "AutoModelForSequenceClassification": "evil.Model"}
    (folder / "config.json").write_text(json.dumps(config))
    tok_config = json.loads((folder / "tokenizer_config.json").read_text())
    tok_config["auto_map"] = {"AutoTokenizer": ["evil.Tok", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_config))

    lm = load_model(folder)
    assert not marker.exists()
    assert len(lm.load_notes) == 1
    note = lm.load_notes[0]
    assert "AutoModelForSequenceClassification" in note and "AutoTokenizer" in note
    assert type(lm.model).__name__ in note
    assert load_model(saved).load_notes == []  # a plain folder has no note

    capsys.readouterr()
    assert main(["inspect", "--model", str(folder), "--text", "a fine day"]) == 0
    err = capsys.readouterr().err
    assert "note: the model's files ask for their own Python code" in err
    assert not marker.exists()


def test_a_saved_classifier_is_not_retrained_on_other_named_classes(tiny, tmp_path, capsys):
    """``attack --model <a sentiment classifier> --data <offensive/not>`` would have renamed its classes
    silently; it is refused before training, while the model's own names (any case) and an unnamed encoder
    still load."""
    import copy

    model = copy.deepcopy(tiny.model)
    model.config.id2label, model.config.label2id = {0: "negative", 1: "positive"}, {"negative": 0, "positive": 1}
    folder = save_model(model, tiny.tokenizer, tmp_path / "sentiment", {"name": "sentiment"})
    data = tmp_path / "olid.tsv"
    data.write_text("text\tlabel\n" + "".join(f"tweet {i}\t{'OFF' if i % 2 else 'NOT'}\n" for i in range(40)))
    out = tmp_path / "out"
    line = _one_line_error(capsys, ["attack", "--model", str(folder), "--data", str(data), "--out", str(out),
                                    "--epochs", "1"])
    assert "['NOT', 'OFF']" in line and "['negative', 'positive']" in line and "'default'" in line
    assert not out.exists()
    with pytest.raises(ModelLoadError, match="another order"):
        load_model(folder, label_names=["positive", "negative"])
    assert load_model(folder, label_names=["Negative", "Positive"]).label_names == ["Negative", "Positive"]
    unnamed = save_model(tiny.model, tiny.tokenizer, tmp_path / "unnamed", {"name": "unnamed"})
    assert load_model(unnamed, label_names=["NOT", "OFF"]).label_names == ["NOT", "OFF"]


def test_an_integer_labelled_file_keeps_a_saved_classifiers_class_names(tiny, tmp_path, capsys):
    """``attack --model <negative/positive classifier> --data <0/1 file>`` renamed its classes '0' / '1' in the
    saved config and printed 'target 1 (1)'; the ids are read as its classes, as the app and the scan do."""
    import copy

    model = copy.deepcopy(tiny.model)
    model.config.id2label, model.config.label2id = {0: "negative", 1: "positive"}, {"negative": 0, "positive": 1}
    folder = save_model(model, tiny.tokenizer, tmp_path / "sentiment", {"name": "sentiment"})
    assert load_model(folder, label_names=["0", "1"]).label_names == ["negative", "positive"]
    data = tmp_path / "ids.tsv"
    data.write_text("text\tlabel\n" + "".join(f"review number {i} here\t{i % 2}\n" for i in range(60)))
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["attack", "--model", str(folder), "--data", str(data), "--out", str(out), "--epochs", "1",
                 "--attack", "badnets", "--rate", "0.2", "--max-length", "16", "--batch-size", "16"]) == 0
    printed = capsys.readouterr().out
    assert "target 1 (positive)" in printed, printed
    saved = json.loads((out / "config.json").read_text())
    assert saved["id2label"] == {"0": "negative", "1": "positive"}
    assert json.loads((out / "backdoor_lab.json").read_text())["target_name"] == "positive"
