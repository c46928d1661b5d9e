#!/usr/bin/env python3
"""Opens rangedb's status page in headless Chromium (Playwright) and checks that it
shows a live cluster: every node up, every range with a leader, load and latency
charts with data points, and leader changes among the recent events.

    python3 tests/browser/status_page.py --url http://127.0.0.1:PORT/ --nodes 3 \
        [--chromium /usr/bin/chromium] [--screenshot page.png]

Run by tests/ops.rs (`the_status_page_shows_the_live_cluster_in_headless_chromium`),
which starts the cluster and writes to it first. Exit status 0: every check passed;
1: a check failed (the reason on stderr); 2: Playwright or Chromium is missing.
"""

import argparse
import shutil
import sys

TIMEOUT_MS = 20_000


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--chromium", default=None)
    parser.add_argument("--screenshot", default=None)
    args = parser.parse_args()

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("playwright is not installed (pip install playwright)", file=sys.stderr)
        return 2
    chromium = args.chromium or next(
        (p for p in map(shutil.which, ["chromium", "chromium-browser", "google-chrome"]) if p),
        None,
    )
    if chromium is None:
        print("no chromium on PATH (apt-get install chromium)", file=sys.stderr)
        return 2

    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    def wait(page, expression, what, arg=None):
        try:
            page.wait_for_function(expression, arg=arg, timeout=TIMEOUT_MS)
        except PlaywrightTimeout:
            header = page.locator("header").inner_text().replace("\n", " ")
            raise AssertionError(f"{what}: not shown within {TIMEOUT_MS} ms; header: {header}")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            console_errors = []
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: console_errors.append(str(e)))
            outside = []
            page.on(
                "request",
                lambda r: outside.append(r.url) if not r.url.startswith(args.url.rstrip("/")) else None,
            )
            page.goto(args.url)
            assert page.title() == "rangedb status", page.title()

            # Every node up, as the page counts them.
            want = f"{args.nodes} / {args.nodes}"
            wait(
                page,
                "want => document.getElementById('node-count').textContent === want",
                f"{want} nodes up",
                arg=want,
            )
            node_rows = page.locator("#nodes tbody tr.node-row")
            assert node_rows.count() == args.nodes, f"{node_rows.count()} node rows"
            assert page.locator("#nodes td.up").count() == args.nodes

            # Ranges: at least one row, and every one with a leader.
            wait(
                page,
                "() => document.querySelectorAll('#ranges tr.range-row').length > 0 &&"
                " document.querySelectorAll('#ranges td.none').length === 0",
                "range rows, each with a leader",
            )
            ranges = page.locator("#ranges tr.range-row").count()
            leaders = page.locator("#ranges td.leader").all_text_contents()
            assert len(leaders) == ranges and all(t.startswith("n") for t in leaders), leaders
            assert page.locator("#range-count").text_content() == str(ranges)
            assert page.locator("#led-count").text_content() == str(ranges)

            # Charts: the load chart's puts rise above zero (the test's puts, which this
            # node led), and the latency chart has points (seconds with requests).
            wait(
                page,
                "() => Number(document.querySelector("
                "'#chart-load polyline[data-series=puts]')?.dataset.max) >= 1 &&"
                " Number(document.getElementById('chart-latency').dataset.points) > 0",
                "puts in the load chart and points in the latency chart",
            )
            puts_max = float(
                page.locator("#chart-load polyline[data-series=puts]").get_attribute("data-max")
            )
            load_points = page.locator("#chart-load circle.point").count()
            latency_points = page.locator("#chart-latency circle.point").count()
            polylines = page.locator("#chart-load polyline.series").count()
            assert load_points >= 3 and latency_points >= 1 and polylines >= 1, (
                load_points,
                latency_points,
                polylines,
            )
            load_max = float(page.locator("#chart-load").get_attribute("data-max"))

            # Recent events: the elections that gave the ranges their leaders.
            wait(
                page,
                "() => document.querySelector('#events li.event.leader_change') !== null",
                "a leader change among the events",
            )
            events = page.locator("#events li.event").count()
            first_change = page.locator("#events li.event.leader_change").first.text_content()
            assert "leader" in first_change, first_change

            assert page.locator("#error").text_content() == "", page.locator("#error").text_content()
            assert not console_errors, console_errors
            assert not outside, f"requests to other origins: {outside}"
            if args.screenshot:
                page.screenshot(path=args.screenshot, full_page=True)
        finally:
            browser.close()

    print(f"status page: {want} nodes up, {ranges} ranges each with a leader")
    print(
        f"status page: load chart {load_points} points (max {load_max:g} requests/s,"
        f" {puts_max:g} puts/s),"
        f" latency chart {latency_points} points"
    )
    print(f"status page: {events} recent events, e.g. {first_change!r}")
    print("status page: ok")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AssertionError as failure:
        print(f"status page check failed: {failure!r}", file=sys.stderr)
        sys.exit(1)
