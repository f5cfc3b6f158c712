//! Helpers shared by the crate's unit tests.

use std::time::Duration;

/// Poll `condition` every millisecond until it holds; panics after 2 s naming `what`.
pub(crate) async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("timed out waiting for {what}");
}
