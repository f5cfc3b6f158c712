//! ferrokv: a distributed, in-memory, strongly consistent key-value datastore.
//!
//! Module map, outside in:
//!
//! | module | owns |
//! | --- | --- |
//! | [`server`] | `ferrokv serve`: listeners, servers, start-up and clean stop |
//! | [`config`] | command-line flags (each also `FERROKV_<FLAG>`) and the Raft config |
//! | [`http`] | the client HTTP API (`/v1/kv`, `/v1/cluster`, health, metrics) |
//! | [`grpc`] | inbound inter-node gRPC: Raft RPCs, forwarded requests, admin |
//! | [`service`] | request handling shared by HTTP and gRPC: routing to the leader, reads, admin |
//! | [`bootstrap`] | deciding the node's Raft identity: form, join, restart |
//! | [`membership`] | Raft ids (never reused) and the persisted node identity |
//! | [`maintenance`] | leader duties: TTL expiry, cluster id, members' addresses |
//! | [`anti_entropy`] | replicas' state digests compared at checkpoints; divergence repair |
//! | [`network`] | outbound gRPC: peer channel pool and openraft's network client |
//! | [`storage`] | the write-ahead Raft log and the state machine with snapshots |
//! | [`state`] | the replicated key-value map itself (pure, deterministic) |
//! | [`command`] | what a log entry asks the state machine to do |
//! | [`types`] | the openraft type parameters, declared once |
//! | [`codec`] | the versioned binary encoding of internal structs |
//! | [`metrics`] | Prometheus metrics |
//! | [`telemetry`] | logs and OpenTelemetry traces |
//! | [`error`] | the API error with its stable code |
//! | [`cli`] | `ferrokv kv`, `ferrokv cluster` and `ferrokv dev` |

pub mod anti_entropy;
pub mod bootstrap;
pub mod cli;
pub mod codec;
pub mod command;
pub mod config;
pub mod error;
pub mod grpc;
pub mod http;
pub mod maintenance;
pub mod membership;
pub mod metrics;
pub mod network;
pub mod server;
pub mod service;
pub mod snapshots;
pub mod state;
pub mod storage;
pub mod telemetry;
#[cfg(test)]
mod test_support;
pub mod types;
