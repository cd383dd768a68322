//! Which state rows a control's query can possibly use, found in its plan.
//!
//! A state table scanned only where an equi-join ties one of its columns to
//! a column of `due` — with nothing but row-wise steps (filters,
//! projections, aliases) between the scan and the join, and a join type that
//! drops the table's unmatched rows — contributes only rows whose key equals
//! some due row's key. Evaluation then reads just those rows through the
//! state's key index instead of scanning everything retained, so its cost
//! follows the due triggers, not the retention.

use datafusion::common::{Column, JoinType};
use datafusion::logical_expr::{Expr, LogicalPlan};

use crate::schema::Topic;

/// A state table's rows that matter: for each scan of the table, the rows
/// any one of its keys selects (a scan joined on several columns needs only
/// one of them; which one is chosen at run time, by the rows it selects).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Restriction {
    pub topic: Topic,
    /// Per scan: (state column, where the wanted values come from).
    pub scans: Vec<Vec<(String, Source)>>,
}

/// Where a key's wanted values come from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Source {
    /// A column of the due rows.
    Due(String),
    /// A column of another state scan's rows, that scan being keyed by the
    /// due rows: `column` of the rows of `topic` whose columns equal the due
    /// columns of `via` (any one pair). Two hops: a deploy's merge, then
    /// the reviews of the merged pull request.
    Rows { topic: Topic, via: Vec<(String, String)>, column: String },
}

/// Where the other side of a join key comes from.
#[derive(Clone)]
enum Origin {
    Due(String),
    Scan(usize, Topic, String),
}

/// The restrictions that hold for `plan` (an optimized logical plan).
pub(super) fn restrictions(plan: &LogicalPlan) -> Vec<Restriction> {
    let mut scans: Vec<(usize, Topic)> = Vec::new();
    // (scan address, state column, other side)
    let mut keyed: Vec<(usize, String, Origin)> = Vec::new();
    visit(plan, &mut |node| {
        if let LogicalPlan::TableScan(scan) = node {
            if let Some(topic) = Topic::from_name(scan.table_name.table()) {
                scans.push((node as *const LogicalPlan as usize, topic));
            }
        }
        if let LogicalPlan::Join(join) = node {
            if join.null_aware {
                return;
            }
            let (left_ok, right_ok) = restrictable(join.join_type);
            for (l, r) in &join.on {
                let (Expr::Column(l), Expr::Column(r)) = (l, r) else { continue };
                for (side_ok, side, key, other, other_key) in
                    [(right_ok, &join.right, r, &join.left, l), (left_ok, &join.left, l, &join.right, r)]
                {
                    if !side_ok {
                        continue;
                    }
                    let (Some(state), Some(from)) = (trace(side, key, true), trace(other, other_key, false)) else {
                        continue;
                    };
                    if Topic::from_name(&state.1).is_none() {
                        continue;
                    }
                    let origin = match Topic::from_name(&from.1) {
                        _ if from.1 == "due" => Origin::Due(from.2),
                        Some(topic) => Origin::Scan(from.0, topic, from.2),
                        None => continue,
                    };
                    keyed.push((state.0, state.2, origin));
                }
            }
        }
    });
    // A scan's keys straight from due, preferring the selective ones.
    let due_keys = |scan: usize| -> Vec<(String, String)> {
        let keys: Vec<(String, String)> = keyed
            .iter()
            .filter(|k| k.0 == scan)
            .filter_map(|k| match &k.2 {
                Origin::Due(due) => Some((k.1.clone(), due.clone())),
                Origin::Scan(..) => None,
            })
            .collect();
        prefer_fine(keys, |k| &k.0)
    };
    let mut out: Vec<Restriction> = Vec::new();
    for topic in Topic::ALL {
        let of_topic: Vec<usize> = scans.iter().filter(|(_, t)| *t == topic).map(|(p, _)| *p).collect();
        let mut per_scan: Vec<Vec<(String, Source)>> = Vec::new();
        for scan in &of_topic {
            let keys: Vec<(String, Source)> = keyed
                .iter()
                .filter(|k| k.0 == *scan)
                .filter_map(|k| match &k.2 {
                    Origin::Due(due) => Some((k.1.clone(), Source::Due(due.clone()))),
                    Origin::Scan(from, from_topic, column) => {
                        let via = due_keys(*from);
                        (!via.is_empty())
                            .then(|| (k.1.clone(), Source::Rows { topic: *from_topic, via, column: column.clone() }))
                    }
                })
                .collect();
            // Straight from due first: one lookup, not two.
            let (mut keys, hops): (Vec<_>, Vec<_>) = keys.into_iter().partition(|k| matches!(k.1, Source::Due(_)));
            keys.extend(hops);
            let mut keys = prefer_fine(keys, |k| &k.0);
            if keys.is_empty() {
                per_scan.clear();
                break;
            }
            keys.sort();
            keys.dedup();
            if !per_scan.contains(&keys) {
                per_scan.push(keys);
            }
        }
        if !per_scan.is_empty() {
            out.push(Restriction { topic, scans: per_scan });
        }
    }
    out
}

/// The first key on a selective column if there is one (each key kept is an
/// index the state keeps, about 4 bytes a row); else all of them, as a
/// coarse key still pays where its value is rare (the lookup decides).
fn prefer_fine<T>(mut keys: Vec<T>, column: impl Fn(&T) -> &String) -> Vec<T> {
    match keys.iter().position(|k| !coarse(column(k))) {
        Some(fine) => vec![keys.swap_remove(fine)],
        None => keys,
    }
}

/// Identifiers select few rows; names of services, environments and the like
/// select many.
fn coarse(column: &str) -> bool {
    !["_id", "sha", "digest", "number", "principal"].iter().any(|k| column.ends_with(k))
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

/// The scan (its address, table name and column name) a column of `plan`'s
/// output comes from unchanged. `row_wise` allows only filters, projections
/// and aliases on the way (the restricted side); otherwise joins, sorts,
/// limits, distinct and aggregates (group keys, min and max) pass values
/// through too.
fn trace(plan: &LogicalPlan, column: &Column, row_wise: bool) -> Option<(usize, String, String)> {
    let index = plan.schema().index_of_column(column).ok()?;
    match plan {
        LogicalPlan::TableScan(scan) => {
            let field = plan.schema().field(index);
            Some((plan as *const LogicalPlan as usize, scan.table_name.table().to_string(), field.name().clone()))
        }
        LogicalPlan::SubqueryAlias(alias) => {
            let (qualifier, field) = alias.input.schema().qualified_field(index);
            trace(&alias.input, &Column::new(qualifier.cloned(), field.name()), row_wise)
        }
        LogicalPlan::Projection(projection) => match projection.expr.get(index)?.clone().unalias() {
            Expr::Column(inner) => trace(&projection.input, &inner, row_wise),
            _ => None,
        },
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
            match expr.unalias() {
                Expr::Column(inner) => trace(&aggregate.input, &inner, row_wise),
                _ => None,
            }
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
        let key = ("change_id".to_string(), Source::Due("change_id".into()));
        assert_eq!(r, vec![Restriction { topic: Topic::Change, scans: vec![vec![key]] }]);
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

    #[tokio::test]
    async fn a_selective_key_is_preferred_and_a_coarse_one_serves_alone() {
        let r = restrictions_of(
            "SELECT d.deploy_id FROM due d JOIN change c ON c.change_id = d.change_id AND c.service = d.service \
             JOIN access a ON a.environment = d.environment",
        )
        .await;
        let key = |c: &str, d: &str| (c.to_string(), Source::Due(d.into()));
        assert_eq!(
            r,
            vec![
                Restriction { topic: Topic::Change, scans: vec![vec![key("change_id", "change_id")]] },
                Restriction { topic: Topic::Access, scans: vec![vec![key("environment", "environment")]] },
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
        let via = vec![("commit_sha".to_string(), "commit_sha".to_string())];
        let hop = Source::Rows { topic: Topic::Ci, via, column: "pr_number".into() };
        let scans = vec![
            vec![("commit_sha".to_string(), Source::Due("commit_sha".into()))],
            vec![("pr_number".to_string(), hop)],
        ];
        let mut got = r.clone();
        for g in &mut got {
            g.scans.sort_by_key(|s| format!("{s:?}"));
        }
        assert_eq!(got, vec![Restriction { topic: Topic::Ci, scans }]);
    }
}
