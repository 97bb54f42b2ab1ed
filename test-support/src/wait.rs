//! Waiting on conditions with a deadline, instead of sleeping.
//!
//! Deadlines are wall-clock time, so they hold even in tests that pause tokio's clock.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is re-checked.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Checks `cond` every 20 ms until it holds (then true) or `timeout` has passed (then
/// false). For callers that report a timeout their own way.
pub async fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    poll_until_async(timeout, || std::future::ready(cond())).await
}

/// Like [`poll_until`], for a condition that has to await (an HTTP request, say).
pub async fn poll_until_async<F, Fut>(timeout: Duration, mut f: F) -> bool
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

/// Like [`poll_until`], but panics with `"timed out after {timeout:?} waiting for {what}"`.
pub async fn wait_until(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    let done = poll_until(timeout, cond).await;
    assert!(done, "timed out after {timeout:?} waiting for {what}");
}

/// Like [`poll_until_async`], but panics with `"timed out after {timeout:?} waiting for {what}"`.
pub async fn wait_until_async<F, Fut>(what: &str, timeout: Duration, f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let done = poll_until_async(timeout, f).await;
    assert!(done, "timed out after {timeout:?} waiting for {what}");
}
