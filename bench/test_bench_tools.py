"""Unit tests of the benchmark scripts' Python helpers (standard library only).

Run: python3 -m unittest discover -s bench -p 'test_*.py'
"""

import contextlib
import io
import os
import tempfile
import unittest
import xml.etree.ElementTree as ET

import chart
import kvtool
import stack_buckets


def run(system, workload, conc, ops, p50=500, p99=900, kind="compare"):
    return {"kind": kind, "system": system, "workload": workload, "concurrency": conc,
            "ops_per_sec": ops, "p50_us": p50, "p99_us": p99, "errors": 0}


SVG = "{http://www.w3.org/2000/svg}"


class AggregateTest(unittest.TestCase):
    def test_median_and_spread_per_cell(self):
        agg = kvtool.aggregate([run("ferrokv", "put", 64, x) for x in (30000, 10000, 20000)]
                               + [run("etcd", "put", 64, 5000)])
        cell = agg[("compare", "ferrokv", "put", 64)]
        self.assertEqual((cell["ops_per_sec"], cell["ops_per_sec_min"], cell["ops_per_sec_max"]),
                         (20000, 10000, 30000))
        self.assertEqual(cell["repeats"], 3)
        self.assertEqual(agg[("compare", "etcd", "put", 64)]["repeats"], 1)


class ServerCpuTest(unittest.TestCase):
    def cell(self, system, workload, conc, ops, cpu_s, requests):
        r = run(system, workload, conc, ops)
        r.update(server_cpu_s=cpu_s, requests=requests)
        return r

    def test_cpu_per_operation_and_its_target(self):
        runs = [self.cell("ferrokv", "put", 64, 20000, 8.0, 200000),      # 40 µs
                self.cell("ferrokv", "put", 64, 22000, 11.0, 220000),     # 50 µs
                self.cell("ferrokv", "put", 64, 21000, 9.45, 210000),     # 45 µs
                self.cell("etcd", "put", 64, 5000, 10.0, 50000),          # 200 µs
                self.cell("redis", "set", 64, 60000, 9.0, 600000)]        # 15 µs
        agg = kvtool.aggregate(runs)
        self.assertAlmostEqual(agg[("compare", "ferrokv", "put", 64)]["server_cpu_us_per_op"], 45.0)
        table = kvtool.render_server_cpu(agg, [64])
        self.assertIn("| writes | 64 | 45.0 | 200 | 4.4× | 15.0 |", table)
        targets = kvtool.render_targets(agg, [64])
        self.assertIn("| writes @64: CPU per write, all three nodes | 45.0 µs | ≤ 45 µs | met |", targets)

    def test_runs_without_server_cpu_show_nothing(self):
        agg = kvtool.aggregate([run("ferrokv", "put", 64, 20000), run("etcd", "put", 64, 5000)])
        self.assertIsNone(agg[("compare", "ferrokv", "put", 64)]["server_cpu_us_per_op"])
        self.assertIsNone(kvtool.render_server_cpu(agg, [64]))
        self.assertNotIn("CPU per write", kvtool.render_targets(agg, [64]))

    def test_a_cell_missing_it_in_one_repeat_is_not_reported(self):
        with_cpu = self.cell("ferrokv", "put", 64, 20000, 8.0, 200000)
        agg = kvtool.aggregate([with_cpu, run("ferrokv", "put", 64, 21000)])
        self.assertIsNone(agg[("compare", "ferrokv", "put", 64)]["server_cpu_us_per_op"])


class ChartTest(unittest.TestCase):
    def result(self, runs, concs=(1, 64), repeat="3"):
        agg = kvtool.aggregate(runs)
        return {"meta": {"concurrency": list(concs), "repeat": repeat, "cpu": "test CPU", "cores": "2"},
                "summary": list(agg.values())}

    def test_round_scale_tops(self):
        self.assertEqual(chart.nice_max(7), 8)
        self.assertEqual(chart.nice_max(12), 15)
        self.assertEqual(chart.nice_max(26000), 30000)
        self.assertEqual(chart.nice_max(116640), 150000)
        self.assertEqual(chart.nice_max(1000), 1000)

    def test_short_labels(self):
        self.assertEqual([chart.kops(x) for x in (741, 1603, 6000, 26106)], ["741", "1.6k", "6k", "26k"])

    def test_bars_whiskers_and_ratios(self):
        runs = ([run("ferrokv", "put", 64, x) for x in (24000, 26000, 28000)]
                + [run("etcd", "put", 64, x) for x in (4800, 5200, 5000)]
                + [run("redis", "set", 64, x) for x in (100000, 110000, 105000)]
                + [run("ferrokv", "put", 1, 1600), run("etcd", "put", 1, 800)])
        svg = chart.render(self.result(runs))
        root = ET.fromstring(svg)
        bars = [r for r in root.iter(SVG + "rect") if r.find(SVG + "title") is not None]
        # Writes only: ferrokv, etcd and Redis at 64 clients, ferrokv and etcd at 1.
        self.assertEqual(len(bars), 5)
        # A bar's tooltip: "<system>, <clients> clients: ...".
        heights = {r.find(SVG + "title").text.split(" clients")[0]: float(r.get("height")) for r in bars}
        self.assertGreater(heights["redis, 64"], heights["ferrokv, 64"])
        self.assertGreater(heights["ferrokv, 64"], heights["etcd, 64"])
        self.assertGreater(heights["ferrokv, 64"], heights["ferrokv, 1"])
        texts = [t.text for t in root.iter(SVG + "text")]
        self.assertIn("5.2× etcd", texts)  # 26000 / 5000
        self.assertIn("2.0× etcd", texts)
        self.assertIn("Writes (Redis: SET)", texts)
        self.assertNotIn("50/50 put/get, linearizable", texts)
        # Three repeated cells at 64 clients, a whisker of three lines each; single runs have none.
        whiskers = [ln for ln in root.iter(SVG + "line") if ln.get("class") == "whisker"]
        self.assertEqual(len(whiskers), 9)

    def test_no_ferrokv_cell_means_no_chart(self):
        self.assertIsNone(chart.render(self.result([run("etcd", "put", 64, 5000)])))

    def test_report_writes_the_chart_beside_the_document(self):
        with tempfile.TemporaryDirectory() as d:
            runs = os.path.join(d, "runs.jsonl")
            with open(runs, "w") as f:
                for r in (run("ferrokv", "put", 64, 26000), run("etcd", "put", 64, 5000)):
                    f.write(kvtool.json.dumps(r) + "\n")
            meta = os.path.join(d, "meta.json")
            with open(meta, "w") as f:
                kvtool.json.dump({"command": "test", "date": "today", "concurrency": [64]}, f)
            doc = os.path.join(d, "docs", "benchmarks.md")
            os.makedirs(os.path.dirname(doc))
            with open(doc, "w") as f:
                f.write("# Benchmarks\n\nintro\n\n<!-- compare:begin -->\nold\n<!-- compare:end -->\n\nrest\n")
            args = type("Args", (), {"runs": runs, "meta": meta, "out_prefix": os.path.join(d, "out"), "doc": doc})
            with contextlib.redirect_stdout(io.StringIO()):
                self.assertEqual(kvtool.report(args), 0)
            with open(doc) as f:
                text = f.read()
            self.assertIn("](img/%s)" % kvtool.CHART, text)
            self.assertNotIn("\nold\n", text)
            self.assertTrue(text.endswith("<!-- compare:end -->\n\nrest\n"))
            ET.parse(os.path.join(d, "docs", "img", kvtool.CHART))


class StackBucketsTest(unittest.TestCase):
    def shares(self, folded):
        with tempfile.NamedTemporaryFile("w", suffix=".folded", delete=False) as f:
            f.write(folded)
        try:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                self.assertEqual(stack_buckets.main(f.name), 0)
        finally:
            os.unlink(f.name)
        rows = [ln.split("|") for ln in out.getvalue().splitlines() if ln.startswith("| ") and "%" in ln]
        return {r[1].strip().split(" (")[0]: float(r[2].strip(" %")) for r in rows}

    def test_the_wal_thread_counts_as_the_wal_even_when_inlined(self):
        shares = self.shares(
            "raft-wal;clone3;start_thread;fdatasync 30\n"
            "ferrokv;main;ferrokv::http::connection::{{closure}};writev 50\n"
            "ferrokv;main;openraft::core::raft_core::RaftCore::run 10\n"
            "ferrokv;main;tokio::runtime::park 10\n")
        self.assertEqual(shares["WAL writer thread"], 30.0)
        self.assertEqual(shares["HTTP connections"], 50.0)
        self.assertEqual(shares["Raft core"], 10.0)
        self.assertEqual(shares["other"], 10.0)


if __name__ == "__main__":
    unittest.main()
