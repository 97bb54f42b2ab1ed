//! The release build of `mqtt-whisk-provider` under test (or the build
//! `BENCH_PROVIDER_BIN` names), as a child process with its output in a log file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context as _;
use test_support::guarded_command;
use tokio::process::Child;

use super::report::thousands;

const BINARY: &str = env!("CARGO_BIN_EXE_mqtt-whisk-provider");
/// How much of the log an error shows.
const LOG_TAIL_BYTES: usize = 4_000;
/// How many different messages [`Provider::logged_since`] quotes, and how much of each.
const LOG_SUMMARY_MESSAGES: usize = 3;
const LOG_SUMMARY_CHARS: usize = 160;

/// A running provider, killed on drop.
pub struct Provider {
    child: Child,
    pid: u32,
    log_path: PathBuf,
}

impl Provider {
    /// Starts the provider (`binary`, or this package's) against the broker on
    /// `broker_port` and OpenWhisk at `api_host`, with only the given environment plus
    /// `extra_env`, which may override it; it logs to `<dir>/provider.log`.
    pub fn start(
        binary: Option<&Path>,
        broker_port: u16,
        api_host: &str,
        client_id: &str,
        extra_env: &[(&str, String)],
        dir: &Path,
    ) -> anyhow::Result<Provider> {
        let log_path = dir.join("provider.log");
        let log = std::fs::File::create(&log_path)?;
        let binary = binary.unwrap_or(Path::new(BINARY));
        let child = guarded_command(binary)
            .env_clear()
            .env("MQTT_URL", format!("mqtt://127.0.0.1:{broker_port}"))
            .env("MQTT_TOPICS", "bench/#")
            .env("MQTT_CLIENT_ID", client_id)
            .env("OW_API_HOST", api_host)
            .env("OW_AUTH", "u:k")
            .env("OW_TRIGGER", "t")
            .env("HTTP_PORT", "0")
            .env("RUST_LOG", "warn")
            .envs(extra_env.iter().map(|(name, value)| (name, value)))
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let pid = child.id().context("the provider's pid")?;
        Ok(Provider {
            child,
            pid,
            log_path,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the provider is still running (not exited, not crashed).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// How many bytes the provider has logged so far.
    pub fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log_path).map_or(0, |metadata| metadata.len())
    }

    /// What the provider logged after byte `offset` of its log: how many lines, and the
    /// most frequent messages (without their timestamps). `None` if nothing.
    pub fn logged_since(&self, offset: u64) -> Option<String> {
        let log = std::fs::read(&self.log_path).ok()?;
        let logged = String::from_utf8_lossy(log.get(usize::try_from(offset).ok()?..)?);
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for line in logged.lines() {
            let message = line.split_once(' ').map_or(line, |(_timestamp, rest)| rest);
            let end = message
                .char_indices()
                .nth(LOG_SUMMARY_CHARS)
                .map_or(message.len(), |(index, _)| index);
            *counts.entry(&message[..end]).or_default() += 1;
        }
        let lines: u64 = counts.values().sum();
        if lines == 0 {
            return None;
        }
        let mut frequent: Vec<(&str, u64)> = counts.into_iter().collect();
        frequent.sort_unstable_by_key(|&(_, count)| std::cmp::Reverse(count));
        let quotes: Vec<String> = frequent
            .iter()
            .take(LOG_SUMMARY_MESSAGES)
            .map(|(message, count)| format!("{} × `{message}`", thousands(*count)))
            .collect();
        Some(format!(
            "the provider logged {} lines: {}",
            thousands(lines),
            quotes.join("; ")
        ))
    }

    /// The end of the provider's log, for error messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read(&self.log_path).unwrap_or_default();
        let tail = &log[log.len().saturating_sub(LOG_TAIL_BYTES)..];
        String::from_utf8_lossy(tail).into_owned()
    }
}
