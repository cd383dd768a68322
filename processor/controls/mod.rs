//! SQL controls: loading, planning once, and evaluating due triggers.
//!
//! Each control is a SQL file with a metadata header ([`meta`]). At start-up
//! every file is parsed and planned against the four state tables (`change`,
//! `ci`, `access`, `deploy`) and a `due` table in its trigger topic's schema;
//! a bad query stops start-up with the file name and DataFusion's message.
//!
//! Trigger rows enter through [`ControlSet::admit`]: the control's `filter`
//! keeps the rows it decides, and they wait as pending until the watermark
//! passes their decision time (event time + grace). [`ControlSet::evaluate`]
//! then runs the query over the due rows joined with the retained state.
//!
//! A query returns one row per violation with columns `subject`, `service`,
//! `event_time` and `message`; every column whose name starts with
//! `evidence` (text or a list of text) is gathered into the evidence list.
//!
//! This is the only module that plans or runs SQL.

mod meta;
mod source;
mod table;

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, BooleanArray, ListArray, RecordBatch, StringArray, TimestampMillisecondArray};
use datafusion::arrow::compute::kernels::cmp::lt_eq;
use datafusion::arrow::compute::{cast, filter_record_batch, not};
use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
use datafusion::common::DFSchema;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::{SessionConfig, SessionContext};
use sha2::{Digest, Sha256};

pub use meta::{ControlMeta, Severity};
pub use source::{builtin_sources, load_dir, ControlSource};

use crate::schema::{Catalog, Topic};
use crate::state::{SharedBatches, State};
use table::LiveTable;

/// A control that could not be loaded or planned, or failed to run.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{file}:{line}: {message}")]
    Header { file: String, line: usize, message: String },
    #[error("{file}: {message}")]
    Plan { file: String, message: String },
    #[error("control {id} failed to run: {message}")]
    Run { id: String, message: String },
}

/// One planned control and its pending triggers.
pub struct Control {
    pub meta: ControlMeta,
    /// First 12 hex digits of the sha-256 of the SQL file.
    pub version: String,
    pub file: String,
    ctx: SessionContext,
    plan: LogicalPlan,
    due: SharedBatches,
    filter: Option<Arc<dyn PhysicalExpr>>,
    time_index: usize,
    pending: Vec<RecordBatch>,
    late: Vec<RecordBatch>,
}

/// A violation found by a control, before it is stamped and encoded.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub subject: String,
    pub service: String,
    pub event_time_ms: i64,
    pub message: String,
    pub evidence: Vec<String>,
    pub late: bool,
}

/// What one control's evaluation produced.
pub struct Evaluation {
    pub control: usize,
    pub due_rows: usize,
    pub findings: Vec<Finding>,
    pub elapsed: Duration,
}

/// All controls, planned.
pub struct ControlSet {
    controls: Vec<Control>,
}

impl ControlSet {
    /// Parses and plans every source against the state's tables.
    pub async fn plan(sources: &[ControlSource], catalog: &Catalog, state: &State) -> Result<ControlSet, ControlError> {
        let mut controls = Vec::with_capacity(sources.len());
        for source in sources {
            let control = plan_one(source, catalog, state).await?;
            if let Some(other) = controls.iter().find(|c: &&Control| c.meta.id == control.meta.id) {
                return Err(ControlError::Header {
                    file: source.file.clone(),
                    line: 1,
                    message: format!("control id {} is already used by {}", control.meta.id, other.file),
                });
            }
            controls.push(control);
        }
        Ok(ControlSet { controls })
    }

    pub fn controls(&self) -> &[Control] {
        &self.controls
    }

    /// How far back state must reach behind the watermark: the longest
    /// grace plus look-back of any control.
    pub fn retention(&self) -> Duration {
        self.controls.iter().map(|c| c.meta.grace + c.meta.lookback).max().unwrap_or_default()
    }

    /// Trigger rows not yet decided, over all controls.
    pub fn pending_rows(&self) -> usize {
        self.controls.iter().map(|c| c.pending.iter().chain(&c.late).map(RecordBatch::num_rows).sum::<usize>()).sum()
    }

    /// Offers new rows of `topic` to the controls it triggers. Rows whose
    /// decision time the watermark has already passed are marked late.
    pub fn admit(&mut self, topic: Topic, batch: &RecordBatch, watermark: Option<i64>) -> Result<(), ControlError> {
        for control in self.controls.iter_mut().filter(|c| c.meta.trigger == topic) {
            let rows = match &control.filter {
                Some(expr) => {
                    let mask = expr
                        .evaluate(batch)
                        .and_then(|v| v.into_array(batch.num_rows()))
                        .map_err(|e| control.run_error(e))?;
                    let mask = mask
                        .as_any()
                        .downcast_ref::<BooleanArray>()
                        .ok_or_else(|| control.run_error("filter is not a boolean expression"))?;
                    filter_record_batch(batch, mask).map_err(|e| control.run_error(e))?
                }
                None => batch.clone(),
            };
            if rows.num_rows() == 0 {
                continue;
            }
            match watermark {
                Some(w) => {
                    let (late, on_time) = control.split_due(&rows, w)?;
                    control.late.extend(late);
                    control.pending.extend(on_time);
                }
                None => control.pending.push(rows),
            }
        }
        Ok(())
    }

    /// Runs every control over its triggers that are due at `watermark`.
    pub async fn evaluate(&mut self, watermark: i64) -> Result<Vec<Evaluation>, ControlError> {
        let mut out = Vec::new();
        for (index, control) in self.controls.iter_mut().enumerate() {
            let pending = std::mem::take(&mut control.pending);
            let mut due = Vec::new();
            for batch in &pending {
                let (now, later) = control.split_due(batch, watermark)?;
                due.extend(now);
                control.pending.extend(later);
            }
            let late = std::mem::take(&mut control.late);
            for (batches, is_late) in [(due, false), (late, true)] {
                let due_rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
                if due_rows == 0 {
                    continue;
                }
                let started = Instant::now();
                let findings = control.run(batches, is_late).await?;
                out.push(Evaluation { control: index, due_rows, findings, elapsed: started.elapsed() });
            }
        }
        Ok(out)
    }
}

impl Control {
    fn run_error(&self, e: impl std::fmt::Display) -> ControlError {
        ControlError::Run { id: self.meta.id.clone(), message: e.to_string() }
    }

    /// Splits rows into (decision time ≤ watermark, the rest).
    fn split_due(
        &self,
        batch: &RecordBatch,
        watermark: i64,
    ) -> Result<(Option<RecordBatch>, Option<RecordBatch>), ControlError> {
        let cut = watermark.saturating_sub(crate::duration::millis(self.meta.grace));
        let times = batch.column(self.time_index);
        let mask = lt_eq(times, &TimestampMillisecondArray::new_scalar(cut)).map_err(|e| self.run_error(e))?;
        let non_empty = |b: RecordBatch| (b.num_rows() > 0).then_some(b);
        let due = filter_record_batch(batch, &mask).map_err(|e| self.run_error(e))?;
        let rest =
            filter_record_batch(batch, &not(&mask).map_err(|e| self.run_error(e))?).map_err(|e| self.run_error(e))?;
        Ok((non_empty(due), non_empty(rest)))
    }

    async fn run(&mut self, due: Vec<RecordBatch>, late: bool) -> Result<Vec<Finding>, ControlError> {
        *self.due.write().unwrap_or_else(|p| p.into_inner()) = due;
        let result = async { self.ctx.execute_logical_plan(self.plan.clone()).await?.collect().await }.await;
        self.due.write().unwrap_or_else(|p| p.into_inner()).clear();
        let batches = result.map_err(|e| self.run_error(e))?;
        let mut findings = Vec::new();
        for batch in &batches {
            findings_of(batch, late, &mut findings).map_err(|e| self.run_error(e))?;
        }
        // A query may join its way to the same subject twice; one fact, one finding.
        let mut seen = std::collections::HashSet::new();
        findings.retain(|f| seen.insert(f.subject.clone()));
        Ok(findings)
    }
}

async fn plan_one(source: &ControlSource, catalog: &Catalog, state: &State) -> Result<Control, ControlError> {
    let file = source.file.clone();
    let meta = meta::parse(&source.sql).map_err(|(line, message)| ControlError::Header {
        file: file.clone(),
        line,
        message,
    })?;
    let plan_err = |message: String| ControlError::Plan { file: file.clone(), message };
    let config = SessionConfig::new().with_target_partitions(1);
    let ctx = SessionContext::new_with_config(config);
    for topic in Topic::ALL {
        let table = LiveTable::new(catalog.event(topic).arrow.clone(), state.table(topic));
        ctx.register_table(topic.name(), Arc::new(table)).map_err(|e| plan_err(e.to_string()))?;
    }
    let trigger = catalog.event(meta.trigger);
    let due: SharedBatches = Arc::new(RwLock::new(Vec::new()));
    ctx.register_table("due", Arc::new(LiveTable::new(trigger.arrow.clone(), due.clone())))
        .map_err(|e| plan_err(e.to_string()))?;
    let plan = ctx.state().create_logical_plan(&source.sql).await.map_err(|e| plan_err(e.to_string()))?;
    check_output(plan.schema().as_arrow().fields()).map_err(plan_err)?;
    let filter = match &meta.filter {
        Some(text) => {
            let df_schema = DFSchema::try_from(trigger.arrow.clone()).map_err(|e| plan_err(e.to_string()))?;
            let expr = ctx
                .parse_sql_expr(text, &df_schema)
                .and_then(|e| ctx.create_physical_expr(e, &df_schema))
                .map_err(|e| plan_err(format!("filter `{text}`: {e}")))?;
            Some(expr)
        }
        None => None,
    };
    let version = hex::encode(&Sha256::digest(source.sql.as_bytes())[..6]);
    Ok(Control {
        meta,
        version,
        file,
        ctx,
        plan,
        due,
        filter,
        time_index: trigger.time_index,
        pending: Vec::new(),
        late: Vec::new(),
    })
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// Checks the output contract of a control query.
fn check_output(fields: &[Arc<Field>]) -> Result<(), String> {
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
    need("message", &is_text, "text")?;
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

fn findings_of(batch: &RecordBatch, late: bool, out: &mut Vec<Finding>) -> datafusion::error::Result<()> {
    let subject = text_column(batch, "subject")?;
    let service = text_column(batch, "service")?;
    let message = text_column(batch, "message")?;
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
