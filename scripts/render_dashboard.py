"""Draws a Grafana dashboard's panels into a PNG from the results of their Prometheus queries.

Not a Grafana screenshot: it lays out the dashboard's stat and time series panels by their
gridPos and plots what each query returns, to show what the dashboard displays without running
Grafana. Used by scripts/monitoring_test.py --render PNG (needs matplotlib).
"""

import json
import math
import re
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from datetime import datetime  # noqa: E402

BG, PANEL, TEXT, DIM = "#111217", "#181b1f", "#ccccdc", "#8e8e9e"
COLORS = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#fade2a", "#37872d", "#c4162a"]


def scale(unit):
    """(factor, suffix) to show values of a Grafana unit."""
    return {"s": (1000, " ms"), "percentunit": (100, " %"), "reqps": (1, " req/s"), "ops": (1, "/s"),
            "bytes": (1 / 1024, " KiB"), "ms": (1, " ms")}.get(unit, (1, ""))


def legend(fmt, metric):
    if not fmt or fmt == "__auto":
        labels = {k: v for k, v in metric.items() if k not in ("__name__", "job", "cluster")}
        return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt)


def fmt_value(v, unit, decimals):
    f, suffix = scale(unit)
    v *= f
    if decimals is None:
        decimals = 0 if float(v).is_integer() else (2 if abs(v) < 10 else 1)
    return f"{v:,.{decimals}f}{suffix}"


def render(prom, dashboard_path, start, end, out, substitute, rate_interval):
    with open(dashboard_path) as f:
        dash = json.load(f)
    rng = f"{int(end - start)}s"
    panels = [p for p in dash["panels"] if p["type"] in ("stat", "timeseries", "row")]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    unit_h = 0.42  # inches per grid row
    fig = plt.figure(figsize=(24, rows * unit_h + 1.2), facecolor=BG)
    top = 1 - 1.0 / (rows * unit_h + 1.2)
    fig.text(0.01, top + 0.35 * (1 - top), f"{dash['title']}", color=TEXT, fontsize=18, weight="bold", va="center")
    fig.text(0.99, top + 0.35 * (1 - top),
             "Rendering of the dashboard's PromQL queries against the monitoring test's Prometheus "
             f"(3-node cluster on loopback, {(end - start) / 60:.1f} min with synthetic traffic) - not a Grafana screenshot",
             color=DIM, fontsize=10, ha="right", va="center")

    def box(gp, pad=0.004):
        x0 = gp["x"] / 24 + pad
        w = gp["w"] / 24 - 2 * pad
        y_top = top - gp["y"] / rows * top
        h = gp["h"] / rows * top
        return [x0, y_top - h + pad * 2, w, h - pad * 3]

    for p in panels:
        gp = p["gridPos"]
        if p["type"] == "row":
            fig.text(box(gp)[0], box(gp)[1] + box(gp)[3] / 2, p["title"], color=TEXT, fontsize=13, weight="bold", va="center")
            continue
        frame = box(gp)
        ax = fig.add_axes(frame, facecolor=PANEL)
        for s in ax.spines.values():
            s.set_color("#2a2d33")
        ax.text(0.01, 0.98, p["title"], color=TEXT, fontsize=11, weight="bold", ha="left", va="top",
                transform=ax.transAxes)
        defaults = p.get("fieldConfig", {}).get("defaults", {})
        unit, decimals = defaults.get("unit", "short"), defaults.get("decimals")
        if p["type"] == "stat":
            ax.set_xticks([])
            ax.set_yticks([])
            parts = []
            for t in p["targets"]:
                expr = substitute(t["expr"], rng)
                res = prom.query(expr, end)["result"] if t.get("instant") else \
                    prom.query_range(expr, start, end)["result"]
                for s in res:
                    v = float(s["value"][1]) if "value" in s else float(s["values"][-1][1])
                    name = legend(t.get("legendFormat"), s["metric"])
                    text_mode = p["options"].get("textMode")
                    if text_mode == "name":
                        parts.append(name)
                    elif text_mode == "value_and_name":
                        parts.append(f"{fmt_value(v, unit, decimals)} {name}")
                    else:
                        parts.append(fmt_value(v, unit, decimals) if math.isfinite(v) else "NaN")
            ax.text(0.5, 0.45, "\n".join(parts) or "No data", color="#73bf69", fontsize=20 if len(parts) < 2 else 15,
                    weight="bold", ha="center", va="center", transform=ax.transAxes)
            continue
        ax.set_xticks([])
        ax.set_yticks([])
        title_h = 0.32 / (rows * unit_h + 1.2)  # one title line, in figure height
        ax = fig.add_axes([frame[0] + 0.03, frame[1] + 0.022, frame[2] - 0.035, frame[3] - 0.022 - title_h * 1.3],
                          facecolor=PANEL)
        for s in ax.spines.values():
            s.set_visible(False)
        f, suffix = scale(unit)
        i, ymin = 0, 0.0
        for t in p["targets"]:
            res = prom.query_range(substitute(t["expr"], rng), start, end)["result"]
            for s in sorted(res, key=lambda s: legend(t.get("legendFormat"), s["metric"])):
                xs = [datetime.fromtimestamp(float(v[0])) for v in s["values"]]
                ys = [float(v[1]) * f for v in s["values"]]
                ymin = min([ymin] + [y for y in ys if math.isfinite(y)])
                ax.plot(xs, ys, color=COLORS[i % len(COLORS)], lw=1.3,
                        label=legend(t.get("legendFormat"), s["metric"]))
                i += 1
        ax.tick_params(colors=DIM, labelsize=8)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
        ax.grid(color="#2a2d33", lw=0.6)
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo if ymin < 0 else 0, hi if hi > 0 else 1)
        if suffix.strip():
            ax.set_ylabel(suffix.strip(), color=DIM, fontsize=8)
        if i:
            ax.legend(loc="upper left", fontsize=7, ncol=2 if i > 4 else 1, facecolor=PANEL, edgecolor="#2a2d33",
                      labelcolor=TEXT, framealpha=0.8)
    fig.savefig(out, dpi=72, facecolor=BG)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit("used by scripts/monitoring_test.py --render PNG")
