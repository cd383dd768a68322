//! Amendments: a context event that arrives after decisions it could have
//! changed were made.
//!
//! Every control keeps the trigger rows it decided for as long as their
//! decision could still be affected (wait + look-back behind the watermark).
//! When rows of a topic arrive at or behind the watermark, each control that
//! reads that topic re-runs its query over the decided triggers whose window
//! could contain them — once without the late rows and once with them — and
//! the difference is the amendment: a subject that violates only with them is
//! a new (late) violation, a subject that violated only without them is
//! retracted. Nothing a late event changes goes unrecorded.

use std::collections::{BTreeMap, HashSet};

use datafusion::arrow::array::{Array, BooleanArray, RecordBatch, TimestampMillisecondArray};
use datafusion::arrow::compute::and;
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::compute::kernels::cmp::{gt_eq, lt_eq};

use super::{ControlError, ControlSet, Finding, KeyFrom, Restricted};
use crate::duration::millis;
use crate::index::{KeyColumns, Wanted};
use crate::schema::Topic;
use crate::state::State;

/// What a late event changed.
#[derive(Clone, Debug, PartialEq)]
pub enum Amendment {
    /// The subject violates now; it did not before.
    New { control: usize, finding: Finding },
    /// The subject violated; with the late event it does not.
    Retracted { control: usize, finding: Finding },
}

impl ControlSet {
    /// Appends `batch` (rows of `topic`) to `state`; when some rows are at or
    /// behind `watermark`, returns how they change decisions already made.
    pub async fn append_amending(
        &mut self,
        state: &mut State,
        topic: Topic,
        batch: RecordBatch,
        time_index: usize,
        watermark: Option<i64>,
    ) -> Result<Vec<Amendment>, ControlError> {
        let late_range = watermark.and_then(|w| late_range(&batch, time_index, w).map(|range| (w, range)));
        let Some((watermark, (lo, hi))) = late_range else {
            state.append(topic, batch);
            return Ok(Vec::new());
        };
        let late = rows_between(&batch, time_index, i64::MIN, watermark)
            .map_err(|e| ControlError::Run { id: "amendments".into(), message: e.to_string() })?;
        let late = late.as_ref().unwrap_or(&batch);
        let before = self.redecide(state, topic, late, lo, hi).await?;
        state.append(topic, batch.clone());
        let after = self.redecide(state, topic, late, lo, hi).await?;
        let mut out = Vec::new();
        for ((control, before), (_, after)) in before.into_iter().zip(after) {
            let subjects =
                |findings: &[Finding]| -> HashSet<String> { findings.iter().map(|f| f.subject.clone()).collect() };
            let (was, is) = (subjects(&before), subjects(&after));
            for finding in after {
                if !was.contains(&finding.subject) {
                    out.push(Amendment::New { control, finding: Finding { late: true, ..finding } });
                }
            }
            for finding in before {
                if !is.contains(&finding.subject) {
                    out.push(Amendment::Retracted { control, finding });
                }
            }
        }
        Ok(out)
    }

    /// Findings over the decided triggers of every control that reads
    /// `topic` and whose window may hold an event timed in [lo, hi]. A
    /// control that reads `topic` only by key (see `keys`) re-runs only the
    /// triggers whose key one of the `late` rows holds: the others read none
    /// of them, so their findings cannot change.
    async fn redecide(
        &mut self,
        state: &State,
        topic: Topic,
        late: &RecordBatch,
        lo: i64,
        hi: i64,
    ) -> Result<Vec<(usize, Vec<Finding>)>, ControlError> {
        let mut out = Vec::new();
        for (index, control) in self.controls.iter_mut().enumerate() {
            if !control.reads.contains(&topic) || control.decided.is_empty() {
                continue;
            }
            // Look-back: the event precedes the trigger by up to the look-back;
            // absence: it follows the trigger by up to the deadline.
            let from = lo.saturating_sub(millis(control.meta.wait()));
            let to = hi.saturating_add(millis(control.meta.lookback));
            let keys = late_keys(&control.restricted, topic, late);
            let mut triggers = Vec::new();
            for batch in control.decided.batches() {
                let rows = rows_between(batch, control.time_index, from, to).map_err(|e| control.run_error(e))?;
                let rows = match rows {
                    Some(rows) if !keys.is_empty() => keyed(&rows, &keys).map_err(|e| control.run_error(e))?,
                    rows => rows,
                };
                triggers.extend(rows);
            }
            let findings = if triggers.is_empty() { Vec::new() } else { control.run(state, triggers, true).await? };
            out.push((index, findings));
        }
        Ok(out)
    }

    /// Forgets decided triggers that no late event can affect any more.
    pub fn evict_decided(&mut self, watermark: i64) {
        for control in &mut self.controls {
            let horizon = watermark.saturating_sub(millis(control.meta.wait() + control.meta.lookback));
            control.decided.forget_before(horizon);
        }
    }

    /// The lowest offset of a decided trigger kept for amendments, per
    /// partition of each trigger topic.
    pub fn decided_low_water_offsets(&self) -> BTreeMap<(Topic, i32), i64> {
        let mut out = BTreeMap::new();
        for control in &self.controls {
            control.decided.low_water(control.meta.trigger, &mut out);
        }
        out
    }

    /// Decided trigger rows held for amendments, over all controls.
    pub fn decided_rows(&self) -> usize {
        self.controls.iter().map(|c| c.decided.rows()).sum()
    }
}

fn times(batch: &RecordBatch, time_index: usize) -> Option<&TimestampMillisecondArray> {
    batch.column(time_index).as_any().downcast_ref::<TimestampMillisecondArray>()
}

/// Appends `batch` to `state` unless a row of it is at or behind
/// `watermark`; such a batch is given back, for
/// [`ControlSet::append_amending`]. This half of storing needs no waiting.
pub fn append_on_time(
    state: &mut State,
    topic: Topic,
    batch: RecordBatch,
    time_index: usize,
    watermark: Option<i64>,
) -> Option<RecordBatch> {
    if watermark.is_some_and(|w| late_range(&batch, time_index, w).is_some()) {
        return Some(batch);
    }
    state.append(topic, batch);
    None
}

/// The event-time range of the rows at or behind the watermark, if any.
fn late_range(batch: &RecordBatch, time_index: usize, watermark: i64) -> Option<(i64, i64)> {
    let late = times(batch, time_index)?.iter().flatten().filter(|t| *t <= watermark);
    late.fold(None, |acc, t| Some(acc.map_or((t, t), |(lo, hi): (i64, i64)| (lo.min(t), hi.max(t)))))
}

/// What a late row of `topic` in `late` can concern: the decided rows whose
/// due columns (the second) hold the key of a late row. Empty when a scan
/// of the topic has no key straight from due (any decided trigger may be
/// concerned), or when the topic is read whole.
fn late_keys(restricted: &[Restricted], topic: Topic, late: &RecordBatch) -> Vec<(Wanted, Vec<usize>)> {
    let mut keys = Vec::new();
    for scan in restricted.iter().filter(|r| r.topic == topic).flat_map(|r| &r.scans) {
        let KeyFrom::Due(due) = &scan.from else { return Vec::new() };
        keys.push((Wanted::of(&scan.reader, &[scan.key.columns(late)]), due.clone()));
    }
    keys
}

/// The rows of `batch` whose due columns hold a wanted key, for any key.
fn keyed(
    batch: &RecordBatch,
    keys: &[(Wanted, Vec<usize>)],
) -> Result<Option<RecordBatch>, datafusion::arrow::error::ArrowError> {
    if keys.iter().flat_map(|(_, due)| due).any(|d| *d >= batch.num_columns()) {
        return Ok(Some(batch.clone())); // keyed by the decision time: no narrowing
    }
    let columns: Vec<KeyColumns<'_>> =
        keys.iter().map(|(_, due)| KeyColumns::of(&due.iter().map(|d| batch.column(*d)).collect::<Vec<_>>())).collect();
    let mask: BooleanArray =
        (0..batch.num_rows()).map(|row| Some(keys.iter().zip(&columns).any(|((w, _), c)| w.holds(c, row)))).collect();
    let rows = filter_record_batch(batch, &mask)?;
    Ok((rows.num_rows() > 0).then_some(rows))
}

fn rows_between(
    batch: &RecordBatch,
    time_index: usize,
    from: i64,
    to: i64,
) -> Result<Option<RecordBatch>, datafusion::arrow::error::ArrowError> {
    let t = batch.column(time_index);
    let mask = and(
        &gt_eq(t, &TimestampMillisecondArray::new_scalar(from))?,
        &lt_eq(t, &TimestampMillisecondArray::new_scalar(to))?,
    )?;
    let rows = filter_record_batch(batch, &mask)?;
    Ok((rows.num_rows() > 0).then_some(rows))
}
