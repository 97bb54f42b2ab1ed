//! The spool's on-disk formats: a segment is a sequence of framed records, a done log a
//! sequence of checksummed record ids.
//!
//! A frame is `MAGIC`, the body's length (u32 LE), CRC32C of length and body (u32 LE),
//! then the body. The checksum catches a torn write (a crash mid-append) and flipped
//! bits; the magic lets a reader find the next intact frame after a damaged one, so one
//! bad record costs only itself, not the rest of its segment.

use chrono::{DateTime, Utc};

const MAGIC: [u8; 4] = *b"MWS\x01";
const HEADER: usize = 12;
/// Fixed part of a body: id, boot, seq, received_at, qos, retain, topic length.
const BODY_FIXED: usize = 8 + 8 + 8 + 8 + 1 + 1 + 2;
/// A body longer than this cannot be one of ours (an MQTT packet is at most 256 MiB): a
/// damaged length, not a record to wait for.
const MAX_BODY: usize = (256 << 20) + (64 << 10);
/// A done log entry: a record id and its CRC32C.
pub const DONE_ENTRY: usize = 12;

/// One spooled message, as it was received.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<'a> {
    /// Its number in the spool: unique, increasing in arrival order.
    pub id: u64,
    /// The boot id and receipt number of the process that received it: with them, the
    /// fire body is the same however often the record is fired.
    pub boot: u64,
    pub seq: u64,
    pub received_at: DateTime<Utc>,
    pub qos: u8,
    pub retain: bool,
    pub topic: &'a str,
    pub payload: &'a [u8],
}

impl Record<'_> {
    /// Appends the record's frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let body_len = BODY_FIXED + self.topic.len() + self.payload.len();
        let start = out.len();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&(body_len as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.boot.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        let nanos = self.received_at.timestamp_nanos_opt().unwrap_or(i64::MAX);
        out.extend_from_slice(&nanos.to_le_bytes());
        out.push(self.qos);
        out.push(u8::from(self.retain));
        out.extend_from_slice(&(self.topic.len() as u16).to_le_bytes());
        out.extend_from_slice(self.topic.as_bytes());
        out.extend_from_slice(self.payload);
        let crc = crc32c::crc32c_append(
            crc32c::crc32c(&out[start + 4..start + 8]),
            &out[start + HEADER..],
        );
        out[start + 8..start + HEADER].copy_from_slice(&crc.to_le_bytes());
    }
}

/// What the start of a buffer holds.
#[derive(Debug, PartialEq)]
pub enum Parsed<'a> {
    /// An intact record, and the length of its frame.
    Record(Record<'a>, usize),
    /// The start of a frame whose rest is not in the buffer yet.
    Incomplete,
    /// Damaged bytes to skip: up to the next possible frame.
    Damaged(usize),
}

/// Parses the frame at the start of `buf`. `at_end`: nothing follows `buf`, so a frame
/// cut short is damage (a torn tail, or a damaged length), not something to wait for.
/// An empty `buf` is `Incomplete` either way: nothing to skip.
pub fn parse(buf: &[u8], at_end: bool) -> Parsed<'_> {
    if buf.is_empty() {
        return Parsed::Incomplete;
    }
    if buf.len() < HEADER || buf[..4] != MAGIC {
        if buf.len() >= MAGIC.len() && buf[..4] != MAGIC {
            return Parsed::Damaged(next_magic(buf, 1, at_end));
        }
        return match at_end {
            true => Parsed::Damaged(buf.len()),
            false => Parsed::Incomplete,
        };
    }
    let body_len = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes")) as usize;
    if !(BODY_FIXED..=MAX_BODY).contains(&body_len) {
        return Parsed::Damaged(next_magic(buf, 1, at_end));
    }
    let Some(body) = buf.get(HEADER..HEADER + body_len) else {
        return match at_end {
            true => Parsed::Damaged(next_magic(buf, 1, at_end)),
            false => Parsed::Incomplete,
        };
    };
    let crc = u32::from_le_bytes(buf[8..HEADER].try_into().expect("4 bytes"));
    if crc32c::crc32c_append(crc32c::crc32c(&buf[4..8]), body) != crc {
        return Parsed::Damaged(next_magic(buf, 1, at_end));
    }
    match decode(body) {
        Some(record) => Parsed::Record(record, HEADER + body_len),
        // Checksummed but not a record: written by something else. Skip it whole.
        None => Parsed::Damaged(HEADER + body_len),
    }
}

fn decode(body: &[u8]) -> Option<Record<'_>> {
    let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
    let topic_len = u16::from_le_bytes([body[34], body[35]]) as usize;
    let topic = body.get(BODY_FIXED..BODY_FIXED + topic_len)?;
    let qos = body[32];
    if qos > 2 || body[33] > 1 {
        return None;
    }
    Some(Record {
        id: u64_at(0),
        boot: u64_at(8),
        seq: u64_at(16),
        received_at: DateTime::from_timestamp_nanos(u64_at(24) as i64),
        qos,
        retain: body[33] == 1,
        topic: std::str::from_utf8(topic).ok()?,
        payload: &body[BODY_FIXED + topic_len..],
    })
}

/// Where the next frame may start, searching from `from`. Without `at_end` the last
/// bytes are kept when they could be the start of a magic that continues later.
fn next_magic(buf: &[u8], from: usize, at_end: bool) -> usize {
    let found = buf[from..]
        .windows(MAGIC.len())
        .position(|window| window == MAGIC)
        .map(|at| from + at);
    match (found, at_end) {
        (Some(at), _) => at,
        (None, true) => buf.len(),
        (None, false) => buf.len().saturating_sub(MAGIC.len() - 1).max(from),
    }
}

/// A done log entry for record `id`.
pub fn done_entry(id: u64) -> [u8; DONE_ENTRY] {
    let mut entry = [0; DONE_ENTRY];
    entry[..8].copy_from_slice(&id.to_le_bytes());
    entry[8..].copy_from_slice(&crc32c::crc32c(&id.to_le_bytes()).to_le_bytes());
    entry
}

/// The ids of a done log. A damaged or torn entry is ignored: its record is fired once
/// more, which is a duplicate, never a loss.
pub fn done_ids(log: &[u8]) -> impl Iterator<Item = u64> + '_ {
    log.chunks_exact(DONE_ENTRY).filter_map(|entry| {
        let id: [u8; 8] = entry[..8].try_into().expect("8 bytes");
        let crc = u32::from_le_bytes(entry[8..].try_into().expect("4 bytes"));
        (crc32c::crc32c(&id) == crc).then(|| u64::from_le_bytes(id))
    })
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    fn record(id: u64, topic: &str, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Record {
            id,
            boot: 7,
            seq: id * 3,
            received_at: DateTime::from_timestamp_nanos(1_700_000_000_123_456_789),
            qos: 1,
            retain: id.is_multiple_of(2),
            topic,
            payload,
        }
        .encode(&mut out);
        out
    }

    /// Every intact record of `segment`, read as the reader does, and the bytes skipped.
    fn read_all(segment: &[u8]) -> (Vec<u64>, usize) {
        let (mut ids, mut skipped, mut at) = (Vec::new(), 0, 0);
        while at < segment.len() {
            match parse(&segment[at..], true) {
                Parsed::Record(record, len) => {
                    ids.push(record.id);
                    at += len;
                }
                Parsed::Damaged(len) => {
                    skipped += len;
                    at += len;
                }
                Parsed::Incomplete => unreachable!("nothing follows at the end"),
            }
        }
        (ids, skipped)
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let frame = record(42, "dc1/sensors/t", b"{\"t\":21.5}");
        let Parsed::Record(read, len) = parse(&frame, false) else {
            panic!("not parsed");
        };
        assert_eq!(len, frame.len());
        assert_eq!((read.id, read.boot, read.seq), (42, 7, 126));
        assert_eq!(
            read.received_at.timestamp_nanos_opt(),
            Some(1_700_000_000_123_456_789)
        );
        assert_eq!(
            (read.topic, read.payload, read.qos, read.retain),
            ("dc1/sensors/t", &b"{\"t\":21.5}"[..], 1, true)
        );
    }

    #[test]
    fn a_frame_not_all_there_is_waited_for_unless_nothing_follows() {
        let frame = record(1, "t", b"payload");
        for cut in 1..frame.len() {
            assert_eq!(
                parse(&frame[..cut], false),
                Parsed::Incomplete,
                "cut at {cut}"
            );
            assert!(
                matches!(parse(&frame[..cut], true), Parsed::Damaged(n) if n == cut),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn done_entries_round_trip_and_a_damaged_one_is_ignored() {
        let mut log: Vec<u8> = [3, 9, 12].iter().flat_map(|&id| done_entry(id)).collect();
        log[DONE_ENTRY + 2] ^= 0x10;
        log.extend_from_slice(&done_entry(20)[..5]);
        assert_eq!(done_ids(&log).collect::<Vec<_>>(), [3, 12]);
    }

    proptest! {
        /// Whatever one flipped byte and a torn tail do to a segment, every record they
        /// did not touch is read, and no damaged one is.
        #[test]
        fn damage_costs_only_the_records_it_touches(
            payloads in vec(vec(any::<u8>(), 0..60), 2..30),
            flip_at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
            cut in 0usize..40,
        ) {
            let mut segment = Vec::new();
            let mut spans = Vec::new();
            for (id, payload) in payloads.iter().enumerate() {
                let start = segment.len();
                segment.extend(record(id as u64, "dc1/sensors/x", payload));
                spans.push(start..segment.len());
            }
            let flip_at = flip_at.index(segment.len());
            segment[flip_at] ^= flip;
            let end = segment.len().saturating_sub(cut);
            segment.truncate(end);

            let (ids, skipped) = read_all(&segment);
            let intact: Vec<u64> = spans
                .iter()
                .enumerate()
                .filter(|(_, span)| !span.contains(&flip_at) && span.end <= end)
                .map(|(id, _)| id as u64)
                .collect();
            prop_assert_eq!(&ids, &intact);
            let read: usize = intact.iter().map(|&id| spans[id as usize].len()).sum();
            prop_assert_eq!(read + skipped, segment.len());
        }
    }
}
