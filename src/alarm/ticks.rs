//! The last fired tick of each alarm, kept in `STATE_DIR/alarm_ticks.json` so that a
//! restarted provider knows which tick it missed while it was down (catch-up, SPEC
//! section 9) and never fires a tick twice.
//!
//! One small JSON file, rewritten whole once per tick: written to a temporary file,
//! fsynced, renamed over the old one and the directory fsynced, so after a crash it holds
//! either the old map or the new one, never a mix. Not the feed's redb registry: that
//! database belongs to the feed module (redb opens it exclusively), and a line per alarm
//! that an operator can read and edit is worth more here than transactions.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use super::rfc3339;

/// The file's name in `STATE_DIR`.
const FILE_NAME: &str = "alarm_ticks.json";

/// Each alarm's last fired tick, in memory and on disk.
pub struct TickLog {
    path: PathBuf,
    /// Held while the file is rewritten, so two alarms' records never overwrite each other.
    ticks: Mutex<BTreeMap<String, DateTime<Utc>>>,
}

impl TickLog {
    /// Opens the log in `dir`. A file that cannot be read or parsed (edited by hand, a
    /// disk error) is logged and treated as empty: catch-up then waits for the next
    /// tick, where a refusal to start would turn one bad file into a crash loop.
    pub fn open(dir: &Path) -> TickLog {
        let path = dir.join(FILE_NAME);
        let ticks = match fs::read(&path) {
            Ok(bytes) => parse(&bytes).unwrap_or_else(|message| {
                tracing::error!(
                    path = %path.display(),
                    error.message = message,
                    "alarm tick log is not what this provider writes; ignored: no tick missed before now is caught up"
                );
                BTreeMap::new()
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                tracing::error!(
                    path = %path.display(),
                    error.message = %e,
                    "cannot read the alarm tick log; ignored: no tick missed before now is caught up"
                );
                BTreeMap::new()
            }
        };
        TickLog {
            path,
            ticks: Mutex::new(ticks),
        }
    }

    /// The last tick recorded for `alarm`, if any.
    pub fn last(&self, alarm: &str) -> Option<DateTime<Utc>> {
        self.ticks.lock().unwrap().get(alarm).copied()
    }

    /// Records `tick` as `alarm`'s last fired tick, durably, before it is fired (see the
    /// runner). Blocking: call it off the async threads.
    pub fn record(&self, alarm: &str, tick: DateTime<Utc>) -> io::Result<()> {
        let mut ticks = self.ticks.lock().unwrap();
        let before = ticks.insert(alarm.to_owned(), tick);
        let text: BTreeMap<&str, String> = ticks
            .iter()
            .map(|(alarm, tick)| (alarm.as_str(), rfc3339(*tick)))
            .collect();
        let written = write_atomically(&self.path, &serde_json::to_vec_pretty(&text)?);
        if written.is_err() {
            // Memory follows the disk, so what `last` says is what a restart will read.
            match before {
                Some(before) => ticks.insert(alarm.to_owned(), before),
                None => ticks.remove(alarm),
            };
        }
        written
    }
}

/// The file's `{"<alarm>": "<RFC 3339 tick>", ...}`.
fn parse(bytes: &[u8]) -> Result<BTreeMap<String, DateTime<Utc>>, String> {
    let text: BTreeMap<String, String> =
        serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    text.into_iter()
        .map(|(alarm, tick)| match DateTime::parse_from_rfc3339(&tick) {
            Ok(tick) => Ok((alarm, tick.to_utc())),
            Err(e) => Err(format!("{alarm}: {tick:?} is not an RFC 3339 time: {e}")),
        })
        .collect()
}

/// Replaces `path` with `bytes`: a crash leaves the old content or the new, whole.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let temporary = path.with_extension("json.tmp");
    let mut file = File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temporary, path)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn a_recorded_tick_survives_a_reopen_per_alarm() {
        let dir = tempfile::tempdir().unwrap();
        let log = TickLog::open(dir.path());
        assert_eq!(log.last("default"), None);
        log.record("default", utc("2026-05-01T03:00:00Z")).unwrap();
        log.record("hourly", utc("2026-05-01T04:00:00Z")).unwrap();
        log.record("default", utc("2026-05-02T03:00:00Z")).unwrap();
        let again = TickLog::open(dir.path());
        assert_eq!(again.last("default"), Some(utc("2026-05-02T03:00:00Z")));
        assert_eq!(again.last("hourly"), Some(utc("2026-05-01T04:00:00Z")));
        assert!(!dir.path().join("alarm_ticks.json.tmp").exists());
    }

    #[test]
    fn a_corrupt_log_is_ignored_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), b"{\"default\": ").unwrap();
        let log = TickLog::open(dir.path());
        assert_eq!(log.last("default"), None);
        log.record("default", utc("2026-05-01T03:00:00Z")).unwrap();
        assert_eq!(
            TickLog::open(dir.path()).last("default"),
            Some(utc("2026-05-01T03:00:00Z"))
        );
    }

    #[test]
    fn a_failed_record_leaves_memory_as_the_disk_is() {
        let dir = tempfile::tempdir().unwrap();
        let log = TickLog::open(&dir.path().join("gone"));
        assert!(log.record("default", utc("2026-05-01T03:00:00Z")).is_err());
        assert_eq!(log.last("default"), None);
    }
}
