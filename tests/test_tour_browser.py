"""The guided tour on the real shipped demo zoo, from an empty cache, in a real browser with the network blocked:
step 1 shows the clean model not reacting to the trigger, step 3 the BadNets 2% + TAL model flipping, each step
naming its model (issue 12). Timing is not asserted here: ``bench/first_run.py --browser`` measures it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser import BROWSER_MISSING_REASON, browser_available, launch_browser, open_app_page, streamlit_app, \
    tour_to_flip  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not browser_available(), reason=BROWSER_MISSING_REASON)


def test_tour_flips_on_the_shipped_zoo_from_an_empty_cache(tmp_path):
    env = {"BACKDOOR_ZOO_DIR": str(tmp_path / "zoo"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    with streamlit_app(ROOT, env, tmp_path / "streamlit.log") as url, launch_browser() as browser:
        page, blocked, errors = open_app_page(browser, {"width": 1400, "height": 900})
        seen = tour_to_flip(page, url)
        assert "Clean" in seen["step1_model"] and "TAL" not in seen["step1_model"], seen
        assert "BadNets 2% + TAL" in seen["step3_model"], seen
        assert blocked == [], f"requests left localhost: {blocked[:5]}"
        assert errors == [], errors[:3]
