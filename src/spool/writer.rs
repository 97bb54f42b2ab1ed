//! Appending to the spool: a batch of records is one write and one `fdatasync` (the
//! group commit), and is acknowledged to the broker only once that returned.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use super::frame::Record;
use super::{Segment, Spool, segment_path};

/// Segments are reclaimed whole, so each is a small part of the budget.
const SEGMENT_PARTS: u64 = 8;
const SEGMENT_MIN_BYTES: u64 = 4 << 10;
const SEGMENT_MAX_BYTES: u64 = 8 << 20;

/// The one writer of a spool.
pub struct Writer {
    spool: Spool,
    active: Option<Active>,
    next_id: u64,
    segment_bytes: u64,
    buf: Vec<u8>,
}

/// The segment being appended to.
struct Active {
    file: File,
    first_id: u64,
    len: u64,
}

/// A batch that could not be made durable, and what failed.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {source}")]
pub struct WriteError {
    what: &'static str,
    path: String,
    source: io::Error,
}

impl WriteError {
    /// Whether the disk is full (back-pressure, not a fault of the provider).
    pub fn is_disk_full(&self) -> bool {
        self.source.kind() == io::ErrorKind::StorageFull
    }
}

impl Writer {
    pub(super) fn new(spool: Spool, next_id: u64) -> Writer {
        let segment_bytes =
            (spool.0.budget.max_bytes / SEGMENT_PARTS).clamp(SEGMENT_MIN_BYTES, SEGMENT_MAX_BYTES);
        Writer {
            spool,
            active: None,
            next_id,
            segment_bytes,
            buf: Vec::new(),
        }
    }

    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// Makes `records` durable, giving them their ids; returns how long the fsync took.
    /// On error nothing of the batch counts as written: it is to be appended again (to
    /// a new segment, as a file whose write or fsync failed is not trusted further).
    pub fn append(&mut self, records: &mut [Record<'_>]) -> Result<Duration, WriteError> {
        let first_id = self.next_id;
        // Ids are never reused, even those of a failed batch that may be half on disk.
        self.next_id += records.len() as u64;
        self.buf.clear();
        for (record, id) in records.iter_mut().zip(first_id..) {
            record.id = id;
            record.encode(&mut self.buf);
        }
        let result = self.write_batch(first_id);
        if result.is_err()
            && let Some(active) = self.active.take()
        {
            self.seal(active.first_id);
        }
        let fsync = result?;
        let active = self.active.as_mut().expect("written");
        active.len += self.buf.len() as u64;
        let mut segments = self.spool.segments();
        let segment = segments.get_mut(&active.first_id).expect("registered");
        segment.committed_len = active.len;
        segment.unfinished += records.len() as u64;
        if segment.first_received_at.is_none() {
            segment.first_received_at = records.first().map(|r| r.received_at);
        }
        drop(segments);
        self.spool
            .0
            .budget
            .grew(self.buf.len() as u64, records.len() as u64);
        self.spool
            .0
            .changed
            .send_modify(|generation| *generation += 1);
        Ok(fsync)
    }

    fn write_batch(&mut self, first_id: u64) -> Result<Duration, WriteError> {
        if self
            .active
            .as_ref()
            .is_none_or(|active| active.len >= self.segment_bytes)
        {
            if let Some(active) = self.active.take() {
                self.seal(active.first_id);
            }
            self.active = Some(self.create_segment(first_id)?);
        }
        let active = self.active.as_mut().expect("created");
        let failed = |what, source| WriteError {
            what,
            path: segment_path(&self.spool.0.dir, active.first_id)
                .display()
                .to_string(),
            source,
        };
        active
            .file
            .write_all(&self.buf)
            .map_err(|e| failed("cannot write to spool file", e))?;
        let started = Instant::now();
        active
            .file
            .sync_data()
            .map_err(|e| failed("cannot fsync spool file", e))?;
        Ok(started.elapsed())
    }

    /// A new segment file, registered; its directory entry is synced, so the file is
    /// found after a power loss as surely as what is written to it.
    fn create_segment(&mut self, first_id: u64) -> Result<Active, WriteError> {
        let dir = &self.spool.0.dir;
        let path = segment_path(dir, first_id);
        let failed = |what, source| WriteError {
            what,
            path: path.display().to_string(),
            source,
        };
        let file = File::options()
            .create_new(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| failed("cannot create spool file", e))?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| failed("cannot sync the spool directory for", e))?;
        self.spool
            .segments()
            .insert(first_id, Segment::new(0, false));
        Ok(Active {
            file,
            first_id,
            len: 0,
        })
    }

    /// The writer moved on from this segment: once its records are all done, it goes.
    fn seal(&self, first_id: u64) {
        let mut segments = self.spool.segments();
        let Some(segment) = segments.get_mut(&first_id) else {
            return;
        };
        segment.sealed = true;
        if segment.unfinished == 0 {
            let segment = segments.remove(&first_id).expect("just found");
            drop(segments);
            self.spool.delete(first_id, segment);
        } else {
            drop(segments);
        }
        self.spool
            .0
            .changed
            .send_modify(|generation| *generation += 1);
    }
}
