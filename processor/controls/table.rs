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
}

impl LiveTable {
    pub(super) fn new(schema: SchemaRef, batches: SharedBatches) -> LiveTable {
        LiveTable { schema, batches }
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
        let snapshot = self.batches.read().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(MemorySourceConfig::try_new_exec(&[snapshot], self.schema.clone(), projection.cloned())?)
    }
}
