//! gRPC definitions of ferrokv's inter-node traffic, generated from `proto/ferrokv.proto`:
//! Raft replication (`raft_client`/`raft_server`), request forwarding (`kv_*`) and
//! administration (`admin_*`).

#![allow(clippy::all, clippy::unwrap_used)]

tonic::include_proto!("ferrokv.v1");
