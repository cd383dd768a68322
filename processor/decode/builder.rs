//! Rows to an Arrow batch, one typed builder per column.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Int32Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use super::Cell;
use crate::schema::{EventSchema, FieldKind};

enum Column {
    Str(StringBuilder),
    Long(Int64Builder),
    Int(Int32Builder),
    Bool(BooleanBuilder),
    Time(TimestampMillisecondBuilder),
}

impl Column {
    fn push(&mut self, cell: Cell) {
        match (self, cell) {
            (Column::Str(b), Cell::Str(s)) => b.append_value(s),
            (Column::Long(b), Cell::Long(v)) => b.append_value(v),
            (Column::Time(b), Cell::Long(v)) => b.append_value(v),
            (Column::Int(b), Cell::Int(v)) => b.append_value(v),
            (Column::Bool(b), Cell::Bool(v)) => b.append_value(v),
            (Column::Str(b), Cell::Null) => b.append_null(),
            (Column::Long(b), Cell::Null) => b.append_null(),
            (Column::Time(b), Cell::Null) => b.append_null(),
            (Column::Int(b), Cell::Null) => b.append_null(),
            (Column::Bool(b), Cell::Null) => b.append_null(),
            // The row decoders produce cells from the same field specs the
            // builders come from, so a mismatch is a bug in this module.
            (_, cell) => unreachable!("cell {cell:?} does not fit its column"),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Column::Str(b) => Arc::new(b.finish()),
            Column::Long(b) => Arc::new(b.finish()),
            Column::Int(b) => Arc::new(b.finish()),
            Column::Bool(b) => Arc::new(b.finish()),
            Column::Time(b) => Arc::new(b.finish()),
        }
    }
}

pub(super) struct BatchBuilder {
    schema: SchemaRef,
    columns: Vec<Column>,
    partitions: Int32Builder,
    offsets: Int64Builder,
    rows: usize,
}

impl BatchBuilder {
    pub(super) fn new(schema: &EventSchema) -> BatchBuilder {
        let columns = schema
            .fields
            .iter()
            .map(|f| match f.kind {
                FieldKind::Str | FieldKind::Enum(_) => Column::Str(StringBuilder::new()),
                FieldKind::Long => Column::Long(Int64Builder::new()),
                FieldKind::Int => Column::Int(Int32Builder::new()),
                FieldKind::Bool => Column::Bool(BooleanBuilder::new()),
                FieldKind::Timestamp => Column::Time(TimestampMillisecondBuilder::new()),
            })
            .collect();
        BatchBuilder {
            schema: schema.arrow.clone(),
            columns,
            partitions: Int32Builder::new(),
            offsets: Int64Builder::new(),
            rows: 0,
        }
    }

    pub(super) fn push(&mut self, row: Vec<Cell>, partition: i32, offset: i64) {
        for (column, cell) in self.columns.iter_mut().zip(row) {
            column.push(cell);
        }
        self.partitions.append_value(partition);
        self.offsets.append_value(offset);
        self.rows += 1;
    }

    pub(super) fn finish(mut self) -> Option<RecordBatch> {
        if self.rows == 0 {
            return None;
        }
        let mut arrays: Vec<ArrayRef> = self.columns.iter_mut().map(Column::finish).collect();
        arrays.push(Arc::new(self.partitions.finish()));
        arrays.push(Arc::new(self.offsets.finish()));
        // Types and nullability follow the schema by construction.
        Some(RecordBatch::try_new(self.schema, arrays).expect("builder columns match the schema"))
    }
}
