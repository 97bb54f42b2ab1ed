//! The durable spool of SPEC section 9: a connection's messages are written to its own
//! directory and fsynced before the broker is acknowledged, then fired from there; a
//! message leaves the spool only once its fires got a final answer.
//!
//! Storage: append-only segment files of checksummed frames ([`frame`]), one writer
//! ([`Writer`]) that commits whole batches with one `fdatasync` (a group commit), and a
//! done log per segment of the records finished. A segment is deleted once every record
//! in it is done. Why not an embedded database: the spool's only operations are append,
//! read in order and forget, and a log of frames does them with one write and one fsync
//! per batch; what a crash can leave (a torn tail, never a changed frame before it) is
//! what the checksums detect.
//!
//! Crash behaviour relied on: a frame is acknowledged to the broker only after
//! `fdatasync` of its segment returned (and the segment's directory entry was synced when
//! it was created); a done entry is written without fsync, so a crash may forget that a
//! record was done, and it is fired once more (counted as replayed; the same fire body,
//! so the action's write overwrites). On disk full or any write error the batch is not
//! acknowledged and is written again to a new segment; nothing is acknowledged that is
//! not on disk.

mod frame;
mod open;
mod reader;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, watch};

use crate::metrics::Metrics;

pub use frame::Record;
pub use reader::Reader;
pub use writer::{WriteError, Writer};

/// One record read back from the spool, owned.
pub struct Spooled {
    pub id: u64,
    pub boot: u64,
    pub seq: u64,
    pub received_at: DateTime<Utc>,
    pub qos: u8,
    pub retain: bool,
    pub topic: String,
    pub payload: bytes::Bytes,
}

/// What every connection's spool shares: `SPOOL_MAX_BYTES` is for them all.
pub struct Budget {
    pub max_bytes: u64,
    used: AtomicU64,
    messages: AtomicU64,
    /// Notified when space is freed.
    freed: Notify,
    /// Each spool's oldest unfinished message, for the age gauge.
    oldest: Mutex<HashMap<PathBuf, DateTime<Utc>>>,
    metrics: Metrics,
}

impl Budget {
    pub fn new(max_bytes: u64, metrics: Metrics) -> Arc<Budget> {
        Arc::new(Budget {
            max_bytes,
            used: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            freed: Notify::new(),
            oldest: Mutex::default(),
            metrics,
        })
    }

    /// Whether the spool's files take `SPOOL_MAX_BYTES` or more.
    pub fn is_full(&self) -> bool {
        self.used.load(Ordering::Acquire) >= self.max_bytes
    }

    /// Resolves once some space was freed (check [`Budget::is_full`] again).
    pub async fn freed(&self) {
        self.freed.notified().await;
    }

    fn grew(&self, bytes: u64, messages: u64) {
        let used = self.used.fetch_add(bytes, Ordering::AcqRel) + bytes;
        let count = self.messages.fetch_add(messages, Ordering::AcqRel) + messages;
        self.metrics.spool_usage(used, count);
    }

    fn finished(&self, messages: u64) {
        let count = self.messages.fetch_sub(messages, Ordering::AcqRel) - messages;
        self.metrics
            .spool_usage(self.used.load(Ordering::Acquire), count);
    }

    fn shrank(&self, bytes: u64) {
        let used = self.used.fetch_sub(bytes, Ordering::AcqRel) - bytes;
        self.metrics
            .spool_usage(used, self.messages.load(Ordering::Acquire));
        self.freed.notify_waiters();
    }

    /// Sets the age gauge from each spool's oldest unfinished message.
    fn report_oldest(&self, spool: &Path, oldest: Option<DateTime<Utc>>) {
        let mut all = self.oldest.lock().unwrap_or_else(|p| p.into_inner());
        match oldest {
            Some(at) => all.insert(spool.to_owned(), at),
            None => all.remove(spool),
        };
        let age = all.values().min().map_or(0.0, |at| {
            (Utc::now() - *at).num_milliseconds().max(0) as f64 / 1e3
        });
        self.metrics.spool_oldest_age(age);
    }
}

/// One connection's spool; cheap to clone. Records are added by its [`Writer`], read by
/// its [`Reader`] and finished with [`Spool::complete`].
#[derive(Clone)]
pub struct Spool(Arc<Shared>);

struct Shared {
    dir: PathBuf,
    budget: Arc<Budget>,
    segments: Mutex<BTreeMap<u64, Segment>>,
    /// Bumped at every commit and seal, so the reader wakes for new records and lets go
    /// of a segment it has read to the end.
    changed: watch::Sender<u64>,
}

/// A segment file, named by its first record id.
struct Segment {
    /// How far the file holds committed frames.
    committed_len: u64,
    /// Whether the writer moved on: once nothing in it is unfinished, it goes.
    sealed: bool,
    /// Records in it not finished yet.
    unfinished: u64,
    /// When its first unfinished record was received (as far as known: the first one).
    first_received_at: Option<DateTime<Utc>>,
    done: Option<BufWriter<File>>,
    done_len: u64,
}

impl Segment {
    fn new(committed_len: u64, sealed: bool) -> Segment {
        Segment {
            committed_len,
            sealed,
            unfinished: 0,
            first_received_at: None,
            done: None,
            done_len: 0,
        }
    }
}

fn segment_path(dir: &Path, first_id: u64) -> PathBuf {
    dir.join(format!("{first_id:020}.seg"))
}

fn done_path(dir: &Path, first_id: u64) -> PathBuf {
    dir.join(format!("{first_id:020}.done"))
}

impl Spool {
    fn segments(&self) -> MutexGuard<'_, BTreeMap<u64, Segment>> {
        self.0.segments.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn dir(&self) -> &Path {
        &self.0.dir
    }

    /// Record `id`'s fires all got a final answer: it leaves the spool. A done entry
    /// that fails to be written only means the record is fired again after a restart.
    pub fn complete(&self, id: u64) {
        let mut segments = self.segments();
        let Some((&first_id, segment)) = segments.range_mut(..=id).next_back() else {
            return;
        };
        segment.unfinished = segment.unfinished.saturating_sub(1);
        self.0.budget.finished(1);
        if segment.unfinished == 0 && segment.sealed {
            let segment = segments.remove(&first_id).expect("just found");
            drop(segments);
            self.delete(first_id, segment);
            return;
        }
        let dir = &self.0.dir;
        if segment.done.is_none() {
            match File::options()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(done_path(dir, first_id))
            {
                Ok(file) => segment.done = Some(BufWriter::new(file)),
                Err(error) => {
                    tracing::warn!(%error, spool = %dir.display(), "cannot write a spool done log; its records will be fired again after a restart");
                    return;
                }
            }
        }
        if let Some(done) = &mut segment.done
            && done.write_all(&frame::done_entry(id)).is_ok()
        {
            segment.done_len += frame::DONE_ENTRY as u64;
            self.0.budget.grew(frame::DONE_ENTRY as u64, 0);
        }
    }

    /// Writes the buffered done entries to the files (without fsync: see the module).
    pub fn flush_done(&self) {
        let mut segments = self.segments();
        for segment in segments.values_mut() {
            if let Some(done) = &mut segment.done {
                let _ = done.flush();
            }
        }
        let oldest = segments
            .values()
            .filter(|s| s.unfinished > 0)
            .find_map(|s| s.first_received_at);
        drop(segments);
        self.0.budget.report_oldest(&self.0.dir, oldest);
    }

    /// Removes a finished segment's files and gives its space back.
    fn delete(&self, first_id: u64, segment: Segment) {
        drop(segment.done);
        let dir = &self.0.dir;
        for path in [segment_path(dir, first_id), done_path(dir, first_id)] {
            if let Err(error) = std::fs::remove_file(&path)
                && error.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(%error, file = %path.display(), "cannot delete a finished spool file");
            }
        }
        self.0
            .budget
            .shrank(segment.committed_len + segment.done_len);
    }
}

#[cfg(test)]
mod tests;
