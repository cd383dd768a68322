//! The output contract of a control query, and turning its rows into
//! [`Finding`]s.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ListArray, RecordBatch, StringArray, TimestampMillisecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};

use super::Finding;

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// Checks the output contract of a control query.
pub(super) fn check_output(fields: &[Arc<Field>], evidence: bool) -> Result<(), String> {
    let need = |name: &str, ok: &dyn Fn(&DataType) -> bool, what: &str| {
        match fields.iter().find(|f| f.name() == name) {
            Some(f) if ok(f.data_type()) => Ok(()),
            Some(f) => Err(format!("output column `{name}` must be {what}, it is {}", f.data_type())),
            None => Err(format!(
                "the query must return a column `{name}` ({what}); controls return subject, service, event_time, message and evidence* columns"
            )),
        }
    };
    need("subject", &is_text, "text")?;
    need("service", &is_text, "text")?;
    if !evidence {
        need("message", &is_text, "text")?;
    }
    need("event_time", &|t| matches!(t, DataType::Timestamp(_, _)), "a timestamp")?;
    for f in fields.iter().filter(|f| f.name().starts_with("evidence")) {
        let ok = match f.data_type() {
            DataType::List(item) | DataType::LargeList(item) => is_text(item.data_type()),
            t => is_text(t),
        };
        if !ok {
            return Err(format!(
                "evidence column `{}` must be text or a list of text, it is {}",
                f.name(),
                f.data_type()
            ));
        }
    }
    Ok(())
}

fn text_column(batch: &RecordBatch, name: &str) -> datafusion::error::Result<StringArray> {
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| datafusion::error::DataFusionError::Plan(format!("no column {name}")))?;
    let column = cast(column, &DataType::Utf8)?;
    Ok(column
        .as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .unwrap_or_else(|| StringArray::from(Vec::<String>::new())))
}

/// The findings of a result batch; with `rows`, each keeps its row (an
/// evidence query's columns).
pub(super) fn findings_of(
    batch: &RecordBatch,
    late: bool,
    rows: bool,
    out: &mut Vec<Finding>,
) -> datafusion::error::Result<()> {
    let subject = text_column(batch, "subject")?;
    let service = text_column(batch, "service")?;
    let message = match batch.column_by_name("message") {
        Some(_) => text_column(batch, "message")?,
        None => StringArray::new_null(batch.num_rows()),
    };
    let time = cast(
        batch
            .column_by_name("event_time")
            .ok_or_else(|| datafusion::error::DataFusionError::Plan("no event_time".into()))?,
        &DataType::Timestamp(TimeUnit::Millisecond, None),
    )?;
    let time = time
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .cloned()
        .unwrap_or_else(|| TimestampMillisecondArray::from(Vec::<i64>::new()));
    let mut evidence_columns: Vec<Evidence> = Vec::new();
    for (i, field) in batch.schema().fields().iter().enumerate() {
        if !field.name().starts_with("evidence") {
            continue;
        }
        let column = batch.column(i);
        evidence_columns.push(match field.data_type() {
            DataType::List(_) | DataType::LargeList(_) => {
                let list = cast(column, &DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))))?;
                Evidence::List(
                    list.as_any()
                        .downcast_ref::<ListArray>()
                        .cloned()
                        .unwrap_or_else(|| ListArray::new_null(Arc::new(Field::new("item", DataType::Utf8, true)), 0)),
                )
            }
            _ => Evidence::Text(
                cast(column, &DataType::Utf8)?
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .cloned()
                    .unwrap_or_else(|| StringArray::from(Vec::<String>::new())),
            ),
        });
    }
    // Each evidence finding's row shares the batch.
    let shared = Arc::new(batch.clone());
    for row in 0..batch.num_rows() {
        if subject.is_null(row) {
            continue;
        }
        let mut evidence = Vec::new();
        for column in &evidence_columns {
            column.collect(row, &mut evidence);
        }
        evidence.dedup();
        out.push(Finding {
            subject: subject.value(row).to_string(),
            service: if service.is_null(row) { String::new() } else { service.value(row).to_string() },
            event_time_ms: if time.is_null(row) { 0 } else { time.value(row) },
            message: if message.is_null(row) { String::new() } else { message.value(row).to_string() },
            evidence,
            late,
            details: rows.then(|| super::row::Row::new(shared.clone(), row)),
        });
    }
    Ok(())
}

enum Evidence {
    Text(StringArray),
    List(ListArray),
}

impl Evidence {
    fn collect(&self, row: usize, out: &mut Vec<String>) {
        match self {
            Evidence::Text(a) if a.is_valid(row) && !a.value(row).is_empty() => out.push(a.value(row).to_string()),
            Evidence::Text(_) => {}
            Evidence::List(l) if l.is_valid(row) => {
                let values = l.value(row);
                if let Some(strings) = values.as_any().downcast_ref::<StringArray>() {
                    let mut items: Vec<String> =
                        strings.iter().flatten().filter(|s| !s.is_empty()).map(str::to_string).collect();
                    items.sort();
                    out.extend(items);
                }
            }
            Evidence::List(_) => {}
        }
    }
}
