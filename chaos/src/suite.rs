//! A plan of scenarios × cluster sizes, run one after another, and its report.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::scenario;
use crate::scenario::RunConfig;
use crate::scenario::Scenario;
use crate::scenario::ScenarioReport;

#[derive(Debug, Clone)]
pub struct Plan {
    pub binary: PathBuf,
    pub sizes: Vec<usize>,
    pub scenarios: Vec<Scenario>,
    pub clients: usize,
    pub keys: usize,
    pub warmup: Duration,
    pub hold: Duration,
    pub settle: Duration,
    pub seed: u64,
    /// Network run number (1..=250), so two suites on one machine do not collide.
    pub run: u8,
    /// How long the checker may search one key's history.
    pub check_budget: Duration,
    /// Cluster sizes whose nodes run everything on one thread (`--worker-threads 1`, as when
    /// several nodes share a machine's cores); other sizes use the default, a thread per core.
    pub one_thread_sizes: Vec<usize>,
}

impl Plan {
    /// The bounded plan CI runs: every fault family once, 3 and 5 nodes, ~15 s each.
    pub fn ci(binary: PathBuf) -> Plan {
        use Scenario::*;
        Plan {
            binary,
            sizes: vec![3, 5],
            scenarios: vec![
                KillLeader,
                PauseLeader,
                PartitionLeader,
                MajorityMinority,
                Bridge,
                Asymmetric,
                Delay,
                Loss,
                KillMajority,
                RestartWiped,
                Corrupt,
                LaggingFollower,
                Combined,
            ],
            clients: 6,
            keys: 4,
            warmup: Duration::from_secs(2),
            hold: Duration::from_secs(5),
            settle: Duration::from_secs(3),
            seed: 1,
            run: run_number(),
            check_budget: Duration::from_secs(20),
            one_thread_sizes: vec![5],
        }
    }

    /// The long soak: every scenario on 3 and 5 nodes, more clients, longer faults.
    pub fn soak(binary: PathBuf) -> Plan {
        Plan {
            sizes: vec![3, 5],
            scenarios: Scenario::ALL.to_vec(),
            clients: 16,
            keys: 8,
            warmup: Duration::from_secs(3),
            hold: Duration::from_secs(20),
            settle: Duration::from_secs(8),
            check_budget: Duration::from_secs(120),
            ..Plan::ci(binary)
        }
    }
}

/// A subnet number derived from the process id, so concurrent suites do not share namespaces.
pub fn run_number() -> u8 {
    (std::process::id() % 200) as u8 + 20
}

#[derive(Debug, Clone, Serialize)]
pub struct SuiteReport {
    pub runs: Vec<ScenarioReport>,
    pub elapsed_s: u64,
    pub machine: String,
}

impl SuiteReport {
    pub fn violations(&self) -> usize {
        self.runs.iter().map(|r| r.violations.len()).sum()
    }
}

/// Run the plan. In CI, a size × scenario pair with no violations is printed as it finishes.
pub async fn run(plan: &Plan) -> Result<SuiteReport> {
    let start = std::time::Instant::now();
    let mut runs = Vec::new();
    let mut seed = plan.seed;
    for &nodes in &plan.sizes {
        for &s in &plan.scenarios {
            let cfg = RunConfig {
                binary: plan.binary.clone(),
                run: plan.run,
                nodes,
                clients: plan.clients,
                keys: plan.keys,
                warmup: plan.warmup,
                hold: plan.hold,
                settle: plan.settle,
                seed,
                check_budget: plan.check_budget,
                worker_threads: plan.one_thread_sizes.contains(&nodes).then_some(1),
            };
            seed += 1;
            let report = scenario::run(s, &cfg).await?;
            eprintln!(
                "{:>18} n={} ops={:>5} acked_writes={:>4} indeterminate={:>3} first_write_after_fault={:>6} converged={:>6} {} violations={}",
                report.scenario,
                nodes,
                report.operations,
                report.acknowledged_writes,
                report.indeterminate,
                report.first_write_after_fault_ms.map_or("-".into(), |m| format!("{m}ms")),
                report.converged_ms.map_or("-".into(), |m| format!("{m}ms")),
                report.linearizability,
                report.violations.len()
            );
            eprintln!("    failures: {:?}", report.failures);
            for v in &report.violations {
                eprintln!("    VIOLATION: {v}");
            }
            if let Some(f) = &report.history_file {
                eprintln!("    history: {f}");
            }
            runs.push(report);
        }
    }
    Ok(SuiteReport { runs, elapsed_s: start.elapsed().as_secs(), machine: machine() })
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpus} CPUs, Linux {}", kernel.trim())
}

/// The report as a markdown section.
pub fn markdown(r: &SuiteReport) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "Machine: {}. Suite time: {} s. Violations: **{}**.\n\n",
        r.machine,
        r.elapsed_s,
        r.violations()
    ));
    out.push_str("| scenario | nodes | operations checked | acked writes | indeterminate | faults | first write after fault | converged after heal | history | violations |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for run in &r.runs {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            run.scenario,
            match run.worker_threads {
                Some(1) => format!("{} (1 thread each)", run.nodes),
                Some(n) => format!("{} ({n} threads each)", run.nodes),
                None => run.nodes.to_string(),
            },
            run.operations,
            run.acknowledged_writes,
            run.indeterminate,
            run.faults.join("; ").replace('|', "/"),
            run.first_write_after_fault_ms.map_or("-".into(), |m| format!("{m} ms")),
            run.converged_ms.map_or("-".into(), |m| format!("{m} ms")),
            run.linearizability,
            run.violations.len()
        ));
    }
    out
}

const START: &str = "<!-- chaos-report:start -->";
const END: &str = "<!-- chaos-report:end -->";

/// `doc` with the text between its report markers replaced by `section`.
pub fn replace_section(doc: &str, section: &str) -> Option<String> {
    let start = doc.find(START)? + START.len();
    let end = doc[start..].find(END)? + start;
    Some(format!("{}\n{}{}", &doc[..start], section, &doc[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_goes_between_the_markers_and_replaces_the_old_one() {
        let doc = format!("intro\n{START}\nold\n{END}\noutro\n");
        let once = replace_section(&doc, "new\n").unwrap();
        assert_eq!(once, format!("intro\n{START}\nnew\n{END}\noutro\n"));
        assert_eq!(replace_section(&once, "new\n").unwrap(), once);
        assert!(replace_section("no markers", "x").is_none());
    }
}
