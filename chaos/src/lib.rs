//! ferrokv-chaos: fault injection against real `ferrokv serve` processes, each in its own
//! network namespace, with a linearizability check of the recorded client history.
//!
//! | module | owns |
//! | --- | --- |
//! | [`suite`] | a plan of scenarios × cluster sizes and its report |
//! | [`scenario`] | one scenario: inject, heal, converge, check |
//! | [`workload`] | the clients and the recorded history |
//! | [`linearizability`] | the history checker (per key, on the `porcupine-rs` port of Porcupine) |
//! | [`cluster`] | node processes, kill/pause/restart/wipe |
//! | [`net`] | namespaces, bridge, nftables faults |
//! | [`proxy`] | delay and jitter on node-to-node links |
//! | [`rng`] | the seeded generator behind every random choice |

pub mod cluster;
pub mod linearizability;
pub mod net;
pub mod proxy;
pub mod rng;
pub mod scenario;
pub mod suite;
pub mod workload;

/// The `ferrokv` binary next to this one (same target dir), unless `FERROKV_BIN` says otherwise.
pub fn ferrokv_binary() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("FERROKV_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/ferrokv-chaos or target/<profile>/deps/<test>-<hash>
    let mut dir = exe.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("ferrokv")
}
