"""A class session's memory on one server: N browser tabs each train a tiny model in the Attack lab, reload, and
close; after each step the server reports its resident memory (VmRSS), how many ``LoadedModel`` objects are alive,
and the sizes of the app's per-tab stores (``_jobs._RESULTS``, ``_state._KEPT``, ``_state._TAB_OWNERS``). Last, it
waits out Streamlit's keep-for-reconnect time of a closed tab's session (2 minutes) and reports again: what is still
alive then is held by the app, not by Streamlit. Result: ``memory_class.json`` in ``bench_results.results_dir()``.

    python bench/memory_class.py                 # 6 tabs, ~6 minutes on 2 cores
    python bench/memory_class.py --tabs 3 --wait 0
    python bench/memory_class.py --tabs 4 --orphans 1   # the bound on closed tabs' results, with a few tabs

The server runs this file with ``--serve`` (the app under ``streamlit run`` plus a thread that writes the counts
to a JSON file every second): the app itself has no debug endpoint, by design.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORPHANS_ENV = "MEMORY_CLASS_ORPHANS"  # --orphans: the server's ``_jobs.ORPHANS_KEPT``
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


# ------------------------------------------------------------------------------------------------ the server side


def _monitor(stats_path: str) -> None:
    import gc
    import threading

    def loop() -> None:
        while True:
            time.sleep(1.0)
            try:
                core = sys.modules.get("backdoor_core.models")  # imported by the app (never here: an import
                if core is None or "app_pages._jobs" not in sys.modules:  # beside the server's start raced it)
                    continue
                LoadedModel = core.LoadedModel  # noqa: N806
                gc.collect()
                models = sum(1 for o in gc.get_objects() if isinstance(o, LoadedModel))
                rss = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS"))
                jobs, state = sys.modules.get("app_pages._jobs"), sys.modules.get("app_pages._state")
                out = {"t": time.time(), "rss_mb": round(rss / 1024, 1), "loaded_models": models,
                       "results_tabs": len(jobs._RESULTS) if jobs else 0,
                       "result_models": sum(1 for e in (jobs._RESULTS.values() if jobs else ())
                                            for v in e["values"].values()
                                            if isinstance(v, dict) and isinstance(v.get("loaded"), LoadedModel)),
                       "kept_tabs": len(state._KEPT) if state else 0,
                       "tab_owners": len(state._TAB_OWNERS) if state else 0}
                try:
                    from streamlit.runtime import Runtime

                    mgr = Runtime.instance()._session_mgr
                    out["sessions_active"] = len(mgr.list_active_sessions())
                    out["sessions_all"] = len(mgr.list_sessions())
                    # expired but not yet reaped: Streamlit's TTL cache drops them on its next write, not on time
                    out["sessions_unreaped"] = len(mgr._session_storage._cache._expirations) - len(
                        mgr._session_storage.list())
                except Exception:  # noqa: BLE001 - a count, never a failure
                    pass
                tmp = stats_path + ".tmp"
                with open(tmp, "w") as f:
                    json.dump(out, f)
                os.replace(tmp, stats_path)
            except Exception as exc:  # noqa: BLE001
                print("monitor:", exc, file=sys.stderr)

    threading.Thread(target=loop, daemon=True, name="memory-monitor").start()


def serve(port: int, stats_path: str) -> None:
    _monitor(stats_path)
    if os.environ.get(ORPHANS_ENV):  # a smaller bound, to see it with a few tabs
        sys.path.insert(0, str(ROOT))
        from app_pages import _jobs

        _jobs.ORPHANS_KEPT = int(os.environ[ORPHANS_ENV])
    from streamlit.web import cli

    os.chdir(ROOT)
    sys.argv = ["streamlit", "run", "app.py", "--server.port", str(port), "--server.address", "127.0.0.1",
                "--server.headless", "true", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    cli.main()


# ------------------------------------------------------------------------------------------------ the browser side


def _stats(path: Path, settle_s: float = 2.5) -> dict:
    time.sleep(settle_s)  # a fresh count, after the last run's garbage
    return json.loads(path.read_text())


def run(tabs: int, wait_s: float, keep_open: bool, orphans: int | None = None) -> dict:
    import urllib.request

    from browser import click_until, free_port, launch_browser, open_app_page, wait_until_idle

    work = Path(tempfile.mkdtemp(prefix="memory-class-"))
    stats = work / "stats.json"
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
           "BACKDOOR_LAB_TEST_MODEL": "tiny", "BACKDOOR_ZOO_DIR": str(work / "zoo"),
           "BACKDOOR_LAB_SESSIONS_DIR": str(work / "sessions")}
    if orphans is not None:
        env[ORPHANS_ENV] = str(orphans)
    log = open(work / "server.log", "w")
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port), str(stats)], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url, rows = f"http://127.0.0.1:{port}", []
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)

        def note(step: str, tab: int) -> None:
            row = {"step": step, "tab": tab, **_stats(stats)}
            rows.append(row)
            print(json.dumps(row), flush=True)

        with launch_browser() as browser:
            pages = []
            for i in range(tabs):
                page, _, _ = open_app_page(browser, {"width": 1280, "height": 900})
                page.goto(f"{url}/attack")
                wait_until_idle(page)
                if i == 0:
                    note("first page open", i)
                for label, value in (("Training texts", 40), ("Test texts (CACC / ASR)", 30), ("Epochs", 1),
                                     ("Poison rate (% of the training set)", 10)):
                    box = page.get_by_label(label, exact=True)
                    box.fill(str(value))
                    box.press("Enter")
                    wait_until_idle(page, settle_s=0.3)
                click_until(page, "Train", page.get_by_role("button", name="Cancel").first)
                page.get_by_text("is now the current model").first.wait_for(timeout=180_000)
                wait_until_idle(page)
                note("trained", i)
                page.reload()
                wait_until_idle(page)
                time.sleep(1.0)
                wait_until_idle(page)
                note("reloaded", i)
                if keep_open:
                    pages.append(page)
                else:
                    page.close()
                    note("closed", i)
            for page in pages:
                page.close()
            if wait_s:
                time.sleep(wait_s)  # Streamlit keeps a closed tab's session 2 minutes for a reconnect
                note(f"all closed, {wait_s:.0f} s later", -1)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    return {"tabs": tabs, "wait_s": wait_s, "orphans_kept": orphans, "rows": rows}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), sys.argv[3])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tabs", type=int, default=6)
    ap.add_argument("--wait", type=float, default=130.0, help="seconds to wait after the last tab closed")
    ap.add_argument("--keep-open", action="store_true", help="close the tabs only at the end")
    ap.add_argument("--orphans", type=int, default=None,
                    help="the server's _jobs.ORPHANS_KEPT (default: the app's), to see the bound with a few tabs")
    ap.add_argument("--out", default="memory_class.json")
    args = ap.parse_args()
    result = run(args.tabs, args.wait, args.keep_open, args.orphans)
    from backdoor_core.atomic import write_text
    from backdoor_core.bench_results import results_dir

    out = results_dir() / args.out
    write_text(out, json.dumps(result, indent=1) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
