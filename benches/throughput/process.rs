//! Child processes that cannot outlive the benchmark, and what `/proc` says about them
//! (CPU time, resident memory).

use std::ffi::OsStr;
use std::io;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::process::Command;
use tokio::task::JoinHandle;

/// How often [`RssSampler`] reads the resident set size.
const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(10);

/// A command whose child is SIGKILLed when its handle is dropped, and also when the
/// benchmark itself dies (`PR_SET_PDEATHSIG`), so nothing it starts survives it.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(program);
    command.stdin(Stdio::null()).kill_on_drop(true);
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2),
    // which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

/// User plus system CPU time used so far by process `pid` (`/proc/<pid>/stat`).
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    // The command name, in parentheses, may hold spaces: count fields after its end.
    // Field 3 (state) comes first there; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |index: usize| -> anyhow::Result<u64> {
        let field = fields.get(index).context("/proc/<pid>/stat is too short")?;
        Ok(field.parse()?)
    };
    let ticks = ticks(11)? + ticks(12)?;
    // SAFETY: sysconf(3) has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second).context("sysconf(_SC_CLK_TCK)")?;
    Ok(Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

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

/// Tracks the peak resident set size of a process by sampling it every 10 ms, until
/// dropped.
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
                let mut ticks = tokio::time::interval(RSS_SAMPLE_INTERVAL);
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

    /// The largest sample so far.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `condition` every 10 ms until it holds (true) or `timeout` passes (false).
pub async fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
