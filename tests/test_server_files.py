"""The server's own files and pickled weights are open only to a browser on the server's machine
(``app_pages._data.server_files_allowed``): a student on a teacher's laptop over the network could type any folder
of it, or tick "Allow pickled weights" on an uploaded .zip and run code as the teacher."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_app_pages import errors, goto, new_app  # noqa: E402
from test_app_pages import _test_env  # noqa: E402,F401 - BACKDOOR_LAB_TEST_MODEL=tiny, a private zoo folder


def test_names_that_read_this_machines_files(tmp_path, monkeypatch):
    from backdoor_core.models import reads_local_files

    (tmp_path / "models" / "mine").mkdir(parents=True)
    (tmp_path / "notes").mkdir()
    monkeypatch.chdir(tmp_path)
    local = ["models/mine", "notes", str(tmp_path), "/etc", "~/x", "./a", "a/b/c", "C:\\m", "a b", "", "x\x00y"]
    remote = ["default", "owner/model", "bert-base-uncased", "textattack/bert-base-uncased-SST-2"]
    assert [s for s in local if not reads_local_files(s)] == []
    assert [s for s in remote if reads_local_files(s)] == []


@pytest.mark.parametrize("mode, ip, allowed", [
    (None, None, True), (None, "192.0.2.7", False), ("local", "fd00::9", False),
    ("all", "192.0.2.7", True), ("none", None, False), ("ALL ", None, True), ("yes", None, False),
])
def test_who_may_open_the_servers_files(monkeypatch, mode, ip, allowed):
    from app_pages import _data

    if mode is None:
        monkeypatch.delenv(_data.SERVER_FILES_ENV, raising=False)
    else:
        monkeypatch.setenv(_data.SERVER_FILES_ENV, mode)
    monkeypatch.setattr(_data, "st", SimpleNamespace(context=SimpleNamespace(ip_address=ip)))
    assert _data.server_files_allowed() is allowed
    if not allowed:
        message = _data.server_files_refusal("Loading a folder of the server")
        assert message.startswith("Loading a folder of the server is not open here: ")
        assert "BACKDOOR_LAB_SERVER_FILES=all" in message


def _saved_tiny(folder: Path) -> Path:
    from backdoor_core.models import save_model, tiny_model

    lm = tiny_model(num_labels=5)
    save_model(lm.model, lm.tokenizer, folder, {"name": "tiny-saved"})
    return folder


def test_a_closed_server_loads_no_folder_of_its_own(tmp_path, monkeypatch):
    """With the server's files closed: Model → Local folder shows why and no path box; a "hub id" naming a folder
    of the server is refused and nothing loads; no pickle opt-in (folder, hub, upload); Sanitize offers no folder
    as clean reference. Opened again (``all``), the same folder loads."""
    folder = _saved_tiny(tmp_path / "m")
    monkeypatch.setenv("BACKDOOR_LAB_SERVER_FILES", "none")
    at = goto(new_app(), "model")
    before = dict(at.session_state["lab.model_ref"])
    at.segmented_control(key="model.source").set_value("Local folder").run()
    assert not at.exception and not [t for t in at.text_input if t.key == "model.folder"]
    assert any("Loading a folder of the server is not open here" in i.value for i in at.info), \
        [i.value for i in at.info]
    at.segmented_control(key="model.source").set_value("Hub id").run()
    assert not [c for c in at.checkbox if c.key == "model.hub_pickle"]
    for typed in (str(folder), "tests", "../" + folder.name):
        at.text_input(key="model.hub_id").input(typed)
        at.button(key="model.load_hub").click().run()
        assert not at.exception and any("names a folder on the server" in e for e in errors(at)), (typed, errors(at))
        assert at.session_state["lab.model_ref"] == before
    at.segmented_control(key="model.source").set_value("Upload .zip").run()
    assert not [c for c in at.checkbox if c.key == "model.zip_pickle"]

    at.segmented_control(key="model.source").set_value("Demo zoo").run()  # a backdoored zoo model, on to Sanitize
    pick = next(n for n in at.selectbox(key="model.zoo_pick").options if n.lower() != "clean")
    at.selectbox(key="model.zoo_pick").set_value(pick).run()
    at.button(key="model.use_zoo").click().run()
    goto(at, "sanitize")
    options = at.selectbox(key="sanitize.clean_ref").options
    assert "A local folder…" not in options and "None" in options, options

    monkeypatch.setenv("BACKDOOR_LAB_SERVER_FILES", "all")
    goto(at, "sanitize")
    assert "A local folder…" in at.selectbox(key="sanitize.clean_ref").options
    goto(at, "model")
    at.segmented_control(key="model.source").set_value("Local folder").run()
    at.text_input(key="model.folder").input(str(folder))
    at.button(key="model.load_folder").click().run()
    assert not at.exception and not errors(at)
    assert at.session_state["lab.model_ref"]["spec"] == str(folder)
