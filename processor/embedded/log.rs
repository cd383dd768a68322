//! The embedded broker's storage: each partition an append-only list of the
//! record batches producers sent, kept as they arrived (compressed or not)
//! with their base offset rewritten, in memory, never deleted.

use bytes::{Bytes, BytesMut};

/// Why a produced batch was refused, as a Kafka error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not a magic-2 record batch, or cut short (`CORRUPT_MESSAGE`).
    Corrupt = 2,
    /// An older message format (`UNSUPPORTED_FOR_MESSAGE_FORMAT`).
    OldFormat = 43,
}

/// The fixed header fields of a magic-2 record batch this broker reads
/// (byte positions from Kafka's `DefaultRecordBatch`).
const BASE_OFFSET: usize = 0;
const LENGTH: usize = 8;
const MAGIC: usize = 16;
const LAST_OFFSET_DELTA: usize = 23;
const MAX_TIMESTAMP: usize = 35;
/// Bytes of a batch before its records; a batch is at least this long.
const HEADER: usize = 61;
/// The part of the header before `LENGTH`'s count starts.
const LOG_OVERHEAD: usize = 12;

struct Batch {
    base_offset: i64,
    /// One past this batch's last offset.
    next_offset: i64,
    max_timestamp: i64,
    bytes: Bytes,
}

/// One partition's log.
#[derive(Default)]
pub struct Partition {
    batches: Vec<Batch>,
    bytes: usize,
}

impl Partition {
    /// The offset the next record gets (the high watermark: every record is
    /// committed the moment it is appended, there being one replica).
    pub fn end(&self) -> i64 {
        self.batches.last().map_or(0, |b| b.next_offset)
    }

    /// Bytes of record batches held.
    pub fn size(&self) -> usize {
        self.bytes
    }

    /// Appends every batch in `records` (a produce request's partition
    /// data) and returns the base offset of the first.
    pub fn append(&mut self, records: &[u8]) -> Result<i64, Refused> {
        let batches = split(records)?;
        let base = self.end();
        let mut next = base;
        for raw in batches {
            let mut batch = BytesMut::from(raw);
            batch[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&next.to_be_bytes());
            let count = i64::from(read_i32(raw, LAST_OFFSET_DELTA)) + 1;
            let max_timestamp = read_i64(raw, MAX_TIMESTAMP);
            self.bytes += batch.len();
            self.batches.push(Batch {
                base_offset: next,
                next_offset: next + count,
                max_timestamp,
                bytes: batch.freeze(),
            });
            next += count;
        }
        Ok(base)
    }

    /// Whole batches from the one holding `offset` on, at least one and
    /// otherwise at most `max_bytes` (as Kafka answers a fetch: a batch that
    /// starts before `offset` is sent whole, the client skips its head).
    pub fn read(&self, offset: i64, max_bytes: usize) -> Vec<Bytes> {
        let first = self.batches.partition_point(|b| b.next_offset <= offset);
        let mut out = Vec::new();
        let mut size = 0;
        for batch in &self.batches[first..] {
            if !out.is_empty() && size + batch.bytes.len() > max_bytes {
                break;
            }
            size += batch.bytes.len();
            out.push(batch.bytes.clone());
        }
        out
    }

    /// The first offset whose batch holds a record at or after `timestamp`,
    /// or `None` if no record is that late (ListOffsets by time).
    pub fn offset_for_time(&self, timestamp: i64) -> Option<i64> {
        self.batches.iter().find(|b| b.max_timestamp >= timestamp).map(|b| b.base_offset)
    }
}

/// The batches of a produce request's records, each checked to be a whole
/// magic-2 batch.
fn split(mut records: &[u8]) -> Result<Vec<&[u8]>, Refused> {
    let mut out = Vec::new();
    while !records.is_empty() {
        if records.len() < HEADER {
            return Err(Refused::Corrupt);
        }
        let length = usize::try_from(read_i32(records, LENGTH)).map_err(|_| Refused::Corrupt)?;
        let total = LOG_OVERHEAD + length;
        if total < HEADER || total > records.len() {
            return Err(Refused::Corrupt);
        }
        if records[MAGIC] != 2 {
            return Err(Refused::OldFormat);
        }
        if read_i32(records, LAST_OFFSET_DELTA) < 0 {
            return Err(Refused::Corrupt);
        }
        out.push(&records[..total]);
        records = &records[total..];
    }
    if out.is_empty() {
        return Err(Refused::Corrupt);
    }
    Ok(out)
}

fn read_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("four bytes"))
}

fn read_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("eight bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch header with `records` records and no record bodies (this log
    /// never looks past the header).
    fn batch(records: i32, max_timestamp: i64) -> Vec<u8> {
        let mut b = vec![0u8; HEADER];
        b[LENGTH..LENGTH + 4].copy_from_slice(&((HEADER - LOG_OVERHEAD) as i32).to_be_bytes());
        b[MAGIC] = 2;
        b[LAST_OFFSET_DELTA..LAST_OFFSET_DELTA + 4].copy_from_slice(&(records - 1).to_be_bytes());
        b[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&max_timestamp.to_be_bytes());
        b
    }

    #[test]
    fn batches_get_consecutive_offsets_and_a_read_starts_at_the_batch_holding_the_offset() {
        let mut p = Partition::default();
        assert_eq!(p.append(&batch(3, 10)), Ok(0));
        let two = [batch(2, 20), batch(5, 30)].concat();
        assert_eq!(p.append(&two), Ok(3));
        assert_eq!(p.end(), 10);
        let read = p.read(4, 1 << 20);
        assert_eq!(read.len(), 2);
        assert_eq!(read_i64(&read[0], BASE_OFFSET), 3);
        assert_eq!(read_i64(&read[1], BASE_OFFSET), 5);
        assert!(p.read(10, 1 << 20).is_empty());
        assert_eq!(p.read(0, 1).len(), 1, "at least one batch, however small the limit");
        assert_eq!(p.offset_for_time(25), Some(5));
        assert_eq!(p.offset_for_time(31), None);
    }

    #[test]
    fn a_cut_or_old_format_batch_is_refused_whole() {
        let mut p = Partition::default();
        let good = batch(1, 0);
        assert_eq!(p.append(&good[..HEADER - 1]), Err(Refused::Corrupt));
        let mut old = good.clone();
        old[MAGIC] = 1;
        assert_eq!(p.append(&[good.clone(), old].concat()), Err(Refused::OldFormat));
        assert_eq!(p.append(&[]), Err(Refused::Corrupt));
        assert_eq!(p.end(), 0, "nothing of a refused request is kept");
    }
}
