"""Where one page's render goes: the server's CPU, and the browser's main thread by script.

    .venv/bin/python bench/page_profile.py --home /tmp/scale-b --pages train,deploy --loads 5
    .venv/bin/python bench/page_profile.py --home /tmp/scale-b --pages train --scripts

Starts the studio's server on ``--home`` (``bench/scale.py --seed-only`` makes one), opens each page
``--loads`` times in Chromium from a blank tab and prints the medians of: the render as
``bench/scale.py`` times it (until the heading shows and the script run has ended), the server process's
CPU time meanwhile, and Chromium's main-thread task, script and layout time (CDP
``Performance.getMetrics``). With ``--scripts``, Chromium's sampling profiler runs during the loads too
and the time is split by the script (and function) it was spent in: a Streamlit element that costs the
browser shows up by its chunk's name (``StreamlitSyntaxHighlighter…js``, ``PlotlyChart…js``).
"""
from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import scale  # noqa: E402  (bench/scale.py: the browser, the pages and the render it times)


def _script_time(profile: dict, by_script: collections.Counter, by_function: collections.Counter, share: float) -> None:
    nodes = {node["id"]: node["callFrame"] for node in profile["nodes"]}
    for sample, delta in zip(profile["samples"], profile["timeDeltas"]):
        frame = nodes[sample]
        script = frame["url"].rsplit("/", 1)[-1] or frame["functionName"] or "(native)"
        by_script[script] += delta / 1e6 * share
        by_function[(script, frame["functionName"])] += delta / 1e6 * share


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--pages", default=",".join(scale.PAGES), help="url paths, comma-separated ('' is Datasets)")
    ap.add_argument("--loads", type=int, default=5)
    ap.add_argument("--scripts", action="store_true", help="split the browser's time by script (sampling profiler)")
    args = ap.parse_args(argv)

    import psutil
    from playwright.sync_api import sync_playwright

    from scripts.launch import free_port, start_studio

    port = free_port()
    server = start_studio(args.home, port, VITUNE_LANGUAGE="en")
    url, proc = f"http://127.0.0.1:{port}", psutil.Process(server.pid)
    try:
        with sync_playwright() as p:
            browser = scale._browser(p)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            cdp = page.context.new_cdp_session(page)
            scale.render(page, url, "Datasets", 120)   # the server's first run imports the page modules
            for path in args.pages.split(","):
                title = scale.PAGES[path]
                scale.render(page, f"{url}/{path}", title, 120)   # this page's own first run
                got, by_script, by_function = [], collections.Counter(), collections.Counter()
                for _ in range(args.loads):
                    page.goto("about:blank")
                    time.sleep(0.5)
                    cdp.send("Performance.enable")
                    if args.scripts:
                        cdp.send("Profiler.enable")
                        cdp.send("Profiler.setSamplingInterval", {"interval": 200})
                        cdp.send("Profiler.start")
                    cpu0 = proc.cpu_times()
                    took = scale.render(page, f"{url}/{path}", title, 120)
                    cpu1 = proc.cpu_times()
                    if args.scripts:
                        _script_time(cdp.send("Profiler.stop")["profile"], by_script, by_function, 1 / args.loads)
                        cdp.send("Profiler.disable")
                    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
                    cdp.send("Performance.disable")
                    got.append((took or float("nan"), cpu1.user - cpu0.user + cpu1.system - cpu0.system,
                                metrics["TaskDuration"], metrics["ScriptDuration"], metrics["LayoutDuration"]))
                med = [statistics.median(row[i] for row in got) for i in range(5)]
                print(f"{title:15s} render {med[0]:.3f} s | server CPU {med[1]:.3f} s | browser main thread: "
                      f"tasks {med[2]:.3f} s, script {med[3]:.3f} s, layout {med[4]:.3f} s", flush=True)
                if args.scripts:
                    print("  by script (s a load):", ", ".join(f"{name} {t:.3f}" for name, t in by_script.most_common(10)))
                    print("  by function:", ", ".join(f"{s}:{f or '(anonymous)'} {t:.3f}"
                                                      for (s, f), t in by_function.most_common(10)))
            browser.close()
    finally:
        server.terminate()
        server.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
