//! Retained events per topic.
//!
//! Each topic's state is a list of Arrow batches behind a shared handle that
//! the control engine's tables read at scan time. Batches are evicted whole
//! once their newest event is older than the retention horizon (the watermark
//! minus the longest look-back of any control), so memory stays bounded by the
//! event rate times the retention.
//!
//! The state also knows, per partition, the lowest offset it still retains:
//! the pipeline commits no further than that, so a restart replays exactly
//! the events that decisions may still need.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use datafusion::arrow::array::{Array, ArrayRef, Int32Array, Int64Array, TimestampMillisecondArray};
use datafusion::arrow::record_batch::RecordBatch;

use crate::identity::Identities;
use crate::index::{KeyColumns, KeyIndex, KeySpec, Wanted};
use crate::schema::{EventSchema, Topic};

/// A lookup wanting at least 1/WHOLE_TABLE_SHARE of a table's rows reads
/// the whole table instead.
const WHOLE_TABLE_SHARE: usize = 5;

/// A table's batches, shared with the control engine.
pub type SharedBatches = Arc<RwLock<Vec<RecordBatch>>>;

#[derive(Debug)]
struct BatchMeta {
    max_time: i64,
    /// Lowest offset per partition in the batch.
    min_offsets: Vec<(i32, i64)>,
    rows: usize,
    bytes: usize,
}

#[derive(Debug, Default)]
struct TopicState {
    batches: SharedBatches,
    meta: Vec<BatchMeta>,
    /// Id of each retained batch's first row (parallel to `meta`).
    first_ids: Vec<u32>,
    next_id: u32,
    indexes: Vec<KeyIndex>,
}

impl TopicState {
    /// Numbers the retained rows from 0 and indexes them again.
    fn reindex(&mut self) {
        self.indexes = self.indexes.iter().map(KeyIndex::emptied).collect();
        self.first_ids.clear();
        self.next_id = 0;
        let batches = self.batches.read().unwrap_or_else(|p| p.into_inner());
        for batch in batches.iter() {
            self.first_ids.push(self.next_id);
            for index in &mut self.indexes {
                index.add(batch, self.next_id);
            }
            self.next_id += batch.num_rows() as u32;
        }
    }
}

/// The retained events of all four topics.
#[derive(Debug)]
pub struct State {
    topics: [TopicState; 4],
    time_index: [usize; 4],
}

/// Row and byte counts of one topic's state, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    pub rows: usize,
    pub bytes: usize,
}

impl State {
    pub fn new(schemas: [&EventSchema; 4]) -> State {
        State { topics: Default::default(), time_index: schemas.map(|s| s.time_index) }
    }

    /// The handle the control engine reads `topic`'s table through.
    pub fn table(&self, topic: Topic) -> SharedBatches {
        self.topics[topic.index()].batches.clone()
    }

    /// Adds decoded rows. The batch must be in the topic's canonical schema.
    pub fn append(&mut self, topic: Topic, batch: RecordBatch) {
        let times = batch
            .column(self.time_index[topic.index()])
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .expect("event_time is a millisecond timestamp");
        let max_time = times.iter().flatten().max().unwrap_or(i64::MIN);
        let meta = BatchMeta {
            max_time,
            min_offsets: min_offsets(&batch),
            rows: batch.num_rows(),
            bytes: batch.get_array_memory_size(),
        };
        let state = &mut self.topics[topic.index()];
        state.first_ids.push(state.next_id);
        for index in &mut state.indexes {
            index.add(&batch, state.next_id);
        }
        state.next_id += batch.num_rows() as u32;
        write(&state.batches).push(batch);
        state.meta.push(meta);
    }

    /// Keeps an index of `topic`'s rows by `key` from now on (principals
    /// resolved through `identities`).
    pub fn index(&mut self, topic: Topic, key: KeySpec, identities: &Arc<Identities>) {
        let state = &mut self.topics[topic.index()];
        if !state.indexes.iter().any(|i| i.spec == key) {
            state.indexes.push(KeyIndex::new(key, identities.clone(), 0));
            state.reindex();
        }
    }

    /// The retained rows of `topic` that the scans of a query can use: for
    /// each scan, the rows whose key is one of the given rows' (each given
    /// as its key columns, in the key's part order). `None` (read the whole
    /// table) when a key has no index, or the scans want a fifth of the
    /// table or more (counted from the index before reading a row).
    pub fn lookup(&self, topic: Topic, scans: &[(&KeySpec, Vec<Vec<&ArrayRef>>)]) -> Option<Vec<RecordBatch>> {
        let state = &self.topics[topic.index()];
        let batches = state.batches.read().unwrap_or_else(|p| p.into_inner());
        let mut picks: Vec<(&KeyIndex, Wanted)> = Vec::new();
        // Counts include evicted rows until a rebuild, as `next_id` does.
        let mut budget = (state.next_id as usize).div_ceil(WHOLE_TABLE_SHARE);
        for (key, values) in scans {
            let index = state.indexes.iter().find(|i| i.spec == **key)?;
            picks.push((index, Wanted::within(index.reader(), values, |h| index.count(h), &mut budget)?));
        }
        let mut rows: Vec<Vec<u32>> = vec![Vec::new(); batches.len()];
        let mut ids = Vec::new();
        for (index, wanted) in &picks {
            let columns: Vec<KeyColumns<'_>> = batches.iter().map(|b| index.spec.key_columns(b)).collect();
            for h in wanted.hashes() {
                ids.clear();
                index.candidates(h, &mut ids);
                for id in &ids {
                    let at = state.first_ids.partition_point(|f| f <= id);
                    let Some(b) = at.checked_sub(1) else { continue };
                    let row = (id - state.first_ids[b]) as usize;
                    if row < batches[b].num_rows() && wanted.matches(h, &columns[b], row) {
                        rows[b].push(row as u32);
                    }
                }
            }
        }
        let mut out = Vec::new();
        for (b, mut picked) in rows.into_iter().enumerate() {
            if picked.is_empty() {
                continue;
            }
            picked.sort_unstable();
            picked.dedup();
            let indices = datafusion::arrow::array::UInt32Array::from(picked);
            out.push(datafusion::arrow::compute::take_record_batch(&batches[b], &indices).ok()?);
        }
        Some(out)
    }

    /// Drops every batch whose newest event is older than its topic's
    /// horizon (indexed by [`Topic::index`]). Returns the number of rows dropped.
    pub fn evict(&mut self, horizons_ms: [i64; 4]) -> usize {
        let mut dropped = 0;
        for (state, horizon_ms) in self.topics.iter_mut().zip(horizons_ms) {
            if state.meta.iter().all(|m| m.max_time >= horizon_ms) {
                continue;
            }
            let mut batches = write(&state.batches);
            let mut keep = state.meta.iter().map(|m| m.max_time >= horizon_ms);
            batches.retain(|_| keep.next().unwrap_or(true));
            let mut keep = state.meta.iter().map(|m| m.max_time >= horizon_ms);
            state.first_ids.retain(|_| keep.next().unwrap_or(true));
            drop(batches);
            state.meta.retain(|m| {
                let k = m.max_time >= horizon_ms;
                if !k {
                    dropped += m.rows;
                }
                k
            });
            // Evicted rows linger in the chains: cut the links below the
            // oldest retained row, and renumber once evicted rows outweigh
            // what is retained (their values stay in the maps).
            let first = state.first_ids.first().copied().unwrap_or(state.next_id);
            for index in &mut state.indexes {
                index.forget_before(first);
            }
            let retained: usize = state.meta.iter().map(|m| m.rows).sum();
            if !state.indexes.is_empty() && state.next_id as usize > 2 * retained + 65_536 {
                state.reindex();
            }
        }
        dropped
    }

    /// Drops the rows of `partitions` (revoked: their next owner replays them).
    pub fn drop_partitions(&mut self, partitions: &[(Topic, i32)]) {
        for topic in Topic::ALL {
            let ps: Vec<i32> = partitions.iter().filter(|(t, _)| *t == topic).map(|(_, p)| *p).collect();
            if ps.is_empty() {
                continue;
            }
            let state = &mut self.topics[topic.index()];
            let batches = std::mem::take(&mut *write(&state.batches));
            state.meta.clear();
            state.reindex();
            for batch in batches {
                if let Some(kept) = without_partitions(&batch, &ps) {
                    self.append(topic, kept);
                }
            }
        }
    }

    /// Drops everything (between test cases).
    pub fn clear(&mut self) {
        for state in &mut self.topics {
            write(&state.batches).clear();
            state.meta.clear();
            state.reindex();
        }
    }

    /// The lowest retained offset of every partition that has retained rows.
    pub fn low_water_offsets(&self) -> BTreeMap<(Topic, i32), i64> {
        let mut out = BTreeMap::new();
        for topic in Topic::ALL {
            for meta in &self.topics[topic.index()].meta {
                for (p, o) in &meta.min_offsets {
                    out.entry((topic, *p)).and_modify(|m: &mut i64| *m = (*m).min(*o)).or_insert(*o);
                }
            }
        }
        out
    }

    /// Bytes held by each key index of `topic`, by key.
    pub fn index_bytes(&self, topic: Topic) -> Vec<(KeySpec, usize)> {
        self.topics[topic.index()].indexes.iter().map(|i| (i.spec.clone(), i.bytes())).collect()
    }

    pub fn usage(&self, topic: Topic) -> Usage {
        let meta = &self.topics[topic.index()].meta;
        Usage { rows: meta.iter().map(|m| m.rows).sum(), bytes: meta.iter().map(|m| m.bytes).sum() }
    }
}

fn write(batches: &SharedBatches) -> std::sync::RwLockWriteGuard<'_, Vec<RecordBatch>> {
    // A panic while holding the lock cannot leave the Vec half-updated: every
    // mutation is a single push or retain.
    batches.write().unwrap_or_else(|p| p.into_inner())
}

/// `batch` without the rows of `partitions`; `None` when nothing is left.
pub fn without_partitions(batch: &RecordBatch, partitions: &[i32]) -> Option<RecordBatch> {
    if partitions.is_empty() {
        return (batch.num_rows() > 0).then(|| batch.clone()); // no copy on the common path
    }
    let column = batch.column(batch.num_columns() - 2).as_any().downcast_ref::<Int32Array>()?;
    let keep: datafusion::arrow::array::BooleanArray =
        column.iter().map(|p| Some(!p.is_some_and(|p| partitions.contains(&p)))).collect();
    let kept = datafusion::arrow::compute::filter_record_batch(batch, &keep).ok()?;
    (kept.num_rows() > 0).then_some(kept)
}

/// `batch` without the rows below `floors` (partition, offset); `None`
/// when nothing is left.
pub fn at_or_above(batch: &RecordBatch, floors: &[(i32, i64)]) -> Option<RecordBatch> {
    let all = || (batch.num_rows() > 0).then(|| batch.clone()); // no copy on the common path
    let n = batch.num_columns();
    let partitions = batch.column(n - 2).as_any().downcast_ref::<Int32Array>();
    let offsets = batch.column(n - 1).as_any().downcast_ref::<Int64Array>();
    let (false, Some(partitions), Some(offsets)) = (floors.is_empty(), partitions, offsets) else { return all() };
    let floor = |p: i32| floors.iter().find(|(q, _)| *q == p).map_or(i64::MIN, |(_, f)| *f);
    let below = |i: usize| offsets.value(i) < floor(partitions.value(i));
    if !(0..batch.num_rows()).any(below) {
        return all();
    }
    let keep: datafusion::arrow::array::BooleanArray = (0..batch.num_rows()).map(|i| Some(!below(i))).collect();
    // Failing to filter must not lose triggers: deciding again is safer.
    let kept = datafusion::arrow::compute::filter_record_batch(batch, &keep).unwrap_or_else(|_| batch.clone());
    (kept.num_rows() > 0).then_some(kept)
}

/// The lowest offset per partition in a batch of a topic's canonical schema
/// (whose last two columns are `_partition` and `_offset`).
pub fn min_offsets(batch: &RecordBatch) -> Vec<(i32, i64)> {
    let n = batch.num_columns();
    let partitions = batch.column(n - 2).as_any().downcast_ref::<Int32Array>();
    let offsets = batch.column(n - 1).as_any().downcast_ref::<Int64Array>();
    let (Some(partitions), Some(offsets)) = (partitions, offsets) else {
        return Vec::new();
    };
    let mut out: Vec<(i32, i64)> = Vec::new();
    for i in 0..batch.num_rows() {
        let (p, o) = (partitions.value(i), offsets.value(i));
        match out.iter_mut().find(|(q, _)| *q == p) {
            Some((_, m)) => *m = (*m).min(o),
            None => out.push((p, o)),
        }
    }
    debug_assert!(partitions.null_count() == 0);
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(rows: &[(i32, i64)]) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("event_id", DataType::Utf8, false),
            Field::new("_partition", DataType::Int32, false),
            Field::new("_offset", DataType::Int64, false),
        ]);
        let ids: StringArray = rows.iter().map(|(p, o)| Some(format!("{p}/{o}"))).collect();
        let partitions: Int32Array = rows.iter().map(|(p, _)| Some(*p)).collect();
        let offsets: Int64Array = rows.iter().map(|(_, o)| Some(*o)).collect();
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(ids), Arc::new(partitions), Arc::new(offsets)]).unwrap()
    }

    #[test]
    fn rows_below_a_partitions_floor_are_not_triggers() {
        let b = batch(&[(0, 4), (0, 5), (1, 2), (2, 0)]);
        assert_eq!(at_or_above(&b, &[]).unwrap().num_rows(), 4);
        let kept = at_or_above(&b, &[(0, 5), (1, 3)]).unwrap();
        let kept = min_offsets(&kept);
        assert_eq!(kept, vec![(0, 5), (2, 0)]);
        assert!(at_or_above(&batch(&[(1, 2)]), &[(1, 3)]).is_none());
    }
}
