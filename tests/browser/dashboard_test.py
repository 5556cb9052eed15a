"""The dashboard in a real headless browser during a sale.

Opens /dashboard in Debian's chromium (driven by Playwright), creates a
coupon, runs a sale against the api from a few threads, and checks that the
page shows the coupon with its figures moving: issued count rising, requests
accepted and processed per second, the queue, and a live worker. Saves a
screenshot taken mid-sale. Then checks that /docs renders every operation
from the api's own assets.

    python dashboard_test.py --api http://127.0.0.1:19290 --token TOKEN \
        --screenshot out.png [--chromium /usr/bin/chromium]

Prints 'N passed, N failed' and exits non-zero on any failure.
"""

import argparse
import json
import threading
import time
import urllib.error
import urllib.request

from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def post(url, token=None, body=None):
    data = json.dumps(body).encode() if body is not None else b""
    req = urllib.request.Request(url, data=data, method="POST")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as res:
        return res.status, json.loads(res.read() or b"null")


class Sale:
    """Fires `total` issue requests from distinct users at about `rate` per
    second, over a few threads, in the background."""

    def __init__(self, api, coupon, total, rate, threads=4):
        self.api, self.coupon, self.total, self.rate = api, coupon, total, rate
        self.threads = threads
        self.accepted = 0
        self.sold_out = 0
        self.errors = 0
        self.lock = threading.Lock()
        self.workers = []

    def _run(self, index):
        interval = self.threads / self.rate
        start = time.monotonic()
        for n, user in enumerate(range(index + 1, self.total + 1, self.threads)):
            delay = start + n * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            url = f"{self.api}/api/coupons/{self.coupon}/issue?userId={1_000_000 + user}"
            try:
                status, _ = post(url)
                with self.lock:
                    self.accepted += status == 202
            except urllib.error.HTTPError as e:
                # Once the stock is gone the api answers 409 SOLD_OUT at once.
                with self.lock:
                    if e.code == 409:
                        self.sold_out += 1
                    else:
                        self.errors += 1
            except (urllib.error.URLError, OSError):
                with self.lock:
                    self.errors += 1

    def start(self):
        self.workers = [threading.Thread(target=self._run, args=(i,)) for i in range(self.threads)]
        for t in self.workers:
            t.start()

    def join(self):
        for t in self.workers:
            t.join()


def cell(page, coupon, cls):
    text = page.text_content(f'tr[data-coupon-id="{coupon}"] td.{cls}')
    return text.strip() if text else ""


def number(text):
    try:
        return float(text.replace(",", "").split("/")[0].strip())
    except ValueError:
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--api", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--screenshot", required=True)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--requests", type=int, default=900)
    ap.add_argument("--rate", type=float, default=60.0)
    ap.add_argument("--stock", type=int, default=500)
    args = ap.parse_args()

    passed, failed = 0, 0

    def check(name, ok, detail=""):
        nonlocal passed, failed
        print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail and not ok else ''}", flush=True)
        if ok:
            passed += 1
        else:
            failed += 1

    _, created = post(f"{args.api}/api/admin/coupons", args.token,
                      {"name": "browser test sale", "quantity": args.stock})
    coupon = created["couponId"]

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 640})
        outside = []
        page.on("request", lambda r: None if r.url.startswith((args.api, "data:"))
                else outside.append(r.url))
        console_errors = []
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
        page.goto(f"{args.api}/dashboard")
        row = f'tr[data-coupon-id="{coupon}"]'
        page.wait_for_selector(row, timeout=10_000)
        check("the new coupon is shown", "browser test sale" in page.text_content(row))
        check("it starts with nothing issued", cell(page, coupon, "issued") == "0",
              cell(page, coupon, "issued"))

        sale = Sale(args.api, coupon, args.requests, args.rate)
        sale.start()
        samples, shot = [], False
        deadline = time.monotonic() + args.requests / args.rate + 20
        while time.monotonic() < deadline:
            time.sleep(1)
            s = {k: number(cell(page, coupon, k))
                 for k in ("issued", "queue", "accepted-rate", "processed-rate")}
            s["workers"] = page.locator("#workers tbody tr").count()
            samples.append(s)
            print("  page shows", s, flush=True)
            # Mid-sale: half the stock gone, both rates showing.
            if not shot and (s["issued"] or 0) >= args.stock / 2 \
                    and (s["processed-rate"] or 0) > 0 and (s["accepted-rate"] or 0) > 0:
                page.screenshot(path=args.screenshot, full_page=True)
                shot = True
            if not sale.workers[0].is_alive() and s["issued"] == args.stock and s["queue"] == 0:
                break
        sale.join()

        issued = [s["issued"] for s in samples if s["issued"] is not None]
        check("issued rises during the sale", len(set(issued)) >= 3, str(issued))
        check("issued never falls", issued == sorted(issued), str(issued))
        check("issued ends at the stock", issued[-1:] == [args.stock], str(issued[-1:]))
        check("accepted/s is shown during the sale",
              any((s["accepted-rate"] or 0) > 0 for s in samples))
        check("processed/s is shown during the sale",
              any((s["processed-rate"] or 0) > 0 for s in samples))
        check("the queue drains to 0", samples[-1]["queue"] == 0, str(samples[-1]))
        check("a live worker is listed", any(s["workers"] >= 1 for s in samples))
        check("the chart is drawn", page.locator(f"{row} svg.chart polyline").count() == 2)
        check("every request was accepted (202) or refused as sold out (409)",
              sale.accepted + sale.sold_out == args.requests and sale.errors == 0
              and sale.accepted >= args.stock,
              f"{sale.accepted} accepted, {sale.sold_out} sold out, {sale.errors} errors")
        check("the page loads nothing from outside the api", not outside, str(outside))
        check("the page logs no errors", not console_errors, str(console_errors))
        check("a screenshot was taken mid-sale", shot)
        if not shot:
            page.screenshot(path=args.screenshot, full_page=True)

        # The docs page renders the whole document from the api's own assets.
        page.goto(f"{args.api}/docs")
        page.wait_for_selector(".opblock", timeout=15_000)
        with urllib.request.urlopen(f"{args.api}/api-docs/openapi.json", timeout=10) as res:
            doc = json.loads(res.read())
        operations = sum(len(item) for item in doc["paths"].values())
        check("/docs shows every operation", page.locator(".opblock").count() == operations,
              f"{page.locator('.opblock').count()} of {operations}")
        check("/docs loads nothing from outside the api", not outside, str(outside))
        browser.close()

    print(f"{passed} passed, {failed} failed")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
