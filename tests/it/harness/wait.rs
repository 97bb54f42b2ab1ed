//! Waiting on conditions with a deadline (instead of sleeping), and unique names.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often a condition is re-checked.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `cond` every 20 ms until it returns true; panics with
/// `"timed out after {timeout:?} waiting for {what}"` once `timeout` has passed.
pub async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    wait_until_async(what, timeout, || std::future::ready(cond())).await;
}

/// Like [`wait_until`], for a condition that has to await (an HTTP request, say).
pub async fn wait_until_async<F, Fut>(what: &str, timeout: Duration, f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let done = poll_until(timeout, f).await;
    assert!(done, "timed out after {timeout:?} waiting for {what}");
}

/// Polls `f` every 20 ms until it returns true (then returns true) or `timeout` has passed
/// (then returns false). For callers that want to panic with their own diagnostics.
///
/// The deadline is wall-clock time, so it holds even in tests that pause tokio's clock.
pub async fn poll_until<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

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
