#!/usr/bin/env python3
"""Turns the JSON lines of scripts/bench.sh into results.json and results.md:
the median of every figure over the runs, beside its ceiling measured in the
same run, their ratio and the target. Standard library only."""

import argparse
import datetime
import json
import statistics
import sys

p = argparse.ArgumentParser()
p.add_argument("jsonl")
p.add_argument("out_dir")
for flag in ("machine", "batch", "requests", "users", "stock", "coupons", "rate", "small"):
    p.add_argument(f"--{flag}", required=True)
a = p.parse_args()

rows = [json.loads(line) for line in open(a.jsonl) if line.strip()]


def results(mode, kind):
    return [r["result"] for r in rows if r["mode"] == mode and r["kind"] == kind]


def failed(mode, kind):
    rs = results(mode, kind)
    return sum(1 for r in rs if not r.get("ok")), len(rs)


def median(mode, kind, *path):
    vals = []
    for r in results(mode, kind):
        if not r.get("ok"):
            continue
        v = r
        for k in path:
            v = v.get(k) if isinstance(v, dict) else None
        if isinstance(v, (int, float)):
            vals.append(v)
    return statistics.median(vals) if vals else None


def num(v, unit=""):
    if v is None:
        return "n/a"
    if unit == "ms":
        return f"{v:,.1f} ms" if v < 100 else f"{v:,.0f} ms"
    if unit == "x":
        return f"{v:.2f}" if v < 10 else f"{v:,.0f}×"
    if unit == "MB":
        return f"{v:,.0f} MB"
    if unit == "s":
        return f"{v:,.2f} s"
    return f"{v:,.0f}{unit}"


def ratio(v, c):
    return v / c if v is not None and c else None


figures = []


def fig(mode, figure, value, unit="", ceiling=None, ceiling_name="", target=None, met=None, kind=None):
    note = ""
    if kind:
        bad, n = failed(mode, kind)
        note = f"FAILED {bad}/{n}" if bad else ""
    r = ratio(value, ceiling) if ceiling is not None else None
    figures.append({
        "mode": mode, "figure": figure, "value": value, "unit": unit,
        "ceiling": ceiling, "ceilingName": ceiling_name, "ratio": r,
        "target": target, "met": met(value, r) if (met and value is not None) else None,
        "note": note,
    })


def lat(mode, kind, key):
    return tuple(median(mode, kind, key, q) for q in ("p50Ms", "p99Ms", "p999Ms"))


def lat_text(t):
    return " / ".join(num(v, "ms") for v in t)


bare = median("any", "bare-http", "acceptedPerSecond")
bare_lat = lat("any", "bare-http", "latencyAccepted")
insert = median("any", "insert", "perSecond")
fig("any", "bare HTTP ceiling: 202/s at c=128", bare, " req/s", kind="bare-http")
figures[-1]["latency"] = bare_lat
fig("any", f"bulk insert ceiling: result rows/s ({a.batch} per INSERT)", insert, " rows/s", kind="insert")

modes = [m for m in ("redis", "kafka") if any(r["mode"] == m for r in rows)]
for m in modes:
    name = {"redis": "Redis", "kafka": "Kafka"}[m]
    enq = median(m, "enqueue", "perSecond")
    enq_name = "Redis enqueue script alone" if m == "redis" else "bare rdkafka producer"
    fig(m, f"ceiling: {enq_name}, events/s at c=128", enq, " ev/s", kind="enqueue")
    figures[-1]["latency"] = lat(m, "enqueue", "latency")
    acc = median(m, "sale", "acceptedPerSecond")
    if m == "redis":
        fig(m, "accepted req/s (coupon open) ÷ bare HTTP", acc, " req/s", bare, "bare HTTP", "≥ 0.6",
            lambda v, r: r is not None and r >= 0.6, kind="sale")
        fig(m, "accepted req/s ÷ enqueue alone", acc, " req/s", enq, enq_name)
    else:
        fig(m, "accepted req/s (coupon open) ÷ bare producer", acc, " req/s", enq, enq_name, "≥ 0.8",
            lambda v, r: r is not None and r >= 0.8, kind="sale")
        fig(m, "accepted req/s ÷ bare HTTP", acc, " req/s", bare, "bare HTTP")
    # The same calls with no worker running (the backlog fill): the accept
    # path without the worker and MariaDB taking their share of the cores.
    fill = median(m, "backlog-fill", "acceptedPerSecond")
    fig(m, "accepted req/s with no worker running (backlog fill) ÷ " + ("bare HTTP" if m == "redis" else "bare producer"),
        fill, " req/s", bare if m == "redis" else enq, "bare HTTP" if m == "redis" else enq_name, kind="backlog-fill")
    figures[-1]["latency"] = lat(m, "backlog-fill", "latencyAccepted")
    t = lat(m, "sale", "latencyAccepted")
    target, ok = ("≤ 10 / ≤ 25 ms (p99 / p99.9)", lambda v, r: t[1] <= 10 and t[2] <= 25) if m == "redis" \
        else ("p99 ≤ 50 ms", lambda v, r: t[1] <= 50)
    fig(m, "issue call p50 / p99 / p99.9 at c=128 (202s)", t[1], "ms", None, "", target,
        ok if None not in t else None)
    figures[-1]["latency"] = t
    figures[-1]["ceilingLatency"] = bare_lat
    so = median(m, "sale", "soldOutPerSecond")
    fig(m, "sold-out phase answers/s (409) ÷ bare HTTP", so, " req/s", bare, "bare HTTP", "≥ 0.8",
        lambda v, r: r is not None and r >= 0.8, kind="sale")
    figures[-1]["latency"] = lat(m, "sale", "latencySoldOut")
    fig(m, f"sale: accepted of {int(a.requests):,} calls", median(m, "sale", "accepted"), "")
    cpu = {}
    for r in results(m, "cpu"):
        for k in ("api", "worker", "redis", "mariadb", "broker", "loadgen", "wall"):
            cpu.setdefault(k, []).append(r["after"][k] - r["before"][k])
    if cpu:
        med = {k: statistics.median(v) for k, v in cpu.items()}
        parts = [f"{k} {med[k]:.1f}" for k in ("api", "worker", "redis", "mariadb", "broker", "loadgen")
                 if med[k] > 0.05]
        fig(m, "sale: CPU seconds per process (user + system) during the step", med["wall"] * 2, "s")
        figures[-1]["text"] = ", ".join(parts) + f"; {sum(med[k] for k in med if k != 'wall'):.1f} in all"
        figures[-1]["ceilingText"] = f"{med['wall'] * 2:.1f} (2 cores × {med['wall']:.1f} s wall)"
    fig(m, "sale: calls sent in", median(m, "sale", "sendSeconds"), "s")
    fig(m, "sale: first call to last result processed (MySQL processed_at)", median(m, "sale", "lastResultSeconds"), "s")
    acc20 = median(m, "sale-20", "acceptedPerSecond")
    fig(m, f"{a.coupons} coupons: accepted req/s ÷ bare HTTP", acc20, " req/s", bare, "bare HTTP", kind="sale-20")
    figures[-1]["latency"] = lat(m, "sale-20", "latencyAccepted")
    fig(m, f"{a.coupons} coupons: sold-out answers/s ÷ bare HTTP", median(m, "sale-20", "soldOutPerSecond"),
        " req/s", bare, "bare HTTP")
    fig(m, f"{a.coupons} coupons: first call to last result processed", median(m, "sale-20", "lastResultSeconds"), "s")
    for kind, label in (("rate", ""), ("rate-poll50", " (extra: POLL_INTERVAL_MS=50)")):
        if not results(m, kind):
            continue
        db = lat(m, kind, "requestToResultDb")
        http = lat(m, kind, "requestToResultHttp")
        fig(m, f"request-to-result p50 / p99 at {int(a.rate):,} req/s offered{label}", db[1], "ms",
            None, "", "p99 ≤ 100 ms", lambda v, r: v <= 100, kind=kind)
        figures[-1]["latency"] = db[:2]
        figures[-1]["httpLatency"] = http[:2]
        figures[-1]["issueLatency"] = lat(m, kind, "latencyAccepted")
        figures[-1]["achieved"] = median(m, kind, "answersPerSecond")
    drain = median(m, "backlog", "resultsPerSecond")
    fig(m, f"one worker's backlog drain ({int(a.requests):,} queued), results/s ÷ insert ceiling", drain,
        " res/s", insert, "bulk insert", "≥ 40,000 res/s" if m == "redis" else None,
        (lambda v, r: v >= 40000) if m == "redis" else None, kind="backlog")
    b1 = median(m, "batch-1", "resultsPerSecond")
    bn = median(m, f"batch-{a.batch}", "resultsPerSecond")
    fig(m, f"BATCH_SIZE=1 drain ({int(a.small):,} queued), results/s", b1, " res/s", kind="batch-1")
    fig(m, f"BATCH_SIZE={a.batch} ÷ BATCH_SIZE=1 (same backlog)", bn, " res/s", b1, "BATCH_SIZE=1", "≥ 20×",
        lambda v, r: r is not None and r >= 20, kind=f"batch-{a.batch}")
    api_closed = median(m, "rss", "apiKbClosedLoop")
    api_mb = median(m, "rss", "apiKb")
    wk_mb = median(m, "rss", "workerKb")
    fig(m, "peak RSS of the api after the c=128 sales", api_closed and api_closed / 1024, "MB", None, "",
        "≤ 100 MB", lambda v, r: v <= 100)
    fig(m, "peak RSS of the api, whole run (with the rate step and the backlog fills)",
        api_mb and api_mb / 1024, "MB", None, "", "≤ 100 MB", lambda v, r: v <= 100)
    fig(m, "peak RSS of a worker", wk_mb and wk_mb / 1024, "MB", None, "", "≤ 100 MB", lambda v, r: v <= 100)
    audited = [r for r in rows if r["mode"] == m and r["kind"] in
               ("sale", "sale-20", "rate", "rate-poll50", "backlog", "batch-1", f"batch-{a.batch}")]
    bad = [r for r in audited if not r["result"].get("ok")]
    fig(m, "invariant audit: steps passed", len(audited) - len(bad), f" of {len(audited)}", None, "",
        "all", lambda v, r: not bad)
    for r in bad:
        figures[-1]["note"] += f" {r['kind']} run {r['run']}: " + "; ".join(
            r["result"].get("audit", {}).get("violations", [])[:3] or [r["result"].get("error", "refused requests")])


def value_text(f):
    if "text" in f:
        return f["text"]
    if "latency" in f and f["unit"] == "ms":
        return lat_text(f["latency"])
    if f["figure"].startswith("invariant"):
        return f"{f['value']}{f['unit']}"
    return num(f["value"], f["unit"] if f["unit"] in ("ms", "MB", "s") else "")


def ceiling_text(f):
    if "ceilingText" in f:
        return f["ceilingText"]
    if f.get("ceilingLatency"):
        return "bare HTTP " + lat_text(f["ceilingLatency"])
    if f.get("httpLatency"):
        return (f"achieved {num(f['achieved'])} req/s; issue call p99 {num(f['issueLatency'][1], 'ms')}; "
                f"result over HTTP (1 in 200, 10 ms polls) {lat_text(f['httpLatency'])}")
    if f["ceiling"] is None:
        if f.get("latency") and f["unit"] != "ms":
            return "p50/p99/p99.9 " + lat_text(f["latency"])
        return ""
    return f"{num(f['ceiling'])} ({f['ceilingName']})"


now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
runs = max((r["run"] for r in rows), default=0)
lines = [
    f"Benchmark of {now}, {a.machine}; medians of {runs} run(s). Workload: {int(a.requests):,} calls from "
    f"{int(a.users):,} users on one coupon of {int(a.stock):,} (and on {a.coupons} coupons), c=128; "
    f"api, worker, MariaDB, Redis, broker and load generator share the machine.",
    "",
    "| queue | figure | value | ceiling (same run) | ratio | target | met |",
    "|---|---|---|---|---|---|---|",
]
for f in figures:
    met = {True: "yes", False: "**no**", None: ""}[f["met"]]
    r = "" if f["ratio"] is None else (f"{f['ratio']:.2f}" if f["ratio"] < 10 else f"{f['ratio']:,.0f}×")
    note = f" {f['note']}" if f["note"] else ""
    lines.append(f"| {f['mode'] if f['mode'] != 'any' else ''} | {f['figure']}{note} | {value_text(f)} | "
                 f"{ceiling_text(f)} | {r} | {f['target'] or ''} | {met} |")
md = "\n".join(lines) + "\n"
open(f"{a.out_dir}/results.md", "w").write(md)

timelines = []
for m in modes:
    sales = [r["result"] for r in rows if r["mode"] == m and r["kind"] == "sale" and "timeline" in r["result"]]
    if sales:
        t = sales[-1]["timeline"]
        timelines.append({"title": f"{m}: {int(a.requests):,} calls, 1 coupon of {int(a.stock):,}, c=128",
                          **t})
json.dump({"date": now, "machine": a.machine, "config": vars(a), "figures": figures, "timelines": timelines,
           "runs": rows}, open(f"{a.out_dir}/results.json", "w"), indent=1)
sys.exit(0)
