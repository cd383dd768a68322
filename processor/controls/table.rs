//! A table whose rows are read at scan time from a shared batch list, so a
//! query planned once sees the current state every time it runs.

use std::sync::Arc;

use async_trait::async_trait;
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
pub(super) type Only = Arc<std::sync::RwLock<Option<Vec<datafusion::arrow::record_batch::RecordBatch>>>>;

impl LiveTable {
    pub(super) fn new(schema: SchemaRef, batches: SharedBatches) -> LiveTable {
        LiveTable { schema, batches, only: None }
    }

    pub(super) fn restricted(schema: SchemaRef, batches: SharedBatches, only: Only) -> LiveTable {
        LiveTable { schema, batches, only: Some(only) }
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
        let only = self.only.as_ref().and_then(|o| o.read().unwrap_or_else(|p| p.into_inner()).clone());
        let snapshot = match only {
            Some(rows) => rows,
            None => self.batches.read().unwrap_or_else(|p| p.into_inner()).clone(),
        };
        Ok(MemorySourceConfig::try_new_exec(&[snapshot], self.schema.clone(), projection.cloned())?)
    }
}
