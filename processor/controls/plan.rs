//! Planning a control: its SQL against the state tables and its `due`
//! table, once at start-up, with the restricted reads its plan allows.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::DFSchema;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use sha2::{Digest, Sha256};

use super::output::check_output;
use super::reuse::PlanCache;
use super::run::Planner;
use super::table::LiveTable;
use super::{keys, meta, Control, ControlError, ControlSource, KeyFrom, Restricted, ScanKey, DECIDED_COLUMNS, DUE_AT};
use crate::identity::Identities;
use crate::index::{KeyPart, KeyReader, KeySpec};
use crate::schema::{Catalog, EventSchema, Topic};
use crate::state::{SharedBatches, State};

/// Every source planned, and every error met (a bad file, a duplicate id).
pub(super) async fn plan_each(
    sources: &[ControlSource],
    catalog: &Catalog,
    state: &State,
    identities: &Arc<Identities>,
) -> (Vec<Control>, Vec<ControlError>) {
    let mut controls: Vec<Control> = Vec::with_capacity(sources.len());
    let mut errors = Vec::new();
    for source in sources {
        match plan_one(source, catalog, state, identities).await {
            Ok(control) => match controls.iter().find(|c| c.meta.id == control.meta.id) {
                Some(other) => errors.push(ControlError::Header {
                    file: source.file.clone(),
                    line: 1,
                    message: format!("control id {} is already used by {}", control.meta.id, other.file),
                }),
                None => controls.push(control),
            },
            Err(e) => errors.push(e),
        }
    }
    (controls, errors)
}

async fn plan_one(
    source: &ControlSource,
    catalog: &Catalog,
    state: &State,
    identities: &Arc<Identities>,
) -> Result<Control, ControlError> {
    let file = source.file.clone();
    let meta = meta::parse(&source.sql).map_err(|(line, message)| ControlError::Header {
        file: file.clone(),
        line,
        message,
    })?;
    let plan_err = |message: String| ControlError::Plan { file: file.clone(), message };
    let mut config = SessionConfig::new().with_target_partitions(1);
    config.options_mut().sql_parser.collect_spans = true;
    // Plans are reused (`reuse`): no operator may hand a filter it updates
    // at run time to another (none of the memory scans would take one).
    config.options_mut().optimizer.enable_dynamic_filter_pushdown = false;
    let ctx = SessionContext::new_with_config(config);
    ctx.register_udf(identities.udf());
    let tables =
        Topic::ALL.map(|topic| Arc::new(LiveTable::new(catalog.event(topic).arrow.clone(), state.table(topic))));
    for topic in Topic::ALL {
        ctx.register_table(topic.name(), tables[topic.index()].clone()).map_err(|e| plan_err(e.to_string()))?;
    }
    let trigger = catalog.event(meta.trigger);
    let mut due_fields: Vec<Field> = trigger.arrow.fields().iter().map(|f| f.as_ref().clone()).collect();
    due_fields.push(Field::new(DUE_AT, DataType::Timestamp(TimeUnit::Millisecond, None), false));
    let due_schema = Arc::new(Schema::new(due_fields));
    // The due rows are pinned to this table for each run; it holds none.
    let due_table = Arc::new(LiveTable::new(due_schema.clone(), SharedBatches::default()));
    ctx.register_table("due", due_table.clone()).map_err(|e| plan_err(e.to_string()))?;
    let plan = ctx.state().create_logical_plan(&source.sql).await.map_err(|e| match sql_line(&e) {
        Some(line) => ControlError::Sql { file: file.clone(), line, message: e.to_string() },
        None => plan_err(e.to_string()),
    })?;
    check_output(plan.schema().as_arrow().fields(), meta.evidence).map_err(plan_err)?;
    let (mut reads, mut scans) = (Vec::new(), 0);
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            scans += 1;
            if let Some(topic) = Topic::from_name(scan.table_name.table()) {
                if !reads.contains(&topic) {
                    reads.push(topic);
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(|e| plan_err(e.to_string()))?;
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
    let optimized = ctx.state().optimize(&plan).map_err(|e| plan_err(e.to_string()))?;
    let mut restricted = Vec::new();
    for r in keys::restrictions(&optimized) {
        let key = |key: &keys::Key| scan_key(catalog, r.topic, key, &due_schema, identities);
        let Some(scans) = r.scans.iter().map(key).collect::<Option<Vec<ScanKey>>>() else { continue };
        restricted.push(Restricted { topic: r.topic, scans });
    }
    // Optimizing once serves every run, unless the query reads the clock
    // (the optimizer fixes `now()` to the time it runs).
    let lower = source.sql.to_lowercase();
    let reads_clock = ["now(", "current_", "today("].iter().any(|f| lower.contains(f));
    let planned_scans = table_scans(&optimized).map_err(|e| plan_err(e.to_string()))?;
    let reads_due = if reads_clock { None } else { due_columns(&optimized, &restricted, trigger) };
    let version = hex::encode(&Sha256::digest(source.sql.as_bytes())[..6]);
    let read_tables = std::iter::once(due_table).chain(reads.iter().map(|t| tables[t.index()].clone())).collect();
    Ok(Control {
        meta,
        version,
        file,
        planner: Arc::new(Planner::new(
            ctx,
            if reads_clock { plan } else { optimized },
            !reads_clock,
            read_tables,
            PlanCache::new(planned_scans),
        )),
        due_schema,
        filter,
        time_index: trigger.time_index,
        reads,
        pending: Default::default(),
        late: Default::default(),
        decided: Default::default(),
        restricted,
        reads_due,
        last_cost: Duration::ZERO,
        scans,
    })
}

/// Which columns of the trigger topic's rows a run reads (`None`: all):
/// those the plan's scans of `due` project, the keys of its keyed reads,
/// the event time and the source position (the trigger queues read them),
/// and [`DECIDED_COLUMNS`].
fn due_columns(plan: &LogicalPlan, restricted: &[Restricted], trigger: &EventSchema) -> Option<Vec<bool>> {
    let width = trigger.arrow.fields().len();
    let mut read = vec![false; width];
    let mut all = false;
    plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::TableScan(scan) if scan.table_name.table() == "due" => match &scan.projection {
                Some(columns) => columns.iter().filter(|c| **c < width).for_each(|c| read[*c] = true),
                None => all = true,
            },
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .ok()?;
    let keys = restricted.iter().flat_map(|r| &r.scans).flat_map(|scan| match &scan.from {
        KeyFrom::Due(columns) | KeyFrom::Rows { due: columns, .. } => columns.as_slice(),
    });
    let named = DECIDED_COLUMNS.iter().filter_map(|name| trigger.arrow.index_of(name).ok());
    let fixed: Vec<usize> = [trigger.time_index, width - 2, width - 1].into_iter().chain(named).collect();
    keys.chain(&fixed).filter(|c| **c < width).for_each(|c| read[*c] = true);
    (!all).then_some(read)
}

/// The table scans in `plan`, its subqueries' too.
fn table_scans(plan: &LogicalPlan) -> datafusion::error::Result<usize> {
    let mut scans = 0;
    plan.apply_with_subqueries(|node| {
        scans += usize::from(matches!(node, LogicalPlan::TableScan(_)));
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(scans)
}

/// A scan's key in positions: its parts sorted by column (so scans keyed
/// alike share one index), where its values come from in the same order.
fn scan_key(
    catalog: &Catalog,
    topic: Topic,
    key: &keys::Key,
    due_schema: &Schema,
    identities: &Arc<Identities>,
) -> Option<ScanKey> {
    let position = |topic: Topic, name: &str| catalog.event(topic).arrow.index_of(name).ok();
    let due = |name: &str| due_schema.index_of(name).ok();
    // The key's spec on `topic`, and the other side's columns in part order.
    let spec = |topic: Topic, key: &keys::Key, other: &dyn Fn(&str) -> Option<usize>| {
        let mut parts = key
            .parts
            .iter()
            .map(|p| Some((KeyPart { column: position(topic, &p.column)?, principal: p.principal }, other(&p.other)?)))
            .collect::<Option<Vec<(KeyPart, usize)>>>()?;
        parts.sort();
        Some((KeySpec(parts.iter().map(|p| p.0).collect()), parts.into_iter().map(|p| p.1).collect::<Vec<usize>>()))
    };
    let (spec, from) = match &key.from {
        keys::Source::Due => {
            let (spec, columns) = spec(topic, key, &due)?;
            (spec, KeyFrom::Due(columns))
        }
        keys::Source::Rows { topic: source, via } => {
            let (via, via_due) = spec(*source, via, &due)?;
            let (spec, columns) = spec(topic, key, &|name| position(*source, name))?;
            (spec, KeyFrom::Rows { topic: *source, via, due: via_due, columns })
        }
    };
    Some(ScanKey { reader: KeyReader::new(&spec, identities.clone()), key: spec, from })
}

/// The line of the SQL file an error points at: from DataFusion's
/// diagnostic span, or the parser's "at Line: N" text.
fn sql_line(e: &datafusion::error::DataFusionError) -> Option<usize> {
    if let Some(span) = e.diagnostic().and_then(|d| d.span) {
        return Some(span.start.line as usize);
    }
    let text = e.to_string();
    let rest = &text[text.find("Line: ")? + "Line: ".len()..];
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}
