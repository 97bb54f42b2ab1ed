//! The CPU time a process has used, from `/proc`.

use std::time::Duration;

use anyhow::Context as _;

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
