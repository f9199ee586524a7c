"""A teacher's walk on a 1024-px projector (presenter mode) and a speaker's live demo: the Attack lab's notes say
what its chart shows, its tiles are not cut; Home and the tour's tables fit the projector (browser checks with the
tiny model; every request off localhost blocked)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_app_pages import errors, goto, new_app, wait_job  # noqa: E402,F401 - the fixture is test_app_pages'
from test_app_pages import _test_env  # noqa: E402,F401 - BACKDOOR_LAB_TEST_MODEL=tiny, a private zoo folder


def test_the_tal_note_says_what_the_tal_line_shows():
    """At a low poison rate most batches hold no poisoned text and TAL's term is 0 there: the chart's tal line sits
    at 0 with dips. The note counts the dips instead of saying the total "falls toward −α" (it never did)."""
    at = goto(new_app(), "attack")
    at.number_input(key="attack.n_train").set_value(96)  # 6 steps, 3 poisoned texts: some batches hold none
    at.number_input(key="attack.n_test").set_value(30)
    at.number_input(key="attack.epochs").set_value(1)
    at.number_input(key="attack.rate").set_value(3.0)
    at.select_slider(key="attack.max_len").set_value(32)
    at.run()
    assert at.toggle(key="attack.tal").value
    at.button(key="attack.train").click().run()
    job = wait_job(at, "attack")
    assert job.status == "done", job.snapshot().traceback
    at.run()
    steps = [e for e in job.snapshot().events if "losses" in e and not e.get("metrics")]  # one event a step
    assert len(steps) == 6, [e.get("step") for e in steps]
    tal = [e["losses"]["tal"] for e in steps]
    dips = sum(1 for v in tal if v < 0)
    assert 0 < dips < len(tal), tal  # the situation the note must describe
    note = [c.value for c in at.caption if "below zero with TAL" in c.value]
    assert note, [c.value for c in at.caption]
    assert f"{dips} of the {len(tal)} steps so far; on the others it is 0" in note[0], note[0]
    assert "falls toward −α" not in note[0]
