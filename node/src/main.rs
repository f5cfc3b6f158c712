//! The `ferrokv` binary: `serve` a node, run a local `dev` cluster, or talk to one (`kv`, `cluster`, `bench`).

use clap::Parser;
use clap::Subcommand;
use ferrokv::cli;
use ferrokv::config::ServeArgs;

#[derive(Parser)]
#[command(name = "ferrokv", version, about = "Distributed, in-memory, strongly consistent key-value store")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node.
    Serve(Box<ServeArgs>),
    /// Run a local cluster of N nodes on loopback until Ctrl-C.
    Dev(cli::DevArgs),
    /// Read and write keys.
    Kv(cli::KvArgs),
    /// Inspect and change cluster membership.
    Cluster(cli::ClusterArgs),
    /// Drive load at a cluster and report throughput and latency.
    Bench(cli::BenchArgs),
}

/// mimalloc rather than the system allocator: fewer CPU cycles per request and, with the
/// state packed into one allocation per key, less resident memory (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    if let Err(e) = run() {
        cli::print_error(&e);
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let workers = match &cli.command {
        Command::Serve(args) => usize::from(args.worker_threads),
        _ => 0,
    };
    let runtime = match workers {
        // One thread drives every task and the I/O driver itself: no wake-ups across threads.
        1 => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(if n == 0 { std::thread::available_parallelism().map_or(2, |n| n.get().max(2)) } else { n })
            .enable_all()
            .build()?,
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => {
                let telemetry = ferrokv::telemetry::init(args.log_format, &args.service_name)?;
                let result = ferrokv::server::run(*args, ferrokv::server::signal()).await;
                if let Err(e) = &result {
                    tracing::error!("{e:#}");
                }
                // Flushing waits for the exporter, whose gRPC client runs on this runtime: block a
                // thread of the blocking pool, never the (possibly only) runtime thread.
                let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
                result
            }
            Command::Dev(args) => cli::run_dev(args).await,
            Command::Kv(args) => cli::run_kv(args).await,
            Command::Cluster(args) => cli::run_cluster(args).await,
            Command::Bench(args) => cli::run_bench(args).await,
        }
    })
}
