//! A process's resident memory, read from `/proc`, and its peak over time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinHandle;

/// How often [`RssSampler`] reads the resident set size.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(10);

/// Resident set size of process `pid` in bytes (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .context("no VmRSS in /proc/<pid>/status")?;
    Ok(kib.trim().parse::<u64>()? * 1024)
}

/// Tracks the peak resident set size of a process by sampling it every 10 ms on the
/// current tokio runtime, until dropped.
pub struct RssSampler {
    peak: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        let peak = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let peak = Arc::clone(&peak);
            async move {
                let mut ticks = tokio::time::interval(SAMPLE_INTERVAL);
                loop {
                    ticks.tick().await;
                    // The process may just have died: its last samples stand.
                    if let Ok(rss) = rss_bytes(pid) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                }
            }
        });
        RssSampler { peak, task }
    }

    /// The largest sample so far, in bytes.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}
