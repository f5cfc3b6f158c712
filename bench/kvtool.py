#!/usr/bin/env python3
"""Helpers for bench/compare.sh (standard library only).

  kvtool.py fill --system ferrokv|etcd --url URL [--keys N] [--value-size B] [--conns C]
      Write every key bench/<i> once (same names as `ferrokv bench` and
      bench/wrk/kv.lua) over C keep-alive connections; exit 1 on a failure.

  kvtool.py report --runs RUNS.jsonl --meta META.json --out-prefix PATH [--doc FILE]
      Aggregate the runs (median and min-max over repeats), write PATH.json and
      PATH.csv, and replace the generated sections of FILE (markdown) between
      <!-- compare:begin --> / <!-- compare:end --> and
      <!-- crosscheck:begin --> / <!-- crosscheck:end -->; the compare section opens
      with a throughput chart written to img/compare-throughput.svg beside FILE
      (bench/chart.py).
"""

import argparse
import base64
import csv
import http.client
import json
import os
import statistics
import sys
import threading
import urllib.parse

import chart

# The throughput chart's file name, under the document's img/ directory.
CHART = "compare-throughput.svg"

# ----------------------------------------------------------------------------- fill


def key_name(i, nkeys):
    width = len(str(max(nkeys - 1, 0)))
    return "bench/%0*d" % (width, i)


def fill(args):
    url = urllib.parse.urlsplit(args.url)
    value = b"x" * args.value_size
    lock = threading.Lock()
    state = {"next": 0, "failed": None}

    def worker():
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        while True:
            with lock:
                i = state["next"]
                state["next"] += 1
                if i >= args.keys or state["failed"]:
                    break
            key = key_name(i, args.keys)
            if args.system == "etcd":
                body = json.dumps({
                    "key": base64.b64encode(key.encode()).decode(),
                    "value": base64.b64encode(value).decode(),
                }).encode()
                method, path = "POST", "/v3/kv/put"
                headers = {"Content-Type": "application/json"}
            else:
                body = value
                method, path = "PUT", "/v1/kv/" + key
                headers = {"Content-Type": "application/octet-stream"}
            for attempt in range(3):
                try:
                    conn.request(method, path, body=body, headers=headers)
                    resp = conn.getresponse()
                    resp.read()
                    if 200 <= resp.status < 300:
                        break
                    err = "HTTP %d" % resp.status
                except (OSError, http.client.HTTPException) as e:
                    err = repr(e)
                    conn.close()
                    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
            else:
                with lock:
                    state["failed"] = "%s: %s" % (key, err)
                break
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(args.conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if state["failed"]:
        print("fill failed: " + state["failed"], file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------------------- report

WORKLOADS = [
    ("put", "writes"),
    ("get", "linearizable reads"),
    ("stale", "stale / serializable reads"),
    ("mix", "50/50 put/get (linearizable)"),
]
REDIS_FOR = {"put": "set", "get": "get", "stale": "get"}


def load_runs(path):
    runs = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                runs.append(json.loads(line))
    return runs


def aggregate(runs):
    """(kind, system, workload, concurrency) -> medians and spread."""
    groups = {}
    for r in runs:
        k = (r["kind"], r["system"], r["workload"], r["concurrency"])
        groups.setdefault(k, []).append(r)
    out = {}
    for k, rs in groups.items():
        ops = [r["ops_per_sec"] for r in rs]
        out[k] = {
            "kind": k[0], "system": k[1], "workload": k[2], "concurrency": k[3],
            "repeats": len(rs),
            "ops_per_sec": statistics.median(ops),
            "ops_per_sec_min": min(ops),
            "ops_per_sec_max": max(ops),
            "p50_us": statistics.median(r["p50_us"] for r in rs),
            "p99_us": statistics.median(r["p99_us"] for r in rs),
            "errors": sum(r.get("errors", 0) for r in rs),
            "generator_cpu_s": statistics.median(r.get("generator_cpu_s") or 0 for r in rs),
            "server_cpu_us_per_op": server_cpu_per_op(rs),
        }
    return out


def server_cpu_per_op(runs):
    """Median over runs of the servers' CPU µs per operation; None unless every run has it."""
    per_op = [r["server_cpu_s"] * 1e6 / r["requests"] for r in runs
              if r.get("server_cpu_s") is not None and r.get("requests")]
    return statistics.median(per_op) if per_op and len(per_op) == len(runs) else None


def fmt_ops(a):
    if a is None:
        return "–"
    s = "%.0f" % a["ops_per_sec"]
    if a["repeats"] > 1:
        s += " (%.0f–%.0f)" % (a["ops_per_sec_min"], a["ops_per_sec_max"])
    if a["errors"]:
        s += " ⚠%d err" % a["errors"]
    return s


def fmt_ms(us):
    if us is None:
        return "–"
    ms = us / 1000.0
    if ms < 1:
        return "%.3f" % ms
    return "%.2f" % ms if ms < 10 else "%.1f" % ms


def ratio(a, b, key, invert=False):
    if a is None or b is None or not a[key] or not b[key]:
        return "–"
    r = b[key] / a[key] if invert else a[key] / b[key]
    return "%.2f×" % r


def render_compare(meta, agg):
    g = lambda system, wl, c: agg.get(("compare", system, wl, c))
    concs = meta["concurrency"]
    lines = []
    lines.append("Generated by `%s` on %s." % (meta["command"], meta["date"]))
    lines.append("")
    lines.append("| | |")
    lines.append("|---|---|")
    for label, key in [
        ("CPU", "cpu"), ("Cores", "cores"), ("Memory", "memory"), ("Kernel", "kernel"),
        ("Load average at start", "loadavg"), ("ferrokv", "ferrokv_version"),
        ("etcd", "etcd_version"), ("Redis", "redis_version"), ("wrk", "wrk_version"),
        ("Durability mode", "durability"), ("Threads", "threads"), ("Data directories", "data_medium"),
        ("Duration per cell", "duration"), ("Repeats", "repeat"),
        ("Workload", "workload"), ("Load generator", "generator"),
    ]:
        lines.append("| %s | %s |" % (label, meta.get(key, "?")))
    lines.append("")
    lines.append("Throughput is operations/s (median over repeats, min–max in parentheses when "
                 "repeated); p50/p99 latency in ms. `ferrokv/etcd` is the throughput ratio; "
                 "`p50 etcd/ferrokv` > 1 means ferrokv answers faster.")
    lines.append("")
    lines.append("| workload | clients | ferrokv ops/s | p50 | p99 | etcd ops/s | p50 | p99 "
                 "| ferrokv/etcd | p50 etcd/ferrokv |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for wl, label in WORKLOADS:
        for c in concs:
            f, e = g("ferrokv", wl, c), g("etcd", wl, c)
            if f is None and e is None:
                continue
            lines.append("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                label, c,
                fmt_ops(f), fmt_ms(f and f["p50_us"]), fmt_ms(f and f["p99_us"]),
                fmt_ops(e), fmt_ms(e and e["p50_us"]), fmt_ms(e and e["p99_us"]),
                ratio(f, e, "ops_per_sec"), ratio(f, e, "p50_us", invert=True)))
    if any(k[1] == "redis" for k in agg):
        lines.append("")
        lines.append("Redis (single node, no replication, no persistence, RESP protocol via "
                     "`redis-benchmark`: a different protocol and client, so a reference "
                     "point, not a like-for-like comparison):")
        lines.append("")
        lines.append("| command | clients | Redis ops/s | p50 | p99 | ferrokv workload | ferrokv/Redis |")
        lines.append("|---|---:|---:|---:|---:|---|---:|")
        for fwl, cmd in chart.REDIS_COMMAND.items():
            for c in concs:
                r = g("redis", cmd, c)
                if r is None:
                    continue
                f = g("ferrokv", fwl, c)
                lines.append("| %s | %d | %s | %s | %s | %s | %s |" % (
                    cmd.upper(), c, fmt_ops(r), fmt_ms(r["p50_us"]), fmt_ms(r["p99_us"]),
                    dict(WORKLOADS)[fwl], ratio(f, r, "ops_per_sec")))
    cpu = render_server_cpu(agg, concs)
    if cpu:
        lines.append("")
        lines.append(cpu)
    lines.append("")
    lines.append(render_targets(agg, concs))
    return "\n".join(lines)


def fmt_us(x):
    return "–" if x is None else ("%.1f" % x if x < 100 else "%.0f" % x)


def render_server_cpu(agg, concs):
    """CPU the servers spent per operation, by system; None when the runs did not record it."""
    g = lambda system, wl, c: agg.get(("compare", system, wl, c))
    cpu = lambda a: a and a.get("server_cpu_us_per_op")
    rows = []
    for wl, label in WORKLOADS:
        redis_cmd = chart.REDIS_COMMAND.get(wl)
        for c in concs:
            f, e = cpu(g("ferrokv", wl, c)), cpu(g("etcd", wl, c))
            r = cpu(g("redis", redis_cmd, c)) if redis_cmd else None
            if f is None and e is None:
                continue
            rows.append("| %s | %d | %s | %s | %s | %s |" % (
                label, c, fmt_us(f), fmt_us(e), "%.1f×" % (e / f) if f and e else "–", fmt_us(r)))
    if not rows:
        return None
    return "\n".join([
        "CPU the servers used per operation, in µs (median over repeats): user and system time of "
        "all three ferrokv nodes, of all three etcd members or of the Redis process during the "
        "measured seconds, divided by the operations answered. The load generator's own CPU is "
        "not included. Background work (timers, snapshots, compaction) is charged to the "
        "operations of the cell it falls in; at one client most of a node's CPU is waking up.",
        "",
        "| workload | clients | ferrokv | etcd | etcd/ferrokv | Redis (SET/GET) |",
        "|---|---:|---:|---:|---:|---:|"] + rows)


def render_targets(agg, concs):
    g = lambda system, wl, c: agg.get(("compare", system, wl, c))
    hi = max(concs)
    rows = []

    def add(name, have, want, ok):
        rows.append("| %s | %s | %s | %s |" % (name, have, want, "met" if ok else "**missed**"))

    def thr(wl, label):
        f, e = g("ferrokv", wl, hi), g("etcd", wl, hi)
        if f and e and e["ops_per_sec"]:
            r = f["ops_per_sec"] / e["ops_per_sec"]
            add("%s @%d: ferrokv/etcd throughput" % (label, hi), "%.2f×" % r, "≥ 5×", r >= 5)

    thr("put", "writes")
    f, e = g("ferrokv", "put", hi), g("etcd", "put", hi)
    if f and e and e["p99_us"]:
        r = f["p99_us"] / e["p99_us"]
        add("writes @%d: p99 ferrokv/etcd" % hi, "%.2f" % r, "≤ 1", r <= 1)
    w = g("ferrokv", "put", hi)
    if w and w.get("server_cpu_us_per_op") is not None:
        x = w["server_cpu_us_per_op"]
        add("writes @%d: CPU per write, all three nodes" % hi, "%.1f µs" % x, "≤ 45 µs", x <= 45)
    thr("get", "linearizable reads")
    if 1 in concs:
        for wl, label in [("put", "write"), ("get", "linearizable read")]:
            f, e = g("ferrokv", wl, 1), g("etcd", wl, 1)
            if f and e and e["p50_us"]:
                r = f["p50_us"] / e["p50_us"]
                add("1-client %s p50: ferrokv/etcd" % label, "%.2f" % r, "≤ 0.5", r <= 0.5)
    for wl, label in [("put", "writes"), ("get", "linearizable reads"), ("stale", "stale reads")]:
        cmd = chart.REDIS_COMMAND[wl]
        f, r = g("ferrokv", wl, hi), g("redis", cmd, hi)
        if f and r and r["ops_per_sec"]:
            x = f["ops_per_sec"] / r["ops_per_sec"]
            add("%s @%d: ferrokv/Redis %s throughput" % (label, hi, cmd.upper()), "%.2f×" % x,
                "≥ 0.5×", x >= 0.5)
    if not rows:
        return ""
    return "\n".join(["Targets (goals to report against, not assertions):", "",
                      "| target | this run | goal | |", "|---|---:|---:|---|"] + rows)


def render_crosscheck(meta, agg):
    rows = [(k, v) for k, v in agg.items() if k[0] == "crosscheck"]
    if not rows:
        return None
    lines = ["Generated by `%s` on %s (%s); same ferrokv cluster, same node (the leader), "
             "writes of %s, %s." % (meta["command"], meta["date"], meta["durability"],
                                    meta.get("value_size_desc", "256-byte values"),
                                    meta.get("keys_desc", "10k random keys")),
             "",
             "| load generator | clients | ops/s | p50 ms | p99 ms | generator CPU s/s |",
             "|---|---:|---:|---:|---:|---:|"]
    dur = meta.get("duration_s") or 1
    for k, v in sorted(rows, key=lambda kv: (kv[0][3], kv[0][1])):
        lines.append("| %s | %d | %s | %s | %s | %.2f |" % (
            k[1], k[3], fmt_ops(v), fmt_ms(v["p50_us"]), fmt_ms(v["p99_us"]),
            (v["generator_cpu_s"] or 0) / dur))
    return "\n".join(lines)


def replace_section(text, name, body):
    begin, end = "<!-- %s:begin -->" % name, "<!-- %s:end -->" % name
    if begin in text and end in text:
        pre = text[: text.index(begin) + len(begin)]
        post = text[text.index(end):]
        return pre + "\n" + body + "\n" + post
    return text + "\n%s\n%s\n%s\n" % (begin, body, end)


def report(args):
    runs = load_runs(args.runs)
    with open(args.meta) as f:
        meta = json.load(f)
    agg = aggregate(runs)
    with open(args.out_prefix + ".json", "w") as f:
        json.dump({"meta": meta, "runs": runs,
                   "summary": sorted(agg.values(), key=lambda a: (a["kind"], a["system"], a["workload"], a["concurrency"]))},
                  f, indent=1)
    fields = ["kind", "system", "workload", "concurrency", "repeat", "tool", "ops_per_sec",
              "p50_us", "p90_us", "p99_us", "max_us", "requests", "errors", "elapsed_s",
              "generator_cpu_s"]
    with open(args.out_prefix + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in runs:
            w.writerow(r)
    compare = render_compare(meta, agg)
    print(compare)
    cross = render_crosscheck(meta, agg)
    if cross:
        print()
        print(cross)
    if args.doc:
        try:
            with open(args.doc) as f:
                text = f.read()
        except FileNotFoundError:
            text = "# Benchmarks\n"
        # The chart sits beside the document (img/), named in the section it illustrates.
        svg = chart.render({"meta": meta, "summary": list(agg.values())})
        if svg is not None:
            img = os.path.join(os.path.dirname(os.path.abspath(args.doc)), "img", CHART)
            os.makedirs(os.path.dirname(img), exist_ok=True)
            with open(img, "w") as f:
                f.write(svg)
            compare = "![Throughput of ferrokv, etcd and Redis in this run](img/%s)\n\n%s" % (CHART, compare)
        text = replace_section(text, "compare", compare)
        if cross:
            text = replace_section(text, "crosscheck", cross)
        with open(args.doc, "w") as f:
            f.write(text)
    return 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fill")
    f.add_argument("--system", choices=["ferrokv", "etcd"], required=True)
    f.add_argument("--url", required=True)
    f.add_argument("--keys", type=int, default=10000)
    f.add_argument("--value-size", type=int, default=256)
    f.add_argument("--conns", type=int, default=32)
    r = sub.add_parser("report")
    r.add_argument("--runs", required=True)
    r.add_argument("--meta", required=True)
    r.add_argument("--out-prefix", required=True)
    r.add_argument("--doc")
    a = p.parse_args()
    return fill(a) if a.cmd == "fill" else report(a)


if __name__ == "__main__":
    sys.exit(main())
