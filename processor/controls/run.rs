//! One run of a control, in two halves. [`Control::prepare`] sets the due
//! rows (with their decision time) and the restricted reads up, plans the
//! query physically — the plan takes its snapshot of every table then, or a
//! plan kept from a run over tables of the same sizes is rebound to it (see
//! `reuse`) — and resets the tables; [`Prepared::execute`] runs that plan,
//! on any thread, while the next control is prepared.
//! [`Control::findings_of`] turns the result into findings.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{ArrayRef, DurationMillisecondArray, RecordBatch};
use datafusion::arrow::compute::kernels::numeric::add;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;

use super::reuse::Snapshots;
use super::{findings_of, Control, ControlError, Finding, KeyFrom, Restricted};
use crate::index::KeySpec;
use crate::schema::Topic;
use crate::state::State;

/// A control's query planned over this run's rows, ready to execute.
pub(super) struct Prepared {
    id: String,
    plan: Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
    /// State tables read only in part, through the due rows' keys.
    pub read_in_part: usize,
    /// Time spent looking rows up and planning.
    pub setup: Duration,
}

impl Control {
    /// Runs the query over `due` against `state` and returns its findings.
    pub(super) async fn run(
        &mut self,
        state: &State,
        due: Vec<RecordBatch>,
        late: bool,
    ) -> Result<Vec<Finding>, ControlError> {
        let prepared = self.prepare(state, due, &mut Lookups::default()).await?;
        let batches = prepared.execute().await.map_err(|e| self.run_error(e))?;
        self.findings_of(&batches, late)
    }

    /// Plans this run of the query over `due`; the plan holds its own
    /// snapshot of the tables, which are reset before this returns.
    pub(super) async fn prepare(
        &self,
        state: &State,
        due: Vec<RecordBatch>,
        lookups: &mut Lookups,
    ) -> Result<Prepared, ControlError> {
        let started = Instant::now();
        let wait = DurationMillisecondArray::new_scalar(crate::duration::millis(self.meta.wait()));
        let mut with_due_at = Vec::with_capacity(due.len());
        for batch in due {
            let due_at = add(batch.column(self.time_index), &wait).map_err(|e| self.run_error(e))?;
            let mut columns = batch.columns().to_vec();
            columns.push(due_at);
            with_due_at.push(RecordBatch::try_new(self.due_schema.clone(), columns).map_err(|e| self.run_error(e))?);
        }
        let mut read_in_part = 0;
        for r in &self.restricted {
            let rows = rows_of(lookups, state, r, &with_due_at);
            read_in_part += usize::from(rows.is_some());
            *r.only.write().unwrap_or_else(|p| p.into_inner()) = rows;
        }
        *self.due.write().unwrap_or_else(|p| p.into_inner()) = with_due_at;
        let looked_up = started.elapsed();
        let planned = self.physical_plan().await;
        self.due.write().unwrap_or_else(|p| p.into_inner()).clear();
        for r in &self.restricted {
            *r.only.write().unwrap_or_else(|p| p.into_inner()) = None;
        }
        let plan = planned.map_err(|e| self.run_error(e))?;
        let setup = started.elapsed();
        tracing::trace!(control = %self.meta.id, lookup = ?looked_up, plan = ?(setup - looked_up), read_in_part, "prepared");
        Ok(Prepared { id: self.meta.id.clone(), plan, task: self.ctx.task_ctx(), read_in_part, setup })
    }

    /// The query planned over this run's tables: a kept plan rebound to
    /// them when there is one for their sizes (see `reuse`).
    async fn physical_plan(&self) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let state = self.ctx.state();
        if !self.optimized {
            return state.create_physical_plan(&self.plan).await;
        }
        let tables = Snapshots::take(&self.tables);
        if let Some(plan) = self.plans.bind(&tables)? {
            tracing::trace!(control = %self.meta.id, signature = ?tables.signature(), "rebound");
            return Ok(plan);
        }
        tracing::trace!(control = %self.meta.id, signature = ?tables.signature(), "planning");
        let plan = state.query_planner().create_physical_plan(&self.plan, &state).await?;
        self.plans.keep(&tables, &plan)?;
        Ok(plan)
    }

    /// The findings in a run's result: one per subject (a query may join its
    /// way to the same subject twice; one fact, one finding).
    pub(super) fn findings_of(&self, batches: &[RecordBatch], late: bool) -> Result<Vec<Finding>, ControlError> {
        let mut findings = Vec::new();
        for batch in batches {
            findings_of(batch, late, self.meta.evidence, &mut findings).map_err(|e| self.run_error(e))?;
        }
        let mut seen = std::collections::HashSet::new();
        findings.retain(|f| seen.insert(f.subject.clone()));
        Ok(findings)
    }
}

impl Prepared {
    /// Runs the planned query. With `VIGIL_EXPLAIN=<control id>` the
    /// physical plan and its metrics are printed to stderr after each run
    /// (profiling).
    pub(super) async fn execute(self) -> datafusion::error::Result<Vec<RecordBatch>> {
        let started = Instant::now();
        let out = datafusion::physical_plan::collect(self.plan.clone(), self.task).await?;
        tracing::debug!(control = %self.id, read_in_part = self.read_in_part, setup = ?self.setup, execute = ?started.elapsed(), "evaluated");
        if std::env::var("VIGIL_EXPLAIN").ok().as_deref() == Some(self.id.as_str()) {
            let shown = datafusion::physical_plan::display::DisplayableExecutionPlan::with_metrics(self.plan.as_ref());
            eprintln!("{} plan, with metrics:\n{}", self.id, shown.indent(true));
        }
        Ok(out)
    }
}

/// The lookups made in one evaluation, with their results: controls that
/// share a filter have the same due rows, and several look the same table
/// up by the same key (SEC-01, TST-01 and INT-01 read ci by the deploys'
/// commits).
#[derive(Default)]
pub(super) struct Lookups {
    made: Vec<Lookup>,
}

/// One lookup: its table, keys and key values, and the rows it found.
type Lookup = (Topic, Vec<KeySpec>, Vec<Vec<Vec<ArrayRef>>>, Option<Vec<RecordBatch>>);

impl Lookups {
    /// [`State::lookup`], answered from an earlier identical lookup if
    /// there was one.
    fn lookup(
        &mut self,
        state: &State,
        topic: Topic,
        scans: &[(&KeySpec, Vec<Vec<&ArrayRef>>)],
    ) -> Option<Vec<RecordBatch>> {
        let same = |(t, keys, values, _): &&Lookup| {
            *t == topic
                && keys.len() == scans.len()
                && keys.iter().zip(values).zip(scans).all(|((k, v), (key, wanted))| k == *key && equal(v, wanted))
        };
        if let Some((.., rows)) = self.made.iter().find(same) {
            return rows.clone();
        }
        let rows = state.lookup(topic, scans);
        let keys = scans.iter().map(|(key, _)| (*key).clone()).collect();
        let values = scans.iter().map(|(_, v)| v.iter().map(|c| c.iter().map(|a| (*a).clone()).collect()).collect());
        self.made.push((topic, keys, values.collect(), rows.clone()));
        rows
    }
}

/// The same key values, batch by batch.
fn equal(kept: &[Vec<ArrayRef>], wanted: &[Vec<&ArrayRef>]) -> bool {
    kept.len() == wanted.len()
        && kept.iter().zip(wanted).all(|(a, b)| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y) || x.to_data() == y.to_data())
        })
}

/// The rows of a restricted table that this run's due rows can use (`None`:
/// all of them).
fn rows_of(lookups: &mut Lookups, state: &State, r: &Restricted, due: &[RecordBatch]) -> Option<Vec<RecordBatch>> {
    let columns_of = |batches: &'_ [RecordBatch], columns: &[usize]| -> Vec<Vec<ArrayRef>> {
        batches.iter().map(|b| columns.iter().map(|c| b.column(*c).clone()).collect()).collect()
    };
    // The rows each two-hop key takes its values from, looked up first; a
    // source read whole leaves this table whole too.
    let mut values: Vec<Vec<Vec<ArrayRef>>> = Vec::with_capacity(r.scans.len());
    for scan in &r.scans {
        values.push(match &scan.from {
            KeyFrom::Due(columns) => columns_of(due, columns),
            KeyFrom::Rows { topic, via, due: via_due, columns } => {
                let wanted = columns_of(due, via_due);
                let rows = lookups.lookup(state, *topic, &[(via, borrowed(&wanted))])?;
                columns_of(&rows, columns)
            }
        });
    }
    let scans: Vec<_> = r.scans.iter().zip(&values).map(|(scan, v)| (&scan.key, borrowed(v))).collect();
    lookups.lookup(state, r.topic, &scans)
}

fn borrowed(batches: &[Vec<ArrayRef>]) -> Vec<Vec<&ArrayRef>> {
    batches.iter().map(|columns| columns.iter().collect()).collect()
}
