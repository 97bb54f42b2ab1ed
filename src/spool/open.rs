//! Opening a spool: what a previous run left is checked frame by frame, damage is
//! reported and skipped, finished segments are deleted, and the rest is replayed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::frame::{self, Parsed};
use super::{Budget, Segment, Shared, Spool, done_path, segment_path};
use super::{Reader, Writer};

/// What a run left in the spool.
#[derive(Debug, Default, PartialEq)]
pub struct Replay {
    /// Records not finished: fired again.
    pub messages: u64,
    /// Bytes of damaged or torn frames skipped.
    pub skipped_bytes: u64,
}

impl Spool {
    /// Opens (or creates, mode 0700) the spool in `dir`; returns its writer, its reader
    /// (which starts with what is left from before) and what was found.
    pub fn open(dir: &Path, budget: Arc<Budget>) -> io::Result<(Writer, Reader, Replay)> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mut first_ids: Vec<u64> = Vec::new();
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name.strip_suffix(".seg").and_then(|n| n.parse().ok()) {
                first_ids.push(id);
            }
        }
        first_ids.sort_unstable();
        let mut segments = BTreeMap::new();
        let mut done_before = HashMap::new();
        let mut replay = Replay::default();
        let mut next_id = 0;
        for first_id in first_ids {
            let scanned = scan(dir, first_id)?;
            next_id = next_id
                .max(first_id)
                .max(scanned.last_id.map_or(0, |id| id + 1));
            replay.skipped_bytes += scanned.skipped;
            if scanned.skipped > 0 {
                tracing::error!(
                    file = %segment_path(dir, first_id).display(),
                    skipped_bytes = scanned.skipped,
                    records_read = scanned.records,
                    "spool file damaged (torn by a crash, or corrupt): skipped the damaged bytes, the intact records are fired"
                );
            }
            if scanned.unfinished == 0 {
                let _ = fs::remove_file(segment_path(dir, first_id));
                let _ = fs::remove_file(done_path(dir, first_id));
                continue;
            }
            replay.messages += scanned.unfinished;
            let mut segment = Segment::new(scanned.len, true);
            segment.unfinished = scanned.unfinished;
            segment.first_received_at = scanned.first_received_at;
            segment.done_len = scanned.done_len;
            budget.grew(scanned.len + scanned.done_len, scanned.unfinished);
            segments.insert(first_id, segment);
            done_before.insert(first_id, scanned.done);
        }
        let spool = Spool(Arc::new(Shared {
            dir: dir.to_owned(),
            budget,
            segments: Mutex::new(segments),
            changed: watch::Sender::new(0),
        }));
        let reader = Reader::new(spool.clone(), done_before);
        let writer = Writer::new(spool, next_id);
        Ok((writer, reader, replay))
    }
}

/// One segment as found.
struct Scanned {
    len: u64,
    records: u64,
    unfinished: u64,
    skipped: u64,
    last_id: Option<u64>,
    first_received_at: Option<chrono::DateTime<chrono::Utc>>,
    done: HashSet<u64>,
    done_len: u64,
}

fn scan(dir: &Path, first_id: u64) -> io::Result<Scanned> {
    let path = segment_path(dir, first_id);
    // Written by this process's user only (the registry's rule): readings may be private.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
    let bytes = fs::read(&path)?;
    let done_log = match fs::read(done_path(dir, first_id)) {
        Ok(log) => log,
        Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(error) => return Err(error),
    };
    let done: HashSet<u64> = frame::done_ids(&done_log).collect();
    let mut scanned = Scanned {
        len: bytes.len() as u64,
        records: 0,
        unfinished: 0,
        skipped: 0,
        last_id: None,
        first_received_at: None,
        done: HashSet::new(),
        done_len: done_log.len() as u64,
    };
    let mut at = 0;
    while at < bytes.len() {
        match frame::parse(&bytes[at..], true) {
            Parsed::Record(record, len) => {
                at += len;
                scanned.records += 1;
                scanned.last_id = scanned.last_id.max(Some(record.id));
                if done.contains(&record.id) {
                    scanned.done.insert(record.id);
                } else {
                    scanned.unfinished += 1;
                    scanned.first_received_at.get_or_insert(record.received_at);
                }
            }
            Parsed::Damaged(len) => {
                at += len;
                scanned.skipped += len as u64;
            }
            Parsed::Incomplete => unreachable!("parsed as the end"),
        }
    }
    Ok(scanned)
}
