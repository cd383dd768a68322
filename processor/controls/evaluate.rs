//! Evaluating every control's due triggers at a watermark, the queries side
//! by side.
//!
//! Controls are prepared side by side on every core (rayon) while the
//! caller waits: each looks its restricted reads' rows up and takes its
//! snapshot of the tables it reads — the state must not change meanwhile,
//! and the queries' cores have nothing to run yet. A lookup identical to
//! one made earlier in the same evaluation (same table, key and key values:
//! controls sharing a filter) takes that one's rows. Each prepared query
//! is then planned and run as a task of its own, at most one per core at a
//! time, the costliest (by its last evaluation, else by its table scans)
//! first so the slowest does not start last, on a runtime of their own —
//! planning, 2–40 ms a control when no kept plan fits, stays off the
//! caller, which goes on ingesting. The results come back in control order,
//! as if the controls had run one after another. A decision can be started
//! ([`ControlSet::start`]) and collected later ([`ControlSet::finish`]):
//! once started it reads nothing more of the state.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use rayon::prelude::*;
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::run::Lookups;
use super::{ControlError, ControlSet, Evaluation};
use crate::state::State;

/// One query to run: a control's due (or late) triggers.
struct Job {
    control: usize,
    late: bool,
    due: Vec<RecordBatch>,
}

/// A decision under way: each control's query prepared and running as a
/// task on the query runtime. [`ControlSet::finish`] collects it.
pub struct Running {
    runs: Vec<Run>,
}

impl Running {
    /// Trigger rows the decision judges: no longer pending, not yet decided.
    pub fn rows(&self) -> usize {
        self.runs.iter().map(|r| r.due_rows).sum()
    }

    /// Whether every query has finished, so [`ControlSet::finish`] will not wait.
    pub fn is_done(&self) -> bool {
        self.runs.iter().all(|r| r.handle.is_finished())
    }
}

/// One running query and what its evaluation reports.
struct Run {
    control: usize,
    late: bool,
    due_rows: usize,
    setup: Duration,
    read_in_part: usize,
    handle: JoinHandle<(datafusion::error::Result<Vec<RecordBatch>>, Duration)>,
}

impl ControlSet {
    /// Runs every control over its triggers that are due at `watermark`,
    /// against `state`.
    pub async fn evaluate(&mut self, state: &State, watermark: i64) -> Result<Vec<Evaluation>, ControlError> {
        let running = self.start(state, watermark).await?;
        self.finish(running).await
    }

    /// Takes every control's triggers due at `watermark` (and its late
    /// ones) as decided, prepares their queries over `state` and starts
    /// them; `state` may change once this returns, as each plan holds its
    /// own snapshot.
    pub async fn start(&mut self, state: &State, watermark: i64) -> Result<Running, ControlError> {
        let mut jobs = Vec::new();
        for (index, control) in self.controls.iter_mut().enumerate() {
            let mut pending = std::mem::take(&mut control.pending);
            let due = control.take_due(&mut pending, watermark);
            control.pending = pending;
            let due = due?;
            let late = std::mem::take(&mut control.late);
            for (mut queue, late) in [(due, false), (late, true)] {
                if !queue.is_empty() {
                    let batches: Vec<RecordBatch> = queue.batches().cloned().collect();
                    control.decided.append(&mut queue);
                    jobs.push(Job { control: index, late, due: batches });
                }
            }
        }
        jobs.sort_by_key(|j| {
            let control = &self.controls[j.control];
            std::cmp::Reverse((control.last_cost, control.scans))
        });
        // The lookups, on every core: the caller waits for them (they read
        // the state it is about to change), the queries' cores are idle.
        let lookups = Lookups::default();
        let controls = &self.controls;
        let prepared: Vec<Result<_, ControlError>> = jobs
            .into_par_iter()
            .map(|job| {
                let due_rows: usize = job.due.iter().map(RecordBatch::num_rows).sum();
                let prepared = controls[job.control].prepare(state, job.due, &lookups)?;
                Ok((job.control, job.late, due_rows, prepared))
            })
            .collect();
        let slots = Arc::new(Semaphore::new(crate::cores()));
        let mut runs = Vec::with_capacity(prepared.len());
        for prepared in prepared {
            let (control, late, due_rows, prepared) = prepared?;
            let (setup, read_in_part) = (prepared.setup, prepared.read_in_part);
            let slots = slots.clone();
            // The semaphore is fair: the queries start in the order spawned.
            let handle = executor().spawn(async move {
                let _slot = slots.acquire_owned().await;
                let started = Instant::now();
                let result = prepared.execute().await;
                (result, started.elapsed())
            });
            runs.push(Run { control, late, due_rows, setup, read_in_part, handle });
        }
        Ok(Running { runs })
    }

    /// Waits for a decision's queries and returns their evaluations in
    /// control order, as if the controls had run one after another.
    pub async fn finish(&mut self, running: Running) -> Result<Vec<Evaluation>, ControlError> {
        let mut out = Vec::with_capacity(running.runs.len());
        for run in running.runs {
            let control = &mut self.controls[run.control];
            let (result, executed) = run.handle.await.map_err(|e| control.run_error(e))?;
            let batches = result.map_err(|e| control.run_error(e))?;
            let started = Instant::now();
            let findings = control.findings_of(&batches, run.late)?;
            let elapsed = run.setup + executed + started.elapsed();
            control.last_cost = elapsed;
            let (due_rows, read_in_part) = (run.due_rows, run.read_in_part);
            out.push((run.late, Evaluation { control: run.control, due_rows, findings, elapsed, read_in_part }));
        }
        out.sort_by_key(|(late, e)| (e.control, *late));
        Ok(out.into_iter().map(|(_, e)| e).collect())
    }
}

/// The runtime the queries run on, one worker per core: apart from the
/// caller's, so that a caller that goes on ingesting while a decision runs
/// (`Engine::decide_behind`) neither waits for the queries nor holds them up.
fn executor() -> &'static Runtime {
    static EXECUTOR: OnceLock<Runtime> = OnceLock::new();
    EXECUTOR.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(crate::cores())
            .thread_name("vigil-query")
            .enable_all()
            .build()
            .expect("the query runtime's threads start")
    })
}
