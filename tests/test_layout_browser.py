"""Issue 12's layout list, checked in a real browser at 1400 px and in presenter mode (one app start for the module,
the tiny model; every request off localhost blocked). Screenshots go to test-artifacts/layout_*.png: look at them.

Checked on every chart drawn: its title and subplot titles lie inside the chart (plotly cuts what does not fit),
the plot toolbar covers no title, and the outlined (suspicious) cells of a head grid do not overlap one another.
Also: the bertviz model view fits its frame (or scrolls inside its own box), a scan with no backdoor found shows no
suspicious-head count, the report names TAL heads by layer, and a reload keeps the report.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser import BROWSER_MISSING_REASON, browser_available, launch_browser, open_app_page, streamlit_app  # noqa: E402
from browser import address  # noqa: E402
from test_e2e_browser import (  # noqa: E402
    _click, _nav, _no_exceptions, _scan_tiny_pool, _set_number, _train_tiny_backdoor, _wait_text, wait_until_idle,
)

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
VIEWPORT = {"width": 1400, "height": 1000}
pytestmark = pytest.mark.skipif(not browser_available(), reason=BROWSER_MISSING_REASON)


@pytest.fixture(scope="module")
def layout_server(tmp_path_factory):
    env = {"BACKDOOR_LAB_TEST_MODEL": "tiny", "BACKDOOR_ZOO_DIR": str(tmp_path_factory.mktemp("zoo")),
           "BACKDOOR_LAB_SESSIONS_DIR": str(tmp_path_factory.mktemp("sessions"))}
    with streamlit_app(ROOT, env, tmp_path_factory.mktemp("log") / "streamlit.log", start_timeout_s=300) as url:
        yield url


# font sizes in CSS pixels: the app's base, and the first metric tile's value and label
METRIC_SIZES_JS = """
() => {
  const px = s => parseFloat(getComputedStyle(document.querySelector(s)).fontSize);
  return {app: px('[data-testid="stAppViewContainer"]'), value: px('[data-testid="stMetricValue"] p'),
          label: px('[data-testid="stMetricLabel"] p')};
}
"""


# One pass over the visible plotly charts; returns the problems found (empty = fine). Rectangles are client
# rectangles in CSS pixels; 1 px of slack for anti-aliasing. Outline shapes are compared with half their stroke.
CHART_PROBLEMS_JS = """
() => {
  const problems = [];
  const r = el => el.getBoundingClientRect();
  const meet = (a, b, pad = 0) => a.left < b.right + pad && b.left < a.right + pad &&
                                   a.top < b.bottom + pad && b.top < a.bottom + pad;
  const name = (plot, i) => (plot.querySelector('.gtitle')?.textContent || `chart ${i}`).slice(0, 60);
  document.querySelectorAll('.js-plotly-plot').forEach((plot, i) => {
    const svg = plot.querySelector('svg.main-svg');
    if (!svg || r(svg).width === 0) return;  // not shown (a hidden tab)
    const box = r(svg);
    // titles, subplot titles and colorbar labels (a colorbar squeezed to the chart's edge loses its title and
    // shows "0" for 0.02)
    const texts = [...plot.querySelectorAll('.gtitle, .annotation-text-g text, .colorbar .cbaxis text, .colorbar .cbtitle text')]
      .filter(t => t.textContent.trim());
    for (const t of texts) {
      const b = r(t);
      if (b.width === 0) continue;
      if (b.left < box.left - 1 || b.right > box.right + 1 || b.top < box.top - 1)
        problems.push(`${name(plot, i)}: "${t.textContent.slice(0, 50)}" is cut (text ${Math.round(b.left)}-` +
                      `${Math.round(b.right)} px, chart ${Math.round(box.left)}-${Math.round(box.right)} px)`);
    }
    const bar = plot.querySelector('.modebar');
    if (bar && r(bar).width > 0) {
      for (const t of texts) {
        if (meet(r(bar), r(t))) problems.push(`${name(plot, i)}: the toolbar covers "${t.textContent.slice(0, 50)}"`);
      }
    }
    // cell outlines: the rectangles among the shapes (not the lines a chart draws across, e.g. "CACC before")
    const outlines = [...plot.querySelectorAll('.shapelayer path')].filter(p => r(p).width > 4 && r(p).height > 4)
      .map(p => {
        const b = r(p), w = parseFloat(p.style.strokeWidth || '0') / 2;
        return {left: b.left - w, right: b.right + w, top: b.top - w, bottom: b.bottom + w};
      });
    for (let a = 0; a < outlines.length; a++)
      for (let b = a + 1; b < outlines.length; b++)
        if (meet(outlines[a], outlines[b], -0.5))
          { problems.push(`${name(plot, i)}: outlines ${a} and ${b} overlap`); a = outlines.length; break; }
  });
  // a metric's value cut to "business ·…" (Streamlit ellipsizes what does not fit)
  document.querySelectorAll('[data-testid="stMetricValue"] div, [data-testid="stMetricValue"]').forEach(v => {
    if (r(v).width > 0 && v.scrollWidth > v.clientWidth + 1)
      problems.push(`metric "${v.textContent.slice(0, 40)}" is cut (${v.scrollWidth} px in ${v.clientWidth})`);
  });
  return problems;
}
"""


# Text that the page cuts: a leaf clipped by its box, or any box that ends its text in "…" (a sidebar page name,
# a metric or widget label, a button).
LABELS_CUT_JS = """() => [...document.querySelectorAll('[data-testid="stMain"] *, [data-testid="stSidebar"] *')]
  .filter(e => e.offsetParent && e.innerText && e.scrollWidth > e.clientWidth + 1
          && ((e.children.length === 0 && ['hidden', 'clip'].includes(getComputedStyle(e).overflowX))
              || getComputedStyle(e).textOverflow === 'ellipsis'
              || e.parentElement?.getAttribute('data-testid') === 'stButtonGroup'))
  .map(e => `"${e.innerText.trim().slice(0, 40)}" (${e.scrollWidth} px in ${e.clientWidth})`)"""


def _labels_ok(page, where: str) -> None:
    cut = page.evaluate(LABELS_CUT_JS)
    if cut:
        page.screenshot(path=str(ARTIFACTS / f"layout_FAILED_{where}.png"), full_page=True)
    assert not cut, f"{where}: text cut: {cut[:5]}"


def _charts_ok(page, where: str) -> int:
    """Assert no chart problem on the page as shown; returns how many charts were checked."""
    page.wait_for_timeout(300)  # plotly lays out after the element appears
    problems = page.evaluate(CHART_PROBLEMS_JS)
    if problems:
        page.screenshot(path=str(ARTIFACTS / f"layout_FAILED_{where}.png"), full_page=True)
    assert not problems, f"{where}: {problems[:5]}"
    return page.locator(".js-plotly-plot svg.main-svg").count()


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()
    wait_until_idle(page)


def _inspect(page, mode: str) -> None:
    _nav(page, "Inspect")
    page.wait_for_selector(".js-plotly-plot svg.main-svg")
    checked = _charts_ok(page, f"inspect_{mode}")
    # the similarity chart (half the page wide): its whole title is drawn, inside the chart (checked above)
    delta = page.locator(".js-plotly-plot").filter(has_text="Head similarity change").first
    title = " ".join(delta.locator(".gtitle").all_text_contents())
    assert "clean)" in title, f"the similarity chart's title is cut: {title!r}"
    delta.scroll_into_view_if_needed()
    delta.screenshot(path=str(ARTIFACTS / f"layout_similarity_{mode}.png"))
    _tab(page, "Head similarity")
    checked += _charts_ok(page, f"inspect_head_to_head_{mode}")
    _tab(page, "bertviz views")
    page.get_by_text("model view", exact=True).first.click()
    wait_until_idle(page)
    frame_el = page.locator('[data-testid="stIFrame"]').first
    frame = page.frame_locator('[data-testid="stIFrame"]').first
    frame.locator("svg").first.wait_for(timeout=60_000)
    fit = frame.locator("body").evaluate(
        """body => {
             const doc = document.documentElement;
             const box = body.querySelector('div[style*="overflow"]');
             return {docW: doc.scrollWidth, docH: doc.scrollHeight, winW: window.innerWidth, winH: window.innerHeight,
                     boxScrolls: !!box && getComputedStyle(box).overflow === 'auto',
                     boxW: box ? box.scrollWidth : 0, boxCW: box ? box.clientWidth : 0};
           }""")
    # nothing lies outside the frame: the page fits, and a grid wider or taller than its box scrolls inside it
    assert fit["docW"] <= fit["winW"] + 1 and fit["docH"] <= fit["winH"] + 1, f"model view clipped: {fit}"
    assert fit["boxScrolls"], fit
    frame_el.scroll_into_view_if_needed()
    frame_el.screenshot(path=str(ARTIFACTS / f"layout_bertviz_model_{mode}.png"))
    page.get_by_text("head view", exact=True).first.click()  # back to the default for the next visit
    wait_until_idle(page)
    _tab(page, "Heads on trigger")
    assert checked >= 4


def _metric(page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]').filter(has=page.get_by_text(label, exact=True)).first
    return box.locator('[data-testid="stMetricValue"]').inner_text().strip()


def _open_report_sections(page) -> str:
    """Open every section of the Report page's preview; returns the page's text."""
    for summary in page.locator('[data-testid="stExpander"] summary').all():
        summary.click()
    wait_until_idle(page)
    return page.locator('[data-testid="stMainBlockContainer"]').inner_text()


def test_layout_at_1400_px_and_in_presenter_mode(layout_server):
    ARTIFACTS.mkdir(exist_ok=True)
    with launch_browser() as browser:
        page, blocked, errors = open_app_page(browser, VIEWPORT)
        page.goto(f"{layout_server}/")
        wait_until_idle(page)

        _inspect(page, "1400")

        # Compare (B = this model with a head switched off) in a 1280-px laptop window: predictions and the four
        # grids, nothing cut (three grids a row cut their colorbars there, and metrics cut "business · 99%")
        page.set_viewport_size({"width": 1280, "height": 800})
        _nav(page, "Compare models")
        page.wait_for_selector(".js-plotly-plot svg.main-svg")
        assert _charts_ok(page, "compare_1280") >= 6
        page.screenshot(path=str(ARTIFACTS / "layout_compare_1280.png"), full_page=True)
        page.set_viewport_size(VIEWPORT)

        # Attack lab: a tiny BadNets + TAL model (TAL on every head of both layers)
        _train_tiny_backdoor(page)
        _charts_ok(page, "attack_1400")  # the training chart, drawn from its first (empty) state on

        # Detect with no triggered input in the pool: the verdict and the suspicious-head tile must agree
        _scan_tiny_pool(page, 0)
        page.wait_for_selector(".js-plotly-plot svg.main-svg")
        verdict, score, heads = _metric(page, "Backdoor"), _metric(page, "Backdoor score"), _metric(page, "Suspicious heads")
        if verdict == "likely":
            assert heads.isdigit(), heads
        else:  # "not found", or "possible" (a pool of 16 is too small to call): no head is called suspicious
            assert heads == "none", f"no backdoor called ({verdict}, score {score}) but the tile shows {heads} heads"
        _charts_ok(page, "detect_1400")
        grid = page.locator(".js-plotly-plot").filter(has_text="Head").nth(0)
        grid.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "layout_detect_1400.png"), full_page=True)

        # the report names the TAL heads by layer, and survives a reload (the URL carries the session)
        _nav(page, "Report")
        body = _open_report_sections(page)
        _charts_ok(page, "report_1400")
        tal = re.search(r"TAL on ([^\n]+)", body)
        assert tal, body[:800]
        assert tal.group(1).startswith("all ") or "L1" in tal.group(1), f"TAL heads read as layer 0 only: {tal.group(1)}"
        assert "Detection scan" in body
        assert "session=" in address(page)
        page.reload()
        wait_until_idle(page)
        body = page.locator('[data-testid="stMainBlockContainer"]').text_content()
        assert "Detection scan" in body and "TAL on" in body, "a reload emptied the report"
        page.screenshot(path=str(ARTIFACTS / "layout_report_reloaded.png"), full_page=True)

        # presenter mode: larger text, the same checks on the same results
        page.locator('[data-testid="stSidebar"]').get_by_text("Presenter mode (larger text)").click()
        wait_until_idle(page)
        _inspect(page, "presenter")
        # the reload started a new session on the default (random tiny) model: scan it, a pool of clean texts only
        _nav(page, "Detect")
        _set_number(page, "Clean labelled texts (budget)", 24)
        _set_number(page, "Clean texts in the pool", 16)
        _click(page, "Scan the model")
        _wait_text(page, "Backdoor score", exact=True)
        page.wait_for_selector(".js-plotly-plot svg.main-svg")
        _charts_ok(page, "detect_presenter")
        # the presenter sheet applies (a tag-like comment once made st.html drop it whole), and a tile's number
        # stays larger than its label (the sheet's paragraph rule had shrunk it to the label's size)
        sizes = page.evaluate(METRIC_SIZES_JS)
        assert sizes["app"] == 21, f"presenter mode's style sheet is not applied: {sizes}"
        assert sizes["value"] >= 1.5 * sizes["label"], f"a metric's value is not larger than its label: {sizes}"
        if _metric(page, "Backdoor") == "not found":
            assert _metric(page, "Suspicious heads") == "none"
        page.screenshot(path=str(ARTIFACTS / "layout_detect_presenter.png"), full_page=True)
        _nav(page, "Report")
        _open_report_sections(page)
        _charts_ok(page, "report_presenter")
        page.screenshot(path=str(ARTIFACTS / "layout_report_presenter.png"), full_page=True)
        _no_exceptions(page, "report (presenter)")

        # a 1024-px projector in presenter mode: chart pairs and the Compare form stack (side by side they cut
        # chart titles, colorbar ticks and select boxes); sidebar names, metric and button labels wrap
        page.set_viewport_size({"width": 1024, "height": 768})
        _labels_ok(page, "report_1024_presenter")
        _inspect(page, "1024_presenter")
        _labels_ok(page, "inspect_1024_presenter")
        _nav(page, "Compare models")
        page.wait_for_selector(".js-plotly-plot svg.main-svg")
        assert _charts_ok(page, "compare_1024_presenter") >= 6
        _labels_ok(page, "compare_1024_presenter")
        page.screenshot(path=str(ARTIFACTS / "layout_compare_1024_presenter.png"), full_page=True)
        _nav(page, "Guided tour")  # step 1: its tiles and the Back / Next buttons
        page.get_by_role("button", name="Next").first.wait_for()
        _labels_ok(page, "tour_1024_presenter")
        # the Sanitize knobs, in both modes: a segmented control too wide for its column scrolled options out of
        # sight (the five-way judge switch showed "one gate gate_filter" at 1024 px); they wrap now
        _nav(page, "Sanitize")
        page.locator('[data-testid="stExpander"] summary').filter(has_text="Knobs").first.click()
        wait_until_idle(page)
        _labels_ok(page, "sanitize_knobs_1024_presenter")
        page.locator('[data-testid="stSidebar"]').get_by_text("Presenter mode (larger text)").click()
        wait_until_idle(page)
        _labels_ok(page, "sanitize_knobs_1024")
        page.screenshot(path=str(ARTIFACTS / "layout_sanitize_knobs_1024.png"), full_page=True)

        assert blocked == [], f"requests left localhost: {blocked[:5]}"
        assert not errors, f"JavaScript errors: {errors[:5]}"


def test_inspect_tabs_all_show_in_a_1024_px_window(layout_server):
    """At 1024 px with the sidebar open the Inspect page's six tab names overflowed their bar: "Switch he…" cut
    at the edge and "Token saliency" out of sight behind a scroll arrow. Every tab now shows whole."""
    with launch_browser() as browser:
        page, blocked, errors = open_app_page(browser, {"width": 1024, "height": 900})
        page.goto(f"{layout_server}/inspect")
        wait_until_idle(page)
        page.wait_for_selector('[data-testid="stMain"] [role="tab"]')
        out = page.evaluate("""() => {
            const bar = document.querySelector('[data-testid="stMain"] [role="tablist"]');
            const box = bar.getBoundingClientRect();
            return {overflow: bar.scrollWidth - bar.clientWidth,
                    cut: [...bar.querySelectorAll('[role="tab"]')]
                      .filter(t => t.getBoundingClientRect().right > box.right + 1
                                   || t.getBoundingClientRect().left < box.left - 1)
                      .map(t => t.innerText)};
        }""")
        if out["cut"] or out["overflow"] > 1:
            page.screenshot(path=str(ARTIFACTS / "layout_FAILED_inspect_tabs_1024.png"), full_page=True)
        assert not out["cut"] and out["overflow"] <= 1, out
        assert blocked == [] and not errors, (blocked[:3], errors[:3])
