//! A table whose rows are read at scan time from a shared batch list, so a
//! query planned once sees the current state every time it runs.

use std::sync::Arc;

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
    /// When set, the rows a run reads instead of `batches` (the rows its due
    /// triggers' keys select; see `keys`).
    only: Option<Only>,
}

/// The rows one run of a control reads from a table, when restricted.
pub(super) type Only = Arc<std::sync::RwLock<Option<Vec<RecordBatch>>>>;

impl LiveTable {
    pub(super) fn new(schema: SchemaRef, batches: SharedBatches) -> LiveTable {
        LiveTable { schema, batches, only: None }
    }

    pub(super) fn restricted(schema: SchemaRef, batches: SharedBatches, only: Only) -> LiveTable {
        LiveTable { schema, batches, only: Some(only) }
    }

    /// The rows a scan reads now: the run's restricted rows if set, else
    /// the whole table.
    pub(super) fn snapshot(&self) -> Vec<RecordBatch> {
        let only = self.only.as_ref().and_then(|o| o.read().unwrap_or_else(|p| p.into_inner()).clone());
        only.unwrap_or_else(|| self.batches.read().unwrap_or_else(|p| p.into_inner()).clone())
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
