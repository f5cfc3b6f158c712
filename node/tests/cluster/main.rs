//! Multi-node integration tests: real `ferrokv serve` processes on loopback, real HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

mod anti_entropy;
mod bad_input;
mod cli;
mod crud;
mod durability;
mod faults;
mod http_paths;
mod membership;
mod observability;
