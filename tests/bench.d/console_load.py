#!/usr/bin/python3
"""Console load time in a real headless Chromium (Debian's chromium + chromium-driver).

    console_load.py BASE_URL TOKEN RUNS  -> JSON on stdout

For each run, with the browser cache cleared: navigate to BASE_URL/ and time, from the start of
navigation (performance.timeOrigin), until the sign-in view is shown ("first visit"); then
with a token in the tab's sessionStorage, reload and time until the ask view is shown with the
plant field filled from /v1/status ("signed in": two API calls more). Also reports the bytes the
page fetched at start (decoded body sizes of the document and its resources).
"""
import json
import statistics
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

SIGNIN = "!document.getElementById('view-signin').hidden"
ASK = "!document.getElementById('view-ask').hidden && document.getElementById('plant').value !== ''"


def wait_ms(d, cond):
    # Poll from the driver side (the page's CSP forbids eval); each probe is cheap.
    import time
    end = time.time() + 10
    while time.time() < end:
        t = d.execute_script("return (%s) ? performance.now() : -1" % cond)
        if t >= 0:
            return t
        time.sleep(0.002)
    raise SystemExit("page not ready: " + cond)


def main():
    base, token, runs = sys.argv[1].rstrip("/"), sys.argv[2], int(sys.argv[3])
    o = webdriver.ChromeOptions()
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=768,1024"]:
        o.add_argument(a)
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)
    first, signed, load_event, sizes = [], [], [], []
    try:
        d.get(base + "/health")
        for _ in range(runs):
            d.execute_cdp_cmd("Network.clearBrowserCache", {})
            d.execute_script("sessionStorage.clear()")
            d.get(base + "/")
            first.append(wait_ms(d, SIGNIN))
            nav = d.execute_script(
                "const n = performance.getEntriesByType('navigation')[0];"
                "const r = performance.getEntriesByType('resource');"
                "return [n.loadEventEnd, n.decodedBodySize + r.reduce((s, x) => s + x.decodedBodySize, 0)];")
            load_event.append(nav[0])
            sizes.append(nav[1])
            d.execute_script("sessionStorage.setItem('copilot-edge.token', arguments[0])", token)
            d.execute_cdp_cmd("Network.clearBrowserCache", {})
            d.refresh()
            signed.append(wait_ms(d, ASK))
    finally:
        d.quit()

    def summary(v):
        v = sorted(v)
        return {"median_ms": round(statistics.median(v), 1),
                "p95_ms": round(v[min(len(v) - 1, int(len(v) * 0.95))], 1),
                "max_ms": round(v[-1], 1)}

    print(json.dumps({"runs": runs, "first_visit_ready": summary(first),
                      "load_event": summary(load_event),
                      "signed_in_ready": summary(signed),
                      "bytes_at_start": max(sizes)}))


if __name__ == "__main__":
    main()
