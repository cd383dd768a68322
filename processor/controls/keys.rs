//! Which state rows a control's query can possibly use, found in its plan.
//!
//! A state table scanned only where an equi-join ties its columns to columns
//! of `due` — with nothing but row-wise steps (filters, projections,
//! aliases) between the scan and the join, and a join type that drops the
//! table's unmatched rows — contributes only rows whose key equals some due
//! row's key. A key is an identifier column (change_id, commit_sha, …) or,
//! where the join has none, all its key columns together (the principal a
//! name resolves to, the environment, the role). A scan joined instead to
//! another scan that is itself keyed by `due` takes its wanted values from
//! that scan's rows (two hops: a deploy's merge, then the merged pull
//! request's reviews). Evaluation then reads just those rows through the
//! state's key indexes instead of scanning everything retained, so its cost
//! follows the due triggers, not the retention.

use datafusion::common::{Column, JoinType};
use datafusion::logical_expr::{Expr, LogicalPlan};

use crate::schema::Topic;

/// A state table's rows that matter: for each scan of the table, the rows
/// its key selects.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Restriction {
    pub topic: Topic,
    pub scans: Vec<Key>,
}

/// A scan's key: its parts, and where their wanted values come from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Key {
    pub parts: Vec<Part>,
    pub from: Source,
}

/// A column of the scanned table, compared as is or as the principal it
/// names, and the column of the other side it equals.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Part {
    pub column: String,
    pub principal: bool,
    pub other: String,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Source {
    /// The parts' other columns are due columns.
    Due,
    /// The parts' other columns are columns of `topic`'s rows that `via`
    /// (a key straight from due) selects.
    Rows { topic: Topic, via: Box<Key> },
}

/// A column a plan's output takes unchanged from a scan: the scan's
/// address, table and column, and whether it went through `principal()`.
struct Traced {
    scan: usize,
    table: String,
    column: String,
    principal: bool,
}

/// A scan (its address), a part of a key it is joined by, and the other
/// side's scan (address and topic) unless that is `due`.
type Keyed = (usize, Part, Option<(usize, Topic)>);

/// The restrictions that hold for `plan` (an optimized logical plan).
pub(super) fn restrictions(plan: &LogicalPlan) -> Vec<Restriction> {
    let mut scans: Vec<(usize, Topic)> = Vec::new();
    let mut keyed: Vec<Keyed> = Vec::new();
    visit(plan, &mut |node| {
        if let LogicalPlan::TableScan(scan) = node {
            if let Some(topic) = Topic::from_name(scan.table_name.table()) {
                scans.push((node as *const LogicalPlan as usize, topic));
            }
        }
        let LogicalPlan::Join(join) = node else { return };
        if join.null_aware {
            return;
        }
        let (left_ok, right_ok) = restrictable(join.join_type);
        for (l, r) in &join.on {
            for (side_ok, side, key, other, other_key) in
                [(right_ok, &join.right, r, &join.left, l), (left_ok, &join.left, l, &join.right, r)]
            {
                if !side_ok {
                    continue;
                }
                let (Some(state), Some(from)) = (trace_expr(side, key, true), trace_expr(other, other_key, false))
                else {
                    continue;
                };
                if Topic::from_name(&state.table).is_none() || state.principal != from.principal {
                    continue;
                }
                let origin = match Topic::from_name(&from.table) {
                    _ if from.table == "due" => None,
                    Some(topic) => Some((from.scan, topic)),
                    None => continue,
                };
                let part = Part { column: state.column, principal: state.principal, other: from.column };
                keyed.push((state.scan, part, origin));
            }
        }
    });
    let due_key = |scan: usize| -> Option<Key> {
        let parts = keyed.iter().filter(|k| k.0 == scan && k.2.is_none()).map(|k| k.1.clone()).collect();
        Some(Key { parts: key_parts(parts)?, from: Source::Due })
    };
    let key = |scan: usize| -> Option<Key> {
        if let Some(key) = due_key(scan) {
            return Some(key);
        }
        let mut sources: Vec<(usize, Topic)> = keyed.iter().filter(|k| k.0 == scan).filter_map(|k| k.2).collect();
        sources.dedup();
        sources.into_iter().find_map(|(from, topic)| {
            let via = due_key(from)?;
            let parts = keyed.iter().filter(|k| k.0 == scan && k.2 == Some((from, topic))).map(|k| k.1.clone());
            Some(Key { parts: key_parts(parts.collect())?, from: Source::Rows { topic, via: Box::new(via) } })
        })
    };
    let mut out: Vec<Restriction> = Vec::new();
    for topic in Topic::ALL {
        let of_topic = scans.iter().filter(|(_, t)| *t == topic);
        let Some(mut keys) = of_topic.map(|(scan, _)| key(*scan)).collect::<Option<Vec<Key>>>() else { continue };
        if keys.is_empty() {
            continue;
        }
        keys.sort();
        keys.dedup();
        out.push(Restriction { topic, scans: keys });
    }
    out
}

/// A key from the parts a join offers: its first identifier column, or
/// else all of them together (each key is an index the state keeps).
fn key_parts(mut parts: Vec<Part>) -> Option<Vec<Part>> {
    if let Some(id) = parts.iter().position(|p| !p.principal && identifier(&p.column)) {
        return Some(vec![parts.swap_remove(id)]);
    }
    parts.sort();
    parts.dedup_by(|a, b| a.column == b.column && a.principal == b.principal);
    (!parts.is_empty()).then_some(parts)
}

/// Identifiers select few rows; people, services, environments and the
/// like select many, alone.
fn identifier(column: &str) -> bool {
    ["_id", "sha", "digest", "number"].iter().any(|k| column.ends_with(k))
}

/// Whether the (left, right) side may lose its rows that match nothing.
fn restrictable(join: JoinType) -> (bool, bool) {
    match join {
        JoinType::Inner | JoinType::LeftSemi | JoinType::RightSemi => (true, true),
        JoinType::Left | JoinType::LeftAnti | JoinType::LeftMark => (false, true),
        JoinType::Right | JoinType::RightAnti | JoinType::RightMark => (true, false),
        JoinType::Full => (false, false),
    }
}

fn visit<'a>(plan: &'a LogicalPlan, f: &mut dyn FnMut(&'a LogicalPlan)) {
    f(plan);
    for input in plan.inputs() {
        visit(input, f);
    }
}

/// `trace` for a join key or projected expression: a column, or
/// `principal()` of one.
fn trace_expr(plan: &LogicalPlan, expr: &Expr, row_wise: bool) -> Option<Traced> {
    match expr.clone().unalias() {
        Expr::Column(column) => trace(plan, &column, row_wise),
        Expr::ScalarFunction(f) if f.name() == "principal" && f.args.len() == 1 => {
            let traced = trace_expr(plan, &f.args[0], row_wise)?;
            Some(Traced { principal: true, ..traced })
        }
        _ => None,
    }
}

/// The scan a column of `plan`'s output comes from unchanged (but for
/// `principal()`). `row_wise` allows only filters, projections and aliases
/// on the way (the restricted side); otherwise joins, sorts, limits,
/// distinct and aggregates (group keys, min and max) pass values through
/// too.
fn trace(plan: &LogicalPlan, column: &Column, row_wise: bool) -> Option<Traced> {
    let index = plan.schema().index_of_column(column).ok()?;
    match plan {
        LogicalPlan::TableScan(scan) => Some(Traced {
            scan: plan as *const LogicalPlan as usize,
            table: scan.table_name.table().to_string(),
            column: plan.schema().field(index).name().clone(),
            principal: false,
        }),
        LogicalPlan::SubqueryAlias(alias) => {
            let (qualifier, field) = alias.input.schema().qualified_field(index);
            trace(&alias.input, &Column::new(qualifier.cloned(), field.name()), row_wise)
        }
        LogicalPlan::Projection(projection) => trace_expr(&projection.input, projection.expr.get(index)?, row_wise),
        LogicalPlan::Filter(filter) => trace(&filter.input, column, row_wise),
        LogicalPlan::Sort(sort) if !row_wise => trace(&sort.input, column, row_wise),
        LogicalPlan::Limit(limit) if !row_wise => trace(&limit.input, column, row_wise),
        LogicalPlan::Join(join) if !row_wise => {
            let side = if join.left.schema().has_column(column) { &join.left } else { &join.right };
            trace(side, column, row_wise)
        }
        // A group's key, or its min or max, is one of the input's values.
        LogicalPlan::Aggregate(aggregate) if !row_wise => {
            let expr = match index.checked_sub(aggregate.group_expr.len()) {
                None => aggregate.group_expr.get(index)?.clone(),
                Some(i) => match aggregate.aggr_expr.get(i)?.clone().unalias() {
                    Expr::AggregateFunction(f)
                        if ["min", "max"].contains(&f.func.name()) && f.params.args.len() == 1 =>
                    {
                        f.params.args[0].clone()
                    }
                    _ => return None,
                },
            };
            trace_expr(&aggregate.input, &expr, row_wise)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    use super::*;
    use crate::schema::Catalog;

    async fn restrictions_of(sql: &str) -> Vec<Restriction> {
        let catalog = Catalog::builtin().unwrap();
        let ctx = SessionContext::new();
        ctx.register_udf(Arc::new(crate::identity::Identities::default()).udf());
        for topic in Topic::ALL {
            let schema = catalog.event(topic).arrow.clone();
            ctx.register_table(topic.name(), Arc::new(MemTable::try_new(schema, vec![vec![]]).unwrap())).unwrap();
        }
        let due = catalog.event(Topic::Deploy).arrow.clone();
        ctx.register_table("due", Arc::new(MemTable::try_new(due, vec![vec![]]).unwrap())).unwrap();
        let plan = ctx.state().create_logical_plan(sql).await.unwrap();
        restrictions(&ctx.state().optimize(&plan).unwrap())
    }

    #[tokio::test]
    async fn a_table_joined_only_by_a_due_key_is_restricted_to_it() {
        let r = restrictions_of(
            "SELECT d.deploy_id FROM due d WHERE NOT EXISTS \
             (SELECT 1 FROM change c WHERE c.change_id = d.change_id AND c.action = 'approved')",
        )
        .await;
        assert_eq!(r, vec![Restriction { topic: Topic::Change, scans: vec![due(&[("change_id", "change_id")])] }]);
    }

    #[tokio::test]
    async fn a_table_read_any_other_way_is_read_whole() {
        for sql in [
            // Not joined to due at all.
            "SELECT d.deploy_id FROM due d WHERE (SELECT count(*) FROM change) > 0",
            // Its unmatched rows are the output.
            "SELECT c.change_id FROM change c LEFT JOIN due d ON c.change_id = d.change_id",
            // Aggregated before the join.
            "SELECT d.deploy_id FROM due d JOIN (SELECT change_id, count(*) AS n FROM change GROUP BY change_id) x \
             ON x.change_id = d.change_id",
            // Keyed once, read whole once.
            "SELECT d.deploy_id FROM due d JOIN change c ON c.change_id = d.change_id \
             WHERE EXISTS (SELECT 1 FROM change a WHERE a.event_time < d.event_time)",
            // NOT IN: one null key in the table empties the answer.
            "SELECT d.deploy_id FROM due d WHERE d.change_id NOT IN (SELECT c.change_id FROM change c)",
        ] {
            assert_eq!(restrictions_of(sql).await, vec![], "{sql}");
        }
    }

    fn part(column: &str, other: &str) -> Part {
        match column.strip_prefix("principal:") {
            Some(column) => Part { column: column.into(), principal: true, other: other.into() },
            None => Part { column: column.into(), principal: false, other: other.into() },
        }
    }

    fn due(parts: &[(&str, &str)]) -> Key {
        Key { parts: parts.iter().map(|(c, o)| part(c, o)).collect(), from: Source::Due }
    }

    #[tokio::test]
    async fn an_identifier_is_the_key_and_without_one_all_columns_are() {
        let r = restrictions_of(
            "SELECT d.deploy_id FROM due d JOIN change c ON c.change_id = d.change_id AND c.service = d.service \
             JOIN access a ON principal(a.principal) = principal(d.actor) AND a.environment = d.environment",
        )
        .await;
        let person = due(&[("environment", "environment"), ("principal:principal", "actor")]);
        assert_eq!(
            r,
            vec![
                Restriction { topic: Topic::Change, scans: vec![due(&[("change_id", "change_id")])] },
                Restriction { topic: Topic::Access, scans: vec![person] },
            ]
        );
    }

    #[tokio::test]
    async fn a_scan_keyed_by_another_keyed_scan_takes_its_values_through_an_aggregate() {
        let r = restrictions_of(
            "WITH m AS (SELECT d.deploy_id, max(c.pr_number) AS pr FROM due d \
                 JOIN ci c ON c.commit_sha = d.commit_sha GROUP BY d.deploy_id) \
             SELECT m.deploy_id FROM m JOIN ci r ON r.pr_number = m.pr",
        )
        .await;
        let merge = due(&[("commit_sha", "commit_sha")]);
        let reviews = Key {
            parts: vec![part("pr_number", "pr_number")],
            from: Source::Rows { topic: Topic::Ci, via: Box::new(merge.clone()) },
        };
        assert_eq!(r, vec![Restriction { topic: Topic::Ci, scans: vec![merge, reviews] }]);
    }
}
