//! Reading the spool in order: what a previous run left first, then each record as soon
//! as its batch is committed. Memory holds one chunk of a segment, whatever the backlog.

use std::collections::{HashMap, HashSet};
use std::io::{self, SeekFrom};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::watch;

use super::frame::{self, Parsed};
use super::{Spool, Spooled, segment_path};

const CHUNK: u64 = 256 << 10;

/// The one reader of a spool.
pub struct Reader {
    spool: Spool,
    /// Wakes the reader when a batch is committed or a segment sealed.
    changed: watch::Receiver<u64>,
    /// The segment being read, by first id, and its file once open.
    current: Option<u64>,
    /// The next segment is the first with this first id or a later one: the reader
    /// never goes back to a segment it passed (whose records may still be in flight).
    from: u64,
    file: Option<tokio::fs::File>,
    /// How far the file was read into `buf`.
    read_to: u64,
    buf: Vec<u8>,
    /// Where in `buf` the next frame starts.
    start: usize,
    /// The records of each segment left from before that were done already.
    done_before: HashMap<u64, HashSet<u64>>,
}

impl Reader {
    pub(super) fn new(spool: Spool, done_before: HashMap<u64, HashSet<u64>>) -> Reader {
        Reader {
            changed: spool.0.changed.subscribe(),
            spool,
            current: None,
            from: 0,
            file: None,
            read_to: 0,
            buf: Vec::new(),
            start: 0,
            done_before,
        }
    }

    pub fn dir(&self) -> &std::path::Path {
        self.spool.dir()
    }

    /// The next record not finished yet, waiting for one to be committed. A segment the
    /// writer left is closed once read, even while no new record comes. Not cancel
    /// safe: once cancelled, drop the reader.
    pub async fn next(&mut self) -> io::Result<Spooled> {
        loop {
            let Some(first_id) = self.current else {
                self.current = self.next_segment();
                if self.current.is_none() {
                    self.wait_for_change().await;
                }
                continue;
            };
            let Some((committed_len, sealed)) = self
                .spool
                .segments()
                .get(&first_id)
                .map(|s| (s.committed_len, s.sealed))
            else {
                // Finished and deleted while only done records were left in it.
                self.move_on(first_id);
                continue;
            };
            let at_end = sealed && self.read_to >= committed_len;
            match frame::parse(&self.buf[self.start..], at_end) {
                Parsed::Record(record, len) => {
                    self.start += len;
                    let done = self
                        .done_before
                        .get(&first_id)
                        .is_some_and(|done| done.contains(&record.id));
                    if !done {
                        let spooled = Spooled {
                            id: record.id,
                            boot: record.boot,
                            seq: record.seq,
                            received_at: record.received_at,
                            qos: record.qos,
                            retain: record.retain,
                            topic: record.topic.to_owned(),
                            payload: Bytes::copy_from_slice(record.payload),
                        };
                        if at_end && self.start == self.buf.len() {
                            // Its file is closed at once: a deleted file's space comes
                            // back only once no one holds it open.
                            self.move_on(first_id);
                        }
                        return Ok(spooled);
                    }
                }
                // Reported when the spool was opened.
                Parsed::Damaged(len) => self.start += len,
                Parsed::Incomplete if self.read_to < committed_len => {
                    if !self.read_more(first_id, committed_len).await? {
                        self.move_on(first_id);
                    }
                }
                Parsed::Incomplete if !sealed => self.wait_for_change().await,
                Parsed::Incomplete => {
                    self.move_on(first_id);
                    if self.current.is_none() {
                        self.wait_for_change().await;
                    }
                }
            }
        }
    }

    /// Reads the next chunk of the segment; false if its file is gone.
    async fn read_more(&mut self, first_id: u64, committed_len: u64) -> io::Result<bool> {
        if self.file.is_none() {
            match tokio::fs::File::open(segment_path(self.spool.dir(), first_id)).await {
                Ok(mut file) => {
                    file.seek(SeekFrom::Start(self.read_to)).await?;
                    self.file = Some(file);
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(error) => return Err(error),
            }
        }
        let file = self.file.as_mut().expect("opened");
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let want = (committed_len - self.read_to).min(CHUNK.max(self.buf.len() as u64));
        let old = self.buf.len();
        self.buf.resize(old + want as usize, 0);
        if let Err(error) = file.read_exact(&mut self.buf[old..]).await {
            // Read again from `read_to`, reopened.
            self.buf.truncate(old);
            self.file = None;
            return Err(error);
        }
        self.read_to += want;
        Ok(true)
    }

    fn next_segment(&self) -> Option<u64> {
        let segments = self.spool.segments();
        segments.range(self.from..).next().map(|(&id, _)| id)
    }

    /// Done with segment `from`: on to the next one, if there is one yet.
    fn move_on(&mut self, from: u64) {
        self.done_before.remove(&from);
        self.from = from + 1;
        self.current = self.next_segment();
        self.file = None;
        self.read_to = 0;
        self.buf.clear();
        self.start = 0;
    }

    async fn wait_for_change(&mut self) {
        // The sender lives as long as the spool, which this reader holds.
        let _ = self.changed.changed().await;
    }
}
