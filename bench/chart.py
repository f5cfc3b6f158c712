#!/usr/bin/env python3
"""Throughput chart of a bench/compare.sh run, as a self-contained SVG.

One panel per workload (writes, linearizable reads, stale reads, 50/50 mix),
one group of bars per client count: ferrokv, etcd and, where Redis has the
matching command (SET for writes, GET for reads), Redis. A bar is the median
over the repeats; its whisker spans the repeats' min–max. Each panel has its
own linear scale, so compare bars within a panel. No third-party packages:
the SVG is written by hand.

Usage: bench/chart.py RESULT.json OUT.svg
  RESULT.json  a bench/results/compare-*.json file (its "summary" and "meta")
"""

import json
import sys
from html import escape

# The Redis command each workload is set beside (the mix has none).
REDIS_COMMAND = {"put": "set", "get": "get", "stale": "get"}
# (workload, panel title)
PANELS = [
    ("put", "Writes (Redis: SET)"),
    ("get", "Linearizable reads (Redis: GET)"),
    ("stale", "Stale / serializable reads (Redis: GET)"),
    ("mix", "50/50 put/get, linearizable"),
]
SERIES = [("ferrokv", "#1f77b4"), ("etcd", "#ff7f0e"), ("redis", "#9a9a9a")]
LABELS = {"ferrokv": "ferrokv (3 nodes, Raft, fsync)", "etcd": "etcd (3 members, fsync)",
          "redis": "Redis (1 node, no replication, no persistence, RESP)"}

PANEL_W, PANEL_H = 520, 300
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 64, 16, 34, 52
HEADER_H, FOOTER_H = 64, 40


def kops(x):
    """A throughput as a short label: 812, 8.1k, 81k."""
    if x < 1000:
        return "%.0f" % x
    if x < 10000:
        return "%.1fk" % (x / 1000) if x % 1000 else "%.0fk" % (x / 1000)
    return "%.0fk" % (x / 1000)


def nice_max(x):
    """The smallest round number (1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 times a power of ten) that is
    at least x (x > 0): the top of a scale with five even steps."""
    p = 1.0
    while p * 10 <= x:
        p *= 10
    while p > x:
        p /= 10
    for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * p >= x:
            return m * p
    return 10 * p


def summary_index(result):
    """(system, workload, concurrency) -> summary row, for the compare cells."""
    out = {}
    for row in result.get("summary", []):
        if row.get("kind") == "compare":
            out[(row["system"], row["workload"], row["concurrency"])] = row
    return out


def panel(x0, y0, title, bars_by_conc):
    """SVG of one panel. bars_by_conc: [(clients, [(system, row)])]."""
    out = []
    plot_w = PANEL_W - MARGIN_L - MARGIN_R
    plot_h = PANEL_H - MARGIN_T - MARGIN_B
    px, py = x0 + MARGIN_L, y0 + MARGIN_T
    top = max((r["ops_per_sec_max"] for _, bars in bars_by_conc for _, r in bars), default=0)
    ymax = nice_max(top * 1.08) if top > 0 else 1.0
    out.append('<text x="%d" y="%d" class="title">%s</text>' % (x0 + MARGIN_L, y0 + 20, escape(title)))
    for i in range(6):
        v = ymax * i / 5
        y = py + plot_h - plot_h * i / 5
        out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" class="grid"/>' % (px, y, px + plot_w, y))
        out.append('<text x="%d" y="%.1f" class="tick" text-anchor="end">%s</text>' % (px - 6, y + 4, kops(v)))
    out.append('<text x="%d" y="%d" class="axis" transform="rotate(-90 %d %d)" text-anchor="middle">'
               'operations/s</text>' % (x0 + 14, py + plot_h // 2, x0 + 14, py + plot_h // 2))
    groups = len(bars_by_conc) or 1
    group_w = plot_w / groups
    for g, (conc, bars) in enumerate(bars_by_conc):
        gx = px + g * group_w
        bar_w = min(40.0, group_w * 0.8 / max(len(bars), 1))
        start = gx + (group_w - bar_w * len(bars)) / 2
        for b, (system, row) in enumerate(bars):
            color = dict(SERIES)[system]
            bx = start + b * bar_w
            h = plot_h * row["ops_per_sec"] / ymax
            out.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s">'
                       '<title>%s, %d clients: %.0f ops/s (min %.0f, max %.0f, %d repeats)</title></rect>' % (
                           bx + 1, py + plot_h - h, bar_w - 2, h, color, escape(system), conc,
                           row["ops_per_sec"], row["ops_per_sec_min"], row["ops_per_sec_max"],
                           row.get("repeats", 1)))
            if row.get("repeats", 1) > 1:
                cx = bx + bar_w / 2
                ylo = py + plot_h - plot_h * row["ops_per_sec_min"] / ymax
                yhi = py + plot_h - plot_h * row["ops_per_sec_max"] / ymax
                out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" class="whisker"/>' % (cx, ylo, cx, yhi))
                for yy in (ylo, yhi):
                    out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" class="whisker"/>' % (
                        cx - 4, yy, cx + 4, yy))
            label_y = py + plot_h - plot_h * row["ops_per_sec_max"] / ymax - 5
            out.append('<text x="%.1f" y="%.1f" class="value" text-anchor="middle">%s</text>' % (
                bx + bar_w / 2, label_y, kops(row["ops_per_sec"])))
        out.append('<text x="%.1f" y="%d" class="tick" text-anchor="middle">%d client%s</text>' % (
            gx + group_w / 2, py + plot_h + 18, conc, "" if conc == 1 else "s"))
        rows = dict(bars)
        if "ferrokv" in rows and "etcd" in rows and rows["etcd"]["ops_per_sec"]:
            out.append('<text x="%.1f" y="%d" class="axis" text-anchor="middle">%.1f× etcd</text>' % (
                gx + group_w / 2, py + plot_h + 33, rows["ferrokv"]["ops_per_sec"] / rows["etcd"]["ops_per_sec"]))
    out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" class="axisline"/>' % (
        px, py + plot_h, px + plot_w, py + plot_h))
    return out


def render(result):
    """The SVG text of a compare result, or None when it holds no ferrokv cell."""
    idx = summary_index(result)
    meta = result.get("meta", {})
    concs = meta.get("concurrency") or sorted({k[2] for k in idx})
    panels = []
    for wl, title in PANELS:
        redis_cmd = REDIS_COMMAND.get(wl)
        groups = []
        for c in concs:
            bars = [(s, idx[(s, wl, c)]) for s in ("ferrokv", "etcd") if (s, wl, c) in idx]
            if redis_cmd and ("redis", redis_cmd, c) in idx:
                bars.append(("redis", idx[("redis", redis_cmd, c)]))
            if bars:
                groups.append((c, bars))
        if any(s == "ferrokv" for _, bars in groups for s, _ in bars):
            panels.append((title, groups))
    if not panels:
        return None
    cols = 2 if len(panels) > 1 else 1
    rows = (len(panels) + cols - 1) // cols
    width, height = cols * PANEL_W, HEADER_H + rows * PANEL_H + FOOTER_H
    svg = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
           'font-family="sans-serif">' % (width, height, width, height),
           '<style>.title{font-size:14px;font-weight:bold}.tick{font-size:11px;fill:#333}'
           '.axis{font-size:11px;fill:#555}.value{font-size:10px;fill:#222}.note{font-size:11px;fill:#555}'
           '.grid{stroke:#e4e4e4}.axisline{stroke:#888}.whisker{stroke:#222;stroke-width:1}'
           '.head{font-size:16px;font-weight:bold}</style>',
           '<rect width="100%" height="100%" fill="white"/>']
    svg.append('<text x="16" y="24" class="head">Throughput on one machine, same run: %s</text>' % escape(
        "%s vs etcd %s vs Redis %s" % (meta.get("ferrokv_version", "ferrokv"), meta.get("etcd_version", "?"),
                                       meta.get("redis_version", "?"))))
    lx = 16
    for system, color in SERIES:
        svg.append('<rect x="%d" y="38" width="12" height="12" fill="%s"/>' % (lx, color))
        svg.append('<text x="%d" y="48" class="tick">%s</text>' % (lx + 17, escape(LABELS[system])))
        lx += 24 + 6 * len(LABELS[system])
    for i, (title, groups) in enumerate(panels):
        svg += panel((i % cols) * PANEL_W, HEADER_H + (i // cols) * PANEL_H, title, groups)
    note = "%s, %s cores, %s; %s clients per cell, all at the leader; bars: median of %s repeat(s), whiskers: min–max" % (
        meta.get("cpu", "?"), meta.get("cores", "?"), meta.get("date", "?"),
        "/".join(str(c) for c in concs), meta.get("repeat", "1"))
    svg.append('<text x="16" y="%d" class="note">%s</text>' % (height - 22, escape(note)))
    svg.append('<text x="16" y="%d" class="note">%s</text>' % (height - 8, escape(meta.get("durability", ""))))
    svg.append("</svg>")
    return "\n".join(svg) + "\n"


def main(argv):
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[-2], file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        result = json.load(f)
    svg = render(result)
    if svg is None:
        print("no ferrokv cell in %s" % argv[1], file=sys.stderr)
        return 1
    with open(argv[2], "w") as f:
        f.write(svg)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
