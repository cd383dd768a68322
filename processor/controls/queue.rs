//! Trigger rows held by a control between ticks: pending (waiting for the
//! watermark), late, or decided (kept for amendments).
//!
//! Every tick asks each queue which rows are due, which offsets it still
//! holds and what may be forgotten. A control with a 24-hour deadline holds
//! a day of triggers, so those questions are answered per batch, from what
//! was noted when the batch came in (its event-time range and lowest offset
//! per partition), and a batch is copied only when the cut falls inside it.
//! Asking them row by row made a tick's cost grow with everything pending.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, BooleanArray, RecordBatch, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::buffer::{Buffer, OffsetBuffer};
use datafusion::arrow::compute::kernels::cmp::lt_eq;
use datafusion::arrow::compute::{filter_record_batch, is_not_null, not, FilterBuilder};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::arrow::error::ArrowError;

use crate::schema::Topic;
use crate::state::{min_offsets, without_partitions};

/// Trigger rows in batches, with each batch's time range and offsets.
#[derive(Default)]
pub(super) struct Queue {
    batches: Vec<Queued>,
}

struct Queued {
    batch: RecordBatch,
    /// Earliest and latest trigger time.
    times: (i64, i64),
    min_offsets: Vec<(i32, i64)>,
}

impl Queue {
    /// Adds rows. A row without a trigger time is never due (the decoders
    /// reject such events); it is not kept.
    pub(super) fn push(&mut self, batch: RecordBatch, time_index: usize) -> Result<(), ArrowError> {
        let Some(times) = batch.column(time_index).as_any().downcast_ref::<TimestampMillisecondArray>() else {
            return Err(ArrowError::SchemaError(format!("trigger time column {time_index} is not a timestamp")));
        };
        if times.null_count() > 0 {
            let timed = filter_record_batch(&batch, &is_not_null(times)?)?;
            return self.push(timed, time_index);
        }
        let Some(range) = times
            .values()
            .iter()
            .fold(None, |r: Option<(i64, i64)>, v| Some(r.map_or((*v, *v), |(lo, hi)| (lo.min(*v), hi.max(*v)))))
        else {
            return Ok(());
        };
        self.batches.push(Queued { min_offsets: min_offsets(&batch), times: range, batch });
        Ok(())
    }

    /// Adds every row of `other`, leaving it empty.
    pub(super) fn append(&mut self, other: &mut Queue) {
        self.batches.append(&mut other.batches);
    }

    /// Takes out the rows whose trigger time is at or before `cut`, as a
    /// queue of their own: a batch wholly due moves with what was noted of
    /// it.
    pub(super) fn take_until(&mut self, cut: i64, time_index: usize) -> Result<Queue, ArrowError> {
        let mut due = Queue::default();
        for queued in std::mem::take(&mut self.batches) {
            let (lo, hi) = queued.times;
            if hi <= cut {
                due.batches.push(queued);
            } else if lo > cut {
                self.batches.push(queued);
            } else {
                let (now, later) = split(&queued.batch, cut, time_index)?;
                due.push(now, time_index)?;
                self.push(later, time_index)?;
            }
        }
        Ok(due)
    }

    /// Forgets the batches whose every trigger time is before `horizon`.
    pub(super) fn forget_before(&mut self, horizon: i64) {
        self.batches.retain(|q| q.times.1 >= horizon);
    }

    /// Drops the rows of these partitions.
    pub(super) fn drop_partitions(&mut self, partitions: &[i32], time_index: usize) -> Result<(), ArrowError> {
        for queued in std::mem::take(&mut self.batches) {
            if !queued.min_offsets.iter().any(|(p, _)| partitions.contains(p)) {
                self.batches.push(queued);
            } else if let Some(kept) = without_partitions(&queued.batch, partitions) {
                self.push(kept, time_index)?;
            }
        }
        Ok(())
    }

    pub(super) fn clear(&mut self) {
        self.batches.clear();
    }

    pub(super) fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    pub(super) fn rows(&self) -> usize {
        self.batches.iter().map(|q| q.batch.num_rows()).sum()
    }

    pub(super) fn batches(&self) -> impl Iterator<Item = &RecordBatch> {
        self.batches.iter().map(|q| &q.batch)
    }

    /// Lowers `out`'s offset of each partition (of `topic`) this queue holds
    /// a row of to the lowest it holds.
    pub(super) fn low_water(&self, topic: Topic, out: &mut BTreeMap<(Topic, i32), i64>) {
        for (p, o) in self.batches.iter().flat_map(|q| &q.min_offsets) {
            out.entry((topic, *p)).and_modify(|m| *m = (*m).min(*o)).or_insert(*o);
        }
    }
}

/// Splits rows into (trigger time ≤ cut, the rest); a row with no time is
/// in neither.
fn split(batch: &RecordBatch, cut: i64, time_index: usize) -> Result<(RecordBatch, RecordBatch), ArrowError> {
    let times = batch.column(time_index);
    let mask = lt_eq(times, &TimestampMillisecondArray::new_scalar(cut))?;
    Ok((filter_record_batch(batch, &mask)?, filter_record_batch(batch, &not(&mask)?)?))
}

/// `batch`'s rows where `mask` holds, copying only the columns `read` marks
/// (`None`: all). The others hold placeholders of their type that cost no
/// copy: nulls, or empty strings where the column is required.
pub(super) fn admitted(
    batch: &RecordBatch,
    mask: &BooleanArray,
    read: Option<&[bool]>,
) -> Result<RecordBatch, ArrowError> {
    let Some(read) = read else { return filter_record_batch(batch, mask) };
    let filter = FilterBuilder::new(mask).optimize().build();
    let rows = filter.count();
    let schema = batch.schema();
    let mut placeholders: Vec<(&Field, ArrayRef)> = Vec::new();
    let mut columns = Vec::with_capacity(batch.num_columns());
    for ((column, field), read) in batch.columns().iter().zip(schema.fields()).zip(read) {
        if *read {
            columns.push(filter.filter(column)?);
            continue;
        }
        let same =
            |(f, _): &&(&Field, ArrayRef)| f.data_type() == field.data_type() && f.is_nullable() == field.is_nullable();
        let shared = placeholders.iter().find(same).map(|(_, array)| array.clone());
        let made = || placeholder(field, rows).inspect(|array| placeholders.push((field, array.clone())));
        columns.push(match shared.or_else(made) {
            Some(array) => array,
            None => filter.filter(column)?,
        });
    }
    RecordBatch::try_new(schema.clone(), columns)
}

/// `rows` values of `field`'s type that need no copying, where its type
/// has one.
fn placeholder(field: &Field, rows: usize) -> Option<ArrayRef> {
    if field.is_nullable() {
        return Some(new_null_array(field.data_type(), rows));
    }
    match field.data_type() {
        DataType::Utf8 => {
            Some(Arc::new(StringArray::new(OffsetBuffer::new_zeroed(rows), Buffer::from(Vec::<u8>::new()), None)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int32Array, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    use super::*;

    /// Trigger rows of (time, partition, offset), in the canonical layout:
    /// `_partition` and `_offset` last.
    fn rows(rows: &[(Option<i64>, i32, i64)]) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("event_time", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new("_partition", DataType::Int32, false),
            Field::new("_offset", DataType::Int64, false),
        ]);
        let times: TimestampMillisecondArray = rows.iter().map(|r| r.0).collect();
        let partitions: Int32Array = rows.iter().map(|r| r.1).collect();
        let offsets: Int64Array = rows.iter().map(|r| r.2).collect();
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(times), Arc::new(partitions), Arc::new(offsets)]).unwrap()
    }

    fn times(queue: &Queue) -> Vec<i64> {
        let mut out: Vec<i64> = queue
            .batches()
            .flat_map(|b| b.column(0).as_any().downcast_ref::<TimestampMillisecondArray>().unwrap().values().to_vec())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn takes_the_rows_due_whole_batches_and_split_ones() {
        let mut queue = Queue::default();
        queue.push(rows(&[(Some(10), 0, 1), (Some(20), 0, 2)]), 0).unwrap();
        queue.push(rows(&[(Some(25), 1, 7), (Some(40), 1, 8), (Some(30), 0, 3)]), 0).unwrap();
        queue.push(rows(&[(Some(50), 2, 4)]), 0).unwrap();
        assert_eq!(times(&queue.take_until(30, 0).unwrap()), [10, 20, 25, 30]);
        assert_eq!(queue.rows(), 2);
        let mut low = BTreeMap::new();
        queue.low_water(Topic::Deploy, &mut low);
        // What remains of the split batch holds offset 8 of partition 1, no
        // longer 7.
        assert_eq!(low, BTreeMap::from([((Topic::Deploy, 1), 8), ((Topic::Deploy, 2), 4)]));
        assert!(queue.take_until(39, 0).unwrap().is_empty());
        assert_eq!(times(&queue.take_until(i64::MAX, 0).unwrap()), [40, 50]);
        assert!(queue.is_empty());
    }

    #[test]
    fn forgets_only_batches_wholly_behind_the_horizon() {
        let mut queue = Queue::default();
        queue.push(rows(&[(Some(10), 0, 1), (Some(20), 0, 2)]), 0).unwrap();
        queue.push(rows(&[(Some(5), 0, 3), (Some(40), 0, 4)]), 0).unwrap();
        queue.forget_before(21);
        assert_eq!(times(&queue), [5, 40]);
    }

    #[test]
    fn rows_without_a_time_are_not_kept() {
        let mut queue = Queue::default();
        queue.push(rows(&[(None, 0, 1), (Some(20), 0, 2)]), 0).unwrap();
        queue.push(rows(&[(None, 0, 3)]), 0).unwrap();
        assert_eq!(queue.rows(), 1);
        assert_eq!(times(&queue.take_until(20, 0).unwrap()), [20]);
    }

    #[test]
    fn drops_the_rows_of_revoked_partitions() {
        let mut queue = Queue::default();
        queue.push(rows(&[(Some(10), 0, 1), (Some(20), 1, 2)]), 0).unwrap();
        queue.push(rows(&[(Some(30), 2, 3)]), 0).unwrap();
        queue.drop_partitions(&[1, 2], 0).unwrap();
        let mut low = BTreeMap::new();
        queue.low_water(Topic::Ci, &mut low);
        assert_eq!(low, BTreeMap::from([((Topic::Ci, 0), 1)]));
        assert_eq!(times(&queue), [10]);
    }

    #[test]
    fn admitting_copies_only_the_columns_read() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("note", DataType::Utf8, true),
            Field::new("digest", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["a", "b", "c"])),
                Arc::new(StringArray::from(vec![Some("x"), None, Some("z")])),
                Arc::new(StringArray::from(vec!["d1", "d2", "d3"])),
                Arc::new(Int64Array::from(vec![1, 2, 3])),
            ],
        )
        .unwrap();
        let mask = BooleanArray::from(vec![true, false, true]);
        let rows = admitted(&batch, &mask, Some(&[true, false, false, false])).unwrap();
        assert_eq!(rows.schema(), batch.schema());
        assert_eq!(rows.column(0).as_ref(), &StringArray::from(vec!["a", "c"]) as &dyn Array);
        assert_eq!(rows.column(1).null_count(), 2, "an optional column not read is null");
        assert_eq!(
            rows.column(2).as_ref(),
            &StringArray::from(vec!["", ""]) as &dyn Array,
            "a required text not read is empty"
        );
        assert_eq!(rows.column(3).as_ref(), &Int64Array::from(vec![1, 3]) as &dyn Array, "other types are copied");
        assert_eq!(admitted(&batch, &mask, None).unwrap(), filter_record_batch(&batch, &mask).unwrap());
    }
}
