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

mod amend;
mod docs;
mod evaluate;
mod keys;
mod meta;
mod output;
mod plan;
mod queue;
mod reuse;
pub mod row;
mod run;
mod source;
mod table;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{BooleanArray, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;

pub use amend::{append_on_time, Amendment};
pub use docs::reference;
pub use evaluate::Running;
pub use meta::{parse as parse_meta, ControlMeta, Severity};
pub use source::{builtin_evidence, builtin_sources, load_dir, ControlSource};

use crate::identity::Identities;
use crate::index::{KeyReader, KeySpec};
use crate::schema::{Catalog, Topic};
use crate::state::State;
use output::findings_of;
use plan::plan_each;

/// The column the `due` table adds to the trigger's: its decision time,
/// event_time + grace (look-back) or + deadline (absence). Absence controls
/// look for the expected event up to it.
pub const DUE_AT: &str = "_due_at";

/// A control that could not be loaded or planned, or failed to run.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{file}:{line}: {message}")]
    Header { file: String, line: usize, message: String },
    #[error("{file}: {message}")]
    Plan { file: String, message: String },
    #[error("{file}:{line}: {message}")]
    Sql { file: String, line: usize, message: String },
    #[error("control {id} failed to run: {message}")]
    Run { id: String, message: String },
}

/// Trigger columns read by name outside the controls' queries
/// ([`ControlSet::decided_among`]): admitting always copies them.
pub const DECIDED_COLUMNS: [&str; 1] = ["deploy_id"];

/// Gives the controls that share a trigger topic and filter (and so share
/// the admitted rows) the union of the columns they read.
fn share_reads(controls: &mut [Control]) {
    for i in 0..controls.len() {
        let (trigger, filter) = (controls[i].meta.trigger, controls[i].meta.filter.clone());
        let peers = controls.iter().filter(|c| c.meta.trigger == trigger && c.meta.filter == filter);
        let united = peers.map(|c| c.reads_due.clone()).reduce(|a, b| match (a, b) {
            (Some(a), Some(b)) => Some(a.iter().zip(&b).map(|(x, y)| *x || *y).collect()),
            _ => None,
        });
        controls[i].reads_due = united.flatten();
    }
}

/// One planned control and its pending triggers.
pub struct Control {
    pub meta: ControlMeta,
    /// First 12 hex digits of the sha-256 of the SQL file.
    pub version: String,
    pub file: String,
    /// Plans each run of the query (see `run`).
    planner: Arc<run::Planner>,
    /// The trigger topic's schema plus [`DUE_AT`].
    due_schema: SchemaRef,
    filter: Option<Arc<dyn PhysicalExpr>>,
    time_index: usize,
    /// The state tables the query scans.
    reads: Vec<Topic>,
    pending: queue::Queue,
    late: queue::Queue,
    /// Trigger rows already decided, kept for amendments (see `amend`).
    decided: queue::Queue,
    /// State tables the query reads only through due keys.
    restricted: Vec<Restricted>,
    /// The trigger topic's columns that admitting copies (`None`: all):
    /// those this control or another with the same filter reads, as
    /// [`ControlSet::plan`] unites them.
    reads_due: Option<Vec<bool>>,
    /// How long the last evaluation took: the costliest start first.
    last_cost: Duration,
    /// Table scans in the plan (the `due` table's too): before a control's
    /// first evaluation, the one with more scans starts first.
    scans: usize,
}

/// A state table a control reads only where its keys match the due rows'
/// (see `keys`).
struct Restricted {
    topic: Topic,
    /// One key per scan of the table.
    scans: Vec<ScanKey>,
}

/// The key a scan reads a table by, and where its wanted values come from.
struct ScanKey {
    key: KeySpec,
    /// Reads `key` from rows (principals resolved).
    reader: KeyReader,
    from: KeyFrom,
}

enum KeyFrom {
    /// These columns of the due rows, in the key's part order.
    Due(Vec<usize>),
    /// These columns (in the key's part order) of the rows of `topic` whose
    /// key `via` matches the due rows' columns `due`.
    Rows { topic: Topic, via: KeySpec, due: Vec<usize>, columns: Vec<usize> },
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
    /// An evidence query's row: every column, by name.
    pub details: Option<row::Row>,
}

/// What one control's evaluation produced.
#[derive(Debug)]
pub struct Evaluation {
    pub control: usize,
    pub due_rows: usize,
    pub findings: Vec<Finding>,
    pub elapsed: Duration,
    /// State tables read only in part, through the due rows' keys.
    pub read_in_part: usize,
}

/// All controls, planned.
pub struct ControlSet {
    controls: Vec<Control>,
}

impl ControlSet {
    /// Parses and plans every source against the state's tables; stops at
    /// the first bad control.
    pub async fn plan(
        sources: &[ControlSource],
        catalog: &Catalog,
        state: &State,
        identities: &Arc<Identities>,
    ) -> Result<ControlSet, ControlError> {
        let (mut controls, errors) = plan_each(sources, catalog, state, identities).await;
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => {
                share_reads(&mut controls);
                Ok(ControlSet { controls })
            }
        }
    }

    pub fn controls(&self) -> &[Control] {
        &self.controls
    }

    /// Which of `wanted` are values of `column` among the trigger rows
    /// `control` has decided and still keeps (for its look-back): which of
    /// these subjects it judged. `column` must be one of
    /// [`DECIDED_COLUMNS`] (admitting keeps those). Only the wanted values
    /// are hashed into a set: the decided rows, many more, are looked up.
    pub fn decided_among<'w>(
        &self,
        control: usize,
        column: &str,
        wanted: &foldhash::HashSet<&'w str>,
    ) -> foldhash::HashSet<&'w str> {
        use datafusion::arrow::array::{Array, StringArray};
        debug_assert!(DECIDED_COLUMNS.contains(&column), "{column} is not kept in decided triggers");
        let mut out = foldhash::HashSet::default();
        if wanted.is_empty() {
            return out;
        }
        for batch in self.controls[control].decided.batches() {
            let Some(values) = batch.column_by_name(column) else { continue };
            let Some(values) = values.as_any().downcast_ref::<StringArray>() else { continue };
            out.extend(values.iter().flatten().filter_map(|v| wanted.get(v).copied()));
            if out.len() == wanted.len() {
                break;
            }
        }
        out
    }

    /// Plans every source on its own and returns every error, not just the
    /// first: what `vigil check` reports.
    pub async fn check(
        sources: &[ControlSource],
        catalog: &Catalog,
        identities: &Arc<Identities>,
    ) -> Vec<ControlError> {
        let state = State::new(Topic::ALL.map(|t| &**catalog.event(t)));
        plan_each(sources, catalog, &state, identities).await.1
    }

    /// How far back `topic`'s state must reach behind the watermark: the
    /// longest wait plus look-back of the controls whose queries scan it.
    /// Zero when no control reads the topic's table.
    pub fn retention(&self, topic: Topic) -> Duration {
        self.controls
            .iter()
            .filter(|c| c.reads.contains(&topic))
            .map(|c| c.meta.wait() + c.meta.lookback)
            .max()
            .unwrap_or_default()
    }

    /// Drops the undecided triggers of `partitions` (revoked: their next owner
    /// replays and decides them).
    pub fn drop_partitions(&mut self, partitions: &[(Topic, i32)]) {
        for control in &mut self.controls {
            let ps: Vec<i32> = partitions.iter().filter(|(t, _)| *t == control.meta.trigger).map(|(_, p)| *p).collect();
            if ps.is_empty() {
                continue;
            }
            for queue in [&mut control.pending, &mut control.late, &mut control.decided] {
                // Cannot fail: the rows kept were admitted before.
                if let Err(e) = queue.drop_partitions(&ps, control.time_index) {
                    tracing::warn!(control = %control.meta.id, error = %e, "dropping revoked triggers");
                }
            }
        }
    }

    /// Forgets every pending and late trigger (between test cases).
    pub fn reset(&mut self) {
        for control in &mut self.controls {
            control.pending.clear();
            control.late.clear();
            control.decided.clear();
        }
    }

    /// The lowest offset of an undecided trigger, per partition of each
    /// trigger topic. Committed offsets must not pass it: a trigger waiting
    /// for a 24-hour deadline may be long gone from state.
    pub fn low_water_offsets(&self) -> BTreeMap<(Topic, i32), i64> {
        let mut out = BTreeMap::new();
        for control in &self.controls {
            control.pending.low_water(control.meta.trigger, &mut out);
            control.late.low_water(control.meta.trigger, &mut out);
        }
        out
    }

    /// Trigger rows not yet decided, over all controls.
    pub fn pending_rows(&self) -> usize {
        self.controls.iter().map(|c| c.pending.rows() + c.late.rows()).sum()
    }

    /// Offers new rows of `topic` to the controls it triggers. Rows whose
    /// decision time the watermark has already passed are marked late.
    /// Controls with the same filter text share its rows (one evaluation,
    /// one copy of the columns any of them reads).
    pub fn admit(&mut self, topic: Topic, batch: &RecordBatch, watermark: Option<i64>) -> Result<(), ControlError> {
        let mut filtered: Vec<(&str, RecordBatch)> = Vec::new();
        for control in self.controls.iter_mut().filter(|c| c.meta.trigger == topic) {
            let text = control.meta.filter.as_deref().unwrap_or_default();
            let rows = match &control.filter {
                Some(_) if let Some((_, rows)) = filtered.iter().find(|(t, _)| *t == text) => rows.clone(),
                Some(expr) => {
                    let mask = expr
                        .evaluate(batch)
                        .and_then(|v| v.into_array(batch.num_rows()))
                        .map_err(|e| control.run_error(e))?;
                    let mask = mask
                        .as_any()
                        .downcast_ref::<BooleanArray>()
                        .ok_or_else(|| control.run_error("filter is not a boolean expression"))?;
                    let rows =
                        queue::admitted(batch, mask, control.reads_due.as_deref()).map_err(|e| control.run_error(e))?;
                    filtered.push((text, rows.clone()));
                    rows
                }
                None => batch.clone(),
            };
            if rows.num_rows() == 0 {
                continue;
            }
            let mut admitted = queue::Queue::default();
            admitted.push(rows, control.time_index).map_err(|e| control.run_error(e))?;
            if let Some(w) = watermark {
                control.late.append(&mut control.take_due(&mut admitted, w)?);
            }
            control.pending.append(&mut admitted);
        }
        Ok(())
    }

    /// The keys whose state index lets controls read only the rows their
    /// due triggers name (see `keys`); the state should keep them.
    pub fn key_columns(&self) -> Vec<(Topic, KeySpec)> {
        let mut out: Vec<(Topic, KeySpec)> = Vec::new();
        for r in self.controls.iter().flat_map(|c| &c.restricted) {
            for scan in &r.scans {
                out.push((r.topic, scan.key.clone()));
                if let KeyFrom::Rows { topic, via, .. } = &scan.from {
                    out.push((*topic, via.clone()));
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Reads every state table whole from now on (tests compare keyed
    /// reads against it).
    #[doc(hidden)]
    pub fn read_whole(&mut self) {
        for control in &mut self.controls {
            control.restricted.clear();
        }
    }
}

impl Control {
    fn run_error(&self, e: impl std::fmt::Display) -> ControlError {
        ControlError::Run { id: self.meta.id.clone(), message: e.to_string() }
    }

    /// Takes the rows of `queue` whose decision time (trigger time plus
    /// the control's wait) the watermark has reached.
    fn take_due(&self, queue: &mut queue::Queue, watermark: i64) -> Result<queue::Queue, ControlError> {
        let cut = watermark.saturating_sub(crate::duration::millis(self.meta.wait()));
        queue.take_until(cut, self.time_index).map_err(|e| self.run_error(e))
    }
}
