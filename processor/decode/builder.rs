//! Rows to an Arrow batch, one typed builder per column.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanBuilder, DictionaryArray, Int16Builder, Int32Builder, Int64Builder, StringArray,
    StringBuilder, TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::Int16Type;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use super::fast::Slot;
use super::Cell;
use crate::schema::{EventSchema, FieldKind};

enum Column {
    Str(StringBuilder),
    /// An enum's symbol indexes, and its symbols (shared by every batch).
    Enum(Int16Builder, Arc<StringArray>),
    Long(Int64Builder),
    Int(Int32Builder),
    Bool(BooleanBuilder),
    Time(TimestampMillisecondBuilder),
}

impl Column {
    fn push(&mut self, slot: Slot<'_>) {
        match (self, slot) {
            (Column::Str(b), Slot::Str(s)) => b.append_value(s),
            (Column::Enum(b, _), Slot::Symbol(i)) => b.append_value(i as i16),
            // The decoders check a text against the symbols first.
            (Column::Enum(b, symbols), Slot::Str(s)) => match symbols.iter().position(|v| v == Some(s)) {
                Some(i) => b.append_value(i as i16),
                None => unreachable!("`{s}` is not a symbol of its enum"),
            },
            (Column::Long(b), Slot::Long(v)) => b.append_value(v),
            (Column::Time(b), Slot::Long(v)) => b.append_value(v),
            (Column::Int(b), Slot::Int(v)) => b.append_value(v),
            (Column::Bool(b), Slot::Bool(v)) => b.append_value(v),
            (Column::Str(b), Slot::Null) => b.append_null(),
            (Column::Enum(b, _), Slot::Null) => b.append_null(),
            (Column::Long(b), Slot::Null) => b.append_null(),
            (Column::Time(b), Slot::Null) => b.append_null(),
            (Column::Int(b), Slot::Null) => b.append_null(),
            (Column::Bool(b), Slot::Null) => b.append_null(),
            // The row decoders produce values from the same field specs the
            // builders come from, so a mismatch is a bug in this module.
            (_, slot) => unreachable!("value {slot:?} does not fit its column"),
        }
    }

    /// The column, its buffers cut to their length: batches are retained in
    /// state for weeks, and a builder's doubling leaves up to half unused.
    fn finish(&mut self) -> ArrayRef {
        fn exact(mut array: impl Array + 'static) -> ArrayRef {
            array.shrink_to_fit();
            Arc::new(array)
        }
        match self {
            Column::Str(b) => exact(b.finish()),
            Column::Enum(b, symbols) => {
                let mut keys = b.finish();
                keys.shrink_to_fit();
                Arc::new(DictionaryArray::<Int16Type>::new(keys, symbols.clone()))
            }
            Column::Long(b) => exact(b.finish()),
            Column::Int(b) => exact(b.finish()),
            Column::Bool(b) => exact(b.finish()),
            Column::Time(b) => exact(b.finish()),
        }
    }
}

/// Bytes reserved per string value: ids, names and hashes of 8 to 40
/// bytes are typical.
const STR_BYTES: usize = 16;

pub(super) struct BatchBuilder {
    schema: SchemaRef,
    columns: Vec<Column>,
    partitions: Int32Builder,
    offsets: Int64Builder,
    rows: usize,
}

impl BatchBuilder {
    /// Builders with room for `rows` rows (most batches decode every
    /// message to one row): growing them by doubling copied each column
    /// about twice over, a twentieth of a streaming read's decoding time.
    pub(super) fn new(schema: &EventSchema, rows: usize) -> BatchBuilder {
        let columns = schema
            .fields
            .iter()
            .map(|f| match &f.kind {
                FieldKind::Str => Column::Str(StringBuilder::with_capacity(rows, rows * STR_BYTES)),
                FieldKind::Enum(symbols) => Column::Enum(
                    Int16Builder::with_capacity(rows),
                    Arc::new(symbols.iter().map(Some).collect::<StringArray>()),
                ),
                FieldKind::Long => Column::Long(Int64Builder::with_capacity(rows)),
                FieldKind::Int => Column::Int(Int32Builder::with_capacity(rows)),
                FieldKind::Bool => Column::Bool(BooleanBuilder::with_capacity(rows)),
                FieldKind::Timestamp => Column::Time(TimestampMillisecondBuilder::with_capacity(rows)),
            })
            .collect();
        BatchBuilder {
            schema: schema.arrow.clone(),
            columns,
            partitions: Int32Builder::with_capacity(rows),
            offsets: Int64Builder::with_capacity(rows),
            rows: 0,
        }
    }

    pub(super) fn push(&mut self, row: Vec<Cell>, partition: i32, offset: i64) {
        for (column, cell) in self.columns.iter_mut().zip(&row) {
            column.push(cell.as_slot());
        }
        self.end_row(partition, offset);
    }

    /// Adds a row a fast path read, given as its values in column order.
    pub(super) fn push_each<'s>(&mut self, row: impl Iterator<Item = Slot<'s>>, partition: i32, offset: i64) {
        for (column, slot) in self.columns.iter_mut().zip(row) {
            column.push(slot);
        }
        self.end_row(partition, offset);
    }

    fn end_row(&mut self, partition: i32, offset: i64) {
        self.partitions.append_value(partition);
        self.offsets.append_value(offset);
        self.rows += 1;
    }

    pub(super) fn finish(mut self) -> Option<RecordBatch> {
        if self.rows == 0 {
            return None;
        }
        let mut arrays: Vec<ArrayRef> = self.columns.iter_mut().map(Column::finish).collect();
        arrays.push(Column::Int(std::mem::take(&mut self.partitions)).finish());
        arrays.push(Column::Long(std::mem::take(&mut self.offsets)).finish());
        // Types and nullability follow the schema by construction.
        Some(RecordBatch::try_new(self.schema, arrays).expect("builder columns match the schema"))
    }
}
