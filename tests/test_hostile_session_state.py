"""What a URL and a tab's saved state on disk can make the server do (``backdoor_core.session``,
``backdoor_core.session_models``, ``app_pages._data.restore_kept_data``, the Report page).

Our design: a session id is 32 lowercase hex digits and nothing else; everything under the sessions folder is read as
untrusted; a link there is never followed, written through or copied as what it points to; a FIFO or a device is never
opened; a forged index or report is bounded (``KEPT`` models, ``MAX_FINDINGS`` findings); a disk that refuses a write
never leaves a truncated copy in place of the user's file, and the Report page says when findings are not being saved.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
import threading
from pathlib import Path

import pytest

from backdoor_core import session as S
from backdoor_core import session_models as SM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_app_pages import goto, new_app  # noqa: E402

SID = "ab" * 16
ROWS = "text,label\n" + "".join(f"a fine day number {i},{i % 2}\n" for i in range(40))


@pytest.fixture(autouse=True)
def _test_env(monkeypatch, tmp_path):
    monkeypatch.setenv("BACKDOOR_LAB_TEST_MODEL", "tiny")
    monkeypatch.setenv("BACKDOOR_ZOO_DIR", str(tmp_path / "zoo"))
    monkeypatch.setenv("BACKDOOR_LAB_SESSIONS_DIR", str(tmp_path / "sessions"))


@pytest.fixture
def root(tmp_path) -> Path:
    (tmp_path / "sessions").mkdir()
    return tmp_path / "sessions"


@pytest.fixture
def outside(tmp_path) -> Path:
    """A user's folder outside the sessions folder, with a file and a subfolder in it."""
    folder = tmp_path / "user"
    (folder / "thesis").mkdir(parents=True)
    (folder / "thesis" / "chapter1.txt").write_text("precious")
    (folder / "secret.csv").write_text("text,label\nhunter2 is the password,0\n")
    return folder


def _guarded(fn, timeout: float = 30):
    """``fn()`` in a daemon thread: (finished, its result). A hang is a failed assert, not a hung test run."""
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    t.join(timeout)
    return not t.is_alive(), (out[0] if out else None)


# ------------------------------------------------------------------------------------------------ the URL's id


@pytest.mark.parametrize("sid", [SID + "\n", "../" * 12 + "etc/passwd", "/etc/passwd", "a" * 5000, SID + "\x00",
                                 "ａｂ" * 16, SID.upper(), SID[:-1] + "é"])
def test_only_32_lowercase_hex_digits_name_a_session(sid):
    """``$`` matched before a final newline: ``?session=<hex>%0A`` was an id naming ``<hex>\\n.json``."""
    assert S.SESSION_ID.match(sid) is None  # what app_pages._state.path_ok asks
    with pytest.raises(ValueError):
        S.session_file(sid)
    with pytest.raises(ValueError):
        SM.models_dir(sid)


def test_a_url_id_ending_in_a_newline_gets_a_new_id_and_no_file_of_that_name(root):
    at = new_app(session=SID + "\n")
    sid = at.session_state["lab.session_id"]
    assert sid != SID + "\n" and S.SESSION_ID.match(sid) and at.query_params["session"] in (sid, [sid])
    assert not any("\n" in p.name for p in root.iterdir())


# ------------------------------------------------------------------------------------------------ kept data


def test_a_kept_data_file_that_is_a_link_is_never_restored(root, outside):
    data = SM.models_dir(SID, root) / SM.DATA / "t1"
    data.mkdir(parents=True)
    (data / "x.csv").symlink_to(outside / "secret.csv")
    assert SM.kept_data(SID, root) is None
    (data / "x.csv").unlink()
    os.mkfifo(data / "x.csv")
    assert SM.kept_data(SID, root) is None
    shutil.rmtree(data)
    data.symlink_to(outside, target_is_directory=True)  # the token folder itself a link to a folder with a file
    assert SM.kept_data(SID, root) is None
    data.unlink()
    shutil.rmtree(SM.models_dir(SID, root))
    SM.models_dir(SID, root).symlink_to(outside.parent / "elsewhere", target_is_directory=True)
    (outside.parent / "elsewhere" / SM.DATA / "t1").mkdir(parents=True)
    (outside.parent / "elsewhere" / SM.DATA / "t1" / "x.csv").write_text(ROWS)
    assert SM.kept_data(SID, root) is None  # the tab's folder a link: nothing in it is this tab's


def test_a_reload_does_not_read_a_linked_kept_data_file_and_says_so(root, outside):
    data = SM.models_dir(SID, root) / SM.DATA / "t1"
    data.mkdir(parents=True)
    (data / "secret.csv").symlink_to(outside / "secret.csv")
    at = new_app(session=SID)  # the reload's first run says it, once
    assert any("could not be brought back" in w.value for w in at.warning), [w.value for w in at.warning]
    goto(at, "attack")
    assert at.session_state["lab.data_spec"] == "bbc"
    assert (data / "secret.csv").is_symlink()  # left where it is, never followed nor deleted


def test_keep_data_never_writes_or_deletes_through_a_linked_data_folder(root, outside, tmp_path):
    SM.models_dir(SID, root).mkdir(parents=True)
    (SM.models_dir(SID, root) / SM.DATA).symlink_to(outside, target_is_directory=True)
    upload = tmp_path / "upload.csv"
    upload.write_text(ROWS)
    with pytest.raises(OSError, match="link"):
        SM.keep_data(SID, upload, root)
    assert (outside / "thesis" / "chapter1.txt").read_text() == "precious"  # was deleted as "the copy kept before"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.csv", "thesis"]


def test_a_disk_that_fills_up_mid_copy_keeps_the_earlier_file_and_no_truncated_one(root, tmp_path, monkeypatch):
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    first.write_text(ROWS)
    second.write_text(ROWS.replace("fine", "grey"))
    kept = SM.keep_data(SID, first, root)

    def half_then_full(src, dst, *a, **k):
        Path(dst).write_bytes(Path(src).read_bytes()[:20])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copy2", half_then_full)
    with pytest.raises(OSError):
        SM.keep_data(SID, second, root)
    assert SM.kept_data(SID, root) == kept and kept.read_text() == ROWS  # the earlier upload still comes back
    shutil.rmtree(SM.models_dir(SID, root))
    with pytest.raises(OSError):
        SM.keep_data(SID, second, root)
    assert SM.kept_data(SID, root) is None  # not a truncated file restored as the user's data


# ------------------------------------------------------------------------------------------------ saved models


def _index(root: Path, rows: list, sid: str = SID) -> Path:
    folder = SM.models_dir(sid, root)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SM.INDEX).write_text(json.dumps({"models": rows, "current": None}))
    return folder


def _model_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (path / name).write_text("{}")
    return path


def test_a_forged_index_lists_each_model_folder_once_at_most_kept_and_any_saved_time(root):
    """500 entries naming one folder loaded that model 500 times at a reload; ``"saved": "yesterday"`` was a
    ValueError that failed every page of the tab."""
    folder = _index(root, [{"name": f"n{i}", "folder": "m0"} for i in range(500)]
                    + [{"name": "a", "folder": "m1", "saved": "yesterday"}, {"name": "b", "folder": "m2", "saved": []}]
                    + [{"name": "x", "folder": "m3\n"}])
    for k in range(4):
        _model_folder(folder / f"m{k}")
    rows, _ = SM.saved(SID, root)
    assert len(rows) <= SM.KEPT and len({r.path for r in rows}) == len(rows)
    assert len({r.name for r in rows}) == len(rows)
    assert [(r.name, r.saved) for r in rows if r.name in ("a", "b")] == [("a", 0.0), ("b", 0.0)]
    assert all("\n" not in str(r.path) for r in rows)


def test_a_forged_saved_time_in_the_index_does_not_fail_the_reload(root):
    folder = _index(root, [{"name": "mine", "folder": "m0", "saved": "yesterday"}])
    _model_folder(folder / "m0")
    at = new_app(session=SID)  # new_app asserts no exception (it was "could not convert string to float")
    goto(at, "model")


def test_a_model_folder_that_is_or_holds_a_link_is_not_restored_nor_copied(root, tmp_path):
    elsewhere = _model_folder(tmp_path / "elsewhere")
    folder = _index(root, [{"name": "linked", "folder": "m0"}, {"name": "holds a link", "folder": "m1"},
                           {"name": "plain", "folder": "m2"}])
    (folder / "m0").symlink_to(elsewhere, target_is_directory=True)
    m1 = _model_folder(folder / "m1")
    (m1 / "vocab.txt").symlink_to("/etc/passwd")
    _model_folder(folder / "m2")
    assert [r.name for r in SM.saved(SID, root)[0]] == ["plain"]
    other = "cd" * 16
    assert SM.copy(SID, other, root) == 1
    copied = SM.models_dir(other, root)
    assert sorted(p.name for p in copied.iterdir()) == [SM.INDEX, "m2"]
    assert [r.name for r in SM.saved(other, root)[0]] == ["plain"]


def test_an_index_that_is_a_fifo_or_a_link_is_not_opened(root, tmp_path):
    """A FIFO named ``index.json`` blocked the reload's thread forever."""
    folder = _index(root, [{"name": "plain", "folder": "m0"}])
    _model_folder(folder / "m0")
    elsewhere = tmp_path / "index.json"
    elsewhere.write_text((folder / SM.INDEX).read_text())
    (folder / SM.INDEX).unlink()
    (folder / SM.INDEX).symlink_to(elsewhere)
    assert SM.saved(SID, root) == ([], None)
    (folder / SM.INDEX).unlink()
    os.mkfifo(folder / SM.INDEX)
    try:
        done, result = _guarded(lambda: SM.saved(SID, root))
        assert done and result == ([], None)
    finally:  # release a reader still blocked on it (the unfixed code)
        try:
            os.close(os.open(folder / SM.INDEX, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass


def test_nothing_is_written_into_a_session_folder_that_is_a_link(root, outside, tiny):
    SM.models_dir(SID, root).symlink_to(outside, target_is_directory=True)
    with pytest.raises(OSError, match="link"):
        SM.save(SID, "mine", tiny, root=root)
    with pytest.raises(OSError, match="link"):
        SM.set_current(SID, None, root)
    assert sorted(p.name for p in outside.iterdir()) == ["secret.csv", "thesis"]


# ------------------------------------------------------------------------------------------------ the report


def _session_json(findings: list) -> str:
    return json.dumps({"version": 1, "model": {}, "dataset": {}, "findings": findings})


def test_a_report_file_that_is_a_link_is_not_read_as_this_tabs(root, tmp_path):
    foreign = tmp_path / "other.json"
    foreign.write_text(_session_json([{"kind": "note", "title": "FROM ANOTHER FILE"}]))
    link = S.session_file(SID, root)
    link.symlink_to(foreign)
    with pytest.raises(ValueError, match="link"):
        S.LabSession.load(link)
    at = goto(new_app(session=SID), "report")
    assert not any("FROM ANOTHER FILE" in c.label for c in at.checkbox)
    assert any("could not be read back" in w.value and "link" in w.value for w in at.warning)
    assert json.loads(foreign.read_text())["findings"][0]["title"] == "FROM ANOTHER FILE"  # untouched


def test_a_forged_report_of_countless_findings_reads_back_the_newest_few_thousand(tmp_path):
    """100,000 tiny findings (well under the size cap) drew as many checkboxes: minutes a Report page rerun."""
    path = tmp_path / "s.json"
    n = S.MAX_FINDINGS + 500
    path.write_text(_session_json([{"kind": "note", "title": f"t{i}", "key": f"k{i}"} for i in range(n)]))
    lab = S.LabSession.load(path)
    assert len(lab.findings) == S.MAX_FINDINGS and lab.findings[-1].title == f"t{n - 1}"
    assert any("500 older findings" in d for d in lab.dropped)


def test_findings_that_cannot_be_saved_are_said_on_the_report_page(monkeypatch):
    """A full or read-only sessions folder kept the report in memory only; a reload lost it without a word."""
    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    at = new_app()
    room = S.write_text
    monkeypatch.setattr(S, "write_text", full)
    at.session_state["lab.session"].record("note", "found while the disk was full", text="x")
    goto(at, "report")
    assert any("could not be saved" in w.value and "No space left" in w.value for w in at.warning), \
        [w.value for w in at.warning]
    goto(at, "inspect")  # every page's sidebar says so too
    assert any("not saved on the server" in w.value for w in at.sidebar.warning), [w.value for w in at.warning]
    monkeypatch.setattr(S, "write_text", room)
    at.session_state["lab.session"].record("note", "found once there was room", text="y")
    goto(at, "report")
    assert not any("could not be saved" in w.value for w in at.warning)
    assert not any("not saved on the server" in w.value for w in at.sidebar.warning)


def test_a_kept_model_that_no_longer_loads_is_named_at_the_reload(root):
    """A kept model whose copy was damaged since (a forged safetensors header here) was left out of the reloaded
    tab without a word; the others came back. Now the reload names it in one line, and the plain one comes back."""
    from backdoor_core.models import tiny_model

    SM.save(SID, "good", tiny_model(num_labels=5), "trained in this session", root)
    folder = _index(root, json.loads((SM.models_dir(SID, root) / SM.INDEX).read_text())["models"]
                    + [{"name": "damaged", "folder": "m9"}])
    _model_folder(folder / "m9")  # "{}" as model.safetensors: no header
    at = new_app(session=SID)
    said = [w.value for w in at.warning if "could not be brought back after the reload" in w.value]
    assert len(said) == 1 and said[0].startswith("1 of this tab's models") and "damaged" in said[0], \
        [w.value for w in at.warning]
    assert set(at.session_state["lab.session_models"]) == {"good"}
