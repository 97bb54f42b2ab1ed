//! Names that no concurrent test, or concurrent run, uses.

use std::sync::atomic::{AtomicU64, Ordering};

/// A name no other test in this run (or in a concurrent run) uses: `<prefix>-<pid>-<n>-<random>`.
///
/// Only `[A-Za-z0-9_-]` are added, so the result is a valid MQTT client id and OpenWhisk
/// trigger name whenever `prefix` is.
pub fn unique_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let random: u32 = rand::random();
    format!("{prefix}-{}-{n}-{random:08x}", std::process::id())
}
