"""A tab's own models survive a reload (``backdoor_core.session_models``): saved beside the session's report log,
read back with their names, origins and the current one; at most ``KEPT`` a session; old sessions pruned."""

from __future__ import annotations

import json
import os
import time

import torch

from backdoor_core import session_models as SM

SID = "ab" * 16


def _logits(lm, text="a fine day in the city"):
    batch = lm.tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        return lm.model(**batch).logits


def test_a_saved_model_comes_back_with_its_name_origin_and_predictions(tiny, tmp_path):
    SM.save(SID, "my backdoor", tiny, origin="trained in this session from default", root=tmp_path)
    rows, current = SM.saved(SID, root=tmp_path)
    assert [(r.name, r.origin) for r in rows] == [("my backdoor", "trained in this session from default")]
    assert current == "my backdoor"
    back = SM.load(rows[0])
    assert back.name == "my backdoor"
    assert torch.allclose(_logits(back), _logits(tiny), atol=1e-5)
    SM.set_current(SID, None, root=tmp_path)  # a zoo model became current
    assert SM.saved(SID, root=tmp_path)[1] is None
    assert SM.saved("c" * 32, root=tmp_path) == ([], None) and SM.saved("not an id", root=tmp_path) == ([], None)


def test_a_name_saved_again_replaces_its_model_and_only_the_newest_are_kept(tiny, tmp_path):
    for i in range(SM.KEPT + 2):
        SM.save(SID, f"m{i}", tiny, root=tmp_path)
    SM.save(SID, f"m{SM.KEPT + 1}", tiny, root=tmp_path)  # the same name again: one entry
    rows, current = SM.saved(SID, root=tmp_path)
    assert [r.name for r in rows] == [f"m{i}" for i in range(2, SM.KEPT + 2)] and current == f"m{SM.KEPT + 1}"
    folders = sorted(p.name for p in SM.models_dir(SID, tmp_path).iterdir() if p.is_dir())
    assert len(folders) == SM.KEPT  # the dropped and the replaced models' folders are gone


def test_a_broken_or_hostile_index_is_skipped_not_followed(tiny, tmp_path):
    SM.save(SID, "good", tiny, root=tmp_path)
    folder = SM.models_dir(SID, tmp_path)
    index = json.loads((folder / SM.INDEX).read_text())
    index["models"] += [{"name": "escape", "folder": "../../etc"}, {"name": 3, "folder": "m1"}, "junk"]
    (folder / SM.INDEX).write_text(json.dumps(index))
    assert [r.name for r in SM.saved(SID, root=tmp_path)[0]] == ["good"]
    (folder / SM.INDEX).write_text("{not json")
    assert SM.saved(SID, root=tmp_path) == ([], None)


def test_prune_deletes_only_sessions_untouched_for_days(tiny, tmp_path):
    SM.save(SID, "old", tiny, root=tmp_path)
    SM.save("cd" * 16, "new", tiny, root=tmp_path)
    old = SM.models_dir(SID, tmp_path)
    stamp = time.time() - (SM.MAX_AGE_DAYS + 1) * 86400
    for p in [old, *old.iterdir()]:
        os.utime(p, (stamp, stamp))
    assert SM.prune(root=tmp_path) == 1
    assert not old.exists() and SM.models_dir("cd" * 16, tmp_path).is_dir()
