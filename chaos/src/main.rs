//! `ferrokv-chaos`: run fault scenarios against real clusters and check what must hold.
//! Needs root (network namespaces, nftables).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use clap::Subcommand;
use ferrokv_chaos::scenario::Scenario;
use ferrokv_chaos::suite;
use ferrokv_chaos::suite::Plan;

#[derive(Parser)]
#[command(name = "ferrokv-chaos", about = "Fault injection with a linearizability check")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The bounded suite CI runs (every fault family, 3 and 5 nodes, about 15 s each).
    Ci(Common),
    /// The long soak: every scenario, 3 and 5 nodes, 16 clients, 20 s faults.
    Soak(Common),
    /// Chosen scenarios.
    Run {
        /// Scenarios to run (default: all).
        #[arg(long, value_enum, value_delimiter = ',')]
        scenarios: Vec<Scenario>,
        /// Cluster sizes.
        #[arg(long, value_delimiter = ',', default_value = "3")]
        nodes: Vec<usize>,
        #[arg(long, default_value_t = 8)]
        clients: usize,
        #[arg(long, default_value_t = 5)]
        keys: usize,
        /// How long each fault lasts, in seconds.
        #[arg(long, default_value_t = 10)]
        hold_s: u64,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(clap::Args)]
struct Common {
    /// The ferrokv binary (default: next to this one, or $FERROKV_BIN).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Seed of the first scenario (each next one adds 1).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the report as a markdown table here.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Put the markdown table into this document, between its `chaos-report` markers
    /// (e.g. docs/reliability.md).
    #[arg(long)]
    update_doc: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let (plan, common) = match cli.cmd {
        Cmd::Ci(c) => (Plan::ci(binary(&c)), c),
        Cmd::Soak(c) => (Plan::soak(binary(&c)), c),
        Cmd::Run { scenarios, nodes, clients, keys, hold_s, common } => {
            let base = Plan::soak(binary(&common));
            let scenarios = if scenarios.is_empty() { Scenario::ALL.to_vec() } else { scenarios };
            let plan = Plan { scenarios, sizes: nodes, clients, keys, hold: Duration::from_secs(hold_s), ..base };
            (plan, common)
        }
    };
    let plan = Plan { seed: common.seed, ..plan };
    anyhow::ensure!(ferrokv_chaos::net::available(), "network namespaces and nftables are needed (run as root)");
    anyhow::ensure!(
        plan.binary.exists(),
        "no ferrokv binary at {} (build it, or pass --binary)",
        plan.binary.display()
    );
    let report = suite::run(&plan).await?;
    if let Some(p) = &common.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)?;
    }
    if let Some(p) = &common.markdown {
        std::fs::write(p, suite::markdown(&report))?;
    }
    if let Some(p) = &common.update_doc {
        let doc = std::fs::read_to_string(p)?;
        let updated = suite::replace_section(&doc, &suite::markdown(&report))
            .ok_or_else(|| anyhow::anyhow!("{} has no chaos-report markers", p.display()))?;
        std::fs::write(p, updated)?;
    }
    println!("{}", suite::markdown(&report));
    anyhow::ensure!(report.violations() == 0, "{} violation(s)", report.violations());
    Ok(())
}

fn binary(c: &Common) -> PathBuf {
    c.binary.clone().unwrap_or_else(ferrokv_chaos::ferrokv_binary)
}
