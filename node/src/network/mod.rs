//! Outbound inter-node traffic: a pool of gRPC channels to peers, and openraft's network
//! client on top of it.

mod client;
pub(crate) mod peers;
mod window;

pub use client::NetworkFactory;
pub use peers::PeerPool;
pub use peers::is_connect_error;
