//! Command-line front ends that are not the server itself.
//!
//! * [`kv`]: `ferrokv kv get|put|delete|list`, a client for `/v1/kv`.
//! * [`cluster`]: `ferrokv cluster status|add|remove|transfer-leader`.
//! * [`dev`]: `ferrokv dev`, a supervised local multi-node cluster.
//! * [`bench`]: `ferrokv bench`, a closed-loop HTTP load generator.
//!
//! Each exposes a clap `Args` struct and an async `run_*` entry point for
//! `main.rs`. Every flag can also be set through `FERROKV_<FLAG_IN_CAPS>`.
//! On failure `main` should call [`print_error`] (which prints
//! `error: <code>: <message>` for server errors) and exit non-zero.

pub mod bench;
mod client;
pub mod cluster;
pub mod dev;
pub mod kv;

pub use bench::{BenchArgs, run_bench};
pub use client::{ApiError, ClientOpts, print_error};
pub use cluster::{ClusterArgs, run_cluster};
pub use dev::{DevArgs, run_dev};
pub use kv::{KvArgs, run_kv};
