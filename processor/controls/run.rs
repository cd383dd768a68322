//! One run of a control: the due rows (with their decision time) and the
//! restricted reads set up, the planned query executed, the result turned
//! into findings, the tables reset.

use datafusion::arrow::array::{ArrayRef, DurationMillisecondArray, RecordBatch};
use datafusion::arrow::compute::kernels::numeric::add;
use std::time::Instant;

use super::{findings_of, Control, ControlError, Finding, KeyFrom, Restricted};
use crate::state::State;

impl Control {
    pub(super) async fn run(
        &mut self,
        state: &State,
        due: Vec<RecordBatch>,
        late: bool,
    ) -> Result<Vec<Finding>, ControlError> {
        let wait = DurationMillisecondArray::new_scalar(crate::duration::millis(self.meta.wait()));
        let mut with_due_at = Vec::with_capacity(due.len());
        for batch in due {
            let due_at = add(batch.column(self.time_index), &wait).map_err(|e| self.run_error(e))?;
            let mut columns = batch.columns().to_vec();
            columns.push(due_at);
            with_due_at.push(RecordBatch::try_new(self.due_schema.clone(), columns).map_err(|e| self.run_error(e))?);
        }
        let t0 = Instant::now();
        self.read_in_part = 0;
        for r in &self.restricted {
            let rows = rows_of(state, r, &with_due_at);
            self.read_in_part += usize::from(rows.is_some());
            *r.only.write().unwrap_or_else(|p| p.into_inner()) = rows;
        }
        *self.due.write().unwrap_or_else(|p| p.into_inner()) = with_due_at;
        let t1 = Instant::now();
        let result = self.execute().await;
        self.due.write().unwrap_or_else(|p| p.into_inner()).clear();
        for r in &self.restricted {
            *r.only.write().unwrap_or_else(|p| p.into_inner()) = None;
        }
        let batches = result.map_err(|e| self.run_error(e))?;
        let t2 = Instant::now();
        let mut findings = Vec::new();
        for batch in &batches {
            findings_of(batch, late, self.meta.evidence, &mut findings).map_err(|e| self.run_error(e))?;
        }
        tracing::debug!(control = %self.meta.id, lookup = ?(t1 - t0), read_in_part = self.read_in_part, execute = ?(t2 - t1), findings = ?t2.elapsed(), "evaluated");
        // A query may join its way to the same subject twice; one fact, one finding.
        let mut seen = std::collections::HashSet::new();
        findings.retain(|f| seen.insert(f.subject.clone()));
        Ok(findings)
    }

    /// Runs the planned query over what the tables hold now. With
    /// `VIGIL_EXPLAIN=<control id>` the physical plan and its metrics are
    /// printed to stderr after each run (profiling).
    async fn execute(&self) -> datafusion::error::Result<Vec<RecordBatch>> {
        let state = self.ctx.state();
        let plan = match self.optimized {
            true => state.query_planner().create_physical_plan(&self.plan, &state).await?,
            false => state.create_physical_plan(&self.plan).await?,
        };
        if std::env::var("VIGIL_EXPLAIN").ok().as_deref() != Some(self.meta.id.as_str()) {
            return datafusion::physical_plan::collect(plan, self.ctx.task_ctx()).await;
        }
        let out = datafusion::physical_plan::collect(plan.clone(), self.ctx.task_ctx()).await?;
        let shown = datafusion::physical_plan::display::DisplayableExecutionPlan::with_metrics(plan.as_ref());
        eprintln!("{} plan, with metrics:\n{}", self.meta.id, shown.indent(true));
        Ok(out)
    }
}

/// The rows of a restricted table that this run's due rows can use (`None`:
/// all of them).
fn rows_of(state: &State, r: &Restricted, due: &[RecordBatch]) -> Option<Vec<RecordBatch>> {
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
                let rows = state.lookup(*topic, &[(via, borrowed(&wanted))])?;
                columns_of(&rows, columns)
            }
        });
    }
    let scans: Vec<_> = r.scans.iter().zip(&values).map(|(scan, v)| (&scan.key, borrowed(v))).collect();
    state.lookup(r.topic, &scans)
}

fn borrowed(batches: &[Vec<ArrayRef>]) -> Vec<Vec<&ArrayRef>> {
    batches.iter().map(|columns| columns.iter().collect()).collect()
}
