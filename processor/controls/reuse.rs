//! A control's physical plan, reused across runs.
//!
//! Planning a query physically took 2–40 ms per control per decision, redone
//! every decision although only the rows change. Once planned, a query is
//! kept as a template whose table scans hold no rows. A later run whose
//! tables fall in the same size classes (the planner picks join sides and
//! build inputs from row counts) rebinds the template instead: a fresh scan
//! over the run's snapshot of each table, and every other operator copied
//! with its runtime state reset (a hash join's build side, metrics), as
//! DataFusion does to re-run a plan.

use std::sync::{Arc, Mutex};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::source::{DataSource, DataSourceExec};
use datafusion::error::Result;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::ExecutionPlan;

/// Templates kept per control: one per combination of size classes met.
const KEEP: usize = 8;

/// Each table a query reads, as one run sees it.
pub(super) struct Snapshots {
    tables: Vec<(SchemaRef, Vec<RecordBatch>)>,
}

impl Snapshots {
    /// Each table's schema and the rows a run reads of it.
    pub(super) fn new(tables: Vec<(SchemaRef, Vec<RecordBatch>)>) -> Snapshots {
        Snapshots { tables }
    }

    /// Each table's rows, in the order given.
    pub(super) fn rows_in_order(&self) -> impl Iterator<Item = &[RecordBatch]> {
        self.tables.iter().map(|(_, rows)| rows.as_slice())
    }

    /// The tables without rows (what a template holds).
    fn empty(&self) -> Snapshots {
        Snapshots { tables: self.tables.iter().map(|(schema, _)| (schema.clone(), Vec::new())).collect() }
    }

    /// The size class of each table: 0 when empty, then one per factor of
    /// four in rows.
    pub(super) fn signature(&self) -> Vec<u8> {
        let class = |rows: usize| if rows == 0 { 0 } else { 1 + (rows.ilog2() / 2) as u8 };
        self.tables.iter().map(|(_, batches)| class(batches.iter().map(RecordBatch::num_rows).sum())).collect()
    }

    /// The rows of the table with this schema (each table's schema is its
    /// own: the topics' differ, and `due` adds a column to its topic's).
    fn rows(&self, schema: &SchemaRef) -> Option<&[RecordBatch]> {
        self.tables.iter().find(|(s, _)| Arc::ptr_eq(s, schema) || s == schema).map(|(_, b)| b.as_slice())
    }
}

/// A plan without rows, and the size classes it was planned for.
type Template = (Vec<u8>, Arc<dyn ExecutionPlan>);

/// A control's planned templates, by signature, the latest first.
pub(super) struct PlanCache {
    templates: Mutex<Vec<Template>>,
    /// Table scans in the query's logical plan.
    scans: usize,
}

impl PlanCache {
    pub(super) fn new(scans: usize) -> PlanCache {
        PlanCache { templates: Mutex::new(Vec::new()), scans }
    }

    /// The plan for a run over `snapshots`, if one with the same size
    /// classes was planned before.
    pub(super) fn bind(&self, snapshots: &Snapshots) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let signature = snapshots.signature();
        let template = {
            let templates = self.templates.lock().unwrap_or_else(|p| p.into_inner());
            templates.iter().find(|(s, _)| *s == signature).map(|(_, t)| t.clone())
        };
        template.map(|t| rebind(&t, snapshots, &mut 0)).transpose()
    }

    /// Keeps `plan`, planned over `snapshots`, as a template, if rebinding
    /// reaches a scan for each of the logical plan's (the planner may answer
    /// a part from statistics, e.g. `count(*)` of a whole table, which would
    /// not hold for other rows).
    pub(super) fn keep(&self, snapshots: &Snapshots, plan: &Arc<dyn ExecutionPlan>) -> Result<()> {
        let mut bound = 0;
        let template = rebind(plan, &snapshots.empty(), &mut bound)?;
        if bound != self.scans {
            return Ok(());
        }
        let mut templates = self.templates.lock().unwrap_or_else(|p| p.into_inner());
        templates.insert(0, (snapshots.signature(), template));
        templates.truncate(KEEP);
        Ok(())
    }
}

/// `plan` over `snapshots`: each scan of a table reads the snapshot's rows
/// (with the scan's projection and limit), other leaves stay, and every
/// operator above is a copy with fresh runtime state. Counts the scans
/// bound in `bound`.
fn rebind(plan: &Arc<dyn ExecutionPlan>, snapshots: &Snapshots, bound: &mut usize) -> Result<Arc<dyn ExecutionPlan>> {
    if let Some(source) = plan.downcast_ref::<DataSourceExec>() {
        let memory = source.data_source().downcast_ref::<MemorySourceConfig>();
        if let Some((memory, rows)) = memory.and_then(|m| Some((m, snapshots.rows(&m.original_schema())?))) {
            let config =
                MemorySourceConfig::try_new(&[rows.to_vec()], memory.original_schema(), memory.projection().clone())?
                    .with_limit(memory.fetch())
                    .with_show_sizes(memory.show_sizes())
                    .try_with_sort_information(memory.sort_information().to_vec())?;
            *bound += 1;
            return Ok(DataSourceExec::from_data_source(config));
        }
    }
    let children = plan.children().into_iter().map(|c| rebind(c, snapshots, bound)).collect::<Result<Vec<_>>>()?;
    let copied = match children.is_empty() {
        true => plan.clone(),
        false => plan.clone().replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep))?,
    };
    copied.reset_state()
}
