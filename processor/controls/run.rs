//! One run of a control, in two halves. [`Control::prepare`], on the
//! calling task, sets the due rows (with their decision time) up, looks the
//! restricted reads' rows up and takes a snapshot of every table the query
//! reads: the state may change once it returns. [`Prepared::execute`], on
//! any thread, plans the query physically over that snapshot — or rebinds a
//! plan kept from a run over tables of the same sizes (see `reuse`) — and
//! runs it, while the caller goes on ingesting.
//! [`Control::findings_of`] turns the result into findings.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{ArrayRef, DurationMillisecondArray, RecordBatch};
use datafusion::arrow::compute::kernels::numeric::add;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;

use super::reuse::{PlanCache, Snapshots};
use super::table::LiveTable;
use super::{findings_of, Control, ControlError, Finding, KeyFrom, Restricted};
use crate::index::KeySpec;
use crate::schema::Topic;
use crate::state::State;

/// A control's query and what planning it physically needs.
pub(super) struct Planner {
    pub(super) ctx: SessionContext,
    plan: LogicalPlan,
    /// `plan` is optimized already: each run only plans it physically
    /// (false where the SQL reads the clock, which optimizing fixes).
    optimized: bool,
    /// The tables the query reads: `due`, then the state tables it reads,
    /// each as registered with `ctx`.
    tables: Vec<Arc<LiveTable>>,
    /// Physical plans kept for reuse.
    plans: PlanCache,
    /// Held while a run's snapshot is pinned to `tables` for planning (a
    /// control's due and late runs may be planned at once).
    pinning: tokio::sync::Mutex<()>,
}

impl Planner {
    pub(super) fn new(
        ctx: SessionContext,
        plan: LogicalPlan,
        optimized: bool,
        tables: Vec<Arc<LiveTable>>,
        plans: PlanCache,
    ) -> Planner {
        Planner { ctx, plan, optimized, tables, plans, pinning: tokio::sync::Mutex::new(()) }
    }

    /// The query planned over `snapshots`: a kept plan rebound to them when
    /// there is one for their sizes (see `reuse`).
    async fn physical_plan(&self, id: &str, snapshots: Snapshots) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        if self.optimized {
            if let Some(plan) = self.plans.bind(&snapshots)? {
                tracing::trace!(control = %id, signature = ?snapshots.signature(), "rebound");
                return Ok(plan);
            }
            tracing::trace!(control = %id, signature = ?snapshots.signature(), "planning");
        }
        let planned = {
            let _pinned = self.pinning.lock().await;
            let pins = Pins(&self.tables);
            for (table, rows) in self.tables.iter().zip(snapshots.rows_in_order()) {
                table.pin(Some(rows.to_vec()));
            }
            let state = self.ctx.state();
            let planned = match self.optimized {
                true => state.query_planner().create_physical_plan(&self.plan, &state).await,
                false => state.create_physical_plan(&self.plan).await,
            };
            drop(pins);
            planned?
        };
        if self.optimized {
            self.plans.keep(&snapshots, &planned)?;
        }
        Ok(planned)
    }
}

/// Unpins the tables when dropped, planned or not.
struct Pins<'a>(&'a [Arc<LiveTable>]);

impl Drop for Pins<'_> {
    fn drop(&mut self) {
        self.0.iter().for_each(|t| t.pin(None));
    }
}

/// A control's run, its rows looked up, ready to plan and execute.
pub(super) struct Prepared {
    id: String,
    planner: Arc<Planner>,
    snapshots: Snapshots,
    /// State tables read only in part, through the due rows' keys.
    pub read_in_part: usize,
    /// Time spent looking rows up.
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
        let prepared = self.prepare(state, due, &Lookups::default())?;
        let batches = prepared.execute().await.map_err(|e| self.run_error(e))?;
        self.findings_of(&batches, late)
    }

    /// Sets this run of the query over `due` up: its snapshot of every table
    /// it reads, taken now.
    pub(super) fn prepare(
        &self,
        state: &State,
        due: Vec<RecordBatch>,
        lookups: &Lookups,
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
        let mut only: [Option<Vec<RecordBatch>>; 4] = Default::default();
        for r in &self.restricted {
            let rows = rows_of(lookups, state, r, &with_due_at);
            read_in_part += usize::from(rows.is_some());
            only[r.topic.index()] = rows;
        }
        let tables = &self.planner.tables;
        let mut rows = Vec::with_capacity(tables.len());
        rows.push(with_due_at);
        for (topic, table) in self.reads.iter().zip(&tables[1..]) {
            rows.push(only[topic.index()].take().unwrap_or_else(|| table.rows()));
        }
        let snapshots = Snapshots::new(tables.iter().map(|t| t.schema_ref().clone()).zip(rows).collect());
        let setup = started.elapsed();
        tracing::trace!(control = %self.meta.id, lookup = ?setup, read_in_part, "prepared");
        Ok(Prepared { id: self.meta.id.clone(), planner: self.planner.clone(), snapshots, read_in_part, setup })
    }

    /// The findings in a run's result: one per subject (a query may join its
    /// way to the same subject twice; one fact, one finding).
    pub(super) fn findings_of(&self, batches: &[RecordBatch], late: bool) -> Result<Vec<Finding>, ControlError> {
        let mut findings = Vec::new();
        for batch in batches {
            findings_of(batch, late, self.meta.evidence, &mut findings).map_err(|e| self.run_error(e))?;
        }
        let mut seen: foldhash::HashSet<&str> = foldhash::HashSetExt::with_capacity(findings.len());
        let first: Vec<bool> = findings.iter().map(|f| seen.insert(f.subject.as_str())).collect();
        let mut first = first.into_iter();
        findings.retain(|_| first.next().unwrap_or(true));
        Ok(findings)
    }
}

impl Prepared {
    /// Plans the query over the run's snapshot and runs it. With
    /// `VIGIL_EXPLAIN=<control id>` the physical plan and its metrics are
    /// printed to stderr after each run (profiling).
    pub(super) async fn execute(self) -> datafusion::error::Result<Vec<RecordBatch>> {
        let started = Instant::now();
        let plan = self.planner.physical_plan(&self.id, self.snapshots).await?;
        let planned = started.elapsed();
        let out = datafusion::physical_plan::collect(plan.clone(), self.planner.ctx.task_ctx()).await?;
        tracing::debug!(control = %self.id, read_in_part = self.read_in_part, lookup = ?self.setup, plan = ?planned, execute = ?(started.elapsed() - planned), "evaluated");
        if std::env::var("VIGIL_EXPLAIN").ok().as_deref() == Some(self.id.as_str()) {
            let shown = datafusion::physical_plan::display::DisplayableExecutionPlan::with_metrics(plan.as_ref());
            eprintln!("{} plan, with metrics:\n{}", self.id, shown.indent(true));
        }
        Ok(out)
    }
}

/// The lookups made in one evaluation, with their results: controls that
/// share a filter have the same due rows, and several look the same table
/// up by the same key (SEC-01, TST-01 and INT-01 read ci by the deploys'
/// commits). Controls prepared at once may both make a lookup neither
/// found made; both rows are the same.
#[derive(Default)]
pub(super) struct Lookups {
    made: std::sync::Mutex<Vec<Lookup>>,
}

/// One lookup: its table, keys and key values, and the rows it found.
type Lookup = (Topic, Vec<KeySpec>, Vec<Vec<Vec<ArrayRef>>>, Option<Vec<RecordBatch>>);

impl Lookups {
    /// [`State::lookup`], answered from an earlier identical lookup if
    /// there was one.
    fn lookup(
        &self,
        state: &State,
        topic: Topic,
        scans: &[(&KeySpec, Vec<Vec<&ArrayRef>>)],
    ) -> Option<Vec<RecordBatch>> {
        let same = |(t, keys, values, _): &&Lookup| {
            *t == topic
                && keys.len() == scans.len()
                && keys.iter().zip(values).zip(scans).all(|((k, v), (key, wanted))| k == *key && equal(v, wanted))
        };
        let made = || self.made.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((.., rows)) = made().iter().find(same) {
            return rows.clone();
        }
        let rows = state.lookup(topic, scans);
        let keys = scans.iter().map(|(key, _)| (*key).clone()).collect();
        let values = scans.iter().map(|(_, v)| v.iter().map(|c| c.iter().map(|a| (*a).clone()).collect()).collect());
        made().push((topic, keys, values.collect(), rows.clone()));
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
fn rows_of(lookups: &Lookups, state: &State, r: &Restricted, due: &[RecordBatch]) -> Option<Vec<RecordBatch>> {
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
