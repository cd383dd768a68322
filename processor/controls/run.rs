//! One run of a control: its due rows and restricted reads set up, the
//! planned query executed (a future that owns what it needs, so it could be
//! spawned; running the controls side by side was tried and measured no
//! faster on two cores), the result turned into findings, the tables reset.

use std::future::Future;

use datafusion::arrow::array::{ArrayRef, DurationMillisecondArray, RecordBatch};
use datafusion::arrow::compute::kernels::numeric::add;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;

use super::{findings_of, Control, ControlError, Finding};
use crate::state::State;

impl Control {
    /// Runs the query over `due` and the state now: `prepare`, `execution`,
    /// `finish` in turn.
    pub(super) async fn run(
        &mut self,
        state: &State,
        due: Vec<RecordBatch>,
        late: bool,
    ) -> Result<Vec<Finding>, ControlError> {
        self.prepare(state, due)?;
        let result = self.execution().await;
        self.finish(result, late)
    }

    /// Sets the due table to `due` (with its decision time) and each
    /// restricted table to the state rows the due keys look up.
    pub(super) fn prepare(&self, state: &State, due: Vec<RecordBatch>) -> Result<(), ControlError> {
        let wait = DurationMillisecondArray::new_scalar(crate::duration::millis(self.meta.wait()));
        let mut with_due_at = Vec::with_capacity(due.len());
        for batch in due {
            let due_at = add(batch.column(self.time_index), &wait).map_err(|e| self.run_error(e))?;
            let mut columns = batch.columns().to_vec();
            columns.push(due_at);
            with_due_at.push(RecordBatch::try_new(self.due_schema.clone(), columns).map_err(|e| self.run_error(e))?);
        }
        for r in &self.restricted {
            let pairs: Vec<(usize, Vec<&ArrayRef>)> = r
                .pairs
                .iter()
                .map(|(column, due)| (*column, with_due_at.iter().map(|b| b.column(*due)).collect()))
                .collect();
            *r.only.write().unwrap_or_else(|p| p.into_inner()) = state.lookup(r.topic, &pairs);
        }
        *self.due.write().unwrap_or_else(|p| p.into_inner()) = with_due_at;
        Ok(())
    }

    /// The planned query's execution over what the tables hold, owning all
    /// it needs (to be spawned).
    pub(super) fn execution(
        &self,
    ) -> impl Future<Output = datafusion::error::Result<Vec<RecordBatch>>> + Send + 'static {
        execute(self.ctx.clone(), self.plan.clone(), self.meta.id.clone())
    }

    /// Resets the tables and turns the query's result into findings.
    pub(super) fn finish(
        &self,
        result: datafusion::error::Result<Vec<RecordBatch>>,
        late: bool,
    ) -> Result<Vec<Finding>, ControlError> {
        self.due.write().unwrap_or_else(|p| p.into_inner()).clear();
        for r in &self.restricted {
            *r.only.write().unwrap_or_else(|p| p.into_inner()) = None;
        }
        let batches = result.map_err(|e| self.run_error(e))?;
        let mut findings = Vec::new();
        for batch in &batches {
            findings_of(batch, late, self.meta.evidence, &mut findings).map_err(|e| self.run_error(e))?;
        }
        // A query may join its way to the same subject twice; one fact, one finding.
        let mut seen = std::collections::HashSet::new();
        findings.retain(|f| seen.insert(f.subject.clone()));
        Ok(findings)
    }
}

/// Runs `plan` in `ctx`. With `VIGIL_EXPLAIN=<control id>` the physical plan
/// and its metrics are printed to stderr after each run (profiling).
async fn execute(ctx: SessionContext, plan: LogicalPlan, id: String) -> datafusion::error::Result<Vec<RecordBatch>> {
    let started = std::time::Instant::now();
    let frame = ctx.execute_logical_plan(plan).await?;
    if std::env::var("VIGIL_EXPLAIN").ok().as_deref() != Some(id.as_str()) {
        let out = frame.collect().await;
        tracing::debug!(control = %id, elapsed = ?started.elapsed(), "executed");
        return out;
    }
    let plan = frame.create_physical_plan().await?;
    let out = datafusion::physical_plan::collect(plan.clone(), ctx.task_ctx()).await?;
    let shown = datafusion::physical_plan::display::DisplayableExecutionPlan::with_metrics(plan.as_ref());
    eprintln!("{id} plan, with metrics:\n{}", shown.indent(true));
    Ok(out)
}
