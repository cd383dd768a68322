//! Evaluating every control's due triggers at a watermark, the queries side
//! by side.
//!
//! Controls are prepared one after another on the calling task: the lookups
//! and the physical planning use the control's table slots, which are reset
//! once the plan holds its snapshot. A lookup identical to one made earlier
//! in the same evaluation (same table, key and key values: controls sharing
//! a filter) takes that one's rows. Each prepared query then runs as a task
//! of its own, at most one per core at a time, the costliest (by its last
//! evaluation, else by its table scans) first so the slowest does not start
//! last. The results come back in control order, as if the controls had run
//! one after another.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use tokio::sync::Semaphore;

use super::run::Lookups;
use super::{ControlError, ControlSet, Evaluation};
use crate::state::State;

/// One query to run: a control's due (or late) triggers.
struct Job {
    control: usize,
    late: bool,
    due: Vec<RecordBatch>,
}

impl ControlSet {
    /// Runs every control over its triggers that are due at `watermark`,
    /// against `state`.
    pub async fn evaluate(&mut self, state: &State, watermark: i64) -> Result<Vec<Evaluation>, ControlError> {
        let mut jobs = Vec::new();
        for (index, control) in self.controls.iter_mut().enumerate() {
            let pending = std::mem::take(&mut control.pending);
            let mut due = Vec::new();
            for batch in &pending {
                let (now, later) = control.split_due(batch, watermark)?;
                due.extend(now);
                control.pending.extend(later);
            }
            let late = std::mem::take(&mut control.late);
            for (batches, late) in [(due, false), (late, true)] {
                if batches.iter().any(|b| b.num_rows() > 0) {
                    control.decided.extend(batches.iter().cloned());
                    jobs.push(Job { control: index, late, due: batches });
                }
            }
        }
        jobs.sort_by_key(|j| {
            let control = &self.controls[j.control];
            std::cmp::Reverse((control.last_cost, control.scans))
        });
        let slots = Arc::new(Semaphore::new(crate::cores()));
        let mut running = Vec::with_capacity(jobs.len());
        let mut lookups = Lookups::default();
        for job in jobs {
            let control = &self.controls[job.control];
            let due_rows: usize = job.due.iter().map(RecordBatch::num_rows).sum();
            let prepared = control.prepare(state, job.due, &mut lookups).await?;
            let (setup, read_in_part) = (prepared.setup, prepared.read_in_part);
            let slot = slots.clone().acquire_owned().await.map_err(|e| control.run_error(e))?;
            let handle = tokio::spawn(async move {
                let _slot = slot;
                let started = Instant::now();
                let result = prepared.execute().await;
                (result, started.elapsed())
            });
            running.push((job.control, job.late, due_rows, setup, read_in_part, handle));
        }
        let mut out = Vec::with_capacity(running.len());
        for (index, late, due_rows, setup, read_in_part, handle) in running {
            let control = &mut self.controls[index];
            let (result, executed) = handle.await.map_err(|e| control.run_error(e))?;
            let batches = result.map_err(|e| control.run_error(e))?;
            let started = Instant::now();
            let findings = control.findings_of(&batches, late)?;
            let elapsed = setup + executed + started.elapsed();
            control.last_cost = elapsed;
            out.push((late, Evaluation { control: index, due_rows, findings, elapsed, read_in_part }));
        }
        out.sort_by_key(|(late, e)| (e.control, *late));
        Ok(out.into_iter().map(|(_, e)| e).collect())
    }
}
