//! A table whose rows are read at scan time from a shared batch list, so a
//! query planned once sees the current state every time it runs.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::state::SharedBatches;

#[derive(Debug)]
pub(super) struct LiveTable {
    schema: SchemaRef,
    batches: SharedBatches,
    /// While a run is planned, the rows it reads instead of `batches` (its
    /// snapshot: the due rows, or the rows its keys select, see `keys`).
    pinned: RwLock<Option<Vec<RecordBatch>>>,
}

impl LiveTable {
    pub(super) fn new(schema: SchemaRef, batches: SharedBatches) -> LiveTable {
        LiveTable { schema, batches, pinned: RwLock::new(None) }
    }

    /// The rows a scan reads now: the pinned rows if set, else the whole
    /// table.
    pub(super) fn snapshot(&self) -> Vec<RecordBatch> {
        let pinned = self.pinned.read().unwrap_or_else(|p| p.into_inner()).clone();
        pinned.unwrap_or_else(|| self.rows())
    }

    /// The whole table's rows now.
    pub(super) fn rows(&self) -> Vec<RecordBatch> {
        self.batches.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Makes scans read `rows` (`None`: the whole table again).
    pub(super) fn pin(&self, rows: Option<Vec<RecordBatch>>) {
        *self.pinned.write().unwrap_or_else(|p| p.into_inner()) = rows;
    }

    pub(super) fn schema_ref(&self) -> &SchemaRef {
        &self.schema
    }
}

#[async_trait]
impl TableProvider for LiveTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(MemorySourceConfig::try_new_exec(&[self.snapshot()], self.schema.clone(), projection.cloned())?)
    }
}
