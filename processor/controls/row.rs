//! One row of a query's output, read by column name: what an evidence
//! finding carries to the evidence record. It shares the result batch (an
//! `Arc`), so nothing is copied or formatted until a record is built.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int32Type, Int64Type, TimeUnit, TimestampMillisecondType};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

#[derive(Clone, Debug)]
pub struct Row {
    batch: Arc<RecordBatch>,
    row: usize,
}

/// Rows are equal when they hold the same values, whatever else their
/// batches hold.
impl PartialEq for Row {
    fn eq(&self, other: &Row) -> bool {
        self.batch.schema() == other.batch.schema()
            && (self.batch.columns().iter().zip(other.batch.columns()))
                .all(|(a, b)| a.slice(self.row, 1).to_data() == b.slice(other.row, 1).to_data())
    }
}

impl Row {
    pub fn new(batch: Arc<RecordBatch>, row: usize) -> Row {
        Row { batch, row }
    }

    /// The column, unless it is missing or null in this row.
    fn value(&self, name: &str) -> Option<&ArrayRef> {
        self.batch.column_by_name(name).filter(|c| c.is_valid(self.row))
    }

    /// This row's value of `column` cast to `to` (a one-row cast).
    fn cast(&self, column: &ArrayRef, to: &DataType) -> Option<ArrayRef> {
        cast(&column.slice(self.row, 1), to).ok().filter(|c| c.is_valid(0))
    }

    /// The value as text: strings as they are, anything else as Arrow
    /// displays it.
    pub fn text(&self, name: &str) -> Option<String> {
        let column = self.value(name)?;
        match column.data_type() {
            DataType::Utf8 => Some(column.as_string::<i32>().value(self.row).to_string()),
            DataType::LargeUtf8 => Some(column.as_string::<i64>().value(self.row).to_string()),
            DataType::Utf8View => Some(column.as_string_view().value(self.row).to_string()),
            _ => {
                let formatter = ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default()).ok()?;
                Some(formatter.value(self.row).to_string())
            }
        }
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        let column = self.value(name)?;
        match column.data_type() {
            DataType::Int64 => return Some(column.as_primitive::<Int64Type>().value(self.row)),
            DataType::Int32 => return Some(i64::from(column.as_primitive::<Int32Type>().value(self.row))),
            _ => {}
        }
        let one = self.cast(column, &DataType::Int64)?;
        Some(one.as_primitive::<Int64Type>().value(0))
    }

    pub fn bool(&self, name: &str) -> Option<bool> {
        let column = self.value(name)?;
        if let Some(b) = column.as_boolean_opt() {
            return Some(b.value(self.row));
        }
        let one = self.cast(column, &DataType::Boolean)?;
        Some(one.as_boolean().value(0))
    }

    /// A timestamp (any unit, or text Arrow can parse) in epoch milliseconds, UTC.
    pub fn time_ms(&self, name: &str) -> Option<i64> {
        let column = self.value(name)?;
        if let Some(t) = column.as_primitive_opt::<TimestampMillisecondType>() {
            return Some(t.value(self.row));
        }
        let one = self.cast(column, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
        Some(one.as_primitive::<TimestampMillisecondType>().value(0))
    }

    /// A list's non-null items as text, sorted (a list's order is the
    /// aggregation's, not a fact).
    pub fn list(&self, name: &str) -> Vec<String> {
        let Some(column) = self.value(name) else { return Vec::new() };
        let items = match column.data_type() {
            DataType::List(_) => column.as_list::<i32>().value(self.row),
            DataType::LargeList(_) => column.as_list::<i64>().value(self.row),
            _ => return Vec::new(),
        };
        let Ok(items) = cast(&items, &DataType::Utf8) else { return Vec::new() };
        let mut out: Vec<String> = items.as_string::<i32>().iter().flatten().map(str::to_string).collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{
        BooleanArray, Int32Array, ListBuilder, StringArray, StringBuilder, TimestampMillisecondArray,
    };

    use super::*;

    #[test]
    fn reads_columns_by_name_and_type() {
        let mut list = ListBuilder::new(StringBuilder::new());
        list.values().append_value("b");
        list.values().append_value("a");
        list.append(true);
        list.append(false);
        let batch = RecordBatch::try_from_iter([
            ("name", Arc::new(StringArray::from(vec![Some("x"), None])) as ArrayRef),
            ("n", Arc::new(Int32Array::from(vec![2, 3]))),
            ("flag", Arc::new(BooleanArray::from(vec![true, false]))),
            ("at", Arc::new(TimestampMillisecondArray::from(vec![1_795_167_000_000, 0]))),
            ("at_text", Arc::new(StringArray::from(vec!["2026-11-20T09:30:00", "no"]))),
            ("items", Arc::new(list.finish())),
        ])
        .unwrap();
        let first = Row::new(Arc::new(batch.clone()), 0);
        assert_eq!(first.text("name").as_deref(), Some("x"));
        assert_eq!(first.int("n"), Some(2));
        assert_eq!(first.bool("flag"), Some(true));
        assert_eq!(first.time_ms("at"), Some(1_795_167_000_000));
        assert_eq!(first.time_ms("at_text"), Some(1_795_167_000_000));
        assert_eq!(first.list("items"), ["a", "b"]);
        assert_eq!(first.text("n").as_deref(), Some("2"));
        let second = Row::new(Arc::new(batch), 1);
        assert_eq!(second.text("name"), None);
        assert!(second.list("items").is_empty());
        assert_eq!(second.time_ms("at_text"), None);
        assert_eq!(second.text("missing"), None);
    }
}
